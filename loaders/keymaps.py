"""Tensor-name maps between llama.cpp's GGUF naming and the HF/ComfyUI layout of Qwen3 text encoders.

llama.cpp (and every converter that follows it: unsloth, bartowski, `convert_hf_to_gguf.py`) names Qwen3
tensors `token_embd.weight`, `blk.N.attn_q.weight`, …; ComfyUI's Qwen3 encoder expects the HF names
(`model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`, …). Qwen3 needs no q/k permutation
(only llama.cpp's LLaMA converter permutes). Names are mapped by exact table lookup, never by substring
replacement, so an unknown tensor is reported instead of being silently mangled.
"""
from __future__ import annotations

import re

# llama.cpp name (without ".weight"/".bias") -> HF name, for tensors outside the blocks.
QWEN3_GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

# llama.cpp per-block suffix -> HF per-layer suffix.
QWEN3_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# Tensors llama.cpp may write that a Qwen3 encoder never reads (precomputed RoPE factors).
IGNORED = ("rope_freqs.weight",)

_BLOCK = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL = re.compile(r"^([a-z_]+)\.(weight|bias)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def block_index(name: str) -> int | None:
    """Block number of a GGUF (`blk.N.`) or HF (`model.layers.N.`) tensor name; None for global tensors."""
    m = re.match(r"^blk\.(\d+)\.", name) or _HF_LAYER.match(name)
    return int(m.group(1)) if m else None


# Z-Image reads hidden state -2: the last layer is not built when at least this many layers exist
# (ComfyUI's hidden-layer option needs 2 layers built).
MIN_LAYERS_TO_DROP_LAST = 3
QWEN3_HEAD_KEYS = ("model.norm.weight", "lm_head.weight")


def can_drop_last(num_layers: int) -> bool:
    """Whether the encoder is built without its last layer and final norm (see text_encoder.encoder_class)."""
    return num_layers >= MIN_LAYERS_TO_DROP_LAST


def unused_qwen3_keys(keys, num_layers: int) -> set[str]:
    """HF-named keys of the last layer, the final norm and the output head: never read when the last layer is
    dropped."""
    return {k for k in keys if k in QWEN3_HEAD_KEYS
            or (k.startswith("model.layers.") and block_index(k) == num_layers - 1)}


def llama_cpp_to_hf(name: str) -> str | None:
    """HF name of a llama.cpp Qwen3 tensor name, or None when the name is not part of the Qwen3 layout."""
    m = _BLOCK.match(name)
    if m:
        suffix = QWEN3_BLOCK.get(m.group(2))
        return f"model.layers.{m.group(1)}.{suffix}.{m.group(3)}" if suffix else None
    m = _GLOBAL.match(name)
    if m and m.group(1) in QWEN3_GLOBAL:
        return f"{QWEN3_GLOBAL[m.group(1)]}.{m.group(2)}"
    return None


def hf_to_llama_cpp(name: str) -> str | None:
    """The inverse of :func:`llama_cpp_to_hf` (used to write llama.cpp-style files in tests and benchmarks)."""
    m = re.match(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$", name)
    if m:
        inverse = {v: k for k, v in QWEN3_BLOCK.items()}
        suffix = inverse.get(m.group(2))
        return f"blk.{m.group(1)}.{suffix}.{m.group(3)}" if suffix else None
    inverse_global = {v: k for k, v in QWEN3_GLOBAL.items()}
    base, _, kind = name.rpartition(".")
    return f"{inverse_global[base]}.{kind}" if base in inverse_global else None


def is_hf_layout(names) -> bool:
    """True when the names are already HF/ComfyUI Qwen3 names (some converters keep them)."""
    return any(n.startswith("model.layers.") for n in names)


def map_qwen3_names(names) -> tuple[dict[str, str], list[str]]:
    """({file name: HF name}, [names that are not part of a Qwen3 encoder]) for a GGUF's tensor names."""
    names = list(names)
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    hf = is_hf_layout(names)
    for name in names:
        if name in IGNORED:
            continue
        target = name if hf else llama_cpp_to_hf(name)
        if target is None:
            unknown.append(name)
        else:
            mapping[name] = target
    return mapping, unknown


def qwen3_layer_keys(index: int, prefix: str = "model.layers") -> list[str]:
    """The HF weight names of one Qwen3 decoder layer."""
    return [f"{prefix}.{index}.{suffix}.weight" for suffix in QWEN3_BLOCK.values()]
