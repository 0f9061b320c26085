#!/usr/bin/env bash
# The offline recipe on the lent GPU (one call of the device tool), every variant in one run:
#   - the zero-shot bi-encoder anchor (sentence-transformers, mean pooling, cosine) on DL19 BM25 top-100;
#   - MiniLM-L6 fine-tuned as a cross-encoder with `rerank train` (the configs of this folder);
#   - from-scratch mamba-130m and bert-base shapes with one tokenizer (training throughput side by side).
# What it needs beside the working tree (carried, ignored by git): .whl/ (ranx and its wheels, which the
# GPU image lacks), .gpu/minilm-fp16/ (the MiniLM weights in fp16: the fp32 file exceeds what one call
# carries; widened back to fp32 here), .gpu/data/ (the ../shared/data files the configs read, gzipped).
# Usage: bash experiments/offline/device_run.sh first|second|third|fourth (the calls of 2026-12-01; BENCHMARKS.md).
# Results: $OUT/results.jsonl (one line per variant) and $OUT/<variant>.log.
set -uo pipefail
source experiments/offline/common.sh
setup_site || exit 1
widen_minilm
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# zero-shot bi-encoder anchor, same run
python3 - <<'EOF' >> "$OUT/results.jsonl"
import json, time, torch
from sentence_transformers import SentenceTransformer
from rerankers.data.texts import read_candidates
from rerankers.data.trec import read_qrels
from rerankers.eval.metrics import evaluate
queries, run, docs = read_candidates(".gpu/data/BM25/retrieve_results_dl19.json.gz")
qrels = read_qrels(".gpu/data/qrels/qrels.dl19-passage.txt")
m = SentenceTransformer("/tmp/minilm", device="cuda")
t = time.perf_counter()
out = {}
for q, cands in run.items():
    ids = list(cands)
    e = m.encode([queries[q]] + [docs[d] for d in ids], convert_to_tensor=True, normalize_embeddings=True)
    out[q] = {d: float(s) for d, s in zip(ids, (e[1:] @ e[0]).tolist())}
torch.cuda.synchronize()
res = evaluate(out, qrels, ["nDCG@10", "MRR@10"])
bm25 = evaluate(run, qrels, ["nDCG@10", "MRR@10"])
print(json.dumps({"variant": "zero-shot bi-encoder (all-MiniLM-L6-v2, mean pooling, cosine)", "dev": res.means,
                  "seconds": time.perf_counter() - t}))
print(json.dumps({"variant": "BM25 (first stage)", "dev": bm25.means}))
EOF

first() {  # the first call: the plain recipe, its variants, and the from-scratch pair
  variant minilm-lce-n8-lr2e-5 minilm-lce $TRAIN $DEV --backbone /tmp/minilm
  variant minilm-lce-n16-lr5e-5 minilm-lce $TRAIN $DEV --backbone /tmp/minilm --group-size 16 --lr 5e-5
  variant minilm-pools-lce-n8-lr3e-5 minilm-all-pools-lce $POOLS $DEV --backbone /tmp/minilm
  variant minilm-pools-lambdaloss-n16 minilm-all-pools-lce $POOLS $DEV --backbone /tmp/minilm --loss lambdaloss \
    --group-size 16
  variant minilm-pools-lce-n8-lr1e-5-1ep minilm-all-pools-lce $POOLS $DEV --backbone /tmp/minilm --lr 1e-5 \
    --epochs 1 --eval-every 7
  variant scratch-mamba-130m scratch-mamba-130m $TRAIN $DEV --tokenizer /tmp/minilm
  variant scratch-bert-base scratch-bert-base $TRAIN $DEV --tokenizer /tmp/minilm
}

second() {  # the second call: a head learning rate of its own, and mean pooling (what the bi-encoder was trained with)
  variant minilm-cls-headlr minilm-lce $TRAIN $DEV --backbone /tmp/minilm --lr 3e-5 --head-lr 1e-3
  variant minilm-mean minilm-lce $TRAIN $DEV --backbone /tmp/minilm --pooling mean
  variant minilm-mean-headlr minilm-lce $TRAIN $DEV --backbone /tmp/minilm --pooling mean --lr 3e-5 --head-lr 1e-3
  variant minilm-mean-headlr-10ep minilm-lce $TRAIN $DEV --backbone /tmp/minilm --pooling mean --lr 3e-5 \
    --head-lr 1e-3 --epochs 10 --eval-every 26
  variant minilm-pools-mean-headlr-5ep minilm-all-pools-lce $POOLS $DEV --backbone /tmp/minilm --pooling mean \
    --lr 3e-5 --head-lr 1e-3 --epochs 5 --eval-every 14
  variant minilm-pools-mean-headlr-lambdaloss-5ep minilm-all-pools-lce $POOLS $DEV --backbone /tmp/minilm \
    --pooling mean --lr 3e-5 --head-lr 1e-3 --epochs 5 --eval-every 14 --loss lambdaloss --group-size 16
}

third() {  # the third call: distillation from the zero-shot bi-encoder's scores on every training pool
  python3 experiments/offline/teacher.py --model /tmp/minilm --out /tmp/teacher.trec $D/*/retrieve_results_dl2[01].json.gz
  variant minilm-distil-margin-mse minilm-distil $POOLS $DEV --backbone /tmp/minilm --teacher /tmp/teacher.trec \
    --epochs 5 --eval-every 14
  variant minilm-distil-listnet minilm-listnet-distil $POOLS $DEV --backbone /tmp/minilm --teacher /tmp/teacher.trec
  variant minilm-distil-margin-mse-10ep minilm-distil $POOLS $DEV --backbone /tmp/minilm --teacher /tmp/teacher.trec \
    --epochs 10 --eval-every 28
}

fourth() {  # the fourth call: longer distillation, ListNet over the teacher, LoRA
  python3 experiments/offline/teacher.py --model /tmp/minilm --out /tmp/teacher.trec $D/*/retrieve_results_dl2[01].json.gz
  variant minilm-distil-margin-mse-20ep minilm-distil $POOLS $DEV --backbone /tmp/minilm --teacher /tmp/teacher.trec \
    --epochs 20 --eval-every 56
  variant minilm-distil-listnet-10ep minilm-listnet-distil $POOLS $DEV --backbone /tmp/minilm \
    --teacher /tmp/teacher.trec --epochs 10 --eval-every 28
  variant minilm-distil-lora16-10ep minilm-distil $POOLS $DEV --backbone /tmp/minilm --teacher /tmp/teacher.trec \
    --epochs 10 --eval-every 28 --lora 16 --lr 3e-4
}

${1:-first}
echo done
