"""Z-Image Fun ControlNet patches: key layout (published → ComfyUI), shape checks and the config in the weights.

Facts relied on (alibaba-pai model pages and ComfyUI's `ModelPatchLoader` / `comfy/ldm/lumina/controlnet.py`):
- alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union (1.0): 6 control layers, 16 control channels, plain
  noise-refiner blocks; -2.0 and -2.1 (also the -8steps and -2601 files): 15 control layers, refiner control
  blocks, 33 control channels (latent + mask + inpaint latent); 2.1 lite: 3 control layers.
- 2.0 and 2.1 have the same keys; 2.0 never trained its refiner control blocks (their `after_proj` is all
  zeros) and runs the control layers in their place: ComfyUI's "broken" flag, detected the same way here.
- Keys are in diffusers naming (`to_q/to_k/to_v`, `to_out.0`, `norm_q/norm_k`); ComfyUI's block fuses q/k/v.
"""
from __future__ import annotations

import torch

from ..quant.tensor import QuantizedTensor
from .config import count_blocks, ffn_config
from .detect import Shapes
from .dit_layouts import diffusers_to_comfy

EMBEDDER = "control_all_x_embedder.2-1.weight"
FIRST_LAYER = "control_layers.0."
REFINER_AFTER_PROJ = "control_noise_refiner.0.after_proj.weight"
LATENT_CHANNELS = 16
PATCH_AREA = 4  # patch 2 x 2
BLOCK_PREFIXES = ("control_layers", "control_noise_refiner")


def is_controlnet(shapes: Shapes) -> bool:
    return EMBEDDER in shapes and any(k.startswith(FIRST_LAYER) for k in shapes)


def cat_rows(parts: list[torch.Tensor], name: str) -> torch.Tensor:
    """Concatenate weights along dim 0; quantized parts of one type stay quantized (their rows are whole blocks)."""
    if all(isinstance(p, QuantizedTensor) for p in parts) and len({p.quant_type.type_id for p in parts}) == 1 \
            and len({tuple(p.logical_shape[1:]) for p in parts}) == 1:
        shape = (sum(p.logical_shape[0] for p in parts), *parts[0].logical_shape[1:])
        raw = torch.cat([p.raw_bytes() for p in parts], dim=0)
        return QuantizedTensor.from_raw(raw, parts[0].quant_type, shape, tensor_name=name)
    dense = [p.dequantize(torch.float32) if isinstance(p, QuantizedTensor) else p for p in parts]
    return torch.cat(dense, dim=0)


def controlnet_to_comfy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a published-layout patch to ComfyUI's `ZImage_Control` layout (a ComfyUI-layout one is unchanged);
    quantized q/k/v stay quantized in the fused qkv."""
    return diffusers_to_comfy(sd, top_renames=(), join_rows=cat_rows)


def controlnet_problem(s: Shapes) -> str | None:
    """What makes a (ComfyUI-layout) patch unbuildable, or None."""
    needed = (EMBEDDER, "control_layers.0.attention.qkv.weight", "control_layers.0.attention.q_norm.weight",
              "control_layers.0.feed_forward.w1.weight", "control_layers.0.after_proj.weight",
              "control_layers.0.before_proj.weight", "control_noise_refiner.0.attention.qkv.weight")
    for key in needed:
        if key not in s:
            return f"tensor '{key}' missing"
    dim, embed_in = s[EMBEDDER]
    head_dim = s["control_layers.0.attention.q_norm.weight"][0]
    if embed_in % PATCH_AREA or embed_in // PATCH_AREA < LATENT_CHANNELS or dim % head_dim:
        return f"width {dim}, head size {head_dim} and {embed_in} control inputs that do not fit together"
    for prefix in BLOCK_PREFIXES:
        for key, shape in s.items():
            if key.startswith(prefix + ".") and key.endswith(".attention.qkv.weight") and tuple(shape) != (3 * dim, dim):
                return f"tensor '{key}' of shape {list(shape)} where [{3 * dim}, {dim}] fits the rest of the file"
    return None


def infer_controlnet_config(shapes: Shapes, sd: dict[str, torch.Tensor]) -> dict:
    """`ZImage_Control` keyword arguments of a ComfyUI-layout patch (its width decides, as in the DiT)."""
    dim, embed_in = shapes[EMBEDDER]
    head_dim = shapes["control_layers.0.attention.q_norm.weight"][0]
    refiner_control = REFINER_AFTER_PROJ in shapes
    config = {
        "dim": dim, "n_heads": dim // head_dim, "n_kv_heads": dim // head_dim, "qk_norm": True,
        "n_control_layers": count_blocks(shapes, "control_layers"),
        "control_in_dim": LATENT_CHANNELS, "additional_in_dim": embed_in // PATCH_AREA - LATENT_CHANNELS,
        "refiner_control": refiner_control,
        "broken": refiner_control and not bool(torch.count_nonzero(_dense(sd[REFINER_AFTER_PROJ]))),
        **ffn_config(dim, shapes["control_layers.0.feed_forward.w1.weight"][0]),
    }
    return config


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t.dequantize(torch.float32) if isinstance(t, QuantizedTensor) else t.float()
