"""Every config under experiments/ is a valid, strict training config (a renamed setting would fail here)."""
from pathlib import Path

import pytest

from rerankers.train.config import resolve_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments").rglob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_resolves(path):
    cfg = resolve_config(path, {"out": "runs/x"})
    assert cfg.backbone and cfg.train and cfg.loss
