#!/usr/bin/env bash
# The `rerank bench` suite on the lent GPU, anchors included, in two device calls less than 30 s apart (the
# machine, and the anchors' build in /tmp, stay only while calls follow each other within its idle time):
#   bash benchmarks/gpu_suite.sh first   starts the anchors' CUDA build in the background (setsid: it outlives the
#                                        call; ~6 min), then `rerank bench train` of ours and transformers' rows
#   bash benchmarks/gpu_suite.sh second  waits for the build, then the mamba-ssm training rows, inference on DL19
#                                        BM25 top-100, the length sweep and the profiles, with every anchor
#   bash benchmarks/gpu_suite.sh levers  then anchored, two calls < 30 s apart (the third session of 2026-12-01):
#                                        the rows the first pair missed, issue 13's opt-in levers (scan state
#                                        recompute, static shapes + CUDA graphs) beside their defaults, then every
#                                        anchor in inference / scaling / profile, the new backbones, LoRA rows
#                                        and the Triton SSD
#   bash benchmarks/gpu_suite.sh build   the anchors' build alone, in the background, then another script in the
#                                        same call (experiments/efficiency/device_run.sh), then within 30 s
#   bash benchmarks/gpu_suite.sh finish  what levers + anchored left: the compiled static step, the recompute checks,
#                                        the rest of the inference anchors, the length sweep with anchors
#   bash benchmarks/gpu_suite.sh qlora-static  then sweep (< 30 s apart): what the third session left: QLoRA rows
#                                        (carry .whl-qlora), the compiled static step, mamba-370m one at a time, an
#                                        inference profile (packed vs padded, wall vs kernel time), then
#                                        the search-depth floor off and on, the Triton SSD beside mamba_ssm's and
#                                        the length sweep with every anchor
#   bash benchmarks/gpu_suite.sh smoke   the build in the background and a short real-size run of every mode
#   bash benchmarks/gpu_suite.sh leftover  (fourth session) what qlora-static's boxes cut, and Mamba-2 on the Triton
#                                        SSD; full logs in $OUT
#   bash benchmarks/gpu_suite.sh fifth   the scan's windows against whole waves, then packed attention backends at
#                                        the training shapes (bench_attention.py)
#   bash benchmarks/gpu_suite.sh windows (fifth session) the run-time window fitted to waves: GPU checks, windows and
#                                        fixed shapes beside the fourth session's kernels (carry .gpu/old) and
#                                        mamba-ssm's scan (built in the background)
#   bash benchmarks/gpu_suite.sh windows2 the same for the hybrid that followed (forward windows as before, the
#                                        backward's fitted at run time), then the training step against .gpu/old
#   bash benchmarks/gpu_suite.sh windows3 the step at 256 pairs again (mamba-130m, mamba-370m + bert-large)
#   bash benchmarks/gpu_suite.sh sixth   (sixth session) the untimed ScanConfig levers: fit_fwd, register caps; then
#                                        bert-base packed beside transformers by kernel class at L2048 x 8
#   bash benchmarks/gpu_suite.sh verify6 the sixth session's default (block_t 4, fit_fwd, registers 128): checks,
#                                        kernel timings beside the fifth's, the step at 256 pairs with BERT beside
#   bash benchmarks/gpu_suite.sh final6  BERT's dense path for equal lengths (checks, timings, profile, sweep), then
#                                        the fixed shapes beside mamba-ssm's scan (built in the background)
#   bash benchmarks/gpu_suite.sh seventh (next session) Mamba's recompute mode beside packed (speed, memory), BERT after
#                                        the squeeze beside transformers; then seventh2 (< 30 s later): the 64-pair
#                                        rows with the mamba-ssm anchor, packed inference of mamba-130m and bert-base,
#                                        the 64-pair steps' host time by Python function (bench profile --host)
#   bash benchmarks/gpu_suite.sh eighth  the CUDA tests while the anchors build; then eighth2 (< 30 s later): issue
#                                        13's ratios in one run with both anchors
#   bash benchmarks/gpu_suite.sh ninth   (eighth session) the walks' instruction cuts against .gpu/old; then ninth2
#                                        (profiles); ninth3 (direct launches, all four backbones); ninth4 (host cuts)
#   bash benchmarks/gpu_suite.sh tenth   (ninth session) the no-wait step: CUDA no-sync tests, find_syncs.py, the
#                                        step timed back to back and synchronised, beside .gpu/old; then tenth2 (the
#                                        anchors' build with the CUDA tests and kernel checks) and tenth3 (< 30 s
#                                        later): every ratio of issue 13 in one run with both anchors
#   bash benchmarks/gpu_suite.sh twelfth (eleventh session) the split backward walk timed: the disk cache warmed by
#                                        parallel compiles, then the scan's variants and mamba-130m's step, off and on;
#                                        twelfth2 (the same, graphed), twelfth3 / twelfth4 (inference from CUDA graphs)
#   next session: twelfth4 first (its graphed GPU test's final form has not run on the card)
# Each mode is time-boxed (timeout -s INT): rows are saved as they come and a cut-off run is marked interrupted.
# Carry: .anchors (mamba-ssm and causal-conv1d sdists from PyPI), .whl (ranx & co, which the image lacks),
# .gpu/tok (MiniLM's tokenizer files, for real texts), .gpu/data/BM25. Results: $OUT/results.tar.gz (the
# bench_<mode>.{json,md,png} files; unpack into benchmarks/results/ and run benchmarks/render.py) and logs.
set -uo pipefail
STAGE=${1:?usage: gpu_suite.sh first|second|levers|anchored|build|finish|qlora-static|sweep|leftover|fifth|windows|windows2|windows3|sixth|verify6|final6|seventh|seventh2|seventh3|seventh4|seventh5|seventh6|eighth|eighth2|ninth|ninth2|ninth3|ninth4|tenth|tenth2|tenth3|tenth4|eleventh|twelfth|twelfth2|twelfth3|twelfth4|smoke}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}
A=/tmp/anchors
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  $(ls .whl-qlora/*.whl 2>/dev/null) || exit 1  # .whl-qlora: bitsandbytes (43 MB), carried only for --qlora
export PYTHONPATH=$A/site:/tmp/site:$PWD
# the device copy's git metadata is stale: stamp the reports with the commit written before the call
# (`git describe --always --dirty > .gpu/COMMIT`, carried)
[ -f .gpu/COMMIT ] && export RERANKERS_COMMIT="$(cat .gpu/COMMIT)"
R="python3 -m rerankers.cli"
CAND=.gpu/data/BM25/retrieve_results_dl19.json.gz
RES=/tmp/results
mkdir -p $RES
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader

start_build() {
  if [ ! -e $A/STARTED ]; then
    mkdir -p $A && touch $A/STARTED
    setsid nohup python3 benchmarks/build_anchors.py --sdists .anchors --out $A > $A/build.log 2>&1 < /dev/null &
  fi
}
wait_build() {
  start_build
  local t0=$SECONDS
  local limit=${WAIT_BUILD_S:-600}  # a fresh machine builds for ~7 min; `all` waits at most 60 s, then runs without
  while [ ! -e $A/DONE ] && [ ! -e $A/FAILED ] && [ $((SECONDS - t0)) -lt $limit ]; do sleep 5; done
  echo "anchors build: waited $((SECONDS - t0)) s; $(cat $A/build.log | tr '\n' ' ')"
  cp $A/build.log "$OUT/anchors_build.log"
  python3 -c "import mamba_ssm, causal_conv1d; from mamba_ssm.ops.selective_scan_interface import causal_conv1d_fn; \
print('mamba_ssm', mamba_ssm.__version__, 'causal_conv1d_fn', causal_conv1d_fn is not None)" 2>&1 | tail -3
}
F='^WARNING rerankers.bench.build|it/s\]|^$'
# the test suite's CUDA paths on the card, compiled: CUDA_VISIBLE_DEVICES_FOR_TESTS keeps tests/conftest.py from
# setting TRITON_INTERPRET (without it, the eighth stage ran the whole suite in the interpreter for 420 s); only the
# tests that put tensors on the GPU
gpu_tests() {
  CUDA_VISIBLE_DEVICES_FOR_TESTS=1 timeout ${1:-150} python3 -m pytest -q -p no:cacheprovider -rs \
    tests/models/test_packed_invariants.py tests/models/test_bert_backbone.py tests/models/test_mamba.py tests/kernels/test_triton_launch.py \
    -k "gpu or direct_flash or direct_launch or triton_backend_matches or (recompute_rebuilds and triton)" 2>&1 | tail -8
}
laps() {  # each row's timed laps (ms), from a bench_train.json folder
  python3 -c "import json,sys; [print(r['backbone'], r['impl'], r['pairs'], 'mean', round(r['ms'], 1), 'median',
    round(r.get('median_ms', 0), 1), 'laps', r.get('lap_ms')) for r in json.load(open(sys.argv[1]))['rows']]" \
    $1/bench_train.json
}
pack() { tar czf "$OUT/results.tar.gz" -C $RES . ; ls -la $RES/*; }
# Triton's disk cache filled by processes compiling at once, in the background (the caller waits): the split walk's
# lever variants at every timed shape (bench_kernels.py --warm), and bench infer's packed and graphed rows
warm_levers() {
  for lv in default split "split reg168" "split bh2"; do
    timeout -s INT 200 python3 benchmarks/bench_kernels.py --only levers10 --levers "$lv" --no-lever-checks --warm \
      --out /tmp/warm-"${lv// /_}" > $OUT/warm-"${lv// /_}".log 2>&1 &
  done
}
warm_infer() {
  for b in mamba-130m bert-base; do
    timeout -s INT 200 $R bench infer --backbone $b --modes packed graphed --anchors none --repeats 1 --no-plots \
      --out /tmp/warm-infer-$b > $OUT/warm-infer-$b.log 2>&1 &
  done
}
# the fourth session's checkout (.gpu/old: `git archive <commit> rerankers | tar -x -C .gpu/old`, carried): scripts see
# it through PYTHONPATH, but `python3 -m` puts the working directory first, so its CLI runs from inside that folder
OLD="env -u RERANKERS_COMMIT PYTHONPATH=$PWD/.gpu/old:$PYTHONPATH"
OLD_CLI="env -u RERANKERS_COMMIT -C .gpu/old PYTHONPATH=$PYTHONPATH python3 -m rerankers.cli"
# mamba-ssm's selective_scan_cuda alone (~2.5 min with 14 jobs), in the background, into $MB (DONE / FAILED at the end)
MB=/tmp/mb
build_scan_bg() {
  mkdir -p $MB
  tar xzf .anchors/mamba_ssm-*.tar.gz -C /tmp
  local src; src=$(ls -d /tmp/mamba_ssm-*/ | head -1)
  (MAX_JOBS=14 setsid nohup python3 benchmarks/bench_kernels.py --build-mamba "$src" --mamba-ext $MB > $MB/build.log 2>&1 \
     && touch $MB/DONE || touch $MB/FAILED) < /dev/null &
}

case $STAGE in
smoke)
  start_build
  $R bench train --backbone mamba-130m bert-base t5-base --pairs 64 --steps 3 --warmup 1 --single-steps 1 \
     --anchors transformers --out $RES/smoke-train --no-plots 2>&1 | grep -Ev "$F" | tail -40
  $R bench infer --backbone mamba-130m bert-base --candidates $CAND --tokenizer .gpu/tok --depth 10 --repeats 1 \
     --anchors transformers sentence-transformers --out $RES/smoke-infer --no-plots 2>&1 | grep -Ev "$F" | tail -25
  $R bench scaling --backbone mamba-130m bert-base --min-length 1024 --max-length 16384 --steps 2 --warmup 1 \
     --anchors transformers --out $RES/smoke-scaling --no-plots 2>&1 | grep -Ev "$F" | tail -20
  $R bench profile --backbone mamba-130m --pairs 64 --steps 2 --out $RES/smoke-profile --no-plots 2>&1 | tail -12
  pack ;;
first)
  start_build
  timeout -s INT 540 $R bench train --backbone bert-base mamba-130m bert-large mamba-370m t5-base --pairs 64 256 \
     --anchors transformers --out $RES/train 2>&1 | grep -Ev "$F" | grep -v "^|" | tail -40
  pack ;;
second)
  WAIT_BUILD_S=240 wait_build
  timeout -s INT 130 $R bench train --backbone mamba-130m mamba-370m --pairs 64 256 --modes packed \
     --anchors mamba-ssm --out $RES/train-mamba-ssm 2>&1 | grep -Ev "$F" | grep "^|" | tail -12
  timeout -s INT 150 $R bench infer --backbone mamba-130m bert-base --candidates $CAND --tokenizer .gpu/tok \
     --depth 100 --out $RES/infer 2>&1 | grep -Ev "$F" | grep "^|" | tail -14
  timeout -s INT 150 $R bench scaling --backbone mamba-130m bert-base --out $RES/scaling 2>&1 | grep "^|" | tail -40
  timeout -s INT 80 $R bench profile --backbone mamba-130m bert-base --anchors mamba-ssm transformers \
     --out $RES/profile 2>&1 | grep "^|" | head -8
  pack ;;
levers)  # one call: the build in the background, the rows the first pair of calls missed (t5-base, mamba-370m
         # single), then issue 13's opt-in levers each beside its default in this call
  start_build
  timeout -s INT 150 $R bench train --backbone t5-base --pairs 64 256 --anchors transformers --out $RES/train-t5 \
     2>&1 | grep "^|" | tail -8
  timeout -s INT 60 $R bench train --backbone mamba-370m --pairs 64 --modes packed single --anchors none \
     --out $RES/train-single-370m 2>&1 | grep "^|" | tail -4
  timeout -s INT 50 python3 benchmarks/bench_kernels.py --only recompute --skip-check --out $RES/recompute 2>&1 | tail -8
  # every chunk-start state kept (the default until this run), then recompute_states (the default since)
  RERANKERS_SCAN_RECOMPUTE=0 timeout -s INT 70 $R bench train --backbone mamba-370m bert-large --pairs 256 \
     --modes packed --anchors none --out $RES/train-default 2>&1 | grep "^|" | tail -4
  RERANKERS_SCAN_RECOMPUTE=1 timeout -s INT 50 $R bench train --backbone mamba-370m --pairs 256 --modes packed \
     --anchors none --out $RES/train-recompute 2>&1 | grep "^|" | tail -3
  timeout -s INT 150 $R bench train --backbone mamba-130m bert-large --pairs 64 256 --modes packed static \
     --anchors none --compile reduce-overhead --warmup 8 --steps 20 --out $RES/train-static 2>&1 | grep "^|" | tail -8
  pack ;;
anchored)  # the next call (< 30 s later, the build done): every anchor beside ours in inference, length scaling and
           # the profiles; the new backbones and LoRA rows; the Triton SSD against mamba_ssm's
  WAIT_BUILD_S=120 wait_build
  timeout -s INT 120 $R bench infer --backbone mamba-130m bert-base --candidates $CAND --tokenizer .gpu/tok \
     --depth 100 --out $RES/infer 2>&1 | grep -Ev "$F" | grep "^|" | tail -14
  timeout -s INT 120 $R bench scaling --backbone mamba-130m bert-base --out $RES/scaling 2>&1 | grep "^|" | tail -40
  timeout -s INT 60 $R bench profile --backbone mamba-130m bert-base --anchors mamba-ssm transformers \
     --out $RES/profile 2>&1 | grep "^|" | head -8
  timeout -s INT 100 $R bench train --backbone mamba-130m mamba2-130m pythia-160m opt-125m bert-base lstm-2x512 \
     --pairs 64 256 --modes packed --anchors none --out $RES/train-backbones 2>&1 | grep "^|" | tail -14
  timeout -s INT 70 $R bench train --backbone mamba-130m bert-base --pairs 256 --modes packed --anchors none \
     --lora 8 16 64 --out $RES/train-lora 2>&1 | grep "^|" | tail -10
  mkdir -p $RES/ssd-triton
  timeout -s INT 50 python3 benchmarks/bench_ssd_triton.py --pairs 64 256 --chunks 32 64 128 --out $RES/ssd-triton \
     2>&1 | tail -14
  pack ;;
build)  # only the anchors' build in the background (the call that runs something else meanwhile)
  start_build ;;
finish)  # the call after `build` + another (< 30 s later): what the pair before left (the compiled static step's
         # error, the recompute checks on the GPU, the remaining inference anchors, the length sweep with anchors)
  WAIT_BUILD_S=60 wait_build
  timeout -s INT 100 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed static \
     --anchors none --compile reduce-overhead --warmup 8 --steps 20 --out $RES/train-static 2>&1 \
     | grep -E "^\||WARNING rerankers.bench.train|Error" | tail -12
  timeout -s INT 60 python3 benchmarks/bench_kernels.py --only recompute-check --skip-check --out $RES/recompute-check \
     2>&1 | grep -E "check|CHECK" | tail -4
  timeout -s INT 70 $R bench infer --backbone bert-base --candidates $CAND --tokenizer .gpu/tok --depth 100 \
     --repeats 2 --anchors transformers sentence-transformers --out $RES/infer-bert 2>&1 | grep "^|" | tail -8
  timeout -s INT 110 $R bench scaling --backbone mamba-130m bert-base --min-length 1024 --max-length 16384 \
     --out $RES/scaling-anchors 2>&1 | grep "^|" | tail -24
  pack ;;
qlora-static)  # next: the build in the background; QLoRA / LoRA rows of the larger models (carry .whl-qlora too);
               # the compiled static step (its fake-kernel bug fixed); mamba-370m one at a time
  start_build
  timeout -s INT 120 $R bench train --backbone mamba-790m bert-large mamba-370m --pairs 64 --modes packed \
     --anchors none --lora 16 --qlora 16 --out $RES/train-qlora 2>&1 | grep -E "^\||WARNING rerankers.bench" | tail -12
  pack > /dev/null
  timeout -s INT 200 $R bench train --backbone mamba-130m bert-base bert-large --pairs 64 256 --modes packed static \
     --anchors none --compile reduce-overhead --warmup 8 --steps 20 --out $RES/train-static 2>&1 \
     | grep -E "^\||WARNING rerankers.bench" | tail -14
  pack > /dev/null
  timeout -s INT 90 $R bench train --backbone mamba-370m --pairs 64 --modes packed single --anchors none \
     --out $RES/train-single-370m 2>&1 | grep "^|" | tail -4
  pack > /dev/null
  # why our padded path beat our packed one at inference (third session): kernels vs wall time, both modes
  timeout -s INT 60 $R bench profile --backbone mamba-130m bert-base --step infer --modes packed padded \
     --out $RES/profile-infer 2>&1 | grep "^|" | head -8
  pack ;;
sweep)  # next, < 30 s after qlora-static: the search-depth floor off and on (LOG_S_MIN), the Triton SSD beside
        # mamba_ssm's, then the length sweep with every anchor (packed after each part: a cut-off call keeps them)
  WAIT_BUILD_S=60 wait_build  # mamba_ssm's Triton SSD, the anchor of ours, comes with the build
  mkdir -p $RES/log-s $RES/ssd-triton
  TRITON_CACHE_DIR=$(mktemp -d) timeout -s INT 150 python3 benchmarks/bench_kernels.py --only log-s --skip-check \
     --out $RES/log-s 2>&1 \
     | grep -E "LOG_S|CHECK|check|Error" | tail -24
  pack > /dev/null
  timeout -s INT 140 python3 benchmarks/bench_ssd_triton.py --pairs 64 256 --chunks 32 64 --out $RES/ssd-triton \
     2>&1 | tail -14
  pack > /dev/null
  timeout -s INT 190 $R bench scaling --backbone mamba-130m bert-base --min-length 512 --max-length 16384 \
     --out $RES/scaling-anchors 2>&1 | grep "^|" | tail -30
  pack ;;
leftover)  # a call on a fresh machine after those (fourth session), no anchors: what their boxes cut (QLoRA / LoRA
           # rows of the larger models, mamba-370m one at a time; into qlora-static's result folders) and Mamba-2
           # with the Triton SSD now its GPU default
  timeout -s INT 280 $R bench train --backbone bert-large mamba-790m --pairs 64 --modes packed --anchors none \
     --lora 16 --qlora 16 --out $RES/train-qlora > $OUT/train-qlora.log 2>&1; grep -E "^\|" $OUT/train-qlora.log | tail -8
  pack > /dev/null
  timeout -s INT 130 $R bench train --backbone mamba-370m --pairs 64 --modes packed single --anchors none \
     --out $RES/train-single-370m > $OUT/train-single.log 2>&1; grep "^|" $OUT/train-single.log | tail -3
  pack > /dev/null
  timeout -s INT 100 $R bench train --backbone mamba2-130m mamba-130m --pairs 64 256 --modes packed --anchors none \
     --out $RES/train-mamba2-triton > $OUT/train-mamba2.log 2>&1; grep "^|" $OUT/train-mamba2.log | tail -6
  pack ;;
fifth)  # (for the fifth session, one call) the scan's windows against whole waves (bench_kernels --only waves), then
        # which packed attention BERT's packed path should call: torch's varlen_attn (FlashAttention-2) vs SDPA over
        # jagged nested tensors (cuDNN / flash / efficient) vs padded SDPA (bench_attention.py)
  mkdir -p $RES/waves $RES/attention
  timeout -s INT 300 python3 benchmarks/bench_kernels.py --only waves --skip-check --out $RES/waves 2>&1 \
     | grep -E "^scan|waves|Error" | tail -60
  pack > /dev/null
  timeout -s INT 200 python3 benchmarks/bench_attention.py --out $RES/attention 2>&1 | grep -E "^check|tok/s" | tail -40
  pack ;;
windows)  # (fifth session) the scan's window fitted to whole waves at run time: the GPU checks, then the windows and
          # the fixed shapes with these kernels and with the fourth session's (.gpu/old: that checkout's rerankers/,
          # carried), mamba-ssm's scan built in the background for the fixed shapes
  mkdir -p $RES/windows $RES/windows-old $RES/windows-check
  build_scan_bg
  timeout -s INT 150 python3 benchmarks/bench_kernels.py --only scancheck --out $RES/windows-check 2>&1 \
     | grep -E "PASS|FAIL|Error|rror" | tail -40
  pack > /dev/null
  timeout -s INT 140 python3 benchmarks/bench_kernels.py --only waves --skip-check --out $RES/windows 2>&1 \
     | grep -E "^waves|Error" | tail -60
  pack > /dev/null
  timeout -s INT 140 $OLD python3 benchmarks/bench_kernels.py --only waves,fixed \
     --windows 0 --skip-check --out $RES/windows-old 2>&1 | grep -E "^waves|^scan fixed|Error" | tail -30
  pack > /dev/null
  timeout -s INT 110 python3 benchmarks/bench_kernels.py --only fixed --skip-check --mamba-ext $MB \
     --out $RES/windows-fixed 2>&1 | grep -E "fixed|Error|unavailable" | tail -30
  tail -3 $MB/build.log
  pack ;;
windows2)  # (fifth session, after windows) the hybrid: forward windows as before (powers of two, constexpr: 119
           # registers), the backward's fitted at run time where sequences are short; the same parts as windows,
           # then the training step, these kernels against the fourth session's (.gpu/old) in one call
  build_scan_bg
  timeout -s INT 120 python3 benchmarks/bench_kernels.py --only scancheck --out $RES/hybrid-check 2>&1 \
     | grep -E "PASS|FAIL|Error|rror" | tail -40
  pack > /dev/null
  timeout -s INT 70 python3 benchmarks/bench_kernels.py --only waves --windows 0 --skip-check --out $RES/hybrid 2>&1 \
     | grep -E "^waves|Error" | tail -10
  timeout -s INT 110 $OLD python3 benchmarks/bench_kernels.py --only waves,fixed --windows 0 --skip-check \
     --out $RES/hybrid-old 2>&1 | grep -E "^waves|^scan fixed|Error" | tail -12
  pack > /dev/null
  timeout -s INT 100 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed --anchors none \
     --out $RES/hybrid-train > $OUT/hybrid-train.log 2>&1; grep -E "^\|" $OUT/hybrid-train.log | tail -6
  timeout -s INT 70 $OLD_CLI bench train --backbone mamba-130m --pairs 64 256 --modes packed --anchors none \
     --out $RES/hybrid-train-old > $OUT/hybrid-train-old.log 2>&1; grep -E "^\|" $OUT/hybrid-train-old.log | tail -4
  pack > /dev/null
  timeout -s INT 80 python3 benchmarks/bench_kernels.py --only fixed --skip-check --mamba-ext $MB \
     --out $RES/hybrid-fixed 2>&1 | grep -E "fixed|Error|unavailable" | tail -12
  pack ;;
windows3)  # (fifth session, after windows2) the step at 256 pairs with D 2048 (mamba-370m beside bert-large), and
           # mamba-130m's step again, old checkout first this time (the spread between processes)
  timeout -s INT 60 $OLD_CLI bench train --backbone mamba-130m --pairs 256 --modes packed --anchors none \
     --out $RES/w3-130m-old > $OUT/w3-130m-old.log 2>&1; grep -E "^\| mamba" $OUT/w3-130m-old.log | tail -2
  timeout -s INT 60 $R bench train --backbone mamba-130m --pairs 256 --modes packed --anchors none \
     --out $RES/w3-130m > $OUT/w3-130m.log 2>&1; grep -E "^\| mamba" $OUT/w3-130m.log | tail -2
  pack > /dev/null
  timeout -s INT 120 $R bench train --backbone mamba-370m bert-large --pairs 256 --modes packed --anchors none \
     --out $RES/w3-370m > $OUT/w3-370m.log 2>&1; grep -E "^\|" $OUT/w3-370m.log | tail -3
  pack > /dev/null
  timeout -s INT 90 $OLD_CLI bench train --backbone mamba-370m --pairs 256 --modes packed --anchors none \
     --out $RES/w3-370m-old > $OUT/w3-370m-old.log 2>&1; grep -E "^\| mamba" $OUT/w3-370m-old.log | tail -2
  pack ;;
sixth)  # (for the sixth session, one call) the fifth session's untimed levers: ScanConfig.fit_fwd (the forward's
        # window fitted at run time), registers=128 (ptxas maxnreg: 4 forward programs per SM at a run-time window),
        # registers_bwd=168 (3 backward programs per SM instead of 2): GPU checks, kernel timings, then the step
        # with each through RERANKERS_SCAN_CONFIG (mamba-130m, 256 pairs)
  mkdir -p $RES/levers5
  timeout -s INT 200 python3 benchmarks/bench_kernels.py --only levers5 --out $RES/levers5 2>&1 \
     | grep -E "CHECK|check|^lever|Error" | tail -40
  pack > /dev/null
  for L in "" "fit_fwd=1,registers=128" "registers_bwd=168" "fit_fwd=1,registers=128,registers_bwd=168"; do
    D=$RES/levers5-step-$(echo "${L:-default}" | tr ',=' '-_')
    RERANKERS_SCAN_CONFIG="$L" timeout -s INT 60 $R bench train --backbone mamba-130m --pairs 256 --modes packed \
       --anchors none --out $D > $D.log 2>&1; echo "[$L] $(grep -E '^\| mamba' $D.log | tail -1)"
  done
  pack > /dev/null
  # where our BERT loses to transformers at equal lengths (0.68-0.90x; not its attention kernel: fifth session)
  timeout -s INT 80 $R bench profile --backbone bert-base --anchors transformers --pairs 8 --length 2048 \
     --out $RES/bert-profile-L2048 2>&1 | grep "^|" | head -24
  pack ;;
verify6)  # (sixth session, after sixth and benchmarks/ablate_scan_bwd.py) the new default (block_t 4, fit_fwd,
          # registers 128): GPU checks, kernel timings beside the fifth session's default at the training and fixed
          # shapes, then the step: mamba-130m with bert-base and mamba-370m with bert-large (one process each: the
          # ratios), and mamba-130m under the fifth session's default
  mkdir -p $RES/levers6
  timeout -s INT 260 python3 benchmarks/bench_kernels.py --only scancheck,levers6 --out $RES/levers6 2>&1 \
     | grep -E "CHECK|check|^lever|Error" | tail -60
  pack > /dev/null
  timeout -s INT 100 $R bench train --backbone mamba-130m bert-base --pairs 256 --modes packed --anchors none \
     --out $RES/v6-130m > $OUT/v6-130m.log 2>&1; grep -E "^\|" $OUT/v6-130m.log | tail -3
  pack > /dev/null
  RERANKERS_SCAN_CONFIG="block_t=8,fit_fwd=0,registers=0" timeout -s INT 60 $R bench train --backbone mamba-130m \
     --pairs 256 --modes packed --anchors none --out $RES/v6-130m-fifth > $OUT/v6-130m-fifth.log 2>&1
  grep -E "^\| mamba" $OUT/v6-130m-fifth.log | tail -1
  pack > /dev/null
  timeout -s INT 130 $R bench train --backbone mamba-370m bert-large --pairs 256 --modes packed --anchors none \
     --out $RES/v6-370m > $OUT/v6-370m.log 2>&1; grep -E "^\|" $OUT/v6-370m.log | tail -3
  pack ;;
final6)  # (sixth session, last call) mamba-ssm's scan built in the background while BERT's dense path for equal
         # lengths is checked and timed (bench_attention.py, the L2048 x 8 profile beside transformers, the length
         # sweep with transformers); then the fixed shapes, ours beside mamba-ssm's CUDA scan, same process
  build_scan_bg
  mkdir -p $RES/attention6
  timeout -s INT 70 python3 benchmarks/bench_attention.py --pairs 64 256 --lengths 512 2048 8192 \
     --systems varlen_attn "fused varlen" "padded sdpa" --out $RES/attention6 2>&1 | grep -E "check|tok/s" | tail -30
  pack > /dev/null
  timeout -s INT 80 $R bench profile --backbone bert-base --anchors transformers --pairs 8 --length 2048 \
     --out $RES/bert-profile-L2048-dense 2>&1 | grep "^|" | head -8
  pack > /dev/null
  timeout -s INT 100 $R bench scaling --backbone bert-base --anchors transformers --min-length 512 --max-length 8192 \
     --out $RES/scaling6 2>&1 | grep "^|" | tail -12
  pack > /dev/null
  timeout -s INT 240 python3 benchmarks/bench_kernels.py --only fixed --mamba-ext $MB --out $RES/fixed6 2>&1 \
     | grep -E "^scan fixed|^mamba-ssm|unavailable|Error" | tail -20
  tail -3 $MB/build.log
  pack ;;
seventh)  # (for the next session, one call of ~9 min; carry .whl .gpu/COMMIT .anchors) what the sixth session left
          # unmeasured: the anchors' build in the background (~7 min), meanwhile Mamba's recompute mode beside packed
          # (speed and peak memory, one process each: mamba-370m with bert-large, mamba-130m with bert-base), BERT's
          # step after the squeeze (ff19b07: 72 strided copies fewer) beside transformers at 64 and 256 pairs and its
          # profile (seventh2, next: the 64-pair targets with every anchor, once the build is done)
  start_build
  timeout -s INT 150 $R bench train --backbone mamba-370m bert-large --pairs 256 --modes packed recompute \
     --anchors none --out $RES/s7-370m > $OUT/s7-370m.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s7-370m.log | tail -4
  pack > /dev/null
  timeout -s INT 90 $R bench train --backbone mamba-130m bert-base --pairs 256 --modes packed recompute \
     --anchors none --out $RES/s7-130m > $OUT/s7-130m.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s7-130m.log | tail -4
  pack > /dev/null
  timeout -s INT 120 $R bench train --backbone bert-base bert-large --pairs 64 256 --modes packed \
     --anchors transformers --out $RES/s7-bert > $OUT/s7-bert.log 2>&1; grep -E "^\| bert" $OUT/s7-bert.log | tail -8
  pack > /dev/null
  timeout -s INT 60 $R bench profile --backbone bert-base --pairs 256 --modes packed --anchors transformers \
     --out $RES/s7-bert-profile 2>&1 | grep "^|" | head -4
  pack > /dev/null
  pack ;;
seventh2)  # (< 30 s after seventh, same machine: the anchors' build in /tmp) the 64-pair rows with the mamba-ssm
           # anchor, and packed inference of mamba-130m beside bert-base (the forward is 36% faster since the sixth)
  WAIT_BUILD_S=240 wait_build
  timeout -s INT 150 $R bench train --backbone mamba-130m mamba-370m --pairs 64 --modes packed --anchors mamba-ssm \
     --out $RES/s7-64-anchors > $OUT/s7-64.log 2>&1; grep -E "^\| mamba" $OUT/s7-64.log | tail -6
  pack > /dev/null
  timeout -s INT 90 $R bench profile --backbone mamba-130m bert-base --step infer --pairs 256 --modes packed \
     --anchors none --out $RES/s7-infer 2>&1 | grep "^|" | head -4
  pack > /dev/null
  # where the host-bound 64-pair steps spend their CPU (Triton launchers, autograd, custom-op dispatch)
  timeout -s INT 90 $R bench profile --backbone mamba-130m bert-base --pairs 64 --modes packed --anchors none \
     --host 25 --out $RES/s7-host64 2>&1 | grep "^|" | head -60
  pack ;;
seventh3)  # (carry .whl .gpu/COMMIT) after the recompute hooks' fix (no reference cycle, saved outputs detached): what
           # the peak holds by allocation site, each mode (benchmarks/peak_memory.py), and the 370m rows beside bert-large
  for b in mamba-130m mamba-370m; do
    timeout -s INT 120 python3 benchmarks/peak_memory.py --backbone $b --pairs 256 --out $RES/peak-$b.json 2>&1 \
      | grep -E "^==|^ +[0-9]" | head -36
  done
  timeout -s INT 170 $R bench train --backbone mamba-370m bert-large --pairs 256 --modes packed recompute \
     --anchors none --out $RES/s7-370m-fixed > $OUT/s7-370m-fixed.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s7-370m-fixed.log | tail -4
  pack ;;
seventh4)  # (carry .whl .gpu/COMMIT) BERT's packed attention through torch's flash kernels from our autograd.Function
           # (no custom-op dispatch, attention dropout kept): checks (fp32 reference, dropout's forward/backward mask),
           # kernel timings beside torch's varlen_attn, then the bert steps beside transformers and their host profile
  python3 -m pytest -q -p no:cacheprovider tests/models/test_bert_backbone.py -k direct_flash 2>&1 | tail -3
  timeout -s INT 90 python3 benchmarks/bench_attention.py --pairs 64 256 --lengths --systems varlen_attn "fused varlen" \
    "padded sdpa" --out $RES/s7-attention 2>&1 | grep -E "check|pairs" | head -20
  timeout -s INT 150 $R bench train --backbone bert-base bert-large --pairs 64 256 --modes packed \
     --anchors transformers --out $RES/s7-bert-direct > $OUT/s7-bert-direct.log 2>&1; grep -E "^\| bert" $OUT/s7-bert-direct.log | tail -8
  pack > /dev/null
  timeout -s INT 80 $R bench profile --backbone bert-base bert-large --pairs 64 --modes packed --anchors none --host 12 \
     --out $RES/s7-bert-host64 2>&1 | grep "^|" | head -50
  pack ;;
seventh5)  # (carry .whl .gpu/COMMIT) mamba-130m beside bert-base after both seventh-session fixes, one run
  timeout -s INT 230 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed recompute \
     --anchors none --out $RES/s7-130m-final > $OUT/s7-130m-final.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s7-130m-final.log | tail -8
  pack ;;
seventh6)  # (carry .whl with pytest's wheels, .gpu/COMMIT) the CUDA tests of this session's changes (direct flash, causal
           # too; the recompute hooks on the Triton path), packed inference after the direct flash call, and the
           # recompute mode's cost at 130m over more steps (1.5% and 9.3% in two calls)
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/models/test_bert_backbone.py tests/models/test_recompute.py \
    tests/models/test_mamba.py -k "direct_flash or recompute" 2>&1 | tail -4
  timeout -s INT 80 $R bench profile --backbone mamba-130m bert-base --step infer --pairs 256 --modes packed \
     --anchors none --out $RES/s7-infer-direct 2>&1 | grep "^|" | head -4
  pack > /dev/null
  timeout -s INT 120 $R bench train --backbone mamba-130m --pairs 256 --modes packed recompute --steps 30 \
     --anchors none --out $RES/s7-130m-recompute > $OUT/s7-130m-recompute.log 2>&1; grep -E "^\| mamba" $OUT/s7-130m-recompute.log | tail -2
  pack ;;
eighth)  # (carry .whl (with pytest's wheels) .gpu/COMMIT .anchors) the anchors' build in the background while the
         # test suite's CUDA paths run on the card (gpu_tests); then eighth2. (Its first run, in the eighth session,
         # ran all of tests/models and tests/kernels in the interpreter, 65% of it in 420 s: gpu_tests now.)
  start_build
  gpu_tests 240
  pack ;;
eighth2)  # (< 30 s after eighth) issue 13's ratios in one run, with both anchors: every backbone at 64 and 256 pairs,
          # packed, Mamba's recompute mode beside it, transformers' SDPA for BERT, mamba-ssm's CUDA Mamba
  WAIT_BUILD_S=200 wait_build
  timeout -s INT 520 $R bench train --backbone mamba-130m bert-base mamba-370m bert-large --pairs 64 256 \
     --modes packed recompute --anchors transformers mamba-ssm --out $RES/s8-train > $OUT/s8-train.log 2>&1
  grep -E "^\| (mamba|bert)" $OUT/s8-train.log | tail -20
  pack ;;
tenth)  # (ninth session; carry .whl (with bm25s, PyStemmer) .gpu/COMMIT .gpu/old = a22e3eb) no host wait inside a
        # step: the CUDA no-sync tests, the synchronising sites left (benchmarks/find_syncs.py), then mamba-130m and
        # bert-base at 64 and 256 pairs timed back to back (transformers' SDPA beside BERT), the same synchronised
        # around each step (RERANKERS_TIMING=synced), and .gpu/old's (a step that reads its loss; synced timing)
  CUDA_VISIBLE_DEVICES_FOR_TESTS=1 timeout 150 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/train/test_no_host_sync.py 2>&1 | tail -6
  timeout 120 python3 benchmarks/find_syncs.py --backbone mamba-130m bert-base --pairs 64 2>&1 | grep -v "^WARNING" | tail -30
  timeout -s INT 200 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed \
     --anchors transformers --out $RES/s9-train > $OUT/s9-train.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s9-train.log | tail -8
  laps $RES/s9-train
  pack > /dev/null
  RERANKERS_TIMING=synced timeout -s INT 120 $R bench train --backbone mamba-130m bert-base --pairs 64 256 \
     --modes packed --anchors none --out $RES/s9-train-synced > $OUT/s9-train-synced.log 2>&1
  grep -E "^\| (mamba|bert)" $OUT/s9-train-synced.log | tail -4
  pack > /dev/null
  timeout -s INT 120 $OLD_CLI bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed --anchors none \
     --out $RES/s9-train-old > $OUT/s9-train-old.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s9-train-old.log | tail -6
  pack ;;
twelfth)  # (eleventh session; carry .whl .gpu/COMMIT) the eleventh stage timed this time (its checks all passed on the
          # GPU; Triton's compiles ate its time boxes): Triton's disk cache filled first by processes compiling at
          # once (the split's variants at every timed shape; mamba-130m's step with the split off and on), then
          # the default scan beside split, split reg168 and split bh2, and mamba-130m (off, on) beside bert-base
  L="default,split,split reg168,split bh2"
  warm_levers
  timeout -s INT 200 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed --anchors none \
    --steps 1 --warmup 1 --no-plots --out /tmp/warm-train > $OUT/warm-train.log 2>&1 &
  RERANKERS_SCAN_CONFIG=bwd_split=1 timeout -s INT 200 $R bench train --backbone mamba-130m --pairs 64 256 \
    --modes packed --anchors none --steps 1 --warmup 1 --no-plots --out /tmp/warm-split > $OUT/warm-split.log 2>&1 &
  t0=$SECONDS; wait; echo "warm: $((SECONDS - t0)) s"; tail -qn 2 $OUT/warm-*.log | grep -v "^$"
  timeout -s INT 150 python3 benchmarks/bench_kernels.py --only levers10 --levers "$L" --no-lever-checks \
     --out $RES/s11-levers 2>&1 | grep -E "lever |rror" | tail -40
  pack > /dev/null
  timeout -s INT 110 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed --anchors none \
     --out $RES/s11-train > $OUT/s11-train.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s11-train.log | tail -6
  pack > /dev/null
  RERANKERS_SCAN_CONFIG=bwd_split=1 timeout -s INT 80 $R bench train --backbone mamba-130m --pairs 64 256 \
     --modes packed --anchors none --out $RES/s11-train-split > $OUT/s11-train-split.log 2>&1
  grep -E "^\| mamba" $OUT/s11-train-split.log | tail -4
  pack ;;
twelfth4)  # (carry .whl .gpu/COMMIT) after the review: the graphed scorer's CUDA tests, the scan's checks compiled
           # (default and bwd_split: their chunk-start walk moved into triton_utils._start_bits_down, the window
           # bounds into forward._window_bounds) and two warm-up runs, all at once; then bench infer packed beside
           # graphed (batches padded to their buckets on the host, untimed, as the Reranker does)
  CUDA_VISIBLE_DEVICES_FOR_TESTS=1 timeout 240 python3 -m pytest -q -p no:cacheprovider -rs tests/models/test_graphed.py \
    > $OUT/graphed-tests.log 2>&1 &
  timeout -s INT 240 python3 benchmarks/bench_kernels.py --only scancheck --out /tmp/chk > $OUT/scancheck.log 2>&1 &
  RERANKERS_SCAN_CONFIG=bwd_split=1 timeout -s INT 240 python3 benchmarks/bench_kernels.py --only scancheck \
    --out /tmp/chk-split > $OUT/scancheck-split.log 2>&1 &
  warm_infer
  t0=$SECONDS; wait; echo "warm: $((SECONDS - t0)) s"; tail -n 4 $OUT/graphed-tests.log
  grep -hE "PASS|FAIL|rror" $OUT/scancheck.log $OUT/scancheck-split.log | tail -24
  timeout -s INT 150 $R bench infer --backbone mamba-130m bert-base --modes packed graphed --anchors none \
     --out $RES/s11-infer-graphed2 > $OUT/s11-infer-graphed2.log 2>&1
  grep -E "^\| (mamba|bert)|rror" $OUT/s11-infer-graphed2.log | tail -12
  pack ;;
twelfth3)  # (carry .whl .gpu/COMMIT) inference replayed from CUDA graphs (Reranker(cuda_graphs=True), bench infer
           # --modes graphed): its CUDA tests and two warm-up runs at once (Triton's cache), then mamba-130m and
           # bert-base packed beside graphed in one process, and the kernels' share (bench profile --step infer)
  CUDA_VISIBLE_DEVICES_FOR_TESTS=1 timeout 200 python3 -m pytest -q -p no:cacheprovider -rs tests/models/test_graphed.py \
    -k cuda > $OUT/graphed-tests.log 2>&1 &
  warm_infer
  t0=$SECONDS; wait; echo "warm: $((SECONDS - t0)) s"; tail -n 3 $OUT/graphed-tests.log; tail -qn 2 $OUT/warm-infer-*.log
  timeout -s INT 150 $R bench infer --backbone mamba-130m bert-base --modes packed graphed --anchors none \
     --out $RES/s11-infer-graphed > $OUT/s11-infer-graphed.log 2>&1
  grep -E "^\| (mamba|bert)|rror" $OUT/s11-infer-graphed.log | tail -12
  pack ;;
twelfth2)  # (carry .whl .gpu/COMMIT) the split's variants beside the default again, each also replayed from a CUDA
           # graph (the GPU's time alone: the 5.8K rows of twelfth were host-bound), the cache warmed as in twelfth
  L="default,split,split reg168,split bh2"
  warm_levers
  t0=$SECONDS; wait; echo "warm: $((SECONDS - t0)) s"; tail -qn 1 $OUT/warm-*.log
  timeout -s INT 150 python3 benchmarks/bench_kernels.py --only levers10 --levers "$L" --no-lever-checks \
     --out $RES/s11-levers-graphed 2>&1 | grep -E "lever |rror" | tail -40
  pack ;;
eleventh)  # (tenth session; carry .whl .gpu/COMMIT) the backward walk split over two lanes a channel (bwd_split):
           # the scan's GPU checks with it on, each variant checked then timed beside the default (bench_kernels
           # levers10), then mamba-130m's step with it off and on beside bert-base in one run, and BERT's bf16
           # cuda-graphs test
  RERANKERS_SCAN_CONFIG=bwd_split=1 timeout -s INT 100 python3 benchmarks/bench_kernels.py --only scancheck \
     --out $RES/s10-check 2>&1 | grep -E "PASS|FAIL|Error|rror" | tail -20
  timeout -s INT 240 python3 benchmarks/bench_kernels.py --only levers10 --out $RES/s10-levers 2>&1 \
     | grep -E "lever |PASS|FAIL|rror" | tail -60
  pack > /dev/null
  timeout -s INT 100 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed --anchors none \
     --out $RES/s10-train > $OUT/s10-train.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s10-train.log | tail -6
  pack > /dev/null
  RERANKERS_SCAN_CONFIG=bwd_split=1 timeout -s INT 70 $R bench train --backbone mamba-130m --pairs 64 256 \
     --modes packed --anchors none --out $RES/s10-train-split > $OUT/s10-train-split.log 2>&1
  grep -E "^\| mamba" $OUT/s10-train-split.log | tail -4
  pack > /dev/null
  CUDA_VISIBLE_DEVICES_FOR_TESTS=1 timeout 80 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/train/test_static_shapes.py -k "gpu or cuda" 2>&1 | tail -4
  pack ;;
tenth4)  # (carry .whl .gpu/COMMIT) --compile cuda-graphs: its CUDA tests (losses and weights = the eager static run,
         # 2-3 micro-batches a step), then mamba-130m and bert-base at 64 and 256 pairs, packed eager beside static
         # replayed from the graphs
  CUDA_VISIBLE_DEVICES_FOR_TESTS=1 timeout 80 python3 -m pytest -q -p no:cacheprovider -rs tests/train/test_static_shapes.py \
    -k cuda_graphs 2>&1 | tail -3
  timeout -s INT 130 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed static \
     --compile cuda-graphs --anchors none --out $RES/s9-graphs > $OUT/s9-graphs.log 2>&1
  grep -E "^\| (mamba|bert)" $OUT/s9-graphs.log | tail -8; grep -iE "error|skipped" $OUT/s9-graphs.log | tail -4
  pack ;;
tenth2)  # (carry .whl .gpu/COMMIT .anchors) the anchors' build in the background (nothing is timed beside it: the
         # build's 14 compile jobs would slow the host-bound steps), the CUDA tests and the kernels' checks; then tenth3
  start_build
  gpu_tests 150
  CUDA_VISIBLE_DEVICES_FOR_TESTS=1 timeout 100 python3 -m pytest -q -p no:cacheprovider -rs tests/train/test_no_host_sync.py \
    2>&1 | tail -2
  timeout -s INT 100 python3 benchmarks/bench_kernels.py --only scancheck,convcheck --out $RES/s9-check 2>&1 \
     | grep -E "PASS|FAIL|Error|rror" | tail -30
  pack ;;
tenth3)  # (< 30 s after tenth2; carry .gpu/old = a22e3eb too) issue 13's ratios in one run with both anchors, timed
         # back to back: .gpu/old's 64-pair rows first (the order check), then mamba-130m, bert-base, bert-large with
         # transformers' SDPA and mamba-ssm's CUDA Mamba, packed inference, mamba-370m packed and recomputing
  WAIT_BUILD_S=240 wait_build
  timeout -s INT 220 $R bench train --backbone mamba-130m bert-base bert-large --pairs 64 256 --modes packed \
     --anchors transformers mamba-ssm --out $RES/s9-all > $OUT/s9-all.log 2>&1
  grep -E "^\| (mamba|bert)" $OUT/s9-all.log | tail -12; laps $RES/s9-all
  pack > /dev/null
  timeout -s INT 60 $R bench profile --backbone mamba-130m bert-base --step infer --pairs 256 --modes packed \
     --anchors none --out $RES/s9-infer 2>&1 | grep "^| [mb]" | head -3
  pack > /dev/null
  timeout -s INT 100 $R bench train --backbone mamba-370m --pairs 64 256 --modes packed recompute --anchors mamba-ssm \
     --out $RES/s9-370m > $OUT/s9-370m.log 2>&1; grep -E "^\| mamba" $OUT/s9-370m.log | tail -6
  pack ;;
ninth)  # (carry .whl .gpu/COMMIT .gpu/old = 42553d3) the walks' instruction cuts (softplus / sigmoid on MUFU, a
        # sequence start by the decay, B / C rows in fp32 and unmasked): the CUDA tests, the scan's and the conv's
        # checks compiled, then mamba-130m's step beside bert-base, this checkout and .gpu/old, in one call; ninth2 next
  gpu_tests 150
  timeout -s INT 130 python3 benchmarks/bench_kernels.py --only scancheck,convcheck --out $RES/s8-check 2>&1 \
     | grep -E "PASS|FAIL|Error|rror" | tail -30
  pack > /dev/null
  timeout -s INT 110 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed --anchors none \
     --out $RES/s8-train > $OUT/s8-train.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s8-train.log | tail -8
  pack > /dev/null
  timeout -s INT 80 $OLD_CLI bench train --backbone mamba-130m --pairs 64 256 --modes packed --anchors none \
     --out $RES/s8-train-old > $OUT/s8-train-old.log 2>&1; grep -E "^\| mamba" $OUT/s8-train-old.log | tail -4
  pack ;;
ninth2)  # (< 30 s after ninth) the step's kernels by name (before / after: the sixth session's profile), and packed
         # inference of mamba-130m beside bert-base by kernel
  timeout -s INT 90 $R bench profile --backbone mamba-130m --pairs 256 --modes packed --anchors none \
     --out $RES/s8-profile 2>&1 | grep "^|" | head -16
  pack > /dev/null
  timeout -s INT 90 $R bench profile --backbone mamba-130m bert-base --step infer --pairs 256 --modes packed \
     --anchors none --out $RES/s8-infer 2>&1 | grep "^|" | head -16
  pack ;;
ninth3)  # (carry .whl .gpu/COMMIT) the direct Triton launch (triton_utils.launch): its CUDA test (bitwise equal to
         # Triton's own launch), the host time of a launch both ways, then issue 13's ratios in one run: all four
         # backbones at 64 and 256 pairs, packed and Mamba's recompute mode, transformers' SDPA beside BERT (the
         # mamba-ssm anchor needs its 7-minute build: not this call); mamba-130m again with the jit launch; inference
  CUDA_VISIBLE_DEVICES_FOR_TESTS=1 timeout 120 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/kernels/test_triton_launch.py tests/models/test_mamba.py -k "direct_launch or triton_backend_matches" 2>&1 | tail -4
  timeout -s INT 60 python3 benchmarks/bench_launch.py --out $RES/launch.json 2>&1 | tail -3
  pack > /dev/null
  timeout -s INT 300 $R bench train --backbone mamba-130m bert-base mamba-370m bert-large --pairs 64 256 \
     --modes packed recompute --anchors transformers --out $RES/s8-all > $OUT/s8-all.log 2>&1
  grep -E "^\| (mamba|bert)" $OUT/s8-all.log | tail -16
  pack > /dev/null
  RERANKERS_TRITON_LAUNCH=jit timeout -s INT 60 $R bench train --backbone mamba-130m --pairs 64 256 --modes packed \
     --anchors none --out $RES/s8-130m-jit > $OUT/s8-130m-jit.log 2>&1; grep -E "^\| mamba" $OUT/s8-130m-jit.log | tail -2
  pack > /dev/null
  timeout -s INT 60 $R bench profile --backbone mamba-130m bert-base --step infer --pairs 256 --modes packed \
     --anchors none --out $RES/s8-infer-direct 2>&1 | grep "^| [mb]" | head -3
  pack ;;
ninth4)  # (carry .whl .gpu/COMMIT .gpu/old = 42553d3) after the host cuts (A states-major from the mixer: three
         # copies a layer fewer; cu_seqlens without a dispatch; the bench step walks train() only when needed): the
         # CUDA tests (the direct launch's now compares the atomically summed gradients to 1e-5), mamba-130m beside
         # bert-base at 64 and 256 pairs, packed inference by kernel, and .gpu/old's inference in the same call
  gpu_tests 150
  timeout -s INT 110 $R bench train --backbone mamba-130m bert-base --pairs 64 256 --modes packed --anchors none \
     --out $RES/s8-final > $OUT/s8-final.log 2>&1; grep -E "^\| (mamba|bert)" $OUT/s8-final.log | tail -8
  pack > /dev/null
  timeout -s INT 70 $R bench profile --backbone mamba-130m bert-base --step infer --pairs 256 --modes packed \
     --anchors none --out $RES/s8-infer-final 2>&1 | grep "^| [mb]" | head -3
  pack > /dev/null
  timeout -s INT 60 $OLD_CLI bench profile --backbone mamba-130m --step infer --pairs 256 --modes packed \
     --anchors none --out $RES/s8-infer-old 2>&1 | grep "^| [mb]" | head -3
  pack ;;
*) echo "usage: gpu_suite.sh first|second|levers|anchored|build|finish|qlora-static|sweep|leftover|fifth|windows|windows2|windows3|sixth|verify6|final6|seventh|seventh2|seventh3|seventh4|seventh5|seventh6|eighth|eighth2|ninth|ninth2|ninth3|ninth4|smoke" >&2; exit 2 ;;
esac
