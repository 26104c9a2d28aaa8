"""`QuantModelPatcher`: ComfyUI's ModelPatcher for models with quantized weights (imports comfy).

LoRA (and other weight patches) on a `QuantizedTensor` weight are never baked into the blocks:
- plain LoRA patches become low-rank side computations on the layer (`layer.lora_side`);
- any other patch type is applied to the dequantized weight at each use (`layer.weight_function`).
Unquantized weights are patched exactly as core does. Patches are always attached at load time, also for
layers that stay offloaded in low-VRAM mode (so the side path is used there too).
"""
from __future__ import annotations

import torch

import comfy.lora
import comfy.model_patcher
import comfy.utils

from .ops import LoRASide, QuantLayer, is_quantized


def _lora_weights(adapter):
    """(up, down, alpha, mid, dora_scale, reshape) of a plain LoRA patch, whatever the host's representation."""
    if getattr(adapter, "name", None) == "lora" and hasattr(adapter, "weights"):
        return adapter.weights
    if isinstance(adapter, tuple) and len(adapter) == 2 and adapter[0] == "lora":
        return adapter[1]
    return None


def lora_side_of(patch) -> LoRASide | None:
    """The side computation of one patch entry (strength, adapter, strength_model, offset, function), or None
    when it is not a plain 2-D LoRA on the whole weight or a row slice of it."""
    strength, adapter, strength_model, offset, function = (tuple(patch) + (None,) * 5)[:5]
    weights = _lora_weights(adapter)
    plain = (weights is not None and strength_model == 1.0 and _row_slice(offset) is not False
             and function is None and weights[3] is None and weights[4] is None and weights[5] is None
             and weights[0].ndim == 2 and weights[1].ndim == 2)
    if not plain:
        return None
    up, down, alpha = weights[0], weights[1], weights[2]
    rank = down.shape[0]
    scale = float(strength) * (float(alpha) / rank if alpha is not None else 1.0)
    return LoRASide(down, up, scale, _row_slice(offset))


def split_lora_patches(patches: list) -> tuple[list[LoRASide], list]:
    """Split a key's patch list into side-computable LoRAs and the rest."""
    sides, rest = [], []
    for patch in patches:
        side = lora_side_of(patch)
        if side is None:
            rest.append(patch)
        else:
            sides.append(side)
    return sides, rest


def _row_slice(offset) -> tuple[int, int] | None | bool:
    """(start, length) for a patch on a row slice (core's offset (0, start, length)); None: the whole
    weight; False: a slice the side path cannot take (another dimension)."""
    if offset is None:
        return None
    dim, start, length = offset
    return (int(start), int(length)) if dim == 0 else False


class DequantizedPatch:
    """Applies weight patches (LoHa, LoKr, full diff, DoRA, …) to a weight dequantized for one use: a layer's
    `weight_function`; the stored weight is never changed.

    `scale`: for hosts whose cast hands weight functions the stored values before the layer multiplies in its
    per-tensor scale (ComfyUI 0.3.x scaled fp8): the patches apply to weight·scale and the result is divided back.
    """

    def __init__(self, key: str, patches: list, scale: torch.Tensor | None = None) -> None:
        self.key, self.patches, self.scale = key, patches, scale

    def __call__(self, weight):
        if self.scale is None:
            return comfy.lora.calculate_weight(self.patches, weight, self.key)
        scale = self.scale.to(device=weight.device, dtype=torch.float32)
        patched = comfy.lora.calculate_weight(self.patches, weight.float() * scale, self.key)
        return (patched / scale).to(weight.dtype)


class QuantModelPatcher(comfy.model_patcher.ModelPatcher):
    """ModelPatcher that patches quantized layers beside the weight instead of into it."""

    def patch_weight_to_device(self, key, device_to=None, inplace_update=False, *args, **kwargs):
        if key in self.patches:
            weight = comfy.utils.get_attr(self.model, key)
            if is_quantized(weight):
                module = comfy.utils.get_attr(self.model, key.rsplit(".", 1)[0])
                sides, rest = split_lora_patches(self.patches[key])
                module.lora_side = sides
                module.weight_function = [DequantizedPatch(key, rest)] if rest else []
                return weight if kwargs.get("return_weight") else None
        return super().patch_weight_to_device(key, device_to, inplace_update, *args, **kwargs)

    def load(self, *args, **kwargs):
        kwargs["force_patch_weights"] = True  # attach patches to offloaded layers too (never LowVramPatch)
        return super().load(*args, **kwargs)

    def unpatch_model(self, *args, **kwargs):
        for module in self.model.modules():
            if isinstance(module, QuantLayer):
                module.lora_side = []
                module.weight_function = []
        return super().unpatch_model(*args, **kwargs)

    def partially_unload(self, *args, **kwargs):
        kwargs["force_patch_weights"] = True
        return super().partially_unload(*args, **kwargs)
