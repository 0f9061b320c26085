"""Checkpoint files shared by every backbone: finding, reading and writing a folder's weights, and
fetching them from the Hugging Face hub (or its local cache).

A folder holds ``model.safetensors``, ``model.safetensors.index.json`` (shards), ``pytorch_model.bin``
or ``pytorch_model.bin.index.json``; safetensors are preferred. Missing files raise
:class:`CheckpointNotFoundError`, files this user may not read :class:`CheckpointPermissionError`
(:func:`check_can_read`; safetensors itself reports a permission denied as a missing file), other
unreadable files :class:`ModelLoadingError`, each naming the file.
"""
from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from rerankers.errors import CheckpointNotFoundError, CheckpointPermissionError, ModelLoadingError, one_line
from rerankers.utils.io import atomic_folder

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
_WEIGHT_FILES = (SAFETENSORS_NAME, SAFETENSORS_INDEX, BIN_NAME, BIN_INDEX)
# a checkpoint's files, safetensors first; the pickled weights only where a repository has none
WEIGHT_PATTERNS = (["config.json", "model*.safetensors*"], ["config.json", "pytorch_model*.bin*"])
# a tokenizer's files (never weights, nor a shard index that would pass for them)
TOKENIZER_PATTERNS = ["tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt",
                      "*.model"]
# what a model of random weights needs: the architecture and the tokenizer
CONFIG_PATTERNS = ["config.json", *TOKENIZER_PATTERNS]
# a whole model folder: config, tokenizer and one format of weights
MODEL_PATTERNS = tuple([*CONFIG_PATTERNS, *weights[1:]] for weights in WEIGHT_PATTERNS)

if TYPE_CHECKING:  # torch loads on first read, so that resolving names (presets) stays light
    from torch import Tensor


def hub_offline() -> bool:
    """True where HF_HUB_OFFLINE is set (environment or huggingface_hub's constants)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - huggingface_hub missing or changed
        return False


def fetch_from_hub(repo_id: str, what: str, pattern_sets: Sequence[Sequence[str]] = MODEL_PATTERNS,
                   need_weights: bool = True) -> Path:
    """A local folder for a Hugging Face hub repository, from the local cache only where
    ``HF_HUB_OFFLINE`` is set. ``pattern_sets``: file patterns tried in turn; with ``need_weights``
    the first whose folder holds weights wins (:data:`MODEL_PATTERNS`, :data:`WEIGHT_PATTERNS`),
    without it the first set is fetched (:data:`TOKENIZER_PATTERNS`, :data:`CONFIG_PATTERNS`).
    Every failure is a :class:`CheckpointNotFoundError` of one line that starts with ``what`` and names the
    repository and where it was looked for; offline, it says the files are not cached and how to get them."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointNotFoundError(f"{what} {repo_id!r} would be fetched from the Hugging Face hub, but "
                                      "huggingface_hub is not installed (pip install huggingface_hub)") from None
    from huggingface_hub import constants
    from huggingface_hub.utils import LocalEntryNotFoundError
    offline = hub_offline()
    try:
        for patterns in pattern_sets:
            local = Path(snapshot_download(repo_id, allow_patterns=list(patterns), local_files_only=offline))
            if not need_weights or find_weight_file(local, required=False) is not None:
                return local
        detail = ": it has no weights file"
    except Exception as e:  # hub errors: not cached, not found, no network, gated ...
        # not cached: huggingface_hub's own message (several lines) says to pass local_files_only=False, which a
        # command-line user cannot; say what is missing and how to get it
        detail = (f": its files were never downloaded into this cache ({constants.HF_HUB_CACHE}). Get them where "
                  f"the hub is reachable (`hf download {repo_id}`, or run once without HF_HUB_OFFLINE=1) and copy "
                  "that cache here, or pass a local folder" if offline and isinstance(e, LocalEntryNotFoundError)
                  else f": {one_line(e)}")
    where = "in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "on the Hugging Face hub"
    raise CheckpointNotFoundError(f"{what} {repo_id!r} is not available {where}{detail}")


def tokenizer_files(directory: Path) -> list[Path]:
    """The files of ``directory`` that belong to a tokenizer (:data:`TOKENIZER_PATTERNS`), sorted."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in TOKENIZER_PATTERNS))


def find_weight_file(directory: Path, required: bool = True) -> Path | None:
    """The weights file (or shard index) in ``directory``, safetensors preferred."""
    for name in _WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    if required:
        raise CheckpointNotFoundError(f"{directory}: no weights found (expected one of {', '.join(_WEIGHT_FILES)})")
    return None


def check_can_read(path: Path, what: str) -> None:
    """Raise unless ``path`` (a checkpoint's ``what``: "weights", "config", ...) opens for reading:
    CheckpointNotFoundError where it is missing, CheckpointPermissionError where this user may not
    read it, ModelLoadingError for any other OS error; one line naming the file."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: the {what} file is missing") from None
    except PermissionError:
        raise CheckpointPermissionError(f"{path}: permission denied: this user may not read the {what} "
                                        "(check the file's owner and mode)") from None
    except OSError as e:
        raise ModelLoadingError(f"{path}: cannot read the {what} ({e.strerror or e})") from None


def read_tensor_file(path: Path) -> dict[str, Tensor]:
    """The tensors of one .safetensors / .bin file, on the CPU; ModelLoadingError naming an unreadable file
    (:func:`check_can_read` first: safetensors reports a permission denied as "No such file")."""
    import torch
    check_can_read(path, "weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except ModelLoadingError:
        raise
    except Exception as e:
        raise ModelLoadingError(f"{path}: cannot read the weights ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadingError(f"{path}: expected a mapping of names to tensors")
    return obj


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    """All tensors of the checkpoint in ``directory`` (single file or shards), on the CPU."""
    weights = find_weight_file(directory)
    if not weights.name.endswith(".index.json"):
        return read_tensor_file(weights)
    try:
        weight_map = json.loads(weights.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadingError(f"{weights}: not a valid shard index ({e})") from None
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (directory / shard).is_file():
            raise CheckpointNotFoundError(f"{weights}: shard {shard} is missing from {directory}")
        state.update(read_tensor_file(directory / shard))
    return state


def write_transformers_folder(model, directory: str | os.PathLike) -> None:
    """A transformers model's ``save_pretrained`` (config.json + model.safetensors) into ``directory``,
    each file replaced atomically (:func:`rerankers.utils.io.atomic_folder`)."""
    with atomic_folder(directory) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)


def compare_keys(own: dict[str, Tensor], state: dict[str, Tensor], prefix: str = ""
                 ) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """(missing, unexpected, (key, checkpoint shape, model shape) mismatched) between a model's
    ``own`` state dict and a checkpoint's ``state``; keys reported with ``prefix`` in front."""
    missing = [prefix + k for k in own if k not in state]
    unexpected = [prefix + k for k in state if k not in own]
    mismatched = [(prefix + k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                  if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, mismatched
