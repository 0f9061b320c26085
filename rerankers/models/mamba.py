"""Mamba-1 backbone over packed sequences, with mamba_ssm's parameter names.

Keys of the module (``N`` = layer)::

    embedding.weight                                (V, H)
    layers.N.norm.weight [.bias where LayerNorm]    (H,)
    layers.N.mixer.in_proj.weight [.bias]           (2 * Di, H)        Di = expand * H
    layers.N.mixer.conv1d.weight [.bias]            (Di, 1, W)
    layers.N.mixer.x_proj.weight                    (R + 2 * Ns, Di)   R = dt_rank, Ns = d_state
    layers.N.mixer.dt_proj.weight, .bias            (Di, R), (Di,)
    layers.N.mixer.A_log                            (Di, Ns)
    layers.N.mixer.D                                (Di,)
    layers.N.mixer.out_proj.weight [.bias]          (H, Di)
    norm_f.weight [.bias]                           (H,)

Both checkpoint formats (transformers ``MambaForCausalLM``, original mamba_ssm) load strictly into
it (see :mod:`rerankers.models.mamba_loading`). The scan and the conv run through
:func:`rerankers.kernels.selective_scan_varlen` / :func:`rerankers.kernels.causal_conv1d_varlen`
(Triton on CUDA, the pure-PyTorch per-sequence reference on the CPU): every packed sequence
starts from a zero state, nothing crosses a boundary. The residual add + RMSNorm before each mixer
and the final norm are one fused op, :func:`rerankers.kernels.add_rmsnorm` (the same backends).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rerankers.data.packing import PackedBatch
from rerankers.errors import ModelConfigError
from rerankers.kernels import add_rmsnorm, causal_conv1d_varlen, selective_scan_varlen
from rerankers.kernels.precision import as_dtype
from rerankers.kernels.varlen import cu_seqlens_from_lengths, position_ids_from_cu_seqlens, right_padded_lengths
from rerankers.models.adapter import BackboneAdapter, special_token_ids
from rerankers.models.checkpoint_files import read_state_dict
from rerankers.models.mamba_config import HF_FORMAT, MAMBA_SSM_FORMAT, MambaConfig, read_config_file
from rerankers.models.mamba_loading import BACKBONE_PREFIX, LM_HEAD_KEY, load_strict, write_checkpoint
from rerankers.models.presets import resolve
from rerankers.models.recompute import RecomputeSaved, outer_hooks_active
from rerankers.models.registry import BACKBONES

logger = logging.getLogger(__name__)

__all__ = ["MambaBackbone", "MambaConfig", "MambaAdapter", "set_recompute_mixer", "recompute_by_default"]

#: ``rerank train --recompute-mixer auto`` turns it on from this hidden size up. Measured on the H200 (BENCHMARKS.md,
#: seventh and ninth sessions): +0.3% and +3.6% of mamba-370m's step (H 1024) at 256 pairs for 8.6 GiB less, but
#: +1.5% to +17% of mamba-130m's (H 768, three calls), a step nearer to host-bound (the rebuild's launches and the
#: hooks are host time)
RECOMPUTE_AUTO_MIN_HIDDEN = 1024
#: ... and only in micro-batches of at least this many tokens: mamba-370m's step at 64 pairs (5.8K tokens, 12.6 GiB,
#: host-bound) lost 36% to it, at 256 pairs (one micro-batch of 23.3K tokens) 3.6% (ninth session). Between the two
#: it is not measured; 8,192 keeps it on for the micro-batches a large step fills up to the default budget (16,384)
RECOMPUTE_AUTO_MIN_TOKENS = 8192


def _base(backbone: nn.Module) -> nn.Module:
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


def recompute_by_default(backbone: nn.Module, device: torch.device) -> bool:
    """Whether ``--recompute-mixer auto`` rebuilds this backbone's mixer activations on ``device``: on CUDA (what
    it saves is GPU memory; on the CPU it would only cost time), for Mamba-1 mixers (checked by
    :func:`set_recompute_mixer`) of a hidden size of at least :data:`RECOMPUTE_AUTO_MIN_HIDDEN`."""
    return (torch.device(device).type == "cuda"
            and int(getattr(_base(backbone), "hidden_size", 0) or 0) >= RECOMPUTE_AUTO_MIN_HIDDEN)


def set_recompute_mixer(backbone: nn.Module, on: bool) -> None:
    """``recompute_mixer`` of a backbone (through peft's LoRA wrapper): a ModelConfigError where it has no
    Mamba-1 mixers (another kind of backbone; Mamba-2's mixers refuse it themselves)."""
    base = _base(backbone)
    if not isinstance(getattr(type(base), "recompute_mixer", None), property):
        raise ModelConfigError(f"the {type(base).__name__} backbone has no mixer activations to rebuild "
                               "(Mamba-1 only)")
    base.recompute_mixer = on


class MambaNorm(nn.Module):
    """RMSNorm (``weight``) or LayerNorm (``weight``, ``bias``), computed in fp32.

    (..., H) in any dtype -> (..., H) in the parameters' dtype.
    """

    def __init__(self, hidden_size: int, eps: float, rms: bool = True):
        super().__init__()
        self.eps, self.rms = eps, rms
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = None if rms else nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        if self.rms:
            out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        else:
            out = F.layer_norm(xf, xf.shape[-1:], self.weight.float(), self.bias.float(), self.eps)
        return out.to(self.weight.dtype)

    def add_and_norm(self, hidden: Tensor, residual: Tensor | None, residual_in_fp32: bool,
                     backend: str | None = None, out_dtype: torch.dtype | None = None,
                     keep_residual: bool = True) -> tuple[Tensor, Tensor | None]:
        """residual_out = hidden (+ residual), in fp32 if residual_in_fp32; returns (norm(residual_out),
        residual_out or None unless keep_residual), (T, H) each.

        RMSNorm: one fused op (:func:`rerankers.kernels.add_rmsnorm`: Triton on CUDA, the reference,
        the same numbers as the unfused code, on the CPU; ``backend`` overrides), its output in
        ``out_dtype`` (None: the parameters' dtype). LayerNorm: the unfused code, ``out_dtype`` unused.
        """
        if self.rms:
            return add_rmsnorm(hidden, residual, self.weight, self.eps, residual_in_fp32, out_dtype, keep_residual,
                               backend=backend)
        residual = hidden if residual is None else residual + hidden
        if residual_in_fp32:
            residual = residual.float()
        return self(residual), (residual if keep_residual else None)


class MambaMixer(nn.Module):
    """The selective SSM block of Mamba-1 on packed, channel-last tokens: (T, H) -> (T, H)."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        H, Di, R, N, W = config.d_model, config.d_inner, config.dt_rank_value, config.d_state, config.d_conv
        self.d_inner, self.dt_rank, self.d_state = Di, R, N
        self.in_proj = nn.Linear(H, 2 * Di, bias=config.bias)
        self.conv1d = nn.Conv1d(Di, Di, kernel_size=W, groups=Di, padding=W - 1, bias=config.conv_bias)
        self.x_proj = nn.Linear(Di, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, Di, bias=True)
        self.A_log = nn.Parameter(torch.empty(Di, N))
        self.D = nn.Parameter(torch.empty(Di))
        self.out_proj = nn.Linear(Di, H, bias=config.bias)
        self.kernel_backend: str | None = None
        self.recompute = False  # rebuild the conv output and delta in the backward (forward's docstring)
        if not self.A_log.is_meta:
            self.reset_ssm_parameters(config)

    @torch.no_grad()
    def reset_ssm_parameters(self, config: MambaConfig) -> None:
        """Mamba-1's initialisation of A (S4D-real), D, and dt_proj (dt log-uniform in [dt_min, dt_max])."""
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).expand(self.d_inner, -1)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)
        std = self.dt_rank ** -0.5 * config.dt_scale
        if config.dt_init == "constant":
            self.dt_proj.weight.fill_(std)
        else:
            self.dt_proj.weight.uniform_(-std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(config.dt_max) - math.log(config.dt_min))
                       + math.log(config.dt_min)).clamp(min=config.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def forward(self, hidden: Tensor, cu_seqlens: Tensor) -> Tensor:
        """hidden (T, H), cu_seqlens (S+1,) int32 -> (T, H).

        With ``recompute`` (training, eager), the conv output and delta are not kept for the backward: it
        rebuilds them (the conv forward and the dt_proj matmul again) from the in_proj output and dt_low,
        which are kept anyway (:class:`rerankers.models.recompute.RecomputeSaved`; 2 x T x Di activations
        a layer fewer)."""
        x_in, z = self.in_proj(hidden).chunk(2, dim=-1)                    # (T, Di) each
        # not inside checkpointing's own hooks (or any others): ours would replace them for every saved tensor
        rec = (self.recompute and torch.is_grad_enabled() and not torch.compiler.is_compiling()
               and not outer_hooks_active())
        conv = functools.partial(causal_conv1d_varlen, x_in, self.conv1d.weight[:, 0], self.conv1d.bias,
                                 cu_seqlens, activation="silu", backend=self.kernel_backend)
        x = conv()
        # (Di, N), as the transpose of a (N, Di) tensor: the scan reads A states-major, so its launchers then make
        # no copy of it (they made three a layer, and one of dA), and dA comes back as a view (which A_log's gradient
        # accumulation copies once into the parameter's layout)
        A = -torch.exp(as_dtype(self.A_log, torch.float32).t().contiguous()).t()
        D, dt_bias = as_dtype(self.D, torch.float32), as_dtype(self.dt_proj.bias, torch.float32)
        # the hooks cover only the ops that save x or delta (each saved tensor through them is a Python call)
        with RecomputeSaved() if rec else contextlib.nullcontext() as saved:
            if rec:  # marked before x_proj saves it
                saved.mark(x, conv)
            x_dbl = self.x_proj(x)                                         # (T, R + 2N)
            # B and C in fp32 (exact: the upcast of the autocast dtype), one (T, 2N) copy: the scan's walks read
            # every row of them for every channel, and an fp32 row loads without the per-value conversion
            # (KERNEL_NOTES.md, eighth session: 6-11% of the walks' instructions)
            dt_low, BC = x_dbl.split([self.dt_rank, 2 * self.d_state], dim=-1)
            B, C = BC.float().split(self.d_state, dim=-1)
            dt_proj = functools.partial(F.linear, dt_low, self.dt_proj.weight)
            delta = dt_proj()                                              # (T, Di), bias added in the scan
            if rec:
                saved.mark(delta, dt_proj)  # (rebuilt under the forward's autocast state)
            # x, z, B, C are row-strided views (unit stride in the last dim): the kernels take them as such.
            y = selective_scan_varlen(x, delta, A, B, C, D, z, dt_bias, cu_seqlens, delta_softplus=True,
                                      backend=self.kernel_backend)
        return self.out_proj(y)


class MambaBlock(nn.Module):
    """Pre-norm residual block: residual += hidden; hidden = mixer(norm(residual))."""

    mixer_class: type[nn.Module] = MambaMixer  # Mamba-2's block swaps in its mixer (models/mamba2.py)

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = MambaNorm(config.d_model, config.norm_epsilon, rms=config.rms_norm)
        self.mixer = self.mixer_class(config)

    def forward(self, hidden: Tensor, residual: Tensor | None, cu_seqlens: Tensor) -> tuple[Tensor, Tensor]:
        """hidden (T, H), residual (T, H) or None -> (mixer output (T, H), residual (T, H))."""
        # under autocast the norm's output is asked in the autocast dtype: the mixer's first op (in_proj,
        # a Linear) would cast it to that anyway, so the numbers are the same and the cast is saved
        device = hidden.device.type
        out_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        normed, residual = self.norm.add_and_norm(hidden, residual, self.residual_in_fp32,
                                                  backend=self.mixer.kernel_backend, out_dtype=out_dtype)
        return self.mixer(normed, cu_seqlens), residual


class MambaBackbone(nn.Module):
    """Mamba-1 language-model backbone (no LM head) mapping packed tokens to final-normed hidden states.

    Attributes: ``config`` (MambaConfig), ``hidden_size`` (H), ``pooling = "last"`` (causal model:
    pool each sequence's last token), ``gradient_checkpointing`` (recompute blocks in backward),
    ``kernel_backend`` (None = auto: Triton on CUDA, reference on CPU; see rerankers.kernels).
    """

    pooling = BACKBONES["mamba"].pooling
    block_class: type[nn.Module] = MambaBlock  # Mamba-2's backbone swaps in its block (models/mamba2.py)
    # what from_pretrained reads and says; Mamba-2's backbone swaps these in too
    preset_kind, display_name = "mamba", "Mamba"
    read_config = staticmethod(read_config_file)

    @staticmethod
    def describe(config) -> str:
        """The shape for the loading log line."""
        return f"{config.n_layer} layers, H={config.d_model}"

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        self.hidden_size = config.d_model
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(self.block_class(config) for _ in range(config.n_layer))
        self.norm_f = MambaNorm(config.d_model, config.norm_epsilon, rms=config.rms_norm)
        self.gradient_checkpointing = False
        if not self.embedding.weight.is_meta:
            nn.init.normal_(self.embedding.weight, std=0.02)

    @property
    def kernel_backend(self) -> str | None:
        return self.layers[0].mixer.kernel_backend if len(self.layers) else None

    @kernel_backend.setter
    def kernel_backend(self, backend: str | None) -> None:
        for layer in self.layers:
            layer.mixer.kernel_backend = backend

    @property
    def recompute_mixer(self) -> bool:
        """Every mixer rebuilds its conv output and delta in the backward instead of keeping them
        (:meth:`MambaMixer.forward`; Mamba-1 only)."""
        return any(getattr(layer.mixer, "recompute", False) for layer in self.layers)

    @recompute_mixer.setter
    def recompute_mixer(self, on: bool) -> None:
        for layer in self.layers:
            if not hasattr(layer.mixer, "recompute"):
                raise ModelConfigError(f"recompute_mixer: {type(layer.mixer).__name__} has no activations to rebuild "
                                       "(Mamba-1's mixer only)")
            layer.mixer.recompute = bool(on)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    # forward ----------------------------------------------------------------------------------
    def forward(self, batch: PackedBatch, inputs_embeds: Tensor | None = None) -> Tensor:
        """Packed tokens -> final-normed hidden states (T, H) in the parameters' dtype.

        batch: PackedBatch (input_ids (T,), cu_seqlens (S+1,) int32); ``inputs_embeds`` (T, H)
        replaces the embedding lookup where given (e.g. to take gradients w.r.t. the inputs).
        """
        cu_seqlens = batch.cu_seqlens
        if inputs_embeds is None:
            ids = batch.input_ids
            rows = self.embedding.num_embeddings
            if not ids.is_cuda and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= rows):
                raise ValueError(f"input_ids must lie in [0, {rows}), "
                                 f"got values in [{int(ids.min())}, {int(ids.max())}]")
            hidden = self.embedding(ids)
        else:
            if inputs_embeds.dim() != 2 or inputs_embeds.shape[1] != self.hidden_size:
                raise ValueError(f"inputs_embeds must be (T, {self.hidden_size}), got {tuple(inputs_embeds.shape)}")
            hidden = inputs_embeds
        if int(hidden.shape[0]) != int(batch.num_tokens):
            raise ValueError(f"{hidden.shape[0]} embeddings for a batch of {batch.num_tokens} tokens")
        residual: Tensor | None = None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden, residual = checkpoint(layer, hidden, residual, cu_seqlens, use_reentrant=False)
            else:
                hidden, residual = layer(hidden, residual, cu_seqlens)
        out, _ = self.norm_f.add_and_norm(hidden, residual, residual_in_fp32=False, backend=self.kernel_backend,
                                          keep_residual=False)
        return out

    def forward_padded(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Right-padded rows -> (S, L, H), zeros at padding.

        Each row runs alone (a one-sequence pack through the same machinery), so comparing it to
        :meth:`forward` on the whole pack tests that packing changes nothing.
        input_ids (S, L) int64, attention_mask (S, L) 0/1 with each row's ones first;
        ``token_type_ids``: unused (no segments), taken so that every backbone's padded path has the
        same arguments.
        """
        lengths = right_padded_lengths(input_ids, attention_mask)
        S, L = input_ids.shape
        out = torch.zeros(S, L, self.hidden_size, dtype=self.norm_f.weight.dtype, device=input_ids.device)
        for i, n in enumerate(lengths.tolist()):
            if n == 0:
                continue
            cu = cu_seqlens_from_lengths([n], device=input_ids.device)
            row = PackedBatch(input_ids=input_ids[i, :n], cu_seqlens=cu, max_seqlen=n,
                              position_ids=position_ids_from_cu_seqlens(cu))
            out[i, :n] = self(row)
        return out

    # checkpoints ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> "MambaBackbone":
        """Load a local directory, a preset of this kind (models/presets.py) or a hub id, in either format.

        The directory holds config.json (transformers or mamba_ssm keys) and model.safetensors,
        pytorch_model.bin or their sharded index. Loading is strict: CheckpointMismatchError names
        missing / unexpected / wrong-shape keys; ``lm_head.weight`` is dropped (tied or unused).
        dtype: parameters' dtype (default float32); device: where to put them (default CPU).
        """
        directory, preset = resolve(name_or_path)
        if preset is not None and preset.kind != cls.preset_kind:
            raise ModelConfigError(f"preset {preset.name!r} is a {preset.kind} backbone, not a {cls.display_name} one")
        config, fmt = cls.read_config(directory / "config.json")
        state = read_state_dict(directory)
        with torch.device("meta"):
            model = cls(config)
        load_strict(model, state, source=str(directory), dtype=dtype or torch.float32,
                    embedding_name="embeddings" if fmt == HF_FORMAT else "embedding")
        logger.info("loaded %s backbone from %s (%s format, %s)", cls.display_name, directory, fmt,
                    cls.describe(config))
        return model.to(device) if device is not None else model

    def save_pretrained(self, directory: str | os.PathLike, format: str = HF_FORMAT) -> None:
        """Write config.json + model.safetensors, loadable by :meth:`from_pretrained`.

        format "hf": transformers' MambaForCausalLM layout (``backbone.embeddings.weight`` ...,
        head tied); "mamba_ssm": the original layout (``backbone.embedding.weight`` ...).
        """
        if format not in (HF_FORMAT, MAMBA_SSM_FORMAT):
            raise ModelConfigError(f"format must be {HF_FORMAT!r} or {MAMBA_SSM_FORMAT!r}, got {format!r}")
        config = self.config.to_hf_dict() if format == HF_FORMAT else self.config.to_mamba_ssm_dict()
        state = {}
        for key, tensor in self.state_dict().items():
            if key == "embedding.weight" and format == HF_FORMAT:
                key = "embeddings.weight"
            state[BACKBONE_PREFIX + key] = tensor
        if format == MAMBA_SSM_FORMAT:  # the original layout stores the (tied) head too
            state[LM_HEAD_KEY] = self.embedding.weight.detach().clone()
        write_checkpoint(Path(directory), config, state)


class MambaAdapter(BackboneAdapter):
    """The registry's ``mamba`` row: a Linear head on the last token; the vocabulary of a model of
    random weights is the tokenizer's, padded to a multiple of 8 rows."""

    kind = "mamba"

    def pretrained(self, folder: Path, tokenizer) -> MambaBackbone:
        return MambaBackbone.from_pretrained(folder)

    def saved(self, folder: Path, cfg: dict) -> MambaBackbone:
        return MambaBackbone.from_pretrained(folder)  # always strict

    def random(self, config: dict, tokenizer) -> MambaBackbone:
        shape = MambaConfig.from_dict(config)
        return MambaBackbone(dataclasses.replace(shape, vocab_size=len(tokenizer), pad_vocab_size_multiple=8,
                                                 **special_token_ids(tokenizer)))
