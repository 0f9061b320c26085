"""Static pruning of a cross-encoder: BERT attention heads and FFN channels, and whole layers (BERT, Mamba).

``rerank prune --model M --out DIR [--heads-per-layer K] [--ffn-keep F] [--layers-keep N]`` writes a
smaller cross-encoder folder that loads strictly (``CrossEncoder.from_pretrained``) and scores like any
other; :func:`prune_folder` is the library call, :func:`prune_model` prunes a model in memory.

What is kept, without data (weights only):

- layers (``layers_keep=N``): N evenly spaced layers, the first and the last always among them
  (N = 1: the last; 24 -> 12 keeps 0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23), as DistilBERT keeps every
  other layer of its teacher; or an explicit list of layer indices (library only). For Mamba, whose blocks
  only add to the residual stream, dropping a block removes its additive update.
- attention heads (``heads_per_layer=K``, BERT): in each layer the K heads whose value-output map
  ``W_O^h W_V^h`` (hidden x hidden) has the largest Frobenius norm: attention weights sum to one, so this
  norm bounds how much a head can write into the residual stream per unit of input.
- FFN channels (``ffn_keep=F``, BERT): in each layer the F channels (a count >= 1, or a fraction
  0 < F < 1 of the current width) with the largest ``|W_in[j, :]| * |W_out[:, j]|``, the magnitude of
  the channel's path from the layer's input to its output.

A pruned folder records its shape in the backbone's ``config.json``: fewer layers as ``num_hidden_layers``
/ ``n_layer``, narrower FFNs as ``intermediate_size`` (plain transformers keys), and the head counts per
layer as ``rerankers_attention_heads`` (head size unchanged), which :func:`apply_saved_heads` applies when
the backbone is built, before the strict load. ``pruning.json`` beside the model says what was kept.

Recovery fine-tune (the pruned folder is a cross-encoder: training starts from its weights and its head)::

    rerank prune --model runs/m/model --out runs/m-pruned --heads-per-layer 6 --layers-keep 4
    rerank train --backbone runs/m-pruned --train ... --out runs/m-pruned-ft [--teacher RUN --loss margin-mse]
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from rerankers.errors import ModelConfigError, UsageError

logger = logging.getLogger(__name__)

PRUNE_INFO = "pruning.json"
HEADS_KEY = "rerankers_attention_heads"
PRUNABLE = ("bert", "mamba")
CRITERIA = {
    "layers": "evenly spaced, first and last kept",
    "heads": "Frobenius norm of the head's value-output map W_O^h W_V^h",
    "ffn": "|W_in[j, :]| * |W_out[:, j]| per channel",
}


@dataclass
class PruneReport:
    """What :func:`prune_model` kept: ``layers`` (original layer indices), ``heads`` (per kept layer, the
    indices of its kept heads among those it had), ``ffn`` (channels per layer), and the parameter counts."""

    backbone_type: str
    parameters_before: int
    parameters_after: int
    layers: list[int] | None = None
    heads: list[list[int]] | None = None
    ffn: int | None = None
    criteria: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parameters(model: nn.Module) -> int:
    from rerankers.train.progress import count_parameters
    return count_parameters(model)["total"]


# ------------------------------------------------------------------------------------ choosing
def evenly_spaced_layers(n_layers: int, n_keep: int) -> list[int]:
    """``n_keep`` of ``n_layers`` layer indices, evenly spaced with the first and the last (1: the last)."""
    if n_keep == 1:
        return [n_layers - 1]
    return sorted({round(i * (n_layers - 1) / (n_keep - 1)) for i in range(n_keep)})


def _layer_indices(n_layers: int, layers_keep: int | Sequence[int]) -> list[int]:
    if isinstance(layers_keep, int) and not isinstance(layers_keep, bool):
        if not 1 <= layers_keep <= n_layers:
            raise UsageError(f"--layers-keep {layers_keep}: the model has {n_layers} layers; keep 1 to {n_layers}")
        return evenly_spaced_layers(n_layers, layers_keep)
    keep = sorted(set(int(i) for i in layers_keep))
    if not keep or keep[0] < 0 or keep[-1] >= n_layers:
        raise UsageError(f"layers to keep {list(layers_keep)}: indices between 0 and {n_layers - 1}, at least one")
    return keep


def _ffn_count(ffn_keep: float, width: int) -> int:
    """Channels to keep of ``width``: a count >= 1, or a fraction 0 < F < 1 (at least one channel)."""
    if 0 < ffn_keep < 1:
        return max(1, round(ffn_keep * width))
    if ffn_keep >= 1 and float(ffn_keep).is_integer() and ffn_keep <= width:
        return int(ffn_keep)
    raise UsageError(f"--ffn-keep {ffn_keep:g}: a channel count from 1 to {width} or a fraction between 0 and 1")


def head_importance(layer: nn.Module, head_size: int) -> torch.Tensor:
    """(heads,) Frobenius norms of each head's value-output map W_O^h W_V^h (hidden x hidden) in a BERT layer."""
    wv = layer.attention.self.value.weight.detach().float()          # (heads * d, H)
    wo = layer.attention.output.dense.weight.detach().float()        # (H, heads * d)
    heads = wv.shape[0] // head_size
    wv = wv.view(heads, head_size, -1)                               # (heads, d, H)
    wo = wo.view(wo.shape[0], heads, head_size).transpose(0, 1)      # (heads, H, d)
    return torch.linalg.matrix_norm(torch.bmm(wo, wv))               # (heads,)


def channel_importance(layer: nn.Module) -> torch.Tensor:
    """(intermediate,) ``|W_in[j, :]| * |W_out[:, j]|`` of a BERT layer's FFN channels."""
    w_in = layer.intermediate.dense.weight.detach().float()          # (I, H)
    w_out = layer.output.dense.weight.detach().float()               # (H, I)
    return w_in.norm(dim=1) * w_out.norm(dim=0)


def _top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest scores, in increasing index order (ties: the lower index)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


# ------------------------------------------------------------------------------------ slicing
def _sliced(linear: nn.Linear, rows: Sequence[int] | None = None, cols: Sequence[int] | None = None) -> nn.Linear:
    """A new Linear with the given output rows / input columns of ``linear``."""
    w = linear.weight.detach()
    if rows is not None:
        w = w[torch.as_tensor(rows, device=w.device)]
    if cols is not None:
        w = w[:, torch.as_tensor(cols, device=w.device)]
    out = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if linear.bias is not None:
            b = linear.bias.detach()
            out.bias.copy_(b if rows is None else b[torch.as_tensor(rows, device=b.device)])
    return out


def keep_heads(layer: nn.Module, heads: Sequence[int], head_size: int) -> None:
    """Keep only ``heads`` (indices among the layer's current heads) of a BERT layer's self-attention."""
    attn = layer.attention.self
    rows = [h * head_size + i for h in heads for i in range(head_size)]
    for name in ("query", "key", "value"):
        setattr(attn, name, _sliced(getattr(attn, name), rows=rows))
    layer.attention.output.dense = _sliced(layer.attention.output.dense, cols=rows)
    attn.num_attention_heads = len(heads)
    attn.all_head_size = len(heads) * head_size


def keep_channels(layer: nn.Module, channels: Sequence[int]) -> None:
    """Keep only ``channels`` of a BERT layer's FFN."""
    layer.intermediate.dense = _sliced(layer.intermediate.dense, rows=channels)
    layer.output.dense = _sliced(layer.output.dense, cols=channels)


def _head_size(config) -> int:
    return int(config.hidden_size) // int(config.num_attention_heads)


def _head_counts(layers: nn.ModuleList, head_size: int) -> list[int]:
    return [layer.attention.self.query.out_features // head_size for layer in layers]


def apply_saved_heads(model: nn.Module) -> None:
    """Give a freshly built transformers BERT-family model (``BertModel``, ...) the head counts its
    config records (``rerankers_attention_heads``), so that a pruned checkpoint loads strictly into it;
    ModelConfigError where the record does not fit the model."""
    counts = getattr(model.config, HEADS_KEY, None)
    if counts is None:
        return
    layers = model.encoder.layer
    full = int(model.config.num_attention_heads)
    if (not isinstance(counts, list) or len(counts) != len(layers)
            or not all(isinstance(c, int) and 1 <= c <= full for c in counts)):
        raise ModelConfigError(f"config.json: {HEADS_KEY} must list 1 to {full} heads for each of the "
                               f"{len(layers)} layers, got {counts!r}")
    for layer, count in zip(layers, counts):
        keep_heads(layer, range(count), _head_size(model.config))


# ------------------------------------------------------------------------------------ pruning
def _prune_bert(backbone, heads_per_layer: int | None, ffn_keep: float | None, keep: list[int] | None,
                report: PruneReport) -> None:
    model, config = backbone.model, backbone.config
    layers = model.encoder.layer
    head_counts = _head_counts(layers, _head_size(config))
    if keep is not None:
        model.encoder.layer = layers = nn.ModuleList(layers[i] for i in keep)
        head_counts = [head_counts[i] for i in keep]
        config.num_hidden_layers = len(keep)
        for i, layer in enumerate(layers):  # transformers numbers layers for its caches
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = i
    if heads_per_layer is not None:
        if not 1 <= heads_per_layer <= min(head_counts):
            raise UsageError(f"--heads-per-layer {heads_per_layer}: the layers have {min(head_counts)} to "
                             f"{max(head_counts)} heads; keep 1 to {min(head_counts)}")
        report.heads = []
        for layer in layers:
            chosen = _top(head_importance(layer, _head_size(config)), heads_per_layer)
            keep_heads(layer, chosen, _head_size(config))
            report.heads.append(chosen)
        head_counts = [heads_per_layer] * len(layers)
        report.criteria["heads"] = CRITERIA["heads"]
    if heads_per_layer is not None or (keep is not None and getattr(config, HEADS_KEY, None) is not None):
        setattr(config, HEADS_KEY, head_counts)
    if ffn_keep is not None:
        width = min(layer.intermediate.dense.out_features for layer in layers)
        count = _ffn_count(ffn_keep, width)
        for layer in layers:
            keep_channels(layer, _top(channel_importance(layer), count))
        config.intermediate_size = count
        report.ffn = count
        report.criteria["ffn"] = CRITERIA["ffn"]


def _prune_mamba(backbone, keep: list[int] | None) -> None:
    if keep is not None:
        backbone.layers = nn.ModuleList(backbone.layers[i] for i in keep)
        backbone.config = dataclasses.replace(backbone.config, n_layer=len(keep))


def _layer_count(model) -> int:
    backbone = model.backbone
    return len(backbone.layers) if model.backbone_type == "mamba" else len(backbone.model.encoder.layer)


def prune_model(model, *, heads_per_layer: int | None = None, ffn_keep: float | None = None,
                layers_keep: int | Sequence[int] | None = None) -> PruneReport:
    """Prune a :class:`~rerankers.models.cross_encoder.CrossEncoder` in place (module doc: what is kept).

    Args:
        heads_per_layer: BERT: attention heads to keep in every layer.
        ffn_keep: BERT: FFN channels to keep per layer, a count (>= 1) or a fraction (0 < F < 1).
        layers_keep: BERT or Mamba: how many layers to keep (evenly spaced), or which (a list of indices).

    Returns the :class:`PruneReport`; a UsageError (naming the ``rerank prune`` flag) for a value that
    cannot apply to this model.
    """
    kind = model.backbone_type
    if kind not in PRUNABLE:
        raise UsageError(f"rerank prune: a {kind} backbone cannot be pruned here (only {', '.join(PRUNABLE)})")
    if heads_per_layer is None and ffn_keep is None and layers_keep is None:
        raise UsageError("nothing to prune: give --heads-per-layer, --ffn-keep and/or --layers-keep")
    if kind == "mamba" and (heads_per_layer is not None or ffn_keep is not None):
        flag = "--heads-per-layer" if heads_per_layer is not None else "--ffn-keep"
        raise UsageError(f"{flag}: a mamba backbone has no attention heads nor FFN; prune its layers "
                         "(--layers-keep N)")
    if heads_per_layer is not None and (isinstance(heads_per_layer, bool) or not isinstance(heads_per_layer, int)):
        raise UsageError(f"--heads-per-layer must be a whole number of heads, got {heads_per_layer!r}")
    report = PruneReport(kind, _parameters(model), 0)
    keep = None
    if layers_keep is not None:
        keep = _layer_indices(_layer_count(model), layers_keep)
        report.layers = keep
        report.criteria["layers"] = CRITERIA["layers"] if isinstance(layers_keep, int) else "given indices"
    if kind == "bert":
        _prune_bert(model.backbone, heads_per_layer, ffn_keep, keep, report)
    else:
        _prune_mamba(model.backbone, keep)
    report.parameters_after = _parameters(model)
    logger.info("pruned the %s backbone: %d -> %d parameters (layers %s, heads %s, ffn %s)", kind,
                report.parameters_before, report.parameters_after, report.layers, report.heads, report.ffn)
    return report


def prune_folder(model: str | os.PathLike, out: str | os.PathLike, *, heads_per_layer: int | None = None,
                 ffn_keep: float | None = None, layers_keep: int | Sequence[int] | None = None) -> PruneReport:
    """``rerank prune``: load the cross-encoder ``model`` (a saved folder or a preset), prune it
    (:func:`prune_model`), and save it to ``out`` as a cross-encoder folder with ``pruning.json``."""
    from rerankers.errors import ModelLoadingError
    from rerankers.models.cross_encoder import CrossEncoder
    from rerankers.utils.io import atomic_write, check_writable_dir

    if Path(out).expanduser().resolve() == Path(model).expanduser().resolve():
        raise UsageError(f"--out {out}: the pruned model must go to another folder than --model")
    check_writable_dir(out)
    try:
        loaded = CrossEncoder.from_pretrained(model)
    except (ModelLoadingError, ImportError) as e:
        raise ModelLoadingError(f"--model {model}: {e}") from None
    report = prune_model(loaded, heads_per_layer=heads_per_layer, ffn_keep=ffn_keep, layers_keep=layers_keep)
    loaded.save_pretrained(out)
    with atomic_write(Path(out) / PRUNE_INFO) as f:
        json.dump({"source": str(model), **report.as_dict()}, f, indent=2)
        f.write("\n")
    logger.info("wrote the pruned model to %s", out)
    return report
