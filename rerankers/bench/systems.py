"""The systems a benchmark times: our cross-encoder in each mode, and the anchors (:mod:`.anchors`).

A :class:`System` turns a PackedBatch of S pairs into scores (S,); :class:`TrainStep` wraps any system
in the real training step of ``rerank train`` (bf16 autocast over fp32 weights, the listwise LCE loss
over groups, backward, gradient clipping, fused AdamW) so that every row of a table pays the same
recipe. Our model runs ``packed`` (the varlen contract), ``padded`` (the kernels over every sequence
padded to the batch's longest; for a bidirectional encoder its own padded path, padded SDPA with an
attention mask), ``static`` (packed, on batches padded to one fixed shape by
:func:`rerankers.data.packing.pad_to_static`: the real pairs' scores only) or ``single`` (one sequence
at a time, the gradient of each group accumulated). ``compile`` (packed and static): the forward
through torch.compile, as ``rerank train --compile``.
"""
from __future__ import annotations

import abc
import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

from rerankers.bench.workload import padded_view, single_views
from rerankers.data.packing import PackedBatch
from rerankers.errors import ModelConfigError, UsageError
from rerankers.models.mamba import set_recompute_mixer
from rerankers.train.compile import training_forward
from rerankers.train.guard import guarded_step
from rerankers.train.losses import build_loss
from rerankers.train.optim import build_optimizer


class System(abc.ABC):
    """name: the backbone (``mamba-130m``); impl: whose code (``ours``, ``mamba-ssm``, ...); mode:
    ``packed`` | ``padded`` | ``static`` | ``single`` | ``recompute`` | ``graphed`` (inference: packed, each batch
    padded to a shape bucket and replayed from a CUDA graph, :mod:`rerankers.models.graphed`); module: the
    nn.Module whose parameters train;
    compile: the torch.compile mode of its forward ("off": eager)."""

    impl = "ours"
    compile = "off"
    lora: int | None = None
    base: str | None = None  # "nf4": the frozen base of LoRA in 4 bits (QLoRA)

    def __init__(self, name: str, mode: str, module: nn.Module):
        self.name, self.mode, self.module = name, mode, module

    @property
    def label(self) -> str:
        return (f"{self.name} {self.impl} {self.mode}" + ("" if self.compile == "off" else f" compile={self.compile}")
                + ("" if self.lora is None else f" lora={self.lora}") + (f" {self.base}" if self.base else ""))

    @abc.abstractmethod
    def scores(self, batch: PackedBatch) -> Tensor:
        """(S,) scores of the batch's pairs (under the caller's autocast)."""

    def backward(self, batch: PackedBatch, loss_fn: nn.Module, group_size: int, autocast: torch.dtype | None
                 ) -> Tensor:
        """Loss of the batch's groups, backpropagated; returns the loss (0-d, detached, on the device: reading it
        would make the host wait)."""
        with _autocast(batch.input_ids.device, autocast):
            scores = self.scores(batch)
        loss = loss_fn(scores.float().view(-1, group_size), _labels(scores.numel() // group_size, group_size,
                                                                    scores.device))
        loss.backward()
        return loss.detach()

    def real_tokens(self, batch: PackedBatch) -> int:
        return batch.num_real_tokens


def recomputes(model) -> bool:
    """Whether the model's backbone has Mamba-1 mixers that can rebuild activations (mode recompute); leaves them
    off (the check sets the flag)."""
    try:
        set_recompute_mixer(model.backbone, False)
    except ModelConfigError:
        return False
    return True


class Ours(System):
    """Our CrossEncoder in one mode; ``compile`` (packed and static modes): its forward through torch.compile.
    ``lora`` / ``base``: read from a model whose backbone is wrapped in LoRA adapters (``model.lora``: their rank,
    and "nf4" over a 4-bit base), None for full fine-tuning."""

    def __init__(self, name: str, mode: str, model, compile: str = "off"):
        super().__init__(name, mode, model)
        adapters = getattr(model, "lora", None)
        self.lora, self.base = (adapters["rank"], adapters.get("base")) if adapters else (None, None)
        self.model = model
        if mode == "recompute" and not recomputes(model):
            raise UsageError(f"--modes recompute: {name} has no Mamba-1 mixers (its activations are all kept)")
        self.causal = model.pooling == "last"  # last-token pooling: a causal backbone (Mamba, decoders)
        # cuda-graphs replays one shape: the static mode's only (packed batches change shape every step)
        self.compile = compile if mode == "static" or (mode == "packed" and compile != "cuda-graphs") else "off"
        self.forward = training_forward(model, self.compile)
        if mode == "graphed":  # checked by the caller (rerankers.models.graphed.check_graphable)
            from rerankers.models.graphed import graphed_scorer_for

            self.forward = graphed_scorer_for(model)

    def scores(self, batch: PackedBatch) -> Tensor:
        model = self.model
        if self.mode == "graphed":
            return self.forward(batch)
        if self.mode in ("packed", "static"):  # static: the batch padded to its fixed shape, real pairs first
            return self.forward(batch)[:batch.num_real_sequences]
        if self.mode == "recompute":  # packed, the mixers' conv output and delta rebuilt in the backward
            set_recompute_mixer(model.backbone, True)
            try:
                return self.forward(batch)
            finally:
                set_recompute_mixer(model.backbone, False)
        if self.mode == "single":
            return torch.cat([model(one) for one in single_views(batch)])
        if not self.causal or model.head is None or model.pooling == "mean":
            return model.forward_padded(batch)  # a bidirectional encoder's own padded path (masked SDPA)
        # causal: pads after a sequence change none of its states, so the padded rows' real last token
        # gives the packed score at the padded batch's cost
        pad = int(getattr(model.backbone, "pad_token_id", 0) or 0)
        view, first, last = padded_view(batch, pad)
        hidden = model.backbone(view)
        return model._head(hidden.index_select(0, last if model.pooling == "last" else first))

    def backward(self, batch: PackedBatch, loss_fn: nn.Module, group_size: int, autocast: torch.dtype | None
                 ) -> Tensor:
        if self.mode != "single":
            return super().backward(batch, loss_fn, group_size, autocast)
        views = single_views(batch)  # one sequence at a time, one group's graph alive at a time
        groups = len(views) // group_size
        total = torch.zeros((), device=batch.input_ids.device)
        for g in range(groups):
            with _autocast(batch.input_ids.device, autocast):
                s = torch.cat([self.model(v) for v in views[g * group_size:(g + 1) * group_size]])
            loss = loss_fn(s.float().view(1, group_size), _labels(1, group_size, s.device)) / groups
            loss.backward()
            total += loss.detach()
        return total


class TrainStep:
    """The training step of ``rerank train`` around a system: ``loss`` (LCE) over groups of ``group_size``, bf16
    autocast (on CUDA), clipping at 1.0, the guarded AdamW update (fused on CUDA, a NaN / inf step skipped on
    the device: :func:`rerankers.train.guard.guarded_step`) with the run's weight-decay groups. Like the loop's
    step it never makes the host wait for the GPU; it returns the loss as a device tensor."""

    def __init__(self, system: System, device: torch.device, group_size: int, lr: float = 1e-5,
                 autocast: torch.dtype | None = None, loss: str = "lce"):
        self.system, self.device, self.group_size, self.autocast = system, device, group_size, autocast
        self.loss_fn = build_loss(loss)
        self.params = [p for p in system.module.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(system.module, lr, 0.01, device)

    def __call__(self, batch: PackedBatch) -> Tensor:
        if not self.system.module.training:  # (a walk over every submodule: host time, as rerank train does once)
            self.system.module.train()
        loss = self.system.backward(batch, self.loss_fn, self.group_size, self.autocast)
        guarded_step(self.optimizer, self.params, loss, 1.0, _stop)
        self.optimizer.zero_grad(set_to_none=self.system.compile != "cuda-graphs")  # (see GraphedForward)
        return loss


def _stop(what: str, value: float):
    raise FloatingPointError(f"the training step's {what} is {value}")


@torch.no_grad()
def infer_scores(system: System, batch: PackedBatch, autocast: torch.dtype | None) -> Tensor:
    system.module.eval()
    with _autocast(batch.input_ids.device, autocast):
        return system.scores(batch)


def _labels(groups: int, group_size: int, device: torch.device) -> Tensor:
    labels = torch.zeros(groups, group_size, device=device)
    labels[:, 0] = 1.0  # the positive first, as the training groups are built
    return labels


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        yield
