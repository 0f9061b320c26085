#!/usr/bin/env bash
# The efficiency table (issue 15) on the lent GPU, one call of the device tool (at most ~520 s: every step is
# time-boxed, the most important first, and each appends one JSON line to $OUT/results.jsonl as it ends, so a
# call cut short still returns what it did). On the offline recipe (experiments/offline/, the data and weights
# described in experiments/offline/common.sh), DL19 BM25 top-100 as the test set:
#   1. the bi-encoder teacher run (experiments/offline/teacher.py) over every training pool;
#   2. FULL: MiniLM-L6 cross-encoder, Margin-MSE from the bi-encoder (minilm-distil), 10 epochs;
#   3. PRUNED: FULL with 6 of 12 heads and half the FFN channels per layer (rerank prune), + 3 recovery epochs;
#   4. STUDENT: FULL as a cross-encoder teacher (rerank teacher) of FULL's layers pruned to 3 of 6, Margin-MSE,
#      10 epochs; then (time allowing) the same 3 layers with 3 recovery epochs on the bi-encoder teacher;
#   5. LoRA r 8, 16, 64 (lr 3e-4) on the same recipe, 10 epochs;
#   6. experiments/efficiency/run.py on every saved model, fp32 and int8, on the GPU ($OUT/efficiency.json);
#      then FULL and STUDENT on the CPU at depth $CPU_DEPTH ($OUT/efficiency-cpu.json).
# The time left for step 6 is held back from steps 1-5 (their boxes shrink, and a step without time is skipped
# with a line saying so). Training reports, pruning reports, logs: $OUT/reports/, $OUT/<step>.log.
# Table and plot from what comes back: python experiments/efficiency/render.py RESULTS_FOLDER.
#
# Usage (GPU, repository root; carried: .whl .gpu/minilm-fp16 .gpu/data):
#   bash experiments/efficiency/device_run.sh
# Dry run on a CPU (the same steps, commands and paths; the real MiniLM widened, 1 epoch, depth 10, the data cut
# to its first $DRY_QUERIES queries a year and top $DRY_HITS hits: the CPU scores ~20 pairs/s):
#   DRY=1 bash experiments/efficiency/device_run.sh
set -uo pipefail
T0=$SECONDS
if [[ ${DRY:-0} == 1 ]]; then
  W=${DRY_DIR:-/tmp/eff-dry}
  rm -rf "$W" && mkdir -p "$W"
  export PATH=$PWD/.venv/bin:$PATH OUT=${OUT:-$W/out} RUNS=$W/runs D=$W/data
  MINILM=$W/minilm TEACHER=$W/teacher.trec CE_TEACHER=$W/ce-teacher.trec GPU=cpu
  TOTAL=${TOTAL:-100000} SCALE=${SCALE:-6} DEPTH=10 CPU_DEPTH=10
  export TRAIN_EXTRA="--epochs 1 --eval-depth 10"
  python3 - .gpu/data "$D" "${DRY_QUERIES:-16}" "${DRY_HITS:-12}" <<'EOF'
import gzip, json, shutil, sys
from pathlib import Path
src, dst, queries, hits = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for f in src.rglob("*"):
    out = dst / f.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    if f.name.endswith(".json.gz"):  # the same queries in every system's file of a year: the smallest qids
        entries = sorted(json.load(gzip.open(f, "rt")), key=lambda e: int(e["hits"][0]["qid"]) if e["hits"] else 1 << 60)[:queries]
        with gzip.open(out, "wt") as g:
            json.dump([{**e, "hits": e["hits"][:hits]} for e in entries], g)
    elif f.is_file():
        shutil.copy(f, out)
EOF
else
  MINILM=/tmp/minilm TEACHER=/tmp/teacher.trec CE_TEACHER=/tmp/ce-teacher.trec GPU=cuda
  TOTAL=${TOTAL:-520} SCALE=1 DEPTH=100 CPU_DEPTH=${CPU_DEPTH:-20}
fi
source experiments/offline/common.sh
mkdir -p "$OUT/reports"
CONFIG=minilm-distil
MIN_BOX=15  # seconds: a step given less is skipped

line() {  # key=value ... -> one JSON line in $OUT/results.jsonl (a value is JSON where it parses, @FILE: its JSON)
  python3 - "$@" <<'EOF' >> "$OUT/results.jsonl"
import json, sys
from pathlib import Path
out = {}
for arg in sys.argv[1:]:
    key, value = arg.split("=", 1)
    if value.startswith("@"):
        value = json.loads(Path(value[1:]).read_text()) if Path(value[1:]).is_file() else None
    else:
        try:
            value = json.loads(value)
        except ValueError:
            pass
    out[key] = value
print(json.dumps(out))
EOF
}

box() {  # cap, reserve (seconds, GPU scale) -> the step's time box: the cap, or what is left before the reserve
  local t=$(( TOTAL - (SECONDS - T0) - $2 * SCALE )) cap=$(( $1 * SCALE ))
  (( t > cap )) && t=$cap
  (( t < MIN_BOX )) && t=0
  echo "$t"
}

step() {  # name, cap, reserve, technique, command... (a step other than training: its log, one line)
  local name=$1 t start=$SECONDS technique=$4; t=$(box "$2" "$3"); shift 4
  if (( t == 0 )); then line step="$name" skipped="no time left" left=$((TOTAL - SECONDS + T0)); return 1; fi
  echo "=== $name (box ${t}s)"
  timeout -k 5 "$t" "$@" > "$OUT/$name.log" 2>&1
  local rc=$? extra=()
  if [[ -f $RUNS/$name/pruning.json ]]; then  # a pruned model
    extra=("model_dir=$RUNS/$name" "pruning=@$RUNS/$name/pruning.json")
    cp "$RUNS/$name/pruning.json" "$OUT/reports/$name.pruning.json"
  fi
  line step="$name" rc=$rc seconds=$((SECONDS - start)) box="$t" technique="$technique" "${extra[@]}" "command=$*"
  tail -2 "$OUT/$name.log"
  return "$rc"
}

train() {  # name, cap, reserve, technique, flags of rerank train... (one `variant` of common.sh, time-boxed)
  local name=$1 t technique=$4; t=$(box "$2" "$3"); shift 4
  if (( t == 0 )); then line variant="$name" skipped="no time left" left=$((TOTAL - SECONDS + T0)); return 1; fi
  TECHNIQUE=$technique VARIANT_TIMEOUT=$t variant "$name" "$CONFIG" "$@"
  local rc=$?
  cp "$RUNS/$name/train_report.json" "$OUT/reports/$name.json" 2>/dev/null
  return "$rc"
}

have() { [[ -f $1/reranker_config.json ]]; }  # a saved cross-encoder folder

needs() {  # name, paths...: true where each is there (a saved model folder, a non-empty file); else a line
  local name=$1 p; shift
  for p; do
    if ! { have "$p" || [[ -f $p && -s $p ]]; }; then line step="$name" skipped="needs $p"; return 1; fi
  done
}

# --- set-up: wheels, the fp32 MiniLM, the card and software
[[ ${DRY:-0} == 1 ]] || { setup_site || exit 1; }
widen_minilm .gpu/minilm-fp16 "$MINILM" || exit 1
line step=setup seconds=$((SECONDS - T0)) date="$(date -u +%F)" software="$(python3 -c '
import json, platform, importlib.metadata as m
def version(p):
    try:
        return m.version(p)
    except m.PackageNotFoundError:
        return None
print(json.dumps({p: version(p) for p in ("torch", "transformers", "peft", "sentence-transformers", "ranx")}
                 | {"python": platform.python_version()}))')" \
  card="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
          || lscpu | sed -n 's/^Model name: *//p')" cpus="$(nproc)"

# Reserves (seconds held back for what follows, at GPU scale): the two efficiency steps take ~150 s.
EFF=150
# 1. the bi-encoder teacher run over every training pool
step teacher 90 $EFF "" python3 experiments/offline/teacher.py --model "$MINILM" --out "$TEACHER" \
  $D/*/retrieve_results_dl2[01].json.gz
# 2. FULL
needs full "$TEACHER" && train full 200 $EFF "FULL: MiniLM-L6, Margin-MSE from the bi-encoder" \
  $POOLS $DEV --backbone "$MINILM" --teacher "$TEACHER" --epochs 10 --eval-every 28
F=$RUNS/full/model P=$RUNS/pruned-h6-f05 L=$RUNS/layers3
# 3. PRUNED (heads and FFN), then its recovery
needs pruned-h6-f05 "$F" && step pruned-h6-f05 30 $EFF "FULL pruned: 6/12 heads, 1/2 FFN (no recovery)" \
  python3 -m rerankers.cli prune --model "$F" --out "$P" --heads-per-layer 6 --ffn-keep 0.5
needs pruned-h6-f05-ft "$P" && train pruned-h6-f05-ft 90 $EFF "PRUNED: 6/12 heads, 1/2 FFN, + recovery" \
  $POOLS $DEV --backbone "$P" --teacher "$TEACHER" --epochs 3 --eval-every 28
# 4. STUDENT: FULL's scores as the teacher of FULL's 3 layers; then those 3 layers' plain recovery
needs ce-teacher "$F" && step ce-teacher 60 $EFF "" python3 -m rerankers.cli teacher --model "$F" \
  --candidates $POOL_FILES --out "$CE_TEACHER" --device $GPU
needs layers3 "$F" && step layers3 30 $EFF "FULL pruned: 3/6 layers (no recovery)" \
  python3 -m rerankers.cli prune --model "$F" --out "$L" --layers-keep 3
needs student-l3 "$CE_TEACHER" "$L" && train student-l3 120 $EFF \
  "STUDENT: FULL's 3/6 layers, Margin-MSE from FULL's scores" \
  $POOLS $DEV --backbone "$L" --teacher "$CE_TEACHER" --epochs 10 --eval-every 28
needs layers3-ft "$L" && train layers3-ft 60 $EFF "FULL pruned: 3/6 layers, + recovery (bi-encoder teacher)" \
  $POOLS $DEV --backbone "$L" --teacher "$TEACHER" --epochs 3 --eval-every 28
# 5. LoRA
for r in 8 16 64; do
  needs lora$r "$TEACHER" && train lora$r 100 $EFF "LoRA r$r (lr 3e-4)" \
    $POOLS $DEV --backbone "$MINILM" --teacher "$TEACHER" --epochs 10 --eval-every 28 --lora $r --lr 3e-4
done
# 6. the efficiency rows: every saved model on the GPU (most important first), FULL and STUDENT on the CPU
MODELS=()
for m in "$F" "$RUNS/pruned-h6-f05-ft/model" "$RUNS/student-l3/model" "$RUNS/lora16/model" "$P" "$L" \
         "$RUNS/layers3-ft/model" "$RUNS/lora8/model" "$RUNS/lora64/model"; do
  have "$m" && MODELS+=("$m")
done
EFF_ARGS=(--quantize none int8 --candidates "$D/BM25/retrieve_results_dl19.json.gz"
          --qrels "$D/qrels/qrels.dl19-passage.txt")
if (( ${#MODELS[@]} )); then
  step efficiency 100 50 "" python3 experiments/efficiency/run.py --model "${MODELS[@]}" "${EFF_ARGS[@]}" \
    --device $GPU --depth $DEPTH --out "$OUT/efficiency.json"
else
  line step=efficiency skipped="no saved model"
fi
CPU_MODELS=()
for m in "$F" "$RUNS/student-l3/model"; do have "$m" && CPU_MODELS+=("$m"); done
if (( ${#CPU_MODELS[@]} )); then
  step efficiency-cpu 50 0 "" python3 experiments/efficiency/run.py --model "${CPU_MODELS[@]}" "${EFF_ARGS[@]}" \
    --device cpu --depth $CPU_DEPTH --out "$OUT/efficiency-cpu.json"
else
  line step=efficiency-cpu skipped="no saved model"
fi
line step=end seconds=$((SECONDS - T0))
echo "done in $((SECONDS - T0)) s"
