"""ZImageLoraLoader: a LoRA from any Z-Image trainer → MODEL (+ CLIP), with a report of what matched."""
from __future__ import annotations

from ..loaders.lora import load_zimage_lora
from .common import CATEGORY_LOADERS, model_files, model_path

FOLDERS = ("loras",)
STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}


class ZImageLoraLoader:
    """Apply a Z-Image LoRA (ComfyUI, ai-toolkit, diffusers/PEFT, DiffSynth, kohya/musubi-tuner, LyCORIS)."""

    DESCRIPTION = ("Applies a Z-Image LoRA in any trainer's layout (ComfyUI, ostris ai-toolkit, diffusers/PEFT, "
                   "DiffSynth-Studio, kohya / musubi-tuner, LyCORIS LoHa/LoKr, full diff, DoRA) to the model and, "
                   "when connected, the text encoder. On GGUF, fp8 and .comfy_quant models the stored weights are "
                   "never changed: the LoRA runs beside the quantized layers (other patch kinds apply per use). "
                   "The report output lists the format found, how many weights were patched and every key that "
                   "was not; a LoRA of which nothing matches stops with an error naming what it is for.")
    CATEGORY = CATEGORY_LOADERS
    SEARCH_ALIASES = ["lora", "z-image lora", "musubi lora", "ai-toolkit lora", "lycoris", "loha", "lokr"]
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "report")
    OUTPUT_TOOLTIPS = ("The model with the LoRA applied.",
                       "The text encoder with the LoRA's text-encoder part applied (None when not connected).",
                       "What was found and applied: format, weights patched, keys not matched (by name).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Z-Image MODEL (any DiT format: bf16, fp8, GGUF, …)."}),
                "lora_name": (model_files(*FOLDERS), {
                    "tooltip": "A LoRA from models/loras. Its trainer's layout is recognised from its keys."}),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "How strongly the LoRA changes the DiT. "
                                             "Negative values subtract it; 0 leaves the model as it is."}),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": "The text encoder, if the LoRA also trained it (Qwen3 keys); "
                                             "without it those keys are reported as skipped."}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "How strongly the LoRA changes the text "
                                                                   "encoder."}),
            },
        }

    def load(self, model, lora_name: str, strength_model: float, clip=None, strength_clip: float = 1.0):
        model, clip, report = load_zimage_lora(model, clip, model_path(lora_name, *FOLDERS), strength_model,
                                               strength_clip)
        text = report.text()
        return {"ui": {"text": [text]}, "result": (model, clip, text)}


NODE_CLASS_MAPPINGS = {"ZImageLoraLoader": ZImageLoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageLoraLoader": "Z-Image LoRA Loader"}
