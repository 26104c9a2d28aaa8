"""What a LoRA file is, told from its key names alone: the trainer's layout, the adapter kinds, a foreign family.

Facts relied on (the trainers' public code and docs, and ComfyUI's `comfy/lora.py` / `comfy/utils.py`):

| trainer / layout | DiT key of layer 0's query | notes |
|---|---|---|
| ComfyUI (and LoRAs converted for it) | `diffusion_model.layers.0.attention.qkv.lora_up/lora_down.weight` | ComfyUI module names, fused qkv |
| ostris ai-toolkit | `diffusion_model.layers.0.attention.to_q.lora_A/lora_B.weight` | diffusers names, separate q/k/v |
| diffusers / PEFT | `transformer.layers.0.attention.to_q.lora_A/lora_B.weight` | `ZImageTransformer2DModel` names |
| DiffSynth-Studio / ModelScope | `layers.0.attention.to_q.lora_A/lora_B.weight` | diffusers names, no prefix |
| kohya sd-scripts / musubi-tuner | `lora_unet_layers_0_attention_to_q.lora_down/lora_up.weight`, `.alpha` | module path with `_`; |
|  |  | `to_out_0`, `feed_forward_w1`, `adaLN_modulation_0`, refiners, `all_x_embedder_2-1` |
| LyCORIS (SimpleTuner, musubi's LoHa/LoKr) | `lycoris_layers_0_attention_to_q.hada_w1_a` / `.lokr_w1` | or `lora_unet_…` names |

diffusers names differ from ComfyUI's in: `attention.to_q/to_k/to_v` (rows 0:D, D:2D, 2D:3D of the fused
`attention.qkv`), `attention.to_out.0` (`attention.out`), `attention.norm_q/norm_k` (`q_norm/k_norm`),
`all_x_embedder.2-1` (`x_embedder`), `all_final_layer.2-1.*` (`final_layer.*`). Adapter tensors: LoRA
`lora_up/lora_down` or `lora_B/lora_A` (+ `.alpha`, scale alpha/rank; `.dora_scale` for DoRA), LoHa
`hada_w1_a/w1_b/w2_a/w2_b`, LoKr `lokr_w1/lokr_w2` (or their `_a/_b` factors), full difference `.diff`
(+ `.diff_b`). Text-encoder keys: kohya `lora_te_`/`lora_te1_`, diffusers `text_encoder.`, ComfyUI
`text_encoders.`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

# (format name, test on the set of DiT key names) — the first that matches names the file.
DIT_LAYOUTS: tuple[tuple[str, Callable[[set[str]], bool]], ...] = (
    ("kohya / musubi-tuner (lora_unet_)", lambda keys: any(k.startswith("lora_unet_") for k in keys)),
    ("LyCORIS (lycoris_)", lambda keys: any(k.startswith("lycoris_") for k in keys)),
    ("ostris ai-toolkit (diffusion_model., diffusers names)",
     lambda keys: any(k.startswith("diffusion_model.") and re.search(r"\.to_[qkv]\.|\.to_out\.", k) for k in keys)),
    ("ComfyUI (diffusion_model.)", lambda keys: any(k.startswith("diffusion_model.") for k in keys)),
    ("diffusers / PEFT (transformer.)", lambda keys: any(k.startswith("transformer.") for k in keys)),
    ("DiffSynth-Studio / ModelScope (bare layers.N)",
     lambda keys: any(re.match(r"(layers|noise_refiner|context_refiner)\.\d+\.", k) for k in keys)),
)

# (adapter kind, a key suffix that only that kind writes)
ADAPTER_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("LoRA", (".lora_up.weight", ".lora_down.weight", ".lora_A.weight", ".lora_B.weight", ".lora.up.weight",
              "_lora.up.weight", ".lora_A.default.weight")),
    ("DoRA", (".dora_scale",)),
    ("LoHa", (".hada_w1_a",)),
    ("LoKr", (".lokr_w1", ".lokr_w1_a")),
    ("full diff", (".diff",)),
)

TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoders.", "te.")

# (marker in a key, what the file is) — a LoRA for another model, named in the zero-match error.
FOREIGN_FAMILIES: tuple[tuple[str, str], ...] = (
    ("double_blocks", "a Flux LoRA: its keys name double_blocks"),
    ("single_transformer_blocks", "a Flux LoRA (diffusers names): its keys name single_transformer_blocks"),
    ("img_mod", "a Qwen-Image LoRA: its keys name img_mod"),
    ("joint_blocks", "an SD3 LoRA: its keys name joint_blocks"),
    ("input_blocks", "an SD 1.x/SDXL LoRA: its keys name input_blocks"),
    ("down_blocks", "an SD 1.x/SDXL LoRA: its keys name down_blocks"),
    ("self_attn", "a Wan / video-model LoRA: its keys name blocks.N.self_attn"),
    ("transformer_blocks", "a LoRA for a diffusers transformer with transformer_blocks (Flux, Qwen-Image, …)"),
)


@dataclass(frozen=True)
class LoraDescription:
    layout: str
    adapters: tuple[str, ...]
    has_text_encoder: bool


def is_text_encoder_key(key: str) -> bool:
    return key.startswith(TEXT_ENCODER_PREFIXES)


def describe_lora(keys) -> LoraDescription:
    """The layout and adapter kinds a LoRA's key names show."""
    keys = set(keys)
    dit_keys = {k for k in keys if not is_text_encoder_key(k)}
    layout = next((name for name, test in DIT_LAYOUTS if test(dit_keys)), "unknown layout")
    adapters = tuple(kind for kind, suffixes in ADAPTER_KINDS if any(k.endswith(suffixes) for k in keys))
    return LoraDescription(layout, adapters, any(is_text_encoder_key(k) for k in keys))


def foreign_family(keys) -> str | None:
    """What other model a LoRA is for, when its keys say so (e.g. Flux's double_blocks)."""
    for marker, family in FOREIGN_FAMILIES:
        if any(marker in k for k in keys):
            return family
    return None
