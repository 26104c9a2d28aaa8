"""ZImageDiffusionModelLoader: Z-Image DiT → MODEL."""
from __future__ import annotations

from ..loaders.dit import WEIGHT_DTYPES, load_zimage_dit
from .common import CATEGORY_LOADERS, model_files, model_path

FOLDERS = ("diffusion_models", "unet_gguf")


class ZImageDiffusionModelLoader:
    """Load a Z-Image DiT (Turbo or Base, any size) as a standard MODEL."""

    DESCRIPTION = ("Loads a Z-Image diffusion transformer: bf16/fp16/fp32, fp8, scaled fp8 or .comfy_quant "
                   "safetensors, ComfyUI or diffusers layout (pick any shard of a multi-file checkpoint), or "
                   "GGUF (weights stay quantized). Its configuration is read from the weights.")
    CATEGORY = CATEGORY_LOADERS
    SEARCH_ALIASES = ["dit", "unet", "diffusion model", "gguf", "unet gguf", "fp8"]
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The Z-Image model, usable by this pack's sampler and by core nodes (KSampler, LoRA).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet_name": (model_files(*FOLDERS), {
                "tooltip": "A Z-Image DiT from models/diffusion_models, e.g. z_image_turbo_bf16.safetensors or a "
                           ".gguf. The format is recognised from the file's content."}),
            "weight_dtype": (list(WEIGHT_DTYPES), {
                "default": "default",
                "tooltip": "default keeps the file's precision (as ComfyUI decides for your device); fp8 halves "
                           "the memory of bf16 weights; fp8_e4m3fn_fast also uses fp8 matmul on GPUs that have it. "
                           "GGUF weights always stay in their quantized blocks."}),
        }}

    def load(self, unet_name: str, weight_dtype: str = "default"):
        return (load_zimage_dit(model_path(unet_name, *FOLDERS), weight_dtype),)


NODE_CLASS_MAPPINGS = {"ZImageDiffusionModelLoader": ZImageDiffusionModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageDiffusionModelLoader": "Z-Image Diffusion Model Loader"}
