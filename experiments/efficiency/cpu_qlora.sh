#!/usr/bin/env bash
# The QLoRA quality row of the efficiency table (issue 15) on this CPU machine: one device call cannot carry the
# MiniLM weights and the bitsandbytes wheel together, and bitsandbytes' NF4 layers run on the CPU. The same recipe as
# experiments/efficiency/device_run.sh's LoRA rows (minilm-distil, Margin-MSE from the bi-encoder teacher over every
# DL20/DL21 pool, 10 epochs, lr 3e-4), rank 16, the base of the LoRA targets in 4-bit NF4, and plain LoRA r16 beside
# it on the same hardware; fp32 compute on the CPU (the GPU rows ran under bf16 autocast). nDCG@10 on DL19 BM25
# top-100 once, after the last step. VARIANTS="qlora16" runs one of them.
#   bash experiments/efficiency/cpu_qlora.sh            (~35 min on 2 cores: the teacher 12, each run ~10)
# Needs: .venv with the dev extra (bitsandbytes), .gpu/minilm-fp16 and .gpu/data (experiments/offline/common.sh).
# Writes: $OUT/results.jsonl (a row per run, in device_run.sh's format), $OUT/reports/<run>.json, logs.
set -uo pipefail
W=${W:-/tmp/eff-cpu-qlora}
export PATH=$PWD/.venv/bin:$PATH OUT=${OUT:-$W/out} RUNS=$W/runs D=${D:-.gpu/data}
source experiments/offline/common.sh
mkdir -p "$OUT/reports"
T0=$SECONDS
widen_minilm .gpu/minilm-fp16 "$W/minilm" || exit 1
[[ -s $W/teacher.trec ]] || python3 experiments/offline/teacher.py --model "$W/minilm" --out "$W/teacher.trec" \
  $D/*/retrieve_results_dl2[01].json.gz > "$OUT/teacher.log" 2>&1 || { tail -5 "$OUT/teacher.log"; exit 1; }
echo "teacher: $((SECONDS - T0)) s"
rc=0
for v in ${VARIANTS:-qlora16 lora16}; do  # QLoRA and, for the same-hardware comparison, plain LoRA of the same rank
  case $v in
    qlora16) tech="QLoRA r16 (NF4 base, lr 3e-4)" flags="--lora 16 --qlora" ;;
    lora16) tech="LoRA r16 (lr 3e-4)" flags="--lora 16" ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086  # POOLS, DEV and flags are lists of flags
  TECHNIQUE=$tech VARIANT_TIMEOUT=${VARIANT_TIMEOUT:-5400} variant "$v" minilm-distil $POOLS $DEV \
    --backbone "$W/minilm" --teacher "$W/teacher.trec" --epochs 10 --eval-every 140 $flags --lr 3e-4 --device cpu \
    || rc=1
  cp "$RUNS/$v/train_report.json" "$OUT/reports/$v.json" 2>/dev/null
  echo "$v: $((SECONDS - T0)) s"
done
exit $rc
