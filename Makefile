# The two set-up commands (README): `make demo` runs the main job on the bundled sample,
# `make test` runs the test suite. Both create .venv and install everything on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench-kernels bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk (a bare `torch` would pull a CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/rerank demo --out demo_out

test: install
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 TRITON_INTERPRET=1 $(BIN)/python -m pytest -q

# GPU only (run with the GPU machine's python): correctness first, then timings; see BENCHMARKS.md
bench-kernels:
	PYTHONPATH=. python benchmarks/bench_kernels.py

bench:
	PYTHONPATH=. python -m rerankers.cli bench train --backbone mamba-130m bert-base --pairs 64 256 --out bench_out

clean:
	rm -rf $(VENV) demo_out *.egg-info
