"""Build the anchors' CUDA extensions on the GPU machine from their PyPI sources, sm_90 only.

mamba-ssm's ``selective_scan_cuda`` and causal-conv1d's ``causal_conv1d_cuda`` are compiled in two
processes at once (torch's JIT extension builder, ninja), and their Python packages are copied
beside them, so that ``PYTHONPATH=OUT/site`` imports ``mamba_ssm`` (``mamba_inner_fn``, the fused
add + RMSNorm, ``MixerModel``) and ``causal_conv1d`` as a pip install would. Nothing of theirs is
committed: the sdists travel in an ignored folder (``.anchors/``, fetched from PyPI's file host).

    python benchmarks/build_anchors.py --sdists .anchors --out /tmp/anchors

Writes OUT/DONE (or OUT/FAILED) when finished; the log says how long each build took.
"""
from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

NVCC_FLAGS = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo"]


def _extract(sdist: str, dest: Path) -> Path:
    with tarfile.open(sdist) as tf:
        tf.extractall(dest, filter="data")
    return dest / Path(sdist).name.removesuffix(".tar.gz")


def _build(name: str, sources: list[str], include: str, build_dir: str, jobs: int) -> None:
    os.environ["MAX_JOBS"] = str(jobs)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    from torch.utils.cpp_extension import load

    t0 = time.time()
    os.makedirs(build_dir, exist_ok=True)
    load(name=name, sources=sources, extra_cflags=["-O3", "-std=c++17"], extra_cuda_cflags=NVCC_FLAGS,
         extra_include_paths=[include], build_directory=build_dir, verbose=False)
    print(f"built {name} in {time.time() - t0:.0f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdists", required=True, help="folder with mamba_ssm-*.tar.gz and causal_conv1d-*.tar.gz")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs-scan", type=int, default=10)
    ap.add_argument("--jobs-conv", type=int, default=6)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        mamba = _extract(glob.glob(os.path.join(args.sdists, "mamba_ssm-*.tar.gz"))[0], out / "src")
        conv = _extract(glob.glob(os.path.join(args.sdists, "causal_conv1d-*.tar.gz"))[0], out / "src")
        scan_dir = mamba / "csrc" / "selective_scan"
        jobs = [
            ("selective_scan_cuda", sorted(str(p) for p in scan_dir.glob("*.c*") if p.suffix in (".cu", ".cpp")),
             str(scan_dir), str(out / "build" / "scan"), args.jobs_scan),
            ("causal_conv1d_cuda", [str(conv / "csrc" / f) for f in ("causal_conv1d.cpp", "causal_conv1d_fwd.cu",
                                                                   "causal_conv1d_bwd.cu", "causal_conv1d_update.cu")],
             str(conv / "csrc"), str(out / "build" / "conv"), args.jobs_conv),
        ]
        procs = [mp.get_context("spawn").Process(target=_build, args=j) for j in jobs]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"a build failed (exit codes {[p.exitcode for p in procs]})")
        site = out / "site.partial"
        shutil.rmtree(site, ignore_errors=True)
        site.mkdir()
        shutil.copytree(mamba / "mamba_ssm", site / "mamba_ssm")
        shutil.copytree(conv / "causal_conv1d", site / "causal_conv1d")
        for _, _, _, build_dir, _ in jobs:
            for so in Path(build_dir).glob("*.so"):
                shutil.copy2(so, site / so.name)
        os.replace(site, out / "site")
    except Exception as e:  # noqa: BLE001 - the marker file tells the waiting script
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        (out / "FAILED").write_text(str(e))
        return 1
    (out / "DONE").write_text("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
