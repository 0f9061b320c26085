"""CrossEncoder = backbone + pooling + head: a PackedBatch of (query, document) pairs -> scores (S,).

What differs between backbone kinds (pooling, head, template, how to build and load) is a row of
:mod:`rerankers.models.registry` and its adapter; this module only puts the pieces together:

- Mamba: last-token pooling (causal; RankMamba template puts the query last), Linear head.
- BERT family: [CLS] pooling, ``dense -> tanh/gelu -> out_proj`` head (the shape of the
  sequence-classification heads, so published cross-encoders load with their scores).
- T5 (monoT5): no pooling; score = log p("true") over {"true", "false"} at the first decoder step.
- Decoder Transformers (Pythia, OPT, Qwen2, Llama): as Mamba (last token, RankMamba template, Linear head).
- BiLSTM: "ends" pooling (:func:`bidirectional_ends`: both directions' final states), Linear head.

Saved folder (``save_pretrained``)::

    reranker_config.json   backbone type, base (preset/path), template, head, head_trained, token ids
    backbone/              the backbone's own checkpoint (config.json + model.safetensors)
    head.safetensors       the head's weights (BERT family, Mamba)
    tokenizer files        (tokenizer.json, tokenizer_config.json, ...)

Loading our folder is strict: CheckpointMismatchError names missing / unexpected keys.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from rerankers.data.packing import PackedBatch
from rerankers.data.templates import EncodedPairs, TemplateConfig, TemplateError, encode_pairs
from rerankers.errors import CheckpointMismatchError, ModelConfigError, ModelLoadingError, UsageError, one_line
from rerankers.kernels.varlen import sequence_ids
from rerankers.models.checkpoint_files import check_can_read, compare_keys, read_tensor_file, tokenizer_files
from rerankers.models.heads import ScoreHead
from rerankers.models.presets import Preset, resolve, tokenizer_folder
from rerankers.models.registry import BackboneSpec, backbone_spec, detect_backbone_kind, read_config_json
from rerankers.utils.io import atomic_folder

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "last", "mean")
CONFIG_NAME = "reranker_config.json"
HEAD_NAME = "head.safetensors"
BACKBONE_DIR = "backbone"
FORMAT = "rerankers-cross-encoder"
FORMAT_VERSION = 1
INITS = ("pretrained", "random")


class CrossEncoder(nn.Module):
    """Scores (query, document) pairs.

    Attributes:
        backbone:       BertBackbone | T5Backbone | MambaBackbone (a registry kind's module)
        head:           ScoreHead (None for a kind without one: T5)
        tokenizer:      a transformers tokenizer
        template:       TemplateConfig (template name, max lengths)
        backbone_type:  the registry kind: "bert" | "t5" | "mamba"
        base:           the preset name or path it was built from (informational)
        head_trained:   False while the head (or, built with random weights, the whole scorer) has not
                        been trained; saved, so a folder says whether its scores mean anything
    """

    def __init__(self, backbone: nn.Module, head: ScoreHead | None, tokenizer, template: TemplateConfig,
                 backbone_type: str, base: str = "", head_trained: bool = False, pooling: str | None = None):
        super().__init__()
        spec = backbone_spec(backbone_type)
        if (head is None) == spec.has_head:
            needs = "needs a head" if spec.has_head else "has no head"
            raise ModelConfigError(f"a {backbone_type} cross-encoder {needs}")
        if template.name != spec.template:
            raise ModelConfigError(f"a {backbone_type} backbone needs the {spec.template!r} template, "
                                   f"got {template.name!r}")
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.template = template
        self.backbone_type = backbone_type
        self.base = base
        self.head_trained = bool(head_trained)
        self.pooling_override: str | None = None
        if pooling is not None:
            self.set_pooling(pooling)

    def set_pooling(self, pooling: str | None) -> None:
        """Pool the hidden states other than the kind's default: "cls" (first token), "last" or "mean"
        (the mean over each sequence's tokens, e.g. for an encoder trained as a mean-pooled bi-encoder)."""
        if pooling is not None and (not self.spec.has_head or pooling not in POOLINGS):
            raise ModelConfigError(f"pooling {pooling!r}: one of {', '.join(POOLINGS)}, for a backbone with a "
                                   f"head (this one: {self.backbone_type})")
        self.pooling_override = None if pooling == self.spec.pooling else pooling

    # ---- scoring ------------------------------------------------------------------------------
    @property
    def spec(self) -> BackboneSpec:
        """The registry row of this model's backbone kind."""
        return backbone_spec(self.backbone_type)

    @property
    def pooling(self) -> str:
        return self.pooling_override or self.spec.pooling

    @property
    def pads(self) -> bool:
        """True where the backbone pads internally (T5): batch budgets then count padded tokens."""
        return self.spec.pads

    def forward(self, batch: PackedBatch) -> Tensor:
        """PackedBatch (S sequences, T tokens) -> scores (S,) (fp32 for T5, the head's dtype else)."""
        output = self.backbone(batch)  # (T, H); T5: (S, 2)
        if self.head is None:
            return self.spec.adapter().score(output)
        if self.pooling == "mean":
            seq = sequence_ids(batch.cu_seqlens.to(output.device), output.shape[0])
            sums = output.new_zeros((batch.num_sequences, output.shape[1]), dtype=torch.float32)
            sums.index_add_(0, seq, output.float())
            # an empty slot (a fixed-shape batch's padding) averages nothing: 0, not 0/0 (NaN would reach the
            # head's weight gradient through its zero score gradient)
            return self._head(sums / batch.seqlens.to(output.device).clamp(min=1)[:, None])
        if self.pooling == "ends":
            first, last = (output.index_select(0, i.to(output.device))
                           for i in (batch.first_token_index, batch.last_token_index))
            return self._head(bidirectional_ends(first, last))
        index = batch.first_token_index if self.pooling == "cls" else batch.last_token_index
        return self._head(output.index_select(0, index.to(output.device)))

    def forward_padded(self, batch: PackedBatch) -> Tensor:
        """The padded oracle path for the same batch: scores (S,)."""
        ids, mask, tt = batch.to_padded(int(getattr(self.backbone, "pad_token_id", 0) or 0))
        output = self.backbone.forward_padded(ids, mask, tt)  # (S, L, H); T5: (S, 2)
        if self.head is None:
            return self.spec.adapter().score(output)
        if self.pooling == "mean":
            m = mask.to(output.device)[..., None].float()
            return self._head((output.float() * m).sum(1) / m.sum(1))
        rows = torch.arange(ids.shape[0], device=ids.device)
        cols = torch.zeros_like(rows) if self.pooling == "cls" else batch.seqlens.to(ids.device) - 1
        if self.pooling == "ends":
            return self._head(bidirectional_ends(output[rows, torch.zeros_like(rows)], output[rows, cols]))
        return self._head(output[rows, cols])

    def _head(self, pooled: Tensor) -> Tensor:
        """(S, H) -> (S,) in the head's own dtype even under autocast: bf16 scores keep only 8
        significant bits (steps of 1/16 around 10), which would tie documents in a ranking."""
        with torch.autocast(pooled.device.type, enabled=False):
            return self.head(pooled.to(self.head.out_proj.weight.dtype))

    def encode(self, queries: Sequence[str], docs: Sequence[str], ids: Sequence[Any] | None = None,
               warn: bool = True) -> EncodedPairs:
        """Token ids of the pairs with this model's template and truncation."""
        return encode_pairs(self.tokenizer, queries, docs, self.template, ids=ids, warn=warn)

    # ---- building -----------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, name_or_path: str | os.PathLike, template: dict[str, Any] | None = None,
                      head_activation: str | None = None, *, init: str = "pretrained",
                      tokenizer: str | os.PathLike | None = None, seed: int | None = 0) -> "CrossEncoder":
        """A cross-encoder on a backbone (preset name, hub id or local folder).

        init="pretrained": the checkpoint's weights. A ``*ForSequenceClassification`` checkpoint (one
        logit, or two labels scored ``logit[1] - logit[0]``) brings its trained head, so its published
        scores (or their ranking) are reproduced; otherwise the head is
        fresh (BERT: dense initialised from the pretrained pooler where there is one).
        init="random": the preset's architecture (or the folder's / hub id's config.json) with random
        weights; no weights are read or fetched, and the vocabulary follows the tokenizer.

        tokenizer: a local folder, a preset or a hub id; default: the checkpoint's, else the preset's.
        seed: the generator of everything random here (fresh head, random weights; None: 0), so that
        two builds agree; the caller's generator is left as it was.
        """
        if init not in INITS:
            raise UsageError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        pretrained = init == "pretrained"
        name = str(name_or_path)
        folder, preset = resolve(name_or_path, weights=pretrained)
        config = preset.config_dict() if preset is not None else read_config_json(folder)
        kind = preset.kind if preset is not None else detect_backbone_kind(config, str(folder / "config.json"))
        adapter = backbone_spec(kind).adapter()
        tok = _load_tokenizer(folder, preset, tokenizer)
        overrides = {**(preset.template if preset is not None else {}), **(template or {})}
        with _seeded(seed):
            if pretrained:
                backbone = adapter.from_preset(preset, folder, tok) if preset else adapter.pretrained(folder, tok)
                head, trained = adapter.pretrained_head(backbone, folder, head_activation, name)
            else:
                backbone = _random_backbone(adapter, config, tok, preset.name if preset else folder / "config.json")
                head, trained = adapter.fresh_head(backbone, head_activation), False
        model = cls(backbone, head, tok, adapter.template(backbone, overrides), kind, name, head_trained=trained)
        return model._warn_if_untrained(name)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> "CrossEncoder":
        """Load a saved CrossEncoder folder (strict), or else build one with :meth:`from_backbone`. A
        ``rerank train --out`` folder is not a model: the error names its ``model/`` (and ``best/``)."""
        path = Path(name_or_path).expanduser()
        if path.is_dir() and (path / CONFIG_NAME).is_file():
            return cls._load_saved(path)
        if path.is_dir() and (path / "model" / CONFIG_NAME).is_file() and not (path / "config.json").exists():
            best = f" (the best dev checkpoint: {path / 'best'})" if (path / "best" / CONFIG_NAME).is_file() else ""
            raise ModelLoadingError(f"{path} is a training output folder, not a model: its model is "
                                    f"{path / 'model'}{best}")
        return cls.from_backbone(name_or_path)

    @classmethod
    def _load_saved(cls, path: Path) -> "CrossEncoder":
        cfg_file = path / CONFIG_NAME
        cfg, tcfg, spec = _read_config(cfg_file)
        tokenizer = _load_tokenizer(path, None, None)
        bdir = path / BACKBONE_DIR
        if not bdir.is_dir():
            raise ModelLoadingError(f"{path}: no {BACKBONE_DIR}/ folder (the backbone's checkpoint)")
        read_config_json(bdir)  # present, readable and JSON, whatever the kind's loader reads it with
        adapter = spec.adapter()
        backbone = adapter.saved(bdir, cfg)
        adapter.check_template(backbone, tcfg, str(cfg_file))
        head = None
        if spec.has_head:
            hcfg = cfg.get("head") or {}
            head = ScoreHead(backbone.hidden_size, hcfg.get("activation", "none"), float(hcfg.get("dropout", 0.0)))
            _load_head_strict(head, path / HEAD_NAME)
        model = cls(backbone, head, tokenizer, tcfg, spec.kind, cfg.get("base", ""),
                    head_trained=cfg.get("head_trained", True), pooling=(cfg.get("head") or {}).get("pooling"))
        return model._warn_if_untrained(str(path))

    def _warn_if_untrained(self, name: str) -> "CrossEncoder":
        if not self.head_trained and _TO_BE_TRAINED.get():
            logger.info("%s (%s backbone): the scoring head is not trained yet (this run trains it)", name,
                        self.backbone_type)
        elif not self.head_trained:
            logger.warning("%s (%s backbone): the scoring head is not trained; its scores mean nothing until "
                           "the model is fine-tuned", name, self.backbone_type)
        return self

    # ---- saving -------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                               "backbone_type": self.backbone_type, "base": self.base,
                               "template": self.template.to_dict(), "head_trained": self.head_trained}
        if self.head is not None:
            cfg["head"] = {"activation": self.head.activation, "dropout": float(self.head.dropout.p)}
            if self.pooling_override is not None:
                cfg["head"]["pooling"] = self.pooling_override
        cfg.update(self.spec.adapter().saved_fields(self.backbone))
        return cfg

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the folder described in the module doc; each file is replaced atomically
        (:func:`rerankers.utils.io.atomic_folder`)."""
        from safetensors.torch import save_file

        from rerankers.models.quantize import Int8Linear
        if any(isinstance(m, Int8Linear) for m in self.modules()):
            raise UsageError(f"{directory}: an int8-quantized model is not saved (its weights no longer have the "
                             "checkpoint's form); save the fp32 model and quantize when loading (--quantize int8)")
        with atomic_folder(directory) as tmp:
            self.backbone.save_pretrained(tmp / BACKBONE_DIR)
            if self.head is not None:
                save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                          str(tmp / HEAD_NAME))
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n")


def bidirectional_ends(first: Tensor, last: Tensor) -> Tensor:
    """"ends" pooling of a bidirectional RNN whose states are [forward half | backward half]: first, last (S, H)
    states of each sequence's first and last token -> (S, H), the forward direction's final state (at the
    last token) beside the backward direction's (at the first token)."""
    half = first.shape[1] // 2
    return torch.cat([last[:, :half], first[:, half:]], dim=1)


def _read_config(cfg_file: Path) -> tuple[dict[str, Any], TemplateConfig, BackboneSpec]:
    """A saved folder's config (checked), its template and its kind's registry row; ModelConfigError
    names the file and field."""
    check_can_read(cfg_file, "config")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{cfg_file}: unreadable JSON: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ModelConfigError(f"{cfg_file}: not a {FORMAT} config (format={found!r})")
    if "backbone_type" not in cfg:
        raise ModelConfigError(f"{cfg_file}: missing field 'backbone_type'")
    spec = backbone_spec(cfg["backbone_type"], str(cfg_file))
    for key in ("template",) + spec.saved_fields:
        if key not in cfg:
            raise ModelConfigError(f"{cfg_file}: missing field {key!r}")
    if not isinstance(cfg["template"], dict) or not isinstance(cfg.get("head") or {}, dict):
        raise ModelConfigError(f"{cfg_file}: 'template' and 'head' must be JSON objects")
    if not isinstance(cfg.get("head_trained", True), bool):
        raise ModelConfigError(f"{cfg_file}: 'head_trained' must be true or false, got {cfg['head_trained']!r}")
    try:
        tcfg = TemplateConfig.from_dict(cfg["template"])
    except (TemplateError, TypeError) as e:
        raise ModelConfigError(f"{cfg_file}: template: {e}") from None
    if tcfg.name != spec.template:
        raise ModelConfigError(f"{cfg_file}: template {tcfg.name!r} does not fit backbone_type {spec.kind!r}")
    return cfg, tcfg, spec


_TO_BE_TRAINED: contextvars.ContextVar[bool] = contextvars.ContextVar("rerankers_to_be_trained", default=False)


@contextlib.contextmanager
def to_be_trained() -> Iterator[None]:
    """Models built inside are about to be trained (``rerank train``) or timed (``rerank bench``): an untrained
    head is the point there, so it is said at INFO instead of the WARNING a user scoring with one gets."""
    token = _TO_BE_TRAINED.set(True)
    try:
        yield
    finally:
        _TO_BE_TRAINED.reset(token)


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """The CPU generator seeded with ``seed`` (None: 0) inside, the caller's state restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else int(seed))
        yield


def _random_backbone(adapter, config: dict[str, Any], tokenizer, where: str | Path) -> nn.Module:
    """``adapter.random`` with the error naming the preset or config.json it came from."""
    try:
        return adapter.random(config, tokenizer)
    except (TypeError, ValueError) as e:  # ModelConfigError is a ValueError
        raise ModelConfigError(f"{where}: cannot build a {adapter.kind} model of random weights: {e}") from None


def _load_tokenizer(folder: Path | None, preset: Preset | None, tokenizer: str | os.PathLike | None):
    """``tokenizer`` where given, else the checkpoint folder's, else the preset's."""
    if tokenizer is None and folder is not None and (tokenizer_files(folder) or preset is None
                                                      or preset.tokenizer is None):
        return _read_tokenizer(folder)
    source = tokenizer if tokenizer is not None else preset.name
    return _read_tokenizer(tokenizer_folder(source), str(source))


def _read_tokenizer(folder: Path, source: str | None = None):
    """AutoTokenizer of a local folder (that of tokenizer ``source``, where named), every failure one
    ModelLoadingError line naming it. A folder without tokenizer files is an error: transformers would build
    a tokenizer of special tokens only (every word [UNK]) and the scores would silently mean nothing."""
    from transformers import AutoTokenizer
    where = f"tokenizer {source!r} ({folder})" if source is not None and source != str(folder) else str(folder)
    if not tokenizer_files(folder):
        raise ModelLoadingError(f"{where}: no tokenizer files (tokenizer.json, vocab.txt, ...): save the model's "
                                "tokenizer there (tokenizer.save_pretrained), or name one (a folder or hub id)")
    for file in tokenizer_files(folder):
        check_can_read(file, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # transformers' messages run over several lines
        raise ModelLoadingError(f"{where}: the tokenizer cannot be loaded: {one_line(e)}") from None


def _load_head_strict(head: ScoreHead, file: Path) -> None:
    if not file.is_file():
        raise ModelLoadingError(f"{file}: the head's weights are missing")
    state = read_tensor_file(file)
    missing, unexpected, mismatched = compare_keys(head.state_dict(), state, prefix="head.")
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, source=str(file))
    head.load_state_dict(state)
