"""The systems a user would pick instead, built with OUR model's weights so that a check can compare
the two before anything is timed.

- ``mamba-ssm``: mamba-ssm's own Mamba stack (``MixerModel``: Mamba blocks through ``mamba_inner_fn``
  with causal-conv1d's CUDA conv, fused add + RMSNorm, residual in fp32), on right-padded batches, our
  head on each row's last real token: the stack RankMamba trained with.
- ``transformers``: transformers' ``*ForSequenceClassification`` with ``attn_implementation="sdpa"``
  on right-padded batches with an attention mask (our model exported by
  :func:`rerankers.models.bert.export_sequence_classification`).
- ``sentence-transformers``: ``CrossEncoder.predict`` on text pairs, inference only (the same export).

Each builder raises :class:`AnchorUnavailable` (one line: why) where its package is missing or the
backbone has no counterpart; the modes record that as a skipped row.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from rerankers.bench.systems import System
from rerankers.data.packing import PackedBatch

ANCHORS = ("mamba-ssm", "transformers", "sentence-transformers")


class AnchorUnavailable(Exception):
    """An anchor that cannot run here (package missing, no GPU): a row the tables list as not measured."""


class NotApplicable(AnchorUnavailable):
    """An anchor with no counterpart of the backbone (mamba-ssm for BERT): no row at all."""


class MambaSSM(System):
    """mamba-ssm's MixerModel with our Mamba's weights, on padded batches."""

    impl = "mamba-ssm"

    def __init__(self, name: str, model):
        if model.backbone_type != "mamba":
            raise NotApplicable(f"mamba-ssm has no counterpart of a {model.backbone_type} backbone")
        try:
            from mamba_ssm.models.mixer_seq_simple import MixerModel
            from mamba_ssm.ops.selective_scan_interface import causal_conv1d_fn
        except Exception as e:  # noqa: BLE001 - a missing CUDA extension raises more than ImportError
            raise AnchorUnavailable(f"mamba_ssm is not importable ({type(e).__name__}: {e})") from None
        if causal_conv1d_fn is None:
            raise AnchorUnavailable("mamba_ssm is importable but causal-conv1d's CUDA conv is not: "
                                    "mamba_inner_fn would not run")
        cfg = model.backbone.config
        mixer = MixerModel(d_model=cfg.d_model, n_layer=cfg.n_layer, d_intermediate=0,
                           vocab_size=cfg.padded_vocab_size,
                           ssm_cfg={"layer": "Mamba1", "d_state": cfg.d_state, "d_conv": cfg.d_conv,
                                    "expand": cfg.expand, "dt_rank": cfg.dt_rank, "conv_bias": cfg.conv_bias,
                                    "bias": cfg.bias},
                           norm_epsilon=cfg.norm_epsilon, rms_norm=cfg.rms_norm, fused_add_norm=True,
                           residual_in_fp32=cfg.residual_in_fp32)
        mixer.load_state_dict(model.backbone.state_dict(), strict=True)  # the same names: mamba_ssm's
        self.mixer, self.head = mixer, copy.deepcopy(model.head)
        self.pad_id = int(getattr(model.backbone, "pad_token_id", 0) or 0)
        super().__init__(name, "padded", nn.ModuleDict({"mixer": mixer, "head": self.head}))

    def scores(self, batch: PackedBatch) -> Tensor:
        ids, _, _ = batch.to_padded(self.pad_id)
        hidden = self.mixer(ids)                                            # (S, L, H)
        rows = torch.arange(ids.shape[0], device=ids.device)
        pooled = hidden[rows, batch.seqlens.to(ids.device) - 1]
        with torch.autocast(ids.device.type, enabled=False):
            return self.head(pooled.to(self.head.out_proj.weight.dtype))


def _export(model) -> Path:
    from rerankers.errors import ModelConfigError
    from rerankers.models.bert import export_sequence_classification

    folder = Path(tempfile.mkdtemp(prefix="rerankers-bench-export-"))
    try:
        return export_sequence_classification(model, folder)
    except ModelConfigError as e:
        raise NotApplicable(f"no transformers counterpart: {e}") from None


class TransformersSDPA(System):
    """transformers' *ForSequenceClassification (SDPA attention) with our weights, on padded batches."""

    impl = "transformers"

    def __init__(self, name: str, model):
        from transformers import AutoModelForSequenceClassification

        self.folder = _export(model)
        self.hf = AutoModelForSequenceClassification.from_pretrained(str(self.folder), attn_implementation="sdpa")
        self.pad_id = int(getattr(model.backbone, "pad_token_id", 0) or 0)
        super().__init__(name, "padded", self.hf)

    def scores(self, batch: PackedBatch) -> Tensor:
        ids, mask, tt = batch.to_padded(self.pad_id)
        out = self.hf(input_ids=ids, attention_mask=mask, **({} if tt is None else {"token_type_ids": tt}))
        return out.logits[:, 0].float()


class SentenceTransformersPredict:
    """sentence-transformers' ``CrossEncoder.predict`` on our exported weights (inference on texts)."""

    impl = "sentence-transformers"

    def __init__(self, name: str, model, device: torch.device, batch_size: int):
        try:
            from sentence_transformers import CrossEncoder as STCrossEncoder
        except ImportError as e:
            raise AnchorUnavailable(f"sentence_transformers is not importable ({e})") from None
        self.folder = _export(model)
        self.st = STCrossEncoder(str(self.folder), device=str(device), max_length=model.template.max_length)
        self.name, self.batch_size, self.device = name, batch_size, torch.device(device)

    @property
    def label(self) -> str:
        return f"{self.name} {self.impl} predict"

    def predict(self, queries: list[str], docs: list[str], autocast: torch.dtype | None = None):
        """Scores of the pairs as a user gets them: fp32 weights, under ``autocast`` like our recipe."""
        with torch.autocast(self.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            return self.st.predict(list(zip(queries, docs)), batch_size=self.batch_size, show_progress_bar=False,
                                   convert_to_numpy=True)


def build_anchor(kind: str, name: str, model) -> System:
    """The training/inference anchor ``kind`` ("mamba-ssm" | "transformers") of our ``model``."""
    if kind == "mamba-ssm":
        return MambaSSM(name, model)
    if kind == "transformers":
        if model.backbone_type != "bert":
            raise NotApplicable(f"transformers' SDPA anchor is for BERT-family backbones, not {model.backbone_type}")
        return TransformersSDPA(name, model)
    if kind == "sentence-transformers":
        raise NotApplicable("sentence-transformers' predict() is an inference anchor (rerank bench infer)")
    raise ValueError(f"unknown anchor {kind!r}")


def try_anchor(kind: str, name: str, model, skipped: list[dict]) -> System | None:
    """:func:`build_anchor`, or None: an unavailable anchor noted in ``skipped``, an inapplicable one not."""
    try:
        return build_anchor(kind, name, model)
    except NotApplicable:
        return None
    except AnchorUnavailable as e:
        skipped.append({"system": f"{name} {kind}", "reason": str(e)})
        return None
