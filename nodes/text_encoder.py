"""ZImageTextEncoderLoader: Qwen3-4B (safetensors or GGUF) → CLIP."""
from __future__ import annotations

from ..loaders.text_encoder import load_qwen3_text_encoder
from .common import CATEGORY_LOADERS, model_files, model_path

FOLDERS = ("text_encoders", "clip_gguf")


class ZImageTextEncoderLoader:
    """Load the Qwen3-4B text encoder of Z-Image as a standard CLIP (use it with CLIPTextEncode)."""

    DESCRIPTION = ("Loads the Qwen3-4B text encoder Z-Image uses, from safetensors or GGUF (any quantization; "
                   "GGUF weights stay quantized). Its size is read from the file.")
    CATEGORY = CATEGORY_LOADERS
    SEARCH_ALIASES = ["qwen", "qwen3", "qwen3-4b", "text encoder", "clip", "gguf", "clip gguf"]
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("Text encoder for CLIPTextEncode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text_encoder_name": (model_files(*FOLDERS), {
            "tooltip": "A Qwen3-4B file from models/text_encoders or models/clip_gguf, e.g. qwen_3_4b.safetensors "
                       "or Qwen3-4B-Q6_K.gguf."})}}

    def load(self, text_encoder_name: str):
        return (load_qwen3_text_encoder(model_path(text_encoder_name, *FOLDERS)),)


NODE_CLASS_MAPPINGS = {"ZImageTextEncoderLoader": ZImageTextEncoderLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageTextEncoderLoader": "Z-Image Text Encoder Loader"}
