"""Mamba-1 configuration, read from and written to both checkpoint formats' ``config.json``.

Two formats exist for the same architecture:

- Hugging Face (``state-spaces/mamba-*-hf``, transformers' ``MambaConfig``): ``hidden_size``,
  ``num_hidden_layers``, ``state_size``, ``conv_kernel``, ``expand``, ``time_step_rank``,
  ``use_conv_bias``, ``use_bias``, ``layer_norm_epsilon``, ``residual_in_fp32``; its ``vocab_size``
  is the embedding's row count (no padding); always RMSNorm.
- original mamba_ssm (``state-spaces/mamba-*``): ``d_model``, ``n_layer``, ``vocab_size`` (padded up
  to ``pad_vocab_size_multiple`` for the embedding), ``ssm_cfg`` (``d_state``, ``d_conv``,
  ``expand``, ``dt_rank``, ``conv_bias``, ``bias``, ...), ``rms_norm``, ``residual_in_fp32``,
  ``fused_add_norm``.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerankers.errors import ModelConfigError

logger = logging.getLogger(__name__)

HF_FORMAT = "hf"
MAMBA_SSM_FORMAT = "mamba_ssm"

# ssm_cfg keys of the original format: architecture keys we read, initialisation-only keys we keep
# or ignore (they do not change the forward pass).
_SSM_ARCH_KEYS = {"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias"}
_SSM_INIT_KEYS = {"dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor"}
_SSM_IGNORED_KEYS = {"use_fast_path", "layer_idx", "device", "dtype"}


@dataclass
class MambaConfig:
    """Mamba-1 backbone hyper-parameters (names of mamba_ssm's ``Mamba`` / ``MixerModel``).

    d_model: hidden size H; n_layer: blocks; vocab_size: tokenizer vocabulary (the embedding has
    ``padded_vocab_size`` rows); d_state: N; d_conv: conv width W; expand: d_inner = expand * H;
    dt_rank: "auto" = ceil(H / 16). dt_* fields only matter when initialising a fresh model.
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    rms_norm: bool = True
    residual_in_fp32: bool = True
    norm_epsilon: float = 1e-5
    pad_vocab_size_multiple: int = 8
    conv_bias: bool = True
    bias: bool = False
    tie_embeddings: bool = True
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand",
                     "pad_vocab_size_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelConfigError(f"MambaConfig.{name} must be a positive integer, got {value!r}")
        if not (self.dt_rank == "auto" or (isinstance(self.dt_rank, int) and self.dt_rank >= 1)):
            raise ModelConfigError(f"MambaConfig.dt_rank must be 'auto' or a positive integer, got {self.dt_rank!r}")
        if self.d_conv > 4:
            logger.warning("d_conv=%d: the varlen conv kernel supports widths up to 4", self.d_conv)

    # derived sizes -------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

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
        if is_ssm and not is_hf:
            return MAMBA_SSM_FORMAT
        if is_hf and not is_ssm:
            return HF_FORMAT
        raise ModelConfigError(
            "cannot tell the Mamba config format: expected either d_model/n_layer (mamba_ssm) or "
            f"hidden_size/num_hidden_layers (transformers); keys are {sorted(cfg)}")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "MambaConfig":
        """Build from either format's config.json contents (format detected from its keys)."""
        if cls.detect_format(cfg) == HF_FORMAT:
            return cls.from_hf_dict(cfg)
        return cls.from_mamba_ssm_dict(cfg)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "MambaConfig":
        """Read either format's config.json; errors name the file."""
        return read_config_file(path)[0]

    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any]) -> "MambaConfig":
        """transformers' MambaConfig keys (``state-spaces/mamba-*-hf``)."""
        model_type = cfg.get("model_type", "mamba")
        if model_type != "mamba":
            raise ModelConfigError(f"model_type {model_type!r} is not a Mamba-1 model (expected 'mamba')")
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ModelConfigError(f"hidden_act {act!r} is not supported (Mamba-1 uses 'silu')")
        hidden, expand = _int(cfg, "hidden_size"), cfg.get("expand", 2)
        inter = cfg.get("intermediate_size")
        if inter is not None and int(inter) != int(expand * hidden):
            raise ModelConfigError(f"intermediate_size {inter} != expand * hidden_size = {expand * hidden}")
        return cls(
            d_model=hidden, n_layer=_int(cfg, "num_hidden_layers"), vocab_size=_int(cfg, "vocab_size"),
            d_state=cfg.get("state_size", 16), d_conv=cfg.get("conv_kernel", 4), expand=expand,
            dt_rank=cfg.get("time_step_rank", "auto"), rms_norm=True,
            residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
            norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-5)), pad_vocab_size_multiple=1,
            conv_bias=bool(cfg.get("use_conv_bias", True)), bias=bool(cfg.get("use_bias", False)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            dt_min=cfg.get("time_step_min", 0.001), dt_max=cfg.get("time_step_max", 0.1),
            dt_init=cfg.get("time_step_init_scheme", "random"), dt_scale=cfg.get("time_step_scale", 1.0),
            dt_init_floor=cfg.get("time_step_floor", 1e-4), pad_token_id=cfg.get("pad_token_id"),
            bos_token_id=cfg.get("bos_token_id"), eos_token_id=_first(cfg.get("eos_token_id")),
        )

    @classmethod
    def from_mamba_ssm_dict(cls, cfg: dict[str, Any]) -> "MambaConfig":
        """Original mamba_ssm keys (``state-spaces/mamba-*``)."""
        if cfg.get("d_intermediate", 0):
            raise ModelConfigError(f"d_intermediate={cfg['d_intermediate']}: Mamba blocks with an MLP are "
                                   "not supported")
        if cfg.get("attn_layer_idx"):
            raise ModelConfigError(f"attn_layer_idx={cfg['attn_layer_idx']}: hybrid attention layers are not supported")
        ssm = dict(cfg.get("ssm_cfg") or {})
        layer = ssm.pop("layer", "Mamba1")
        if layer != "Mamba1":
            raise ModelConfigError(f"ssm_cfg.layer={layer!r}: only Mamba1 is supported")
        unknown = set(ssm) - _SSM_ARCH_KEYS - _SSM_INIT_KEYS - _SSM_IGNORED_KEYS
        if unknown:
            raise ModelConfigError(f"ssm_cfg has keys a Mamba-1 block does not take: {sorted(unknown)}")
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
        """transformers' MambaConfig keys; the vocabulary is written padded (the embedding's rows)."""
        if not self.rms_norm:
            raise ModelConfigError("the transformers Mamba format has no LayerNorm variant (rms_norm=False): "
                                   "save in the 'mamba_ssm' format")
        return {
            "architectures": ["MambaForCausalLM"], "model_type": "mamba",
            "vocab_size": self.padded_vocab_size, "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layer, "state_size": self.d_state, "conv_kernel": self.d_conv,
            "expand": self.expand, "intermediate_size": self.d_inner, "time_step_rank": self.dt_rank_value,
            "use_conv_bias": self.conv_bias, "use_bias": self.bias, "hidden_act": "silu",
            "layer_norm_epsilon": self.norm_epsilon, "residual_in_fp32": self.residual_in_fp32,
            "tie_word_embeddings": self.tie_embeddings, "time_step_min": self.dt_min,
            "time_step_max": self.dt_max, "time_step_init_scheme": self.dt_init,
            "time_step_scale": self.dt_scale, "time_step_floor": self.dt_init_floor,
            "pad_token_id": self.pad_token_id, "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }

    def to_mamba_ssm_dict(self) -> dict[str, Any]:
        """Original mamba_ssm keys (loadable by ``MambaLMHeadModel.from_pretrained``)."""
        if self.norm_epsilon != 1e-5:
            raise ModelConfigError(f"the mamba_ssm format cannot store norm_epsilon={self.norm_epsilon}: "
                                   "save in the 'hf' format")
        ssm_cfg = {"d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand,
                   "dt_rank": self.dt_rank, "conv_bias": self.conv_bias, "bias": self.bias,
                   "dt_min": self.dt_min, "dt_max": self.dt_max, "dt_init": self.dt_init,
                   "dt_scale": self.dt_scale, "dt_init_floor": self.dt_init_floor}
        return {"d_model": self.d_model, "d_intermediate": 0, "n_layer": self.n_layer,
                "vocab_size": self.vocab_size, "ssm_cfg": ssm_cfg, "attn_layer_idx": [], "attn_cfg": {},
                "rms_norm": self.rms_norm, "residual_in_fp32": self.residual_in_fp32,
                "fused_add_norm": True, "pad_vocab_size_multiple": self.pad_vocab_size_multiple,
                "tie_embeddings": self.tie_embeddings}


def read_config_json(path: str | Path, config_cls, what: str):
    """(config, format) of ``config_cls`` (MambaConfig, Mamba2Config) from a config.json of either format;
    ModelConfigError naming the file (``what``: the model's name in the message)."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelConfigError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    try:
        return config_cls.from_dict(cfg), config_cls.detect_format(cfg)
    except ModelConfigError as e:
        raise ModelConfigError(f"{path}: {e}") from None
    except TypeError as e:  # e.g. a value of the wrong type inside ssm_cfg
        raise ModelConfigError(f"{path}: invalid {what} config ({e})") from None


def read_config_file(path: str | Path) -> tuple[MambaConfig, str]:
    """(config, format) from a Mamba-1 config.json of either format; ModelConfigError naming the file."""
    return read_config_json(path, MambaConfig, "Mamba")


def _int(cfg: dict[str, Any], key: str) -> int:
    if key not in cfg:
        raise ModelConfigError(f"config lacks the required key {key!r}")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelConfigError(f"config key {key!r} must be an integer, got {value!r}")
    return value


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value
