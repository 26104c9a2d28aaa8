"""LoRA on weights the host stores quantized (fp8 plain or scaled, `.comfy_quant`): never baked into them.

Core would patch such a weight by computing W + ΔW and rounding the result back into the stored format at every
load. Here the stored tensor is never written; each patch becomes ModelPatcher state that clones carry and
that core applies at load and removes at unload, in a full and a low-VRAM partial load alike:
- a plain low-rank patch: an *object patch* on the layer's `forward` returning layer(x) + s·(x·Aᵀ)·Bᵀ (on the
  weight's row slice for a q/k/v LoRA on the fused qkv), so no dense delta exists at all;
- any other patch (LoHa, LoKr, full diff, DoRA, …): a *weight wrapper* (`add_weight_wrapper`), which the host's
  cast (`comfy.ops.cast_bias_weight`) applies to the weight it has just upcast for this one use.
GGUF layers do the same inside their own op (`quant.patcher.QuantModelPatcher`); patches on other weights are
left to core's `add_patches`.
"""
from __future__ import annotations

import torch

FP8_DTYPES = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})


def _is_host_quantized_tensor(weight) -> bool:
    """ComfyUI's own QuantizedTensor (`.comfy_quant` layers, and scaled fp8 on hosts that convert it to them)."""
    try:
        from comfy.quant_ops import QuantizedTensor
    except ImportError:
        return False
    return isinstance(weight, QuantizedTensor)


def is_host_quantized(weight) -> bool:
    """Whether the host stores `weight` quantized and upcasts it at each use (fp8, or its QuantizedTensor).
    The pack's own GGUF tensors are not: they have their own patcher."""
    from ..quant.ops import is_quantized
    if is_quantized(weight):
        return False
    return getattr(weight, "dtype", None) in FP8_DTYPES or _is_host_quantized_tensor(weight)


def _scale_after_weight_function(layer: torch.nn.Module, param: str) -> torch.Tensor | None:
    """The scale a layer multiplies in after its weight functions ran (0.3.x scaled fp8 keeps `scale_weight`
    beside the raw fp8 weight); None where weight functions get the dequantized weight."""
    scale = getattr(layer, "scale_weight", None) if param == "weight" else None
    if scale is None or _is_host_quantized_tensor(layer.weight):
        return None
    return scale.detach().to("cpu", torch.float32, copy=True)


class SideLoRAForward:
    """A layer's forward plus its LoRA side computations (the object patched onto `<layer>.forward`)."""

    def __init__(self, forward, sides: list) -> None:
        self.forward, self.sides = forward, list(sides)

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.forward(x, *args, **kwargs)
        for side in self.sides:
            out = side.add_to(out, x)
        return out


def _split_key(patch_key) -> tuple[str, tuple | None, object]:
    """(weight key, row offset, function) of a patch key as core's key maps write it."""
    if isinstance(patch_key, str):
        return patch_key, None, None
    return patch_key[0], patch_key[1], patch_key[2] if len(patch_key) > 2 else None


def _layer_of(model: torch.nn.Module, target: str) -> tuple[torch.nn.Module | None, str]:
    """(the cast op holding `target`, the parameter name), or (None, name) when no cast op holds it."""
    layer_path, _, param = target.rpartition(".")
    try:
        layer = model.get_submodule(layer_path) if layer_path else None
    except AttributeError:
        return None, param
    return (layer if hasattr(layer, "comfy_cast_weights") else None), param


def _add_side_forward(patcher, layer_path: str, sides: list) -> None:
    """Patch `<layer>.forward` to add `sides`; a LoRA stacked on another gets one wrapper with all sides."""
    import comfy.utils
    name = f"{layer_path}.forward"
    existing = patcher.object_patches.get(name)
    if isinstance(existing, SideLoRAForward):
        wrapper = SideLoRAForward(existing.forward, existing.sides + sides)
    else:
        layer = comfy.utils.get_attr(patcher.model, layer_path)
        wrapper = SideLoRAForward(existing or type(layer).forward.__get__(layer), sides)
    patcher.add_object_patch(name, wrapper)


def attach_beside_quantized(patcher, patches: dict, strength: float) -> tuple[dict, list[str]]:
    """Attach the patches on host-quantized weights to `patcher` without touching those weights.

    Returns (the patches left for core's `add_patches`, the weight keys patched here).
    """
    from ..quant.patcher import DequantizedPatch, lora_side_of
    remaining, sides, upcast = {}, {}, {}
    for key, adapter in patches.items():
        target, offset, function = _split_key(key)
        layer, param = _layer_of(patcher.model, target)
        if layer is None or not is_host_quantized(getattr(layer, param, None)):
            remaining[key] = adapter
            continue
        entry = (strength, adapter, 1.0, offset, function)  # what core's add_patches stores per patch
        side = lora_side_of(entry) if param == "weight" else None
        if side is None:
            upcast.setdefault(target, []).append(entry)
            continue
        side.cache = False  # object patches outlive a load: no copy of the factors stays on the card
        sides.setdefault(target.rpartition(".")[0], []).append(side)
    for layer_path, layer_sides in sides.items():
        _add_side_forward(patcher, layer_path, layer_sides)
    for target, entries in upcast.items():
        layer, param = _layer_of(patcher.model, target)
        scale = _scale_after_weight_function(layer, param)
        patcher.add_weight_wrapper(target, DequantizedPatch(target, entries, scale))
    attached = {f"{path}.weight" for path in sides} | set(upcast)
    return remaining, sorted(attached)
