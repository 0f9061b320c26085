"""Mamba-2 backbone over packed sequences, with mamba_ssm's parameter names.

Keys of the module (``N`` = layer; Di = expand * H, nH = Di / headdim, G = ngroups, Ns = d_state)::

    embedding.weight                                (V, H)
    layers.N.norm.weight [.bias where LayerNorm]    (H,)
    layers.N.mixer.in_proj.weight [.bias]           (2 * Di + 2 * G * Ns + nH, H)   outputs z, x, B, C, dt
    layers.N.mixer.conv1d.weight [.bias]            (Di + 2 * G * Ns, 1, W)         over x, B, C
    layers.N.mixer.dt_bias, .A_log, .D              (nH,)
    layers.N.mixer.norm.weight                      (Di,)                           gated RMSNorm
    layers.N.mixer.out_proj.weight [.bias]          (H, Di)
    norm_f.weight [.bias]                           (H,)

Both checkpoint formats (transformers ``Mamba2ForCausalLM``, original mamba_ssm ``state-spaces/mamba2-*``)
load strictly into it, through the same key matching as Mamba-1 (:mod:`rerankers.models.mamba_loading`).
The blocks, the embedding, the final norm, the packed forward and the padded oracle path are Mamba-1's
(:class:`rerankers.models.mamba.MambaBackbone`, with this mixer swapped in). The conv runs through
:func:`rerankers.kernels.causal_conv1d_varlen`, the scan through :func:`rerankers.kernels.ssd_varlen`
(the Triton SSD on CUDA in bf16/fp16, the chunked PyTorch form on the CPU, in fp32 and under torch.compile;
``kernel_backend="reference"`` picks the recurrent oracle for both):
every packed sequence starts from a zero state, nothing crosses a boundary.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rerankers.kernels import causal_conv1d_varlen, ssd_varlen
from rerankers.models.adapter import BackboneAdapter, special_token_ids
from rerankers.models.mamba import MambaBackbone, MambaBlock
from rerankers.models.mamba2_config import Mamba2Config, read_config_file
from rerankers.models.registry import BACKBONES

logger = logging.getLogger(__name__)

__all__ = ["Mamba2Backbone", "Mamba2Config", "Mamba2Adapter"]


class GatedRMSNorm(nn.Module):
    """RMSNorm of ``y * silu(z)`` over groups of ``group_size`` channels, times ``weight``, in fp32 (fp64 for
    fp64 inputs) (mamba_ssm's RMSNormGated with norm_before_gate=False; transformers' MambaRMSNormGated in
    versions that group it).

    y, z: (..., Di) -> (..., Di) in y's dtype.
    """

    def __init__(self, hidden_size: int, group_size: int, eps: float):
        super().__init__()
        self.group_size, self.eps = group_size, eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        ct = torch.promote_types(y.dtype, torch.float32)
        g = y.to(ct) * F.silu(z.to(ct))
        groups = g.unflatten(-1, (-1, self.group_size))
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)
        return (groups.flatten(-2) * self.weight.to(ct)).to(y.dtype)


class Mamba2Mixer(nn.Module):
    """The SSD block of Mamba-2 on packed, channel-last tokens: (T, H) -> (T, H)."""

    def __init__(self, config: Mamba2Config):
        super().__init__()
        H, Di, W = config.d_model, config.d_inner, config.d_conv
        self.d_inner, self.nheads, self.headdim = Di, config.nheads, config.headdim
        self.ngroups, self.d_state, self.conv_dim = config.ngroups, config.d_state, config.conv_dim
        self.chunk_size, self.dt_limit = config.chunk_size, config.dt_limit
        self.in_proj = nn.Linear(H, config.in_proj_size, bias=config.bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=W, groups=self.conv_dim, padding=W - 1,
                                bias=config.conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.nheads))
        self.A_log = nn.Parameter(torch.empty(self.nheads))
        self.D = nn.Parameter(torch.empty(self.nheads))
        self.norm = GatedRMSNorm(Di, Di // config.ngroups, config.norm_epsilon)
        self.out_proj = nn.Linear(Di, H, bias=config.bias)
        self.kernel_backend: str | None = None
        if not self.A_log.is_meta:
            self.reset_ssm_parameters(config)

    @torch.no_grad()
    def reset_ssm_parameters(self, config: Mamba2Config) -> None:
        """Mamba-2's initialisation: A uniform in A_init_range, D = 1, dt log-uniform in [dt_min, dt_max]."""
        self.A_log.copy_(torch.empty(self.nheads).uniform_(*config.A_init_range).log())
        self.D.fill_(1.0)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(config.dt_max) - math.log(config.dt_min))
                       + math.log(config.dt_min)).clamp(min=config.dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def forward(self, hidden: Tensor, cu_seqlens: Tensor) -> Tensor:
        """hidden (T, H), cu_seqlens (S+1,) int32 -> (T, H)."""
        T = hidden.shape[0]
        z, xBC, dt = self.in_proj(hidden).split([self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC = causal_conv1d_varlen(xBC, self.conv1d.weight[:, 0], self.conv1d.bias, cu_seqlens,
                                   activation="silu", backend=self.kernel_backend)
        x, B, C = xBC.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        y = ssd_varlen(x.unflatten(-1, (self.nheads, self.headdim)), dt, -torch.exp(self.A_log.float()),
                       B.unflatten(-1, (self.ngroups, self.d_state)), C.unflatten(-1, (self.ngroups, self.d_state)),
                       self.D, self.dt_bias, cu_seqlens, chunk_size=self.chunk_size, dt_softplus=True,
                       dt_limit=self.dt_limit, backend="reference" if self.kernel_backend == "reference" else "auto")
        return self.out_proj(self.norm(y.reshape(T, self.d_inner), z))


class Mamba2Block(MambaBlock):
    """Mamba-1's pre-norm residual block around the Mamba-2 mixer."""

    mixer_class = Mamba2Mixer


class Mamba2Backbone(MambaBackbone):
    """Mamba-2 language-model backbone (no LM head) mapping packed tokens to final-normed hidden states.

    Attributes as :class:`MambaBackbone` (``config`` is a Mamba2Config; ``pooling = "last"``;
    ``gradient_checkpointing``; ``kernel_backend``: the conv's backend, None = auto, while the scan is
    ``ssd_varlen``'s "auto" unless it is "reference"). ``save_pretrained(directory, format)`` writes
    transformers' Mamba2ForCausalLM layout ("hf") or the original one ("mamba_ssm").
    """

    pooling = BACKBONES["mamba2"].pooling
    block_class = Mamba2Block

    preset_kind, display_name = "mamba2", "Mamba-2"
    read_config = staticmethod(read_config_file)  # from_pretrained is Mamba-1's, reading Mamba-2 configs

    @staticmethod
    def describe(config) -> str:
        return f"{config.n_layer} layers, H={config.d_model}, {config.nheads} heads of {config.headdim}"


class Mamba2Adapter(BackboneAdapter):
    """The registry's ``mamba2`` row: a Linear head on the last token; the vocabulary of a model of
    random weights is the tokenizer's, padded to a multiple of 8 rows."""

    kind = "mamba2"

    def pretrained(self, folder: Path, tokenizer) -> Mamba2Backbone:
        return Mamba2Backbone.from_pretrained(folder)

    def saved(self, folder: Path, cfg: dict) -> Mamba2Backbone:
        return Mamba2Backbone.from_pretrained(folder)  # always strict

    def random(self, config: dict, tokenizer) -> Mamba2Backbone:
        shape = Mamba2Config.from_dict(config)
        return Mamba2Backbone(dataclasses.replace(shape, vocab_size=len(tokenizer), pad_vocab_size_multiple=8,
                                                  **special_token_ids(tokenizer)))
