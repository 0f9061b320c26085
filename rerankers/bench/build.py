"""The models a benchmark times: any preset (or folder) at its real size, random weights by default.

No weights are read for ``init="random"``: the preset's architecture (config.json keys) with
``shape`` overrides (e.g. ``max_position_embeddings`` for the length sweep; BERT-family models get
no attention dropout: padded SDPA with dropout takes another, much slower kernel). The tokenizer is the one
named, else the preset's where it is on disk; failing both, a synthetic word-level tokenizer of the
preset's vocabulary size (the embedding then has the real shape; it serves random-id workloads only,
and the run says so).
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from rerankers.errors import CheckpointNotFoundError, ModelLoadingError, UsageError

logger = logging.getLogger(__name__)


def _synthetic_tokenizer(kind: str, model_type: str | None, vocab_size: int, folder: Path) -> None:
    from rerankers.data.word_tokenizer import SPECIALS, TEMPLATE_WORDS, word_level_tokenizer
    from rerankers.models.registry import backbone_spec

    flavour = "roberta" if model_type in ("roberta", "xlm-roberta") else backbone_spec(kind).template
    words = ["true", "false", *TEMPLATE_WORDS]  # what templates look up (monoT5's answer words)
    n_words = vocab_size - len(set(SPECIALS[flavour].values())) - len(words)
    words += [f"w{i}" for i in range(max(n_words, 0))]
    word_level_tokenizer(words, flavour).save_pretrained(str(folder))


def _to_be_trained(fn):
    """A benchmark builds untrained models on purpose (:func:`rerankers.models.cross_encoder.to_be_trained`)."""
    def wrapper(*args, **kwargs):
        from rerankers.models.cross_encoder import to_be_trained
        with to_be_trained():
            return fn(*args, **kwargs)
    return wrapper


@_to_be_trained
def build_model(backbone: str, *, init: str = "random", tokenizer: str | None = None,
                shape: dict[str, Any] | None = None, seed: int = 0):
    """(CrossEncoder, info) for ``backbone`` (a preset name or a local folder). ``info`` says which
    tokenizer it got and whether it is synthetic (``texts_ok`` False: random token ids only)."""
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.models.presets import PRESETS
    from rerankers.models.registry import detect_backbone_kind, read_config_json

    preset = PRESETS.get(backbone)
    folder = Path(backbone).expanduser()
    if preset is None and not folder.is_dir():
        raise UsageError(f"--backbone {backbone}: neither a preset ({', '.join(sorted(PRESETS))}) nor a folder")
    if init == "pretrained" and shape:
        raise UsageError("--shape changes the architecture: it needs --init random")
    if preset is not None and not folder.is_dir():
        config, kind = preset.config_dict(), preset.kind
    else:
        config = read_config_json(folder)
        kind = detect_backbone_kind(config, str(folder / "config.json"))
    info = {"backbone": backbone, "init": init, "tokenizer": tokenizer or "the checkpoint's", "texts_ok": True}
    if kind == "bert" and init == "random":
        # equal work on every path: padded SDPA with dropout takes another, much slower kernel (our packed
        # path applies dropout in eager CUDA steps, torch's varlen_attn under torch.compile does not)
        shape = {"attention_probs_dropout_prob": 0.0, **(shape or {})}
    if init == "pretrained" or (not shape and preset is None):
        return CrossEncoder.from_backbone(backbone, init=init, tokenizer=tokenizer, seed=seed), info
    if not shape:
        try:
            return CrossEncoder.from_backbone(backbone, init="random", tokenizer=tokenizer, seed=seed), info
        except (CheckpointNotFoundError, ModelLoadingError, OSError) as e:
            if tokenizer is not None:
                raise
            logger.warning("%s: its tokenizer is not on disk (%s); a synthetic word-level tokenizer of the same "
                           "vocabulary size stands in (random token ids only; --tokenizer for texts)",
                           backbone, str(e).splitlines()[0])
    # a folder of the (reshaped) architecture, with the named, the preset's or a synthetic tokenizer
    work = Path(tempfile.mkdtemp(prefix="rerankers-bench-"))
    (work / "config.json").write_text(json.dumps({**config, **(shape or {})}), encoding="utf-8")
    tok = tokenizer
    if tok is None:
        try:
            from rerankers.models.presets import tokenizer_folder
            tok = str(tokenizer_folder(backbone))
        except (CheckpointNotFoundError, ModelLoadingError, OSError):
            tok = str(work)
            _synthetic_tokenizer(kind, config.get("model_type"), int(config.get("vocab_size", 32000)), work)
            info.update(tokenizer="synthetic word-level", texts_ok=False)
    info["shape"] = shape or {}
    return CrossEncoder.from_backbone(work, init="random", tokenizer=tok, seed=seed), info
