"""Checkpoints of a training run, written so that nothing is lost and resume is exact.

Layout of ``OUT`` (the run folder)::

    train_config.json           the resolved settings (``--resume OUT`` continues with them)
    checkpoint-N/               after optimizer step N: a CrossEncoder folder (``rerank eval --model``
                                loads it) + optimizer.pt, scheduler.pt, rng-R.pt (one per process),
                                trainer_state.json (step, epoch, best metric, log position)
    best/                       the best model by the dev metric (a CrossEncoder folder + best.json)
    model/                      the final model
    train_log.jsonl, train_report.json

A checkpoint is assembled in a hidden ``.checkpoint-N.partial`` folder and renamed into place
only when complete, so ``checkpoint-N/`` either exists whole or not at all; a run killed while
saving leaves the previous checkpoint intact (the partial folder is removed on the next save).
"""
from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerankers.errors import ResumeMismatchError
from rerankers.utils.io import atomic_write, publish_folder

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.json"
CONFIG_NAME = "train_config.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict[str, Any]:
    """Every random state a step reads: torch (CPU and each CUDA device), Python, NumPy."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, by step (a folder counts once its trainer_state.json exists)."""
    found = []
    if out.is_dir():
        for p in out.iterdir():
            m = _CKPT.match(p.name)
            if m and p.is_dir() and (p / STATE_NAME).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def partial_folder(out: Path, step: int) -> Path:
    """A fresh hidden folder to assemble checkpoint ``step`` in (leftovers of a killed save removed)."""
    for stale in out.glob(".checkpoint-*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out / f".checkpoint-{step}.partial"
    tmp.mkdir(parents=True)
    return tmp


def write_process_state(folder: Path, rank: int) -> None:
    """This process's random states (each process of a multi-process run writes its own file)."""
    with atomic_write(folder / f"rng-{rank}.pt", "wb") as f:
        torch.save(rng_state(), f)


def write_checkpoint(tmp: Path, out: Path, step: int, optimizer, scheduler, state: dict[str, Any],
                     keep: int | None, protect: Path | None = None) -> Path:
    """Complete ``tmp``, which already holds the model folder and the processes' random states, with the
    optimizer, scheduler and trainer state (the main process) and publish it as ``out/checkpoint-{step}``;
    then delete the oldest checkpoints beyond ``keep`` (never ``protect``)."""
    with atomic_write(tmp / "optimizer.pt", "wb") as f:
        torch.save(optimizer.state_dict(), f)
    with atomic_write(tmp / "scheduler.pt", "wb") as f:
        torch.save(scheduler.state_dict(), f)
    with atomic_write(tmp / STATE_NAME) as f:
        json.dump({**state, "step": step}, f, indent=2)
    final = out / f"checkpoint-{step}"
    publish_folder(tmp, final)
    logger.info("saved %s", final)
    if keep is not None:
        for _, old in list_checkpoints(out)[:-keep]:
            if protect is None or old.resolve() != protect.resolve():
                shutil.rmtree(old, ignore_errors=True)
    return final


def read_trainer_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATE_NAME).read_text())
    except (OSError, ValueError) as e:
        raise ResumeMismatchError(f"{folder}: unreadable {STATE_NAME}: {e}") from None


def load_training_state(folder: Path, optimizer, scheduler, rank: int) -> dict[str, Any]:
    """Restore optimizer, scheduler and this process's random states from a checkpoint; its trainer state."""
    state = read_trainer_state(folder)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng_file = folder / f"rng-{rank}.pt"
    if not rng_file.is_file():
        raise ResumeMismatchError(f"{folder}: no {rng_file.name}: the run had fewer processes than this one")
    set_rng_state(torch.load(rng_file, weights_only=False))
    return state
