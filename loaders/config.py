"""Model configs inferred from tensor shapes (nothing about size is hard-coded)."""
from __future__ import annotations

from .detect import Shapes, block_indices

# Z-Image constants that are properties of the architecture, not of its size.
ZIMAGE_ARCH = {"image_model": "lumina2", "patch_size": 2, "qk_norm": True, "z_image_modulation": True,
               "time_scale": 1000.0, "rope_theta": 256.0, "axes_lens": [1536, 512, 512]}
ZIMAGE_REAL_AXES = {128: [32, 48, 48]}


def count_blocks(shapes: Shapes, prefix: str) -> int:
    """Number of consecutive `prefix.N.` blocks present, from 0."""
    indices = block_indices(shapes, prefix)
    n = 0
    while n in indices:
        n += 1
    return n


def rope_axes_for_head_dim(head_dim: int) -> list[int]:
    """RoPE axes (t, h, w) summing to head_dim: Z-Image's 32/48/48 at 128, the same 1/4, 3/8, 3/8 split otherwise."""
    if head_dim in ZIMAGE_REAL_AXES:
        return list(ZIMAGE_REAL_AXES[head_dim])
    side = (head_dim * 3 // 8) // 2 * 2
    return [head_dim - 2 * side, side, side]


def ffn_config(dim: int, hidden: int) -> dict:
    """`ffn_dim_multiplier`/`multiple_of` that make ComfyUI's FeedForward build exactly `hidden` units."""
    default = 256 * ((int(dim * 8 / 3) + 255) // 256)
    if hidden == default:
        return {"ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 256}
    return {"ffn_dim_multiplier": (hidden + 0.5) / dim, "multiple_of": 1}


def infer_zimage_dit_config(shapes: Shapes) -> dict:
    """ComfyUI `NextDiT` unet_config of a Z-Image DiT (ComfyUI key layout, prefix already stripped)."""
    dim, cap_feat_dim = shapes["cap_embedder.1.weight"]
    head_dim = shapes["layers.0.attention.q_norm.weight"][0]
    n_heads = dim // head_dim
    qkv_rows = shapes["layers.0.attention.qkv.weight"][0]
    n_kv_heads = (qkv_rows // head_dim - n_heads) // 2
    in_channels = shapes["x_embedder.weight"][1] // (ZIMAGE_ARCH["patch_size"] ** 2)
    config = dict(ZIMAGE_ARCH)
    config.update({
        "dim": dim, "cap_feat_dim": cap_feat_dim, "in_channels": in_channels,
        "n_layers": count_blocks(shapes, "layers"), "n_refiner_layers": count_blocks(shapes, "noise_refiner"),
        "n_heads": n_heads, "n_kv_heads": n_kv_heads, "axes_dims": rope_axes_for_head_dim(head_dim),
        **ffn_config(dim, shapes["layers.0.feed_forward.w1.weight"][0]),
    })
    if "cap_pad_token" in shapes:
        config["pad_tokens_multiple"] = 32
    return config


def infer_qwen3_config(shapes: Shapes) -> dict:
    """ComfyUI `Qwen3_4BConfig` overrides of a Qwen3 encoder (HF key layout) plus its head_dim."""
    vocab, hidden = shapes["model.embed_tokens.weight"]
    head_dim = shapes["model.layers.0.self_attn.q_norm.weight"][0]
    return {
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": shapes["model.layers.0.mlp.gate_proj.weight"][0],
        "num_hidden_layers": count_blocks(shapes, "model.layers"),
        "num_attention_heads": shapes["model.layers.0.self_attn.q_proj.weight"][0] // head_dim,
        "num_key_value_heads": shapes["model.layers.0.self_attn.k_proj.weight"][0] // head_dim,
        "head_dim": head_dim,
    }
