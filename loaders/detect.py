"""Sniff what a state dict is from its keys and shapes (never from the file name)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Shapes = dict[str, tuple[int, ...]]

# Prefixes that real files put in front of the keys we look for, stripped before matching.
KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "first_stage_model.", "vae.",
                  "text_encoders.qwen3_4b.transformer.")


@dataclass(frozen=True)
class Kind:
    """One recognisable model family: a predicate over the (prefix-stripped) shapes and a human name.

    `problem(shapes)`, when given, names what is inconsistent in a file of this kind (for the description).
    """
    name: str
    description: str
    matches: Callable[[Shapes], bool]
    problem: Callable[[Shapes], "str | None"] | None = None


def _has(*keys: str) -> Callable[[Shapes], bool]:
    return lambda s: all(k in s for k in keys)


def _vae_with_latent_channels(channels: int) -> Callable[[Shapes], bool]:
    return lambda s: "decoder.conv_in.weight" in s and len(s["decoder.conv_in.weight"]) == 4 \
        and s["decoder.conv_in.weight"][1] == channels


def _shape_problems(shapes: Shapes, expected: dict[str, tuple[int, ...]]) -> str | None:
    """The first tensor of `expected` that is missing from `shapes` or has another shape."""
    for key, shape in expected.items():
        if key not in shapes:
            return f"tensor '{key}' missing"
        if tuple(shapes[key]) != shape:
            return f"tensor '{key}' of shape {list(shapes[key])} where {list(shape)} fits the rest of the file"
    return None


# Quantization side tensors (fp8 scales, `.comfy_quant` entries): checked by loaders/dit_quant_formats.py against
# their own weight, so a bad one is named there rather than compared across blocks here.
QUANT_SIDE_NAMES = frozenset({"scale_weight", "scale_input", "weight_scale", "input_scale", "weight_scale_2",
                              "comfy_quant"})


def _blocks_like_first(shapes: Shapes, block_prefixes: tuple[str, ...], first: str) -> str | None:
    """Every `<prefix>.N.<rest>` tensor has the shape of `<first>.<rest>` (blocks of one model share shapes)."""
    for key, shape in shapes.items():
        if key.rpartition(".")[2] in QUANT_SIDE_NAMES:
            continue
        for prefix in block_prefixes:
            if key.startswith(prefix + "."):
                index, _, rest = key[len(prefix) + 1:].partition(".")
                reference = shapes.get(f"{first}.{rest}")
                if index.isdigit() and reference is not None and tuple(shape) != tuple(reference):
                    return f"tensor '{key}' of shape {list(shape)} where {list(reference)} fits the rest of the file"
    return None


MIN_QWEN3_LAYERS = 3
MAX_INDEX_DIGITS = 9


def block_indices(shapes: Shapes, prefix: str) -> set[int]:
    """The N of every `<prefix>.N.` key (a number of more than MAX_INDEX_DIGITS digits is read from its first
    MAX_INDEX_DIGITS + 1 only: larger than any real block index, and never a huge int conversion)."""
    start = prefix + "."
    indices = set()
    for key in shapes:
        if key.startswith(start):
            index = key[len(start):].partition(".")[0]
            if index.isdigit() and index.isascii():
                indices.add(int(index[:MAX_INDEX_DIGITS + 1]))
    return indices


def consecutive_blocks(shapes: Shapes, prefix: str) -> "int | str":
    """The number of `<prefix>.N.` blocks when they are numbered 0..n-1, else what is missing."""
    indices = block_indices(shapes, prefix)
    if indices and max(indices) != len(indices) - 1:
        gap = next(i for i in range(len(indices)) if i not in indices)  # never loops past the names present
        return f"block '{prefix}.{gap}' missing before block '{prefix}.{max(indices)}'"
    return len(indices)


def _dims(shape, rank: int) -> bool:
    return len(shape) == rank and all(isinstance(d, int) and d > 0 for d in shape)


def _rank_problem(s: Shapes, needed: dict[str, int]) -> str | None:
    """The first of `needed` (key -> rank) that is missing or has another rank / a non-positive size."""
    for key, rank in needed.items():
        if key not in s:
            return f"tensor '{key}' missing"
        if not _dims(s[key], rank):
            return f"tensor '{key}' of shape {list(s[key])}"
    return None


# Sizes fixed by the architecture (ComfyUI's NextDiT with z_image modulation builds them whatever the width).
# The timestep MLP's hidden width is not: ComfyUI builds min(dim, 1024), diffusers always 1024; the loader
# builds whatever the file holds.
ZIMAGE_T_FREQ, ZIMAGE_ADALN = 256, 256


def zimage_dit_problem(s: Shapes) -> str | None:
    """What makes a Z-Image DiT (ComfyUI layout) unbuildable: shapes that do not fit together, or None."""
    needed = {"cap_embedder.1.weight": 2, "layers.0.attention.q_norm.weight": 1, "layers.0.attention.qkv.weight": 2,
              "x_embedder.weight": 2, "layers.0.feed_forward.w1.weight": 2, "layers.0.adaLN_modulation.0.weight": 2,
              "t_embedder.mlp.0.weight": 2}
    problem = _rank_problem(s, needed)
    if problem:
        return problem
    dim, cap = s["cap_embedder.1.weight"]
    head_dim = s["layers.0.attention.q_norm.weight"][0]
    qkv_rows = s["layers.0.attention.qkv.weight"][0]
    patch_in = s["x_embedder.weight"][1]
    ffn = s["layers.0.feed_forward.w1.weight"][0]
    adaln = s["layers.0.adaLN_modulation.0.weight"][1]
    t_hidden = s["t_embedder.mlp.0.weight"][0]
    n_heads = dim // head_dim
    if dim % head_dim or qkv_rows % head_dim or (qkv_rows // head_dim - n_heads) % 2 or qkv_rows <= dim \
            or patch_in % 4 or n_heads == 0:
        return f"width {dim}, head size {head_dim} and attention rows {qkv_rows} that do not fit together"
    if adaln != min(dim, ZIMAGE_ADALN):
        return (f"width {dim} with a modulation input of {adaln} (a Z-Image DiT of width {dim} takes "
                f"{min(dim, ZIMAGE_ADALN)})")
    expected = {
        "x_embedder.weight": (dim, patch_in), "cap_embedder.0.weight": (cap,), "cap_embedder.1.weight": (dim, cap),
        "t_embedder.mlp.0.weight": (t_hidden, ZIMAGE_T_FREQ), "t_embedder.mlp.2.weight": (ZIMAGE_ADALN, t_hidden),
        "final_layer.linear.weight": (patch_in, dim),
        "final_layer.adaLN_modulation.1.weight": (dim, adaln), "x_embedder.bias": (dim,),
        "cap_embedder.1.bias": (dim,), "t_embedder.mlp.0.bias": (t_hidden,), "t_embedder.mlp.2.bias": (ZIMAGE_ADALN,),
        "final_layer.linear.bias": (patch_in,), "final_layer.adaLN_modulation.1.bias": (dim,),
        "layers.0.adaLN_modulation.0.bias": (4 * dim,),
        "layers.0.attention.qkv.weight": (qkv_rows, dim), "layers.0.attention.out.weight": (dim, dim),
        "layers.0.attention.k_norm.weight": (head_dim,), "layers.0.feed_forward.w2.weight": (dim, ffn),
        "layers.0.feed_forward.w3.weight": (ffn, dim), "layers.0.adaLN_modulation.0.weight": (4 * dim, adaln),
    }
    for norm in ("attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"):
        expected[f"layers.0.{norm}.weight"] = (dim,)
    for key in ("x_pad_token", "cap_pad_token"):
        if key in s and tuple(s[key]) not in ((1, dim), (dim,)):
            return f"tensor '{key}' of shape {list(s[key])} where [1, {dim}] fits the rest of the file"
    for prefix in ("layers", "noise_refiner", "context_refiner"):
        count = consecutive_blocks(s, prefix)
        if isinstance(count, str):
            return count
    return _shape_problems(s, expected) or _blocks_like_first(s, ("layers", "noise_refiner", "context_refiner"),
                                                              "layers.0")


def qwen3_problem(s: Shapes, min_layers: int = MIN_QWEN3_LAYERS) -> str | None:
    """What makes a Qwen3 encoder (HF layout) unbuildable: shapes that do not fit together, fewer than
    `min_layers` layers, or None."""
    needed = {"model.embed_tokens.weight": 2, "model.layers.0.self_attn.q_norm.weight": 1,
              "model.layers.0.self_attn.q_proj.weight": 2, "model.layers.0.self_attn.k_proj.weight": 2,
              "model.layers.0.mlp.gate_proj.weight": 2}
    problem = _rank_problem(s, needed)
    if problem:
        return problem
    vocab, hidden = s["model.embed_tokens.weight"]
    head_dim = s["model.layers.0.self_attn.q_norm.weight"][0]
    q_rows = s["model.layers.0.self_attn.q_proj.weight"][0]
    kv_rows = s["model.layers.0.self_attn.k_proj.weight"][0]
    ffn = s["model.layers.0.mlp.gate_proj.weight"][0]
    if q_rows % head_dim or kv_rows % head_dim or (q_rows // head_dim) % (kv_rows // head_dim):
        return f"attention rows {q_rows}/{kv_rows} that do not fit head size {head_dim}"
    layers = consecutive_blocks(s, "model.layers")
    if isinstance(layers, str):
        return layers
    if layers < min_layers:
        return f"{layers} layers (Z-Image reads the second-to-last hidden state: at least {min_layers} needed)"
    p = "model.layers.0."
    if "model.norm.weight" in s and tuple(s["model.norm.weight"]) != (hidden,):
        return f"tensor 'model.norm.weight' of shape {list(s['model.norm.weight'])} where [{hidden}] fits the rest"
    expected = {p + "input_layernorm.weight": (hidden,),
                p + "post_attention_layernorm.weight": (hidden,), p + "self_attn.q_proj.weight": (q_rows, hidden),
                p + "self_attn.k_proj.weight": (kv_rows, hidden), p + "self_attn.v_proj.weight": (kv_rows, hidden),
                p + "self_attn.o_proj.weight": (hidden, q_rows), p + "self_attn.k_norm.weight": (head_dim,),
                p + "mlp.up_proj.weight": (ffn, hidden), p + "mlp.down_proj.weight": (hidden, ffn)}
    return _shape_problems(s, expected) or _blocks_like_first(s, ("model.layers",), "model.layers.0")


def _flux_vae_layout() -> dict[str, tuple[int, ...]]:
    from ..fixtures.shapes import FLUX_VAE, vae_state_dict_shapes
    return vae_state_dict_shapes(FLUX_VAE)


def flux_vae_problem(s: Shapes) -> str | None:
    """ComfyUI builds the Flux VAE with a fixed layout: every tensor present must have its shape there."""
    layout = _flux_vae_layout()
    for key, shape in s.items():
        if key in layout and tuple(shape) != layout[key]:
            return f"tensor '{key}' of shape {list(shape)} where the Flux VAE has {list(layout[key])}"
    missing = [k for k in layout if k.startswith("decoder.") and k not in s]
    if missing:
        return f"{len(missing)} decoder tensors missing (e.g. '{missing[0]}')"
    return None


def _fits(loose: Callable[[Shapes], bool], problem: Callable[[Shapes], "str | None"]) -> Callable[[Shapes], bool]:
    return lambda s: loose(s) and problem(s) is None


def _zimage_loose(s: Shapes) -> bool:
    return "cap_embedder.1.weight" in s and "layers.0.adaLN_modulation.0.weight" in s


# Order matters: the first match wins, so specific kinds come before general ones.
KINDS: tuple[Kind, ...] = (
    Kind("zimage_dit", "a Z-Image DiT (ComfyUI layout)", _fits(_zimage_loose, zimage_dit_problem)),
    Kind("zimage_dit_diffusers", "a Z-Image DiT (diffusers layout)",
         lambda s: "all_x_embedder.2-1.weight" in s and "layers.0.attention.to_q.weight" in s),
    Kind("zimage_dit_damaged", "a damaged Z-Image DiT", _zimage_loose, zimage_dit_problem),
    Kind("lumina2_dit", "a Lumina 2 DiT", _has("cap_embedder.1.weight", "layers.0.adaLN_modulation.1.weight")),
    Kind("zimage_controlnet", "a Z-Image Fun ControlNet patch (for models/model_patches)",
         lambda s: "control_all_x_embedder.2-1.weight" in s and "control_layers.0.after_proj.weight" in s),
    Kind("qwen_image_controlnet", "a Qwen-Image ControlNet",
         lambda s: "controlnet_blocks.0.y_rms.weight" in s or ("controlnet_blocks.0.weight" in s and
                                                             "transformer_blocks.0.img_mod.1.weight" in s)),
    Kind("flux_controlnet", "a Flux ControlNet",
         lambda s: "controlnet_blocks.0.weight" in s or "controlnet_x_embedder.weight" in s),
    Kind("flux_dit", "a Flux DiT", _has("double_blocks.0.img_attn.qkv.weight")),
    Kind("qwen_image_dit", "a Qwen-Image DiT", _has("transformer_blocks.0.img_mod.1.weight")),
    Kind("sd_unet", "an SD1.x/SDXL UNet", _has("input_blocks.0.0.weight")),
    Kind("qwen3_te", "a Qwen3 text encoder", _fits(_has("model.layers.0.self_attn.q_norm.weight"), qwen3_problem)),
    Kind("qwen3_te_damaged", "a damaged Qwen3 text encoder", _has("model.layers.0.self_attn.q_norm.weight"),
         qwen3_problem),
    Kind("llama_te", "a LLaMA/Qwen2-style text encoder (no q/k norm)", _has("model.layers.0.self_attn.q_proj.weight")),
    Kind("t5_te", "a T5 text encoder", _has("encoder.block.0.layer.0.SelfAttention.q.weight")),
    Kind("clip_te", "a CLIP text encoder", _has("text_model.encoder.layers.0.self_attn.q_proj.weight")),
    Kind("flux_vae", "a Flux VAE (16 latent channels)", _fits(_vae_with_latent_channels(16), flux_vae_problem)),
    Kind("flux_vae_damaged", "a damaged or resized Flux VAE", _vae_with_latent_channels(16), flux_vae_problem),
    Kind("sd_vae", "an SD1.x/SDXL VAE (4 latent channels)", _vae_with_latent_channels(4)),
    Kind("other_vae", "a VAE with another latent size", _has("decoder.conv_in.weight")),
    Kind("vae_diffusers", "a VAE in diffusers layout", _has("decoder.up_blocks.0.resnets.0.norm1.weight")),
)


def strip_known_prefix(shapes: Shapes) -> tuple[str, Shapes]:
    """Return (prefix, shapes without it) for the longest known prefix most keys carry, else ("", shapes)."""
    for prefix in KNOWN_PREFIXES:
        inner = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
        if len(inner) > max(5, len(shapes) // 2):
            return prefix, inner
    return "", shapes


def classify(shapes: Shapes) -> Kind | None:
    """The first Kind whose predicate holds, or None."""
    for kind in KINDS:
        if kind.matches(shapes):
            return kind
    return None


def describe(shapes: Shapes) -> str:
    """A short human description of what a state dict looks like, for error messages."""
    if not shapes:
        return "a file with no tensors"
    kind = classify(shapes)
    if kind is not None:
        problem = kind.problem(shapes) if kind.problem else None
        return f"{kind.description} ({problem})" if problem else kind.description
    sample = ", ".join(sorted(shapes)[:3])
    return f"an unrecognised model ({len(shapes)} tensors, e.g. {sample})"


# ------------------------------------------------------------------------------ "load it with …" hints
# The pack loader each recognised kind belongs to (damaged files too: they are meant for it).
PACK_LOADERS = {"dit": "the Z-Image Diffusion Model Loader (models/diffusion_models)",
                "te": "the Z-Image Text Encoder Loader (models/text_encoders)",
                "vae": "the Z-Image VAE Loader (models/vae)",
                "controlnet": "the Z-Image ControlNet Loader (models/model_patches)"}
KIND_ROLES = {"zimage_dit": "dit", "zimage_dit_diffusers": "dit", "zimage_dit_damaged": "dit",
              "qwen3_te": "te", "qwen3_te_damaged": "te", "flux_vae": "vae", "flux_vae_damaged": "vae",
              "zimage_controlnet": "controlnet"}
# Kinds no pack loader takes: what the user can do instead.
FOREIGN_HINTS = {
    "lumina2_dit": "Lumina 2 is not Z-Image: load it with core's Load Diffusion Model node.",
    "flux_dit": "A Flux model is not Z-Image: load it with core's Load Diffusion Model node.",
    "qwen_image_dit": "A Qwen-Image model is not Z-Image: load it with core's Load Diffusion Model node.",
    "sd_unet": "An SD1.x/SDXL model is not Z-Image: load it with core's Load Checkpoint node.",
    "qwen_image_controlnet": "A Qwen-Image ControlNet does not fit Z-Image; use a Z-Image Fun ControlNet patch.",
    "flux_controlnet": "A Flux ControlNet does not fit Z-Image; use a Z-Image Fun ControlNet patch.",
    "llama_te": "Z-Image's text encoder is Qwen3-4B (qwen_3_4b.safetensors or a Qwen3-4B GGUF).",
    "t5_te": "Z-Image's text encoder is Qwen3-4B, not T5 (qwen_3_4b.safetensors or a Qwen3-4B GGUF).",
    "clip_te": "Z-Image's text encoder is Qwen3-4B, not CLIP (qwen_3_4b.safetensors or a Qwen3-4B GGUF).",
    "sd_vae": "Z-Image decodes with the Flux VAE (ae.safetensors).",
    "other_vae": "Z-Image decodes with the Flux VAE (ae.safetensors).",
    "vae_diffusers": "Z-Image decodes with the Flux VAE in its original layout (ae.safetensors).",
}
DAMAGED_HINT = "The file looks damaged or incomplete: download it again."


def loader_hint(kind: Kind | None, role: str, default: str) -> str:
    """What to tell a user whose file the `role` loader ("dit", "te", "vae", "controlnet") refused: the loader
    the file belongs to, that it looks damaged, or what to use instead; `default` for unrecognised files."""
    if kind is None:
        return default
    damaged = kind.name.endswith("_damaged")
    home = KIND_ROLES.get(kind.name)
    if home == role:
        return DAMAGED_HINT if damaged else default
    if home is not None:
        return f"Load it with {PACK_LOADERS[home]}" + (" after downloading it again (it looks damaged)." if damaged
                                                       else ".")
    return FOREIGN_HINTS.get(kind.name, default)
