"""LoRA through peft: low-rank adapters on a backbone's projections, the scoring head trained in full.

``--lora R`` wraps ``model.backbone`` with peft (``get_peft_model``: the backbone's own weights are
frozen) on the target modules of its kind (:data:`LORA_TARGETS`); the head sits outside the backbone
and stays trainable, so it is trained and saved with the adapters (a frozen, unsaved head is what
sentence-transformers users report). Saved models (``checkpoint-N/``, ``best/``, ``model/``) are plain
CrossEncoder folders with the adapters merged into the weights (:func:`merged_copy`), so ``rerank
eval --model`` loads them without peft; each also holds ``lora_state.safetensors``, the trainable
tensors (adapters + head), which ``--resume`` loads into a freshly wrapped backbone to continue exactly.

QLoRA (``rerank train --lora R --qlora``, ``rerank bench train --qlora R``): the same adapters over a base
whose target layers hold 4-bit NF4 weights (bitsandbytes ``Linear4bit``, :func:`quantize_base_nf4`). Its saved
folders are plain fp32 CrossEncoders too: each adapted layer holds the dequantised NF4 weight plus the
adapters' delta (:func:`merged_copy`), the function the QLoRA model computed, loadable without bitsandbytes.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from rerankers.errors import TrainingConfigError, install_hint

LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "mamba": ("in_proj", "x_proj", "out_proj"),
    "mamba2": ("in_proj", "out_proj"),
    "bert": ("query", "key", "value", "dense"),
    "t5": ("q", "k", "v", "o", "wi", "wo"),
    "decoder": ("query_key_value", "q_proj", "k_proj", "v_proj"),  # GPT-NeoX's fused / OPT, Qwen2, Llama
}
STATE_NAME = "lora_state.safetensors"


def require_peft():
    try:
        import peft
    except ImportError:
        raise ImportError(f"--lora needs peft: {install_hint('peft')}") from None
    return peft


def require_bitsandbytes():
    try:
        import bitsandbytes
    except ImportError:
        raise ImportError(f"--qlora needs bitsandbytes: {install_hint('qlora')}") from None
    return bitsandbytes


def _targets(model) -> tuple[str, ...]:
    targets = LORA_TARGETS.get(model.backbone_type)
    if targets is None:
        raise TrainingConfigError(f"--lora: no LoRA target modules known for a {model.backbone_type} backbone")
    return targets


def quantize_base_nf4(model, device: torch.device | str, compute_dtype: torch.dtype | None = None) -> int:
    """QLoRA's base: every ``nn.Linear`` of ``model.backbone`` that LoRA targets becomes a bitsandbytes
    ``Linear4bit`` (NF4 weights, one absmax per block of 64, frozen), placed on ``device`` (quantised there);
    ``compute_dtype``: the dtype its matmul dequantises to (default bf16 on CUDA, fp32 on the CPU). Call before
    :func:`apply_lora`. Returns the number of layers replaced."""
    bnb = require_bitsandbytes()
    device = torch.device(device)
    compute_dtype = compute_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    targets = _targets(model)
    replaced = 0
    for parent in list(model.backbone.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or name not in targets:
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=compute_dtype, quant_type="nf4", device="cpu")
            # bitsandbytes repacks a CPU layer's weight in place at its first no-grad call (AVX512-BF16
            # machines), into a layout dequantize_4bit does not read and that needs in_features % 64 == 0
            q.support_avx512bf16_for_cpu = False
            q.weight = bnb.nn.Params4bit(child.weight.detach().float().cpu(), requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.detach().float().cpu(), requires_grad=False)
            setattr(parent, name, q.to(device))
            replaced += 1
    if not replaced:
        raise TrainingConfigError(f"--qlora: no nn.Linear named {', '.join(targets)} in the {model.backbone_type} "
                                  "backbone")
    return replaced


def _has_nf4_layers(module) -> bool:
    """Whether :func:`quantize_base_nf4` put bitsandbytes layers in ``module`` (no import of bitsandbytes)."""
    return any(type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")
               for m in module.modules())


def apply_lora(model, rank: int, alpha: float | None = None, dropout: float = 0.0) -> int:
    """Wrap ``model.backbone`` with LoRA adapters of ``rank`` (alpha default 2 x rank); returns the number of
    trainable parameters (adapters + head). After :func:`quantize_base_nf4`: QLoRA."""
    peft = require_peft()
    targets = _targets(model)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                             target_modules=list(targets), bias="none")
    model.backbone = peft.get_peft_model(model.backbone, config)
    model.lora = {"rank": rank, "alpha": config.lora_alpha, "dropout": dropout, "targets": list(targets),
                  "base": "nf4" if _has_nf4_layers(model.backbone) else None}
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def is_lora(model) -> bool:
    return getattr(model, "lora", None) is not None


def merged_copy(model):
    """A copy of ``model`` whose backbone has the adapters merged into its weights (a plain CrossEncoder). Over
    an NF4 base (QLoRA) each adapted layer becomes an fp32 ``nn.Linear`` holding the dequantised base weight
    plus the adapters' delta: the function the QLoRA model computes, without bitsandbytes."""
    twin = copy.deepcopy(model)
    if twin.lora.get("base") == "nf4":
        _dequantize_adapted(twin.backbone)
        twin.backbone = twin.backbone.unload()  # the wrappers replaced by their (now merged) base layers
    else:
        twin.backbone = twin.backbone.merge_and_unload()
    twin.lora = None
    return twin


def _dequantize_adapted(backbone) -> None:
    """Every LoRA layer over a ``Linear4bit``: its base replaced by an fp32 Linear of dequant(W) + delta."""
    bnb = require_bitsandbytes()
    from peft.tuners.lora import LoraLayer

    for module in list(backbone.modules()):
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        if not isinstance(base, bnb.nn.Linear4bit):
            continue
        with torch.no_grad():
            weight = bnb.functional.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
            for name in module.active_adapters:
                weight = weight + module.get_delta_weight(name).float()
            plain = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                    device=weight.device)
            plain.weight.copy_(weight)
            if base.bias is not None:
                plain.bias.copy_(base.bias.float())
        module.base_layer = plain


def save_lora_state(model, folder: Path) -> None:
    """The trainable tensors (adapters + head), written atomically into ``folder``."""
    from safetensors.torch import save_file

    from rerankers.utils.io import atomic_path

    state = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_path(folder / STATE_NAME) as tmp:
        save_file(state, str(tmp))


def load_lora_state(model, folder: Path) -> None:
    """Load :func:`save_lora_state`'s tensors into a model wrapped the same way (every key must match)."""
    from safetensors.torch import load_file

    from rerankers.errors import ResumeMismatchError

    file = folder / STATE_NAME
    if not file.is_file():
        raise ResumeMismatchError(f"{folder}: no {STATE_NAME}: the checkpoint was not written by a LoRA run")
    state = load_file(str(file))
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(state) != trainable:
        raise ResumeMismatchError(f"{file}: its {len(state)} tensors do not match this run's {len(trainable)} "
                                  "trainable ones (another --lora rank or backbone?)")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
