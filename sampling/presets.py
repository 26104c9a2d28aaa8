"""Sampling presets per Z-Image model: Turbo (distilled) and Base (undistilled, real cfg and negative prompt).

Facts behind the Base row (Z-Image Base, Tongyi-MAI/Z-Image, released 2026-01-27, the non-distilled model):
- Tongyi-MAI/Z-Image model card as quoted by vllm-project/vllm-omni PR #1229 ("Base: 28-50 steps, CFG support
  (guidance_scale 3.0-5.0), negative prompts") and the Z-Image-Base GGUF page on Civitai (models/2344616:
  "Guidance scale 3.0 – 5.0, Inference steps 28 – 50, Sampler res_multistep"); stable-diffusion.cpp's example
  uses cfg 5. The preset takes the low end of the steps (28) and the middle of the guidance range (4).
- Shift: no source gives Base a different flow shift from Turbo's 3.0, so the preset keeps 3.
- Files: ComfyUI's repackage `z_image_bf16.safetensors` (12.3 GB, huggingface.co/Comfy-Org/z_image,
  split_files/diffusion_models/), GGUFs from unsloth (huggingface.co/unsloth/Z-Image-GGUF, e.g.
  `z-image-Q4_K_M.gguf`, 5 066 995 776 bytes); the text encoder and VAE are Turbo's (Qwen3-4B, Flux ae).
A Base step at cfg > 1 runs the model on the positive and the negative: ComfyUI batches both into one call
(`calc_cond_batch`) when they fit the free memory, so the activations of a step double (planner/estimate.py).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingPreset:
    """The sampler settings a model was made for."""
    steps: int
    cfg: float
    shift: float
    sampler_name: str
    scheduler: str


CUSTOM = "custom"
PRESETS: dict[str, SamplingPreset] = {
    "turbo": SamplingPreset(steps=8, cfg=1.0, shift=3.0, sampler_name="euler", scheduler="simple"),
    "base": SamplingPreset(steps=28, cfg=4.0, shift=3.0, sampler_name="euler", scheduler="simple"),
}


def preset_names() -> list[str]:
    """The sampler's preset choices: custom (the widgets) first, then the models' presets."""
    return [CUSTOM, *PRESETS]


def resolve_preset(name: str, steps: int, cfg: float, shift: float, sampler_name: str,
                   scheduler: str) -> SamplingPreset:
    """The settings to sample with: the preset's, or the given ones for `custom`."""
    if name == CUSTOM:
        return SamplingPreset(steps, cfg, shift, sampler_name, scheduler)
    if name not in PRESETS:
        raise ValueError(f"unknown sampling preset {name!r}: expected one of {', '.join(preset_names())}")
    return PRESETS[name]
