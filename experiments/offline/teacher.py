"""The teacher run of the distillation configs: all-MiniLM-L6-v2's zero-shot cosine over candidates files.

    python experiments/offline/teacher.py --model DIR --out runs/teacher.trec CANDIDATES.json [...]

Every (query, candidate) of the files is scored by the bi-encoder (mean pooling, normalised
embeddings, cosine) and written as one TREC run (``rerank train --teacher``). Needs
sentence-transformers (installed where the GPU runs; not a dependency of the package).
"""
from __future__ import annotations

import argparse
import logging

from rerankers.data.texts import read_candidates
from rerankers.data.trec import write_run

logger = logging.getLogger("teacher")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="+", help="candidates files with texts")
    ap.add_argument("--model", required=True, help="the bi-encoder folder (sentence-transformers)")
    ap.add_argument("--out", required=True, help="the teacher run to write")
    args = ap.parse_args()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model)
    run: dict[str, dict[str, float]] = {}
    for path in args.candidates:
        queries, cands, docs = read_candidates(path)
        for qid, ranked in cands.items():
            ids = [d for d in ranked if d not in run.get(qid, {})]
            if not ids:
                continue
            emb = model.encode([queries[qid]] + [docs[d] for d in ids], convert_to_tensor=True,
                               normalize_embeddings=True)
            scores = (emb[1:] @ emb[0]).tolist()
            run.setdefault(qid, {}).update(zip(ids, map(float, scores)))
    write_run(run, args.out, tag="all-MiniLM-L6-v2-cosine")
    logging.basicConfig(level=logging.INFO)
    logger.info("teacher run: %d queries, %d pairs -> %s", len(run), sum(map(len, run.values())), args.out)


if __name__ == "__main__":
    main()
