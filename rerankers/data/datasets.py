"""Standard test collections through ir_datasets, and resolution of ``--qrels/--queries`` arguments.

Short names:

==============  =======================================  =====================================
short name      ir_datasets id                           content
==============  =======================================  =====================================
``dl19``        ``msmarco-passage/trec-dl-2019/judged``  TREC DL 2019 passage: 43 judged queries
``dl20``        ``msmarco-passage/trec-dl-2020/judged``  TREC DL 2020 passage: 54 judged queries
``msmarco-dev`` ``msmarco-passage/dev/small``            MS MARCO passage dev-small: 6,980 queries
==============  =======================================  =====================================

Any other ir_datasets id works too. ir_datasets downloads its files on first use into
``IR_DATASETS_HOME`` (default ``~/.ir_datasets``); offline, it needs them there already (e.g. for
``dl19``: ``msmarco-passage/trec-dl-2019/qrels`` and ``.../queries.tsv``; documents:
``msmarco-passage/collection.tsv``). Where a local file is given instead of a name, it is read
directly (:mod:`rerankers.data.trec`, :mod:`rerankers.data.texts`).

For training sources (:mod:`rerankers.train.sources`): :func:`dataset_entities` (what a dataset
provides), :func:`iter_dataset_docpairs` (training triples, streamed) and :func:`resolve_docs`
(``--corpus`` as a file or a dataset name, only the documents asked for).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, TypeVar

from rerankers.data.texts import Texts, read_corpus, read_queries
from rerankers.data.trec import Qrels, read_qrels
from rerankers.errors import DatasetLoadError, UnknownDatasetError, one_line

logger = logging.getLogger(__name__)

SHORT_NAMES: dict[str, str] = {
    "dl19": "msmarco-passage/trec-dl-2019/judged",
    "dl20": "msmarco-passage/trec-dl-2020/judged",
    "msmarco-dev": "msmarco-passage/dev/small",
}

T = TypeVar("T")


def _ir_datasets():
    try:
        import ir_datasets
    except ImportError as e:  # a core dependency, but say so clearly
        raise DatasetLoadError("ir_datasets is not installed: pip install ir_datasets") from e
    return ir_datasets


def known_names() -> str:
    """The short names, for messages."""
    return ", ".join(f"{k} ({v})" for k, v in SHORT_NAMES.items())


def resolve_dataset_id(name: str) -> str:
    """Map a short name to its ir_datasets id, check an ir_datasets id; else UnknownDatasetError."""
    key = name.strip()
    if key.lower() in SHORT_NAMES:
        return SHORT_NAMES[key.lower()]
    irds = _ir_datasets()
    if key in irds.registry:
        return key
    raise UnknownDatasetError(f"unknown dataset {name!r}: not an existing file, a short name "
                              f"({known_names()}) or an ir_datasets id")


def _guard(dataset_id: str, what: str, fn: Callable[[], T]) -> T:
    """Run an ir_datasets access and turn any failure into one clear DatasetLoadError."""
    try:
        return fn()
    except DatasetLoadError:
        raise
    except Exception as e:  # noqa: BLE001 -- ir_datasets raises anything from requests to KeyError
        home = os.environ.get("IR_DATASETS_HOME", str(Path.home() / ".ir_datasets"))
        text = str(e)
        cause = ("its download failed (no network?)" if "download" in text.lower() or "connection" in text.lower()
                 else one_line(e, limit=200))
        raise DatasetLoadError(
            f"could not load the {what} of {dataset_id!r} through ir_datasets: {cause}. ir_datasets "
            f"downloads on first use into IR_DATASETS_HOME={home} (offline, place its files there), "
            f"or pass local files instead (e.g. --qrels FILE)") from None


class IrDatasetsDocs(Mapping):
    """Read-only ``{docid: text}`` view of an ir_datasets document store (texts fetched on access).

    MS MARCO passage has 8.8M passages: nothing is loaded up front; ``docs[docid]`` looks one up.
    """

    def __init__(self, dataset_id: str, dataset: Any):
        self.dataset_id = dataset_id
        self._dataset = dataset
        self._store = None

    def _get_store(self):
        if self._store is None:
            self._store = _guard(self.dataset_id, "documents", self._dataset.docs_store)
        return self._store

    def __getitem__(self, docid: str) -> str:
        store = self._get_store()

        def get():
            try:
                return store.get(str(docid))
            except KeyError:
                return None
        doc = _guard(self.dataset_id, "documents", get)  # a broken store is a DatasetLoadError
        if doc is None:
            raise KeyError(docid)
        return doc.default_text() if hasattr(doc, "default_text") else doc.text

    def get_many(self, docids) -> dict[str, str]:
        """Texts of several documents; raises KeyError naming the first missing one."""
        store = self._get_store()
        found = _guard(self.dataset_id, "documents", lambda: store.get_many([str(d) for d in docids]))
        out = {}
        for d in docids:
            doc = found.get(str(d))
            if doc is None:
                raise KeyError(d)
            out[str(d)] = doc.default_text() if hasattr(doc, "default_text") else doc.text
        return out

    def lookup(self, docids: Iterable[str]) -> dict[str, str]:
        """Texts of the documents of ``docids`` that the store holds (absent ones are left out)."""
        store = self._get_store()
        wanted = list(dict.fromkeys(str(d) for d in docids))
        found = _guard(self.dataset_id, "documents", lambda: store.get_many(wanted))
        out = {}
        for d in wanted:
            doc = found.get(d)
            if doc is not None:
                out[d] = doc.default_text() if hasattr(doc, "default_text") else doc.text
        return out

    def __iter__(self) -> Iterator[str]:
        for doc in _guard(self.dataset_id, "documents", self._dataset.docs_iter):
            yield doc.doc_id

    def __len__(self) -> int:
        return int(_guard(self.dataset_id, "documents", self._dataset.docs_count) or 0)


@dataclass
class Dataset:
    """A test collection: ``queries`` ``{qid: text}``, ``qrels`` ``{qid: {docid: grade}}``, ``docs``."""

    id: str
    queries: Texts
    qrels: Qrels
    docs: Mapping

    def __iter__(self):
        """Unpacks as ``queries, qrels, docs = load_dataset("dl19")``."""
        return iter((self.queries, self.qrels, self.docs))


def _load(name: str):
    dataset_id = resolve_dataset_id(name)
    return dataset_id, _guard(dataset_id, "dataset", lambda: _ir_datasets().load(dataset_id))


def load_dataset_qrels(name: str) -> Qrels:
    """Qrels of a dataset (short name or ir_datasets id)."""
    dataset_id, ds = _load(name)
    if not ds.has_qrels():
        raise DatasetLoadError(f"dataset {dataset_id!r} has no qrels")

    def read() -> Qrels:
        qrels: Qrels = {}
        for q in ds.qrels_iter():
            qrels.setdefault(str(q.query_id), {})[str(q.doc_id)] = int(q.relevance)
        return qrels

    qrels = _guard(dataset_id, "qrels", read)
    if not qrels:
        raise DatasetLoadError(f"dataset {dataset_id!r}: qrels are empty")
    return qrels


def load_dataset_queries(name: str) -> Texts:
    """Query texts of a dataset (short name or ir_datasets id)."""
    dataset_id, ds = _load(name)
    if not ds.has_queries():
        raise DatasetLoadError(f"dataset {dataset_id!r} has no queries")

    def read() -> Texts:
        return {str(q.query_id): (q.default_text() if hasattr(q, "default_text") else q.text)
                for q in ds.queries_iter()}

    return _guard(dataset_id, "queries", read)


def load_dataset_docs(name: str) -> IrDatasetsDocs:
    """A lazy ``{docid: text}`` mapping over a dataset's documents."""
    dataset_id, ds = _load(name)
    if not ds.has_docs():
        raise DatasetLoadError(f"dataset {dataset_id!r} has no documents")
    return IrDatasetsDocs(dataset_id, ds)


def load_dataset(name: str, with_qrels: bool = True) -> Dataset:
    """Queries, qrels and a lazy document store of a dataset (short name or ir_datasets id)."""
    dataset_id = resolve_dataset_id(name)
    return Dataset(id=dataset_id, queries=load_dataset_queries(dataset_id),
                   qrels=load_dataset_qrels(dataset_id) if with_qrels else {},
                   docs=load_dataset_docs(dataset_id))


_FILE_SUFFIXES = (".txt", ".tsv", ".qrels", ".gz", ".jsonl", ".json", ".trec", ".run")


def _is_dataset_name(arg: str) -> bool:
    """A short name or a registered ir_datasets id."""
    if arg.strip().lower() in SHORT_NAMES:
        return True
    try:
        return arg.strip() in _ir_datasets().registry
    except DatasetLoadError:
        return False


def _looks_like_file(arg: str) -> bool:
    return arg.endswith(_FILE_SUFFIXES) or arg.startswith((".", "/", "~"))


def _resolve(arg: str, read_file: Callable[[str], T], read_dataset: Callable[[str], T]) -> tuple[T, str]:
    if Path(arg).exists() or (_looks_like_file(arg) and not _is_dataset_name(arg)):
        return read_file(arg), arg  # a missing file raises DataFormatError naming it
    dataset_id = resolve_dataset_id(arg)
    return read_dataset(dataset_id), (f"{arg} ({dataset_id})" if dataset_id != arg else arg)


def resolve_qrels(arg: str) -> tuple[Qrels, str]:
    """``--qrels`` value -> ``(qrels, description)``.

    An existing file (or anything that looks like a file path) is read with
    :func:`~rerankers.data.trec.read_qrels`; a short name (``dl19``) or ir_datasets id goes
    through ir_datasets; anything else raises UnknownDatasetError listing the short names.
    """
    return _resolve(arg, read_qrels, load_dataset_qrels)


def resolve_queries(arg: str) -> tuple[Texts, str]:
    """``--queries`` value -> ``(queries, description)``, resolved as :func:`resolve_qrels`."""
    return _resolve(arg, read_queries, load_dataset_queries)


# ---- training data: docpairs, entity types, documents by file or name ----------------------------
ENTITY_TYPES = ("docs", "queries", "qrels", "scoreddocs", "docpairs")


def is_file_argument(arg: str) -> bool:
    """Whether ``arg`` names a file: it exists, or looks like a path and is no dataset name (as ``--qrels``)."""
    return Path(arg).exists() or (_looks_like_file(arg) and not _is_dataset_name(arg))


def dataset_entities(name: str) -> frozenset[str]:
    """What a dataset (short name or ir_datasets id) provides: a subset of :data:`ENTITY_TYPES`."""
    dataset_id, ds = _load(name)
    return frozenset(e for e in ENTITY_TYPES if getattr(ds, f"has_{e}")())


def _guarded_iter(dataset_id: str, what: str, make_iter: Callable[[], Iterable[T]]) -> Iterator[T]:
    """Iterate ``make_iter()``, turning a failure at any step into one DatasetLoadError (see :func:`_guard`)."""
    done = object()
    it = _guard(dataset_id, what, lambda: iter(make_iter()))
    while True:
        item = _guard(dataset_id, what, lambda: next(it, done))
        if item is done:
            return
        yield item


def iter_dataset_docpairs(name: str) -> Iterator[tuple[str, str, str]]:
    """``(qid, positive docid, negative docid)`` of a dataset's docpairs (e.g. MS MARCO training triples).

    Streams: ``msmarco-passage/train/triples-small`` holds 39.8M pairs. In ir_datasets' docpairs the
    first document is the relevant one (``doc_id_a``), the second the non-relevant one (``doc_id_b``).
    """
    dataset_id, ds = _load(name)
    if not ds.has_docpairs():
        raise DatasetLoadError(f"dataset {dataset_id!r} has no docpairs (training triples)")
    for pair in _guarded_iter(dataset_id, "docpairs", ds.docpairs_iter):
        yield str(pair.query_id), str(pair.doc_id_a), str(pair.doc_id_b)


def resolve_docs(arg: str, ids: Collection[str]) -> tuple[dict[str, str], str]:
    """``--corpus`` value -> ``({docid: text}, description)`` for the documents of ``ids`` only.

    An existing file (or anything that looks like a file path) is read with
    :func:`~rerankers.data.texts.read_corpus` (keeping only ``ids``); a short name or ir_datasets id
    is looked up in its document store. Documents absent from the corpus are left out: the caller
    decides whether that is an error.
    """
    return _resolve(arg, lambda path: read_corpus(path, ids=set(ids)),
                    lambda dataset_id: load_dataset_docs(dataset_id).lookup(ids))
