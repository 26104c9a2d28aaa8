"""LoRA beside fp8 layers: plain low-rank patches on fp8 weights run as a side computation, never baked.

Core would add W + s·B·A into the fp8 weight (rounded to fp8 at every load). Here such a patch becomes a
ModelPatcher *object patch* on the layer's `forward` (core machinery: applied when the model is loaded,
restored when it is unloaded, carried by clones), which returns layer(x) + s·(x·Aᵀ)·Bᵀ, on the weight's row
slice for a q/k/v LoRA on the fused qkv. The fp8 weight itself is never touched. GGUF layers do the same
inside their own op (`quant.patcher.QuantModelPatcher`); other patch kinds (LoHa, LoKr, diff, DoRA) go
through core's weight patching.
"""
from __future__ import annotations

import torch

FP8_DTYPES = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})


def is_fp8_weight(weight) -> bool:
    from ..quant.ops import is_quantized
    return not is_quantized(weight) and getattr(weight, "dtype", None) in FP8_DTYPES


class SideLoRAForward:
    """A layer's forward plus its LoRA side computations (the object patched onto `<layer>.forward`)."""

    def __init__(self, forward, sides: list) -> None:
        self.forward, self.sides = forward, list(sides)

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.forward(x, *args, **kwargs)
        for side in self.sides:
            out = side.add_to(out, x)
        return out


def _target(patch_key) -> tuple[str, tuple | None]:
    return (patch_key, None) if isinstance(patch_key, str) else (patch_key[0], patch_key[1])


def attach_fp8_loras(patcher, patches: dict, strength: float) -> tuple[dict, list[str]]:
    """Move the plain LoRA patches on fp8 weights onto `patcher` as side computations.

    Returns (the patches left for core's `add_patches`, the weight keys patched beside the layer).
    """
    import comfy.utils
    from ..quant.patcher import lora_side_of
    remaining, attached, by_layer = {}, [], {}
    for key, adapter in patches.items():
        target, offset = _target(key)
        try:
            weight = comfy.utils.get_attr(patcher.model, target)
        except AttributeError:
            remaining[key] = adapter
            continue
        side = lora_side_of((strength, adapter, 1.0, offset, None)) if is_fp8_weight(weight) else None
        if side is None:
            remaining[key] = adapter
            continue
        side.cache = False  # object patches outlive a load: no copy of the factors stays on the card
        by_layer.setdefault(target.rsplit(".", 1)[0], []).append(side)
        attached.append(target)
    for layer_path, sides in by_layer.items():
        name = f"{layer_path}.forward"
        existing = patcher.object_patches.get(name)
        if isinstance(existing, SideLoRAForward):  # a LoRA stacked on another: one wrapper, all sides
            wrapper = SideLoRAForward(existing.forward, existing.sides + sides)
        else:
            layer = comfy.utils.get_attr(patcher.model, layer_path)
            wrapper = SideLoRAForward(existing or type(layer).forward.__get__(layer), sides)
        patcher.add_object_patch(name, wrapper)
    return remaining, attached
