"""Weight-only int8 quantization of a cross-encoder's backbone: ``Reranker(..., quantize="int8")``,
``rerank eval --model M --quantize int8``.

Every ``nn.Linear`` of the backbone (BERT's query/key/value/dense, Mamba's in_proj/x_proj/dt_proj/
out_proj, T5's q/k/v/o/wi/wo) becomes an :class:`Int8Linear`: int8 weights ``(out, in)`` and one fp32
scale per output channel, symmetric round-to-nearest (``w ~ q * scale``, ``q`` in [-127, 127],
``scale = max |w_row| / 127``). Each call dequantises the weight to the compute dtype (the input's, or
the autocast dtype: bf16 on the GPU) and runs the ordinary matmul, so one module serves the CPU and the
GPU, any torch >= 2.4. What stays in fp32: the scoring head (and T5's ``lm_head``, which scores),
embeddings, norms, convolutions and the SSM parameters.

Why our own module: ``torch.ao.quantization.quantize_dynamic`` is deprecated (torch 2.13 warns that it
and the quantized tensor types it builds on will be removed) and torchao is no dependency of this
project. What it buys: the Linear weights take about a quarter of their fp32 memory (the embeddings,
often a third of a small model, do not shrink); it does not buy speed: the matmul is the same, plus a
dequantisation per call (measured on the CPU here: 13.7 ms against 14.1 ms fp32 for a (2048, 384) x
(384, 1536) product; torch's int8 weight-pack kernel took 1.1 s for the same product in fp32).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rerankers.errors import UsageError

logger = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8",)
# modules that score (kept in full precision with the head)
_SCORING_MODULES = ("lm_head",)


def check_quantize(mode: str | None) -> str | None:
    """``mode`` if it is a known quantization (None: none); UsageError naming ``--quantize`` otherwise."""
    if mode is None or mode in QUANTIZE_MODES:
        return mode
    raise UsageError(f"--quantize {mode!r}: one of {', '.join(QUANTIZE_MODES)} (or leave it out for full precision)")


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights and per-output-channel scales: x (..., in) -> (..., out).

    Buffers: ``weight_int8`` (out, in) int8, ``weight_scale`` (out,) fp32, ``bias`` (out,) fp32 or None.
    ``weight`` (a property) is the dequantised (out, in) fp32 weight, for code that reads
    ``linear.weight`` directly (Mamba's ``dt_proj``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 twin of ``linear`` (its weights read, not changed)."""
        w = linear.weight.detach().float()
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device=w.device)
        scale = w.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
        q.weight_int8.copy_(torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8))
        q.weight_scale.copy_(scale)
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        return q

    @property
    def weight(self) -> Tensor:
        return self.dequantized(torch.float32)

    def dequantized(self, dtype: torch.dtype) -> Tensor:
        """The weight (out, in) in ``dtype``."""
        return self.weight_int8.to(dtype) * self.weight_scale.to(dtype)[:, None]

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), self.dequantized(dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@dataclass
class QuantizationReport:
    """What :func:`quantize_model` did: the mode, how many Linear layers it replaced, and the model's
    size in bytes (parameters + buffers, shared storage counted once) before and after."""

    mode: str
    layers: int
    bytes_before: int
    bytes_after: int

    @property
    def ratio(self) -> float:
        return self.bytes_after / self.bytes_before if self.bytes_before else 1.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}

    def describe(self) -> str:
        """E.g. ``int8 86.7 -> 55.3 MiB`` (a report cell)."""
        return f"{self.mode} {self.bytes_before / 2**20:.1f} -> {self.bytes_after / 2**20:.1f} MiB"


def model_size_bytes(module: nn.Module) -> int:
    """Bytes of the storage behind ``module``'s parameters and buffers; storage shared by several tensors
    (tied weights) counts once."""
    storages = {}
    for t in [*module.parameters(), *module.buffers()]:
        storage = t.untyped_storage()
        storages[(t.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def quantize_linears(module: nn.Module, skip: tuple[str, ...] = _SCORING_MODULES) -> int:
    """Replace every ``nn.Linear`` inside ``module`` (in place) by an :class:`Int8Linear`, except those whose
    attribute name is in ``skip``; returns how many were replaced."""
    targets = [(name, child) for name, child in module.named_modules() if isinstance(child, nn.Linear)
               and name.rsplit(".", 1)[-1] not in skip]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, Int8Linear.from_linear(linear))
    return len(targets)


def quantize_model(model: nn.Module, mode: str = "int8") -> QuantizationReport:
    """Quantize a :class:`~rerankers.models.cross_encoder.CrossEncoder`'s backbone in place (``mode``: one of
    :data:`QUANTIZE_MODES`); the head stays in fp32. For inference: the model is put in eval mode and
    its quantized weights take no gradient. Saving a quantized model is not supported: quantize at load."""
    check_quantize(mode)
    before = model_size_bytes(model)
    layers = quantize_linears(model.backbone)
    if layers == 0:
        logger.warning("quantize %s: the backbone has no Linear layer left to quantize (already quantized?)", mode)
    model.eval()
    report = QuantizationReport(mode, layers, before, model_size_bytes(model))
    logger.info("quantized %d Linear layers of the %s backbone to %s: %s (%.0f%%)", layers,
                getattr(model, "backbone_type", "?"), mode, report.describe(), 100 * report.ratio)
    return report
