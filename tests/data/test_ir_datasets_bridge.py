"""The ir_datasets bridge runs ir_datasets' real loading code on files placed in a temporary
IR_DATASETS_HOME (as ir_datasets caches them after a download), so nothing is downloaded.

ir_datasets fixes its home folder when it is imported, so the loading runs in a fresh interpreter.
"""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rerankers.data.datasets import SHORT_NAMES, resolve_dataset_id, resolve_qrels
from rerankers.errors import DataFormatError, UnknownDatasetError

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from rerankers.data.inputs import load_rerank_inputs
from rerankers.data.datasets import load_dataset, resolve_qrels, resolve_queries
out = {}
ds = load_dataset("dl19")
queries, qrels, docs = ds
out["dl19"] = {"id": ds.id, "queries": queries, "qrels": qrels, "doc": docs["1"], "ndocs": len(docs)}
out["dl20_queries"] = resolve_queries("dl20")[0]
out["dev_qrels"] = resolve_qrels("msmarco-dev")[0]
run, queries, docs = load_rerank_inputs(run=sys.argv[1], dataset="dl19", depth=2)
out["rerank_inputs"] = [run, queries, docs]
print(json.dumps(out))
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def irds_home(tmp_path):
    """A minimal msmarco-passage cache: 3 passages, DL19 (one unjudged query), DL20 queries, dev-small."""
    base = tmp_path / "irds" / "msmarco-passage"
    _write(base / "irds_version.txt", "v2")
    _write(base / "collection.tsv", "0\tpassage zero about fleas\n1\tpassage one about turkey\n2\tpassage two\n")
    _write(base / "trec-dl-2019" / "queries.tsv", "100\thow long do fleas live\n101\tunjudged query\n")
    _write(base / "trec-dl-2019" / "qrels", "100 Q0 0 3\n100 Q0 1 0\n100 Q0 2 2\n")
    (base / "trec-dl-2020").mkdir(parents=True)
    with gzip.open(base / "trec-dl-2020" / "queries.tsv.gz", "wt") as f:
        f.write("200\tcapital of turkey\n201\tunjudged\n")
    _write(base / "trec-dl-2020" / "qrels", "200 0 1 2\n")
    _write(base / "dev" / "small" / "queries.tsv", "300\tdev query\n")
    _write(base / "dev" / "small" / "qrels", "300\t0\t2\t1\n")
    return tmp_path / "irds"


def test_load_through_ir_datasets(irds_home, tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("100 Q0 0 1 3.0 t\n100 Q0 2 2 2.0 t\n100 Q0 1 3 1.0 t\n")
    env = {**os.environ, "IR_DATASETS_HOME": str(irds_home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(run)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    dl19 = out["dl19"]
    assert dl19["id"] == "msmarco-passage/trec-dl-2019/judged"
    assert dl19["queries"] == {"100": "how long do fleas live"}  # "judged" drops query 101
    assert dl19["qrels"] == {"100": {"0": 3, "1": 0, "2": 2}}
    assert dl19["doc"] == "passage one about turkey" and dl19["ndocs"] == 3
    assert out["dl20_queries"] == {"200": "capital of turkey"}
    assert out["dev_qrels"] == {"300": {"2": 1}}
    rr_run, rr_queries, rr_docs = out["rerank_inputs"]
    assert rr_run == {"100": {"0": 3.0, "2": 2.0, "1": 1.0}}  # the whole run: beyond --depth stays below
    assert rr_queries == {"100": "how long do fleas live"}
    assert rr_docs == {"0": "passage zero about fleas", "2": "passage two"}  # texts of the top 2 only


def test_names_and_errors(tmp_path):
    assert resolve_dataset_id("DL19") == SHORT_NAMES["dl19"]
    assert resolve_dataset_id("msmarco-passage/trec-dl-2020/judged") == "msmarco-passage/trec-dl-2020/judged"
    with pytest.raises(UnknownDatasetError) as e:
        resolve_qrels("dl33")
    assert "unknown dataset 'dl33'" in str(e.value) and all(n in str(e.value) for n in SHORT_NAMES)
    with pytest.raises(DataFormatError, match="no such file"):
        resolve_qrels(str(tmp_path / "missing-qrels.txt"))
    local = tmp_path / "q.txt"
    local.write_text("1 0 d 1\n")
    assert resolve_qrels(str(local)) == ({"1": {"d": 1}}, str(local))


def test_document_store_lookups_and_a_broken_store():
    """IrDatasetsDocs over a stand-in dataset object: found, missing (KeyError naming the id), and a
    store that fails (DatasetLoadError naming the dataset, not the store's own exception)."""
    from types import SimpleNamespace

    from rerankers.data.datasets import IrDatasetsDocs
    from rerankers.errors import DatasetLoadError

    class Store:
        def get(self, docid):
            if docid == "broken":
                raise OSError("docs.pklz4: truncated file")
            if docid == "gone":
                raise KeyError(docid)
            return SimpleNamespace(text=f"text of {docid}") if docid != "none" else None

        def get_many(self, ids):
            return {i: SimpleNamespace(text=f"text of {i}") for i in ids if i.startswith("d")}

    docs = IrDatasetsDocs("msmarco-passage/trec-dl-2019", SimpleNamespace(docs_store=Store))
    assert docs["d1"] == "text of d1"
    for missing in ("gone", "none"):
        with pytest.raises(KeyError, match=missing):
            docs[missing]
    with pytest.raises(DatasetLoadError, match="trec-dl-2019.*OSError: docs.pklz4"):
        docs["broken"]
    assert docs.get_many(["d1", "d2"]) == {"d1": "text of d1", "d2": "text of d2"}
    with pytest.raises(KeyError, match="x9"):
        docs.get_many(["d1", "x9"])
