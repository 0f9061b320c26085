# Shared by the device scripts of experiments/ (sourced, not run): experiments/offline/device_run.sh and
# experiments/efficiency/device_run.sh. Run from the repository root. What it defines:
#   setup_site     the carried wheels (.whl/: ranx and its dependencies, which the GPU image lacks) into
#                  /tmp/site, on PYTHONPATH with the working tree;
#   widen_minilm   .gpu/minilm-fp16 (fp16: the fp32 file exceeds what one call carries) -> /tmp/minilm in fp32;
#   D, TRAIN, POOLS, DEV   the data flags of `rerank train` over the carried copies (gzipped) of ../shared/data:
#                  TRAIN the BM25 pools of DL20 + DL21, POOLS every system's pools, DEV DL19 BM25 top-100;
#   variant NAME CONFIG FLAGS...   one `rerank train` run in $RUNS/NAME (log in $OUT/NAME.log), and one JSON
#                  line of what it gave appended to $OUT/results.jsonl.
# Settings read (environment, with defaults): OUT (/tmp/out), D (.gpu/data), RUNS (/tmp/runs), VARIANT_TIMEOUT
# (400 s: each run's time box), TRAIN_EXTRA (flags appended to every run, empty; a dry run shortens them),
# TECHNIQUE (a label for the run's results line, none by default).
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OUT=${OUT:-/tmp/out}
export D=${D:-.gpu/data}
export RUNS=${RUNS:-/tmp/runs}
mkdir -p "$OUT" "$RUNS"

setup_site() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || return 1
  export PYTHONPATH=/tmp/site:$PWD
}

widen_minilm() {  # [src] [dst]
  python3 - "${1:-.gpu/minilm-fp16}" "${2:-/tmp/minilm}" <<'EOF'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst, dirs_exist_ok=True)
state = load_file(src / "model.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, dst / "model.safetensors",
          metadata={"format": "pt"})
EOF
}

TRAIN="--train $D/BM25/retrieve_results_dl20.json.gz $D/BM25/retrieve_results_dl21.json.gz
       --train-qrels $D/qrels/qrels.dl20-passage.txt $D/qrels/qrels.dl21-passage.txt"
POOLS="--train $D/BM25/retrieve_results_dl20.json.gz $D/BM25_RM3/retrieve_results_dl20.json.gz
       $D/D_BERT_KD_TASB/retrieve_results_dl20.json.gz $D/OPEN_AI_ADA2/retrieve_results_dl20.json.gz
       $D/SPLADE_P_P_ENSEMBLE_DISTIL/retrieve_results_dl20.json.gz $D/REP_LLAMA/retrieve_results_dl20.json.gz
       $D/BM25/retrieve_results_dl21.json.gz $D/BM25_RM3/retrieve_results_dl21.json.gz
       $D/SPLADE_P_P_ENSEMBLE_DISTIL/retrieve_results_dl21.json.gz
       --train-qrels $D/qrels/qrels.dl20-passage.txt $D/qrels/qrels.dl20-passage.txt $D/qrels/qrels.dl20-passage.txt
       $D/qrels/qrels.dl20-passage.txt $D/qrels/qrels.dl20-passage.txt $D/qrels/qrels.dl20-passage.txt
       $D/qrels/qrels.dl21-passage.txt $D/qrels/qrels.dl21-passage.txt $D/qrels/qrels.dl21-passage.txt"
DEV="--eval-candidates $D/BM25/retrieve_results_dl19.json.gz --eval-qrels $D/qrels/qrels.dl19-passage.txt"
# the files of POOLS, for the scripts that score them (teacher runs)
POOL_FILES=$(echo $POOLS | sed -e 's/--train-qrels.*//' -e 's/--train //')

variant() {  # name, config (a name of experiments/offline/ or a .yaml path), extra flags...
  local name=$1 config=$2 start=$SECONDS; shift 2
  [[ $config == *.yaml ]] || config=experiments/offline/$config.yaml
  echo "=== $name"
  # shellcheck disable=SC2086  # TRAIN_EXTRA is a list of flags
  timeout "${VARIANT_TIMEOUT:-400}" python3 -m rerankers.cli train --config "$config" --out "$RUNS/$name" \
    "$@" ${TRAIN_EXTRA:-} > "$OUT/$name.log" 2>&1
  local rc=$?
  python3 - "$name" "$rc" "$* ${TRAIN_EXTRA:-}" "$((SECONDS - start))" <<'EOF' >> "$OUT/results.jsonl"
import json, os, sys
from pathlib import Path
name, rc, flags, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
run = Path(os.environ.get("RUNS", "/tmp/runs"), name)
rep = run / "train_report.json"
line = {"variant": name, "rc": rc, "flags": " ".join(flags.split()), "seconds": seconds}
if os.environ.get("TECHNIQUE"):  # what the row of a table calls it (experiments/efficiency/render.py)
    line["technique"] = os.environ["TECHNIQUE"]
if rep.is_file():
    r = json.loads(rep.read_text())
    line.update(dev=r["quality"]["final_dev"], curve=[(h["step"], h["dev"]) for h in r["quality"]["dev_history"]],
                throughput=r["throughput"], final_loss=r["final_loss"], params=r["model"]["parameters"],
                trainable_params=r["model"].get("trainable_parameters"), queries=r["data"]["training_queries"],
                steps=r["data"]["steps"], model_dir=str(run / "model"))
else:
    line["error"] = Path(os.environ.get("OUT", "/tmp/out"), f"{name}.log").read_text()[-1500:]
print(json.dumps(line))
EOF
  tail -3 "$OUT/$name.log"
  return "$rc"
}
