"""ZImageTextEncoderLoader: Qwen3-4B (safetensors or GGUF) → CLIP."""
from __future__ import annotations

import os

from ..loaders.text_encoder import load_qwen3_text_encoder
from .common import CATEGORY_LOADERS, model_files, model_path

FOLDERS = ("text_encoders", "clip_gguf")
CLIP_GGUF = "clip_gguf"


def register_clip_gguf() -> None:
    """Give ComfyUI a `clip_gguf` model folder (models/clip_gguf, .gguf files) unless one exists already
    (ComfyUI-GGUF registers its own; then its folders are listed)."""
    import folder_paths
    if CLIP_GGUF not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[CLIP_GGUF] = ([os.path.join(folder_paths.models_dir, CLIP_GGUF)],
                                                          {".gguf"})


class ZImageTextEncoderLoader:
    """Load the Qwen3-4B text encoder of Z-Image as a standard CLIP (use it with CLIPTextEncode)."""

    DESCRIPTION = ("Loads the Qwen3-4B text encoder Z-Image uses, from safetensors or GGUF (any quantization; "
                   "GGUF weights stay quantized). Its size is read from the file.")
    CATEGORY = CATEGORY_LOADERS
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("Text encoder for CLIPTextEncode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        register_clip_gguf()
        return {"required": {"text_encoder_name": (model_files(*FOLDERS), {
            "tooltip": "A Qwen3-4B file from models/text_encoders or models/clip_gguf, e.g. qwen_3_4b.safetensors "
                       "or Qwen3-4B-Q6_K.gguf."})}}

    def load(self, text_encoder_name: str):
        register_clip_gguf()
        return (load_qwen3_text_encoder(model_path(text_encoder_name, *FOLDERS)),)


NODE_CLASS_MAPPINGS = {"ZImageTextEncoderLoader": ZImageTextEncoderLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageTextEncoderLoader": "Z-Image Text Encoder Loader"}
