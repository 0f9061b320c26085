"""Mamba-2 configuration, read from and written to both checkpoint formats' ``config.json``.

Two formats exist for the same architecture:

- original mamba_ssm (``state-spaces/mamba2-*``): ``d_model``, ``n_layer``, ``vocab_size`` (padded up
  to ``pad_vocab_size_multiple`` for the embedding), ``ssm_cfg`` with ``"layer": "Mamba2"`` and the
  mixer's arguments (``d_state``, ``d_conv``, ``expand``, ``headdim``, ``ngroups``, ``chunk_size``,
  ``bias``, ``conv_bias``, ``dt_limit``, ...; absent ones take mamba_ssm's ``Mamba2`` defaults: 128,
  4, 2, 64, 1, 256), ``rms_norm``, ``residual_in_fp32``. The released checkpoints store only
  ``{"layer": "Mamba2"}``.
- transformers (``Mamba2ForCausalLM``, ``model_type`` "mamba2"): ``hidden_size``,
  ``num_hidden_layers``, ``state_size``, ``conv_kernel``, ``expand``, ``head_dim``, ``num_heads``,
  ``n_groups`` (default 8 there, not 1), ``chunk_size``, ``use_bias``, ``use_conv_bias``,
  ``layer_norm_epsilon``, ``time_step_limit``; ``vocab_size`` is the embedding's row count.

The gated RMSNorm inside the mixer normalises ``y * silu(z)`` over ``ngroups`` groups of
``d_inner / ngroups`` channels (mamba_ssm's ``RMSNormGated(norm_before_gate=False, group_size=d_ssm //
ngroups)``; transformers' ``MambaRMSNormGated`` in recent versions: 5.17 normalises over all of d_inner
at once, which differs from mamba_ssm where ngroups > 1). mamba_ssm variants without it (``rmsnorm=False``),
with the norm before the gate, with ``D`` per channel (``D_has_hdim``) or with a gated MLP beside the
SSM (``d_ssm``) are rejected by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerankers.errors import ModelConfigError
from rerankers.models.mamba_config import HF_FORMAT, MAMBA_SSM_FORMAT, _first, _int, read_config_json

NO_DT_LIMIT = (0.0, math.inf)
MAMBA2_LAYER = "Mamba2"

# ssm_cfg keys of the original format: architecture keys we read, initialisation-only keys we keep,
# keys that must keep mamba_ssm's default (other values are variants we do not implement), ignored keys.
_SSM_ARCH_KEYS = {"d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size", "bias", "conv_bias",
                  "dt_limit"}
_SSM_INIT_KEYS = {"dt_min", "dt_max", "dt_init_floor", "A_init_range"}
_SSM_FIXED = {"d_ssm": None, "D_has_hdim": False, "rmsnorm": True, "norm_before_gate": False}
_SSM_IGNORED_KEYS = {"layer", "conv_init", "use_mem_eff_path", "layer_idx", "process_group", "sequence_parallel",
                     "device", "dtype"}


@dataclass
class Mamba2Config:
    """Mamba-2 backbone hyper-parameters (names of mamba_ssm's ``Mamba2`` / ``MixerModel``).

    d_model: hidden size; n_layer: blocks; vocab_size: tokenizer vocabulary (the embedding has
    ``padded_vocab_size`` rows); d_state: N; d_conv: conv width W (<= 4); expand: d_inner = expand *
    d_model; headdim: P, so nheads = d_inner / P; ngroups: G groups of B/C shared by nheads / G heads;
    chunk_size: the chunked scan's Q (a compute choice: it does not change the result beyond rounding);
    dt_limit: clamp of the time step after the softplus. dt_* and A_init_range only matter when
    initialising a fresh model.
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    rms_norm: bool = True
    residual_in_fp32: bool = True
    norm_epsilon: float = 1e-5
    pad_vocab_size_multiple: int = 8
    conv_bias: bool = True
    bias: bool = False
    tie_embeddings: bool = True
    dt_limit: tuple[float, float] = NO_DT_LIMIT
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    A_init_range: tuple[float, float] = (1.0, 16.0)
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "headdim", "ngroups",
                     "chunk_size", "pad_vocab_size_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelConfigError(f"Mamba2Config.{name} must be a positive integer, got {value!r}")
        if self.d_conv > 4:
            raise ModelConfigError(f"Mamba2Config.d_conv={self.d_conv}: the varlen conv kernel supports widths up to 4")
        if self.d_inner % self.headdim:
            raise ModelConfigError(f"Mamba2Config: d_inner = expand * d_model = {self.d_inner} is not a multiple of "
                                   f"headdim={self.headdim}")
        if self.nheads % self.ngroups:
            raise ModelConfigError(f"Mamba2Config: ngroups={self.ngroups} does not divide nheads={self.nheads}")
        self.dt_limit = _pair(self.dt_limit, "dt_limit")
        self.A_init_range = _pair(self.A_init_range, "A_init_range")

    # derived sizes -------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the conv: x, B and C (d_inner + 2 * ngroups * d_state)."""
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def in_proj_size(self) -> int:
        """in_proj's outputs, in the order z, x, B, C, dt."""
        return self.d_inner + self.conv_dim + self.nheads

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return ((self.vocab_size + m - 1) // m) * m

    # reading ----------------------------------------------------------------------------------
    @staticmethod
    def detect_format(cfg: dict[str, Any]) -> str:
        """"hf" or "mamba_ssm" from a config.json's keys; ModelConfigError if neither."""
        is_ssm = "d_model" in cfg and "n_layer" in cfg
        is_hf = "hidden_size" in cfg and "num_hidden_layers" in cfg
        if is_ssm != is_hf:
            return MAMBA_SSM_FORMAT if is_ssm else HF_FORMAT
        raise ModelConfigError(
            "cannot tell the Mamba-2 config format: expected either d_model/n_layer (mamba_ssm) or "
            f"hidden_size/num_hidden_layers (transformers); keys are {sorted(cfg)}")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "Mamba2Config":
        """Build from either format's config.json contents (format detected from its keys)."""
        if cls.detect_format(cfg) == HF_FORMAT:
            return cls.from_hf_dict(cfg)
        return cls.from_mamba_ssm_dict(cfg)

    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any]) -> "Mamba2Config":
        """transformers' Mamba2Config keys (absent keys take transformers' defaults)."""
        model_type = cfg.get("model_type", "mamba2")
        if model_type != "mamba2":
            raise ModelConfigError(f"model_type {model_type!r} is not a Mamba-2 model (expected 'mamba2')")
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ModelConfigError(f"hidden_act {act!r} is not supported (Mamba-2 uses 'silu')")
        hidden, expand, head_dim = _int(cfg, "hidden_size"), cfg.get("expand", 2), cfg.get("head_dim", 64)
        heads = cfg.get("num_heads")
        if heads is not None and heads * head_dim != expand * hidden:
            raise ModelConfigError(f"num_heads * head_dim = {heads} * {head_dim} != expand * hidden_size = "
                                   f"{expand * hidden}")
        return cls(
            d_model=hidden, n_layer=_int(cfg, "num_hidden_layers"), vocab_size=_int(cfg, "vocab_size"),
            d_state=cfg.get("state_size", 128), d_conv=cfg.get("conv_kernel", 4), expand=expand, headdim=head_dim,
            ngroups=cfg.get("n_groups", 8), chunk_size=cfg.get("chunk_size", 256), rms_norm=True,
            residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
            norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-5)), pad_vocab_size_multiple=1,
            conv_bias=bool(cfg.get("use_conv_bias", True)), bias=bool(cfg.get("use_bias", False)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            dt_limit=cfg.get("time_step_limit", NO_DT_LIMIT), dt_min=cfg.get("time_step_min", 0.001),
            dt_max=cfg.get("time_step_max", 0.1), dt_init_floor=cfg.get("time_step_floor", 1e-4),
            pad_token_id=cfg.get("pad_token_id"), bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=_first(cfg.get("eos_token_id")),
        )

    @classmethod
    def from_mamba_ssm_dict(cls, cfg: dict[str, Any]) -> "Mamba2Config":
        """Original mamba_ssm keys (``state-spaces/mamba2-*``)."""
        if cfg.get("d_intermediate", 0):
            raise ModelConfigError(f"d_intermediate={cfg['d_intermediate']}: Mamba blocks with an MLP are "
                                   "not supported")
        if cfg.get("attn_layer_idx"):
            raise ModelConfigError(f"attn_layer_idx={cfg['attn_layer_idx']}: hybrid attention layers are not supported")
        ssm = dict(cfg.get("ssm_cfg") or {})
        if ssm.get("layer", "Mamba1") != MAMBA2_LAYER:
            raise ModelConfigError(f"ssm_cfg.layer={ssm.get('layer', 'Mamba1')!r}: not a Mamba-2 model "
                                   f"(expected {MAMBA2_LAYER!r})")
        for key, default in _SSM_FIXED.items():
            if key in ssm and ssm[key] != default:
                raise ModelConfigError(f"ssm_cfg.{key}={ssm[key]!r}: only the default {default!r} is supported")
        unknown = set(ssm) - _SSM_ARCH_KEYS - _SSM_INIT_KEYS - set(_SSM_FIXED) - _SSM_IGNORED_KEYS
        if unknown:
            raise ModelConfigError(f"ssm_cfg has keys a Mamba-2 block does not take: {sorted(unknown)}")
        kwargs = {k: ssm[k] for k in _SSM_ARCH_KEYS | _SSM_INIT_KEYS if k in ssm}
        return cls(
            d_model=_int(cfg, "d_model"), n_layer=_int(cfg, "n_layer"), vocab_size=_int(cfg, "vocab_size"),
            rms_norm=bool(cfg.get("rms_norm", True)), residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
            norm_epsilon=float(cfg.get("norm_epsilon", 1e-5)),
            pad_vocab_size_multiple=int(cfg.get("pad_vocab_size_multiple", 8)),
            tie_embeddings=bool(cfg.get("tie_embeddings", True)), **kwargs,
        )

    # writing ----------------------------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """transformers' Mamba2Config keys; the vocabulary is written padded (the embedding's rows), the LM head
        tied to the embedding."""
        if not self.rms_norm:
            raise ModelConfigError("the transformers Mamba-2 format has no LayerNorm variant (rms_norm=False): "
                                   "save in the 'mamba_ssm' format")
        return {
            "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2",
            "vocab_size": self.padded_vocab_size, "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layer, "state_size": self.d_state, "conv_kernel": self.d_conv,
            "expand": self.expand, "head_dim": self.headdim, "num_heads": self.nheads, "n_groups": self.ngroups,
            "chunk_size": self.chunk_size, "use_conv_bias": self.conv_bias, "use_bias": self.bias,
            "hidden_act": "silu", "layer_norm_epsilon": self.norm_epsilon, "residual_in_fp32": self.residual_in_fp32,
            # no separate LM head is kept (a reranker drops it), so the head a transformers user gets is the embedding
            "tie_word_embeddings": True, "time_step_limit": list(self.dt_limit),
            "time_step_min": self.dt_min, "time_step_max": self.dt_max, "time_step_floor": self.dt_init_floor,
            "pad_token_id": self.pad_token_id, "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
        }

    def to_mamba_ssm_dict(self) -> dict[str, Any]:
        """Original mamba_ssm keys (loadable by ``MambaLMHeadModel.from_pretrained``)."""
        if self.norm_epsilon != 1e-5:
            raise ModelConfigError(f"the mamba_ssm format cannot store norm_epsilon={self.norm_epsilon}: "
                                   "save in the 'hf' format")
        ssm_cfg = {"layer": MAMBA2_LAYER, "d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand,
                   "headdim": self.headdim, "ngroups": self.ngroups, "chunk_size": self.chunk_size,
                   "bias": self.bias, "conv_bias": self.conv_bias, "dt_min": self.dt_min, "dt_max": self.dt_max,
                   "dt_init_floor": self.dt_init_floor, "A_init_range": list(self.A_init_range)}
        if self.dt_limit != NO_DT_LIMIT:
            ssm_cfg["dt_limit"] = list(self.dt_limit)
        return {"d_model": self.d_model, "d_intermediate": 0, "n_layer": self.n_layer,
                "vocab_size": self.vocab_size, "ssm_cfg": ssm_cfg, "attn_layer_idx": [], "attn_cfg": {},
                "rms_norm": self.rms_norm, "residual_in_fp32": self.residual_in_fp32,
                "fused_add_norm": True, "pad_vocab_size_multiple": self.pad_vocab_size_multiple,
                "tie_embeddings": self.tie_embeddings}


def read_config_file(path: str | Path) -> tuple[Mamba2Config, str]:
    """(config, format) from a Mamba-2 config.json of either format; ModelConfigError naming the file."""
    return read_config_json(path, Mamba2Config, "Mamba-2")


_TAGGED_FLOATS = {"Infinity": math.inf, "-Infinity": -math.inf}


def _number(value: Any) -> float:
    """A float from a number or transformers 5's tagged JSON float (``{"__float__": "Infinity"}``)."""
    if isinstance(value, dict) and set(value) == {"__float__"} and value["__float__"] in _TAGGED_FLOATS:
        return _TAGGED_FLOATS[value["__float__"]]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return float(value)


def _pair(value: Any, name: str) -> tuple[float, float]:
    """A (low, high) pair of numbers from a tuple or a JSON list; ModelConfigError otherwise."""
    try:
        low, high = (_number(v) for v in value)
    except (TypeError, ValueError):
        raise ModelConfigError(f"Mamba2Config.{name} must be a pair of numbers (low, high), got {value!r}") from None
    if not low <= high:
        raise ModelConfigError(f"Mamba2Config.{name} must have low <= high, got {value!r}")
    return low, high
