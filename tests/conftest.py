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
