#!/usr/bin/env bash
# One device call: (re)build mamba-ssm's CUDA scan in the background unless a built one was carried
# (.mamba_ext/selective_scan_cuda.so), then benchmarks/bench_kernels.py; everything lands in $OUT.
#   run: bash benchmarks/device_run.sh [bench_kernels.py args]   (carry .mamba_src, and .mamba_ext if built)
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
EXT=/tmp/mamba_ext
mkdir -p $EXT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
if [ -f .mamba_ext/selective_scan_cuda.so ]; then
  cp .mamba_ext/selective_scan_cuda.so $EXT/
elif [ -f .mamba_ext/selective_scan_cuda.so.xz ]; then
  xz -dc .mamba_ext/selective_scan_cuda.so.xz > $EXT/selective_scan_cuda.so
elif ls .mamba_src/mamba_ssm-*.tar.gz >/dev/null 2>&1; then
  mkdir -p /tmp/msrc && tar xzf .mamba_src/mamba_ssm-*.tar.gz -C /tmp/msrc
  ( MAX_JOBS=10 PYTHONPATH=. python benchmarks/bench_kernels.py --build-mamba /tmp/msrc/mamba_ssm-* \
      --mamba-ext $EXT/build > "$OUT/mamba_build.log" 2>&1;
    cp $EXT/build/selective_scan_cuda.so $EXT/tmp.so 2>/dev/null && mv $EXT/tmp.so $EXT/selective_scan_cuda.so;
    xz -T4 -6 -c $EXT/selective_scan_cuda.so > "$OUT/selective_scan_cuda.so.xz" 2>/dev/null ) &
fi
PYTHONPATH=. python benchmarks/bench_kernels.py --out "$OUT" --mamba-ext $EXT "$@" 2>&1 | tee "$OUT/bench.log" | grep -v "^ *$"
wait
ls -la "$OUT"
