"""Test-wide settings: offline hub, Triton interpreter on the CPU, the shared real data."""
import os

# Must be set before any kernel module (and triton) is imported.
if not os.environ.get("CUDA_VISIBLE_DEVICES_FOR_TESTS"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real TREC DL, trec_eval suite); skips where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only on developer/CI machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoints():
    """tests/models/tiny_checkpoints.py as a module (tiny random checkpoints, built locally), loaded
    from its file so that tests outside tests/models need not put that folder on sys.path."""
    import importlib.util

    path = Path(__file__).resolve().parent / "models" / "tiny_checkpoints.py"
    spec = importlib.util.spec_from_file_location("tests_models_tiny_checkpoints", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_checkpoints, tmp_path_factory) -> Path:
    """A saved CrossEncoder folder named ``tiny-bert`` over a tiny random BERT (CPU-fast)."""
    from rerankers.models.cross_encoder import CrossEncoder

    root = tmp_path_factory.mktemp("tiny_cross_encoder")
    checkpoint = tiny_checkpoints.save_tiny_bert(root / "hf", "bert")
    CrossEncoder.from_pretrained(checkpoint).save_pretrained(root / "tiny-bert")
    return root / "tiny-bert"


def _run_unprivileged(fn) -> str:
    """``fn()`` (returning text) run as a user without root's rights. As root, in a forked child that drops to
    nobody (uid 65534) first; the child must import nothing new (root's interpreter may be unreadable to nobody),
    so whatever ``fn`` uses is imported (or used once) before. The child's exception comes back as its text;
    where root cannot drop its rights (a restricted container), the test is skipped, saying so."""
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run, report, leave without running any cleanup of the parent
        try:
            try:
                os.setgid(65534)
                os.setuid(65534)
            except OSError as e:
                out = f"{_CANNOT_DROP}{e}"
            else:
                try:
                    out = fn()
                except BaseException as e:  # noqa: BLE001 -- reported to the parent, which asserts on it
                    out = f"child raised {type(e).__name__}: {e}"
            os.write(write_end, out.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    if out.startswith(_CANNOT_DROP):
        pytest.skip(f"needs a user without root's rights: root cannot become nobody here ({out[len(_CANNOT_DROP):]})")
    return out


_CANNOT_DROP = "cannot drop root: "


@pytest.fixture(scope="session")
def unprivileged():
    """A function ``run(fn) -> str``: ``fn()`` run without root's rights (see _run_unprivileged), e.g. to see
    a permission denied that root would not meet."""
    return _run_unprivileged


@pytest.fixture
def shared_tmp(tmp_path):
    """A folder that an unprivileged user can reach: tmp_path, or as root (whose pytest folders are
    private) a folder of its own in the system's temporary directory, removed afterwards."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="rerankers-test-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


class _Terminal:
    """A stderr that says it is a terminal, keeping what is written (``text``)."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


@pytest.fixture
def terminal_stderr(monkeypatch):
    """A function that replaces sys.stderr by a terminal keeping its text (what progress bars draw there) and
    returns it; call it in the test itself (pytest's capture resets sys.stderr between setup and the test)."""
    import sys

    def install() -> _Terminal:
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        return terminal
    return install


_LOGGERS = ("", "rerankers", "transformers", "huggingface_hub", "bm25s", "ir_datasets", "py.warnings", "numba",
            "matplotlib")
_LOG_ENV = ("TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")


@pytest.fixture(autouse=True)
def _restore_logging():
    """``rerank``'s main() configures process-wide logging (root handlers on the stderr of the moment, library
    levels, filters, environment variables): each test gets back the state it started with, so that no later
    test logs through a handler bound to an earlier test's closed capture stream."""
    import logging
    import warnings

    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers),
                    list(logging.getLogger(name).filters)) for name in _LOGGERS}
    env = {k: os.environ.get(k) for k in _LOG_ENV}
    warning_filters = list(warnings.filters)
    yield
    for name, (level, handlers, filters) in saved.items():
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.filters[:] = filters
    logging.captureWarnings(False)
    warnings.filters[:] = warning_filters
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
