"""ZImageControlNetLoader: Z-Image Fun ControlNet patch (safetensors or GGUF) → MODEL_PATCH."""
from __future__ import annotations

from ..loaders.controlnet import WEIGHT_DTYPES, load_zimage_controlnet
from .common import CATEGORY_LOADERS, model_files, model_path

FOLDERS = ("model_patches", "model_patches_gguf")


class ZImageControlNetLoader:
    """Load alibaba-pai's Z-Image-Turbo Fun ControlNet Union patch for core's 'Apply Z-Image Fun ControlNet'."""

    DESCRIPTION = ("Loads a Z-Image-Turbo Fun ControlNet Union patch (1.0, 2.0, 2.1, lite, tile; canny, depth, "
                   "pose, HED, inpaint) from models/model_patches: the published safetensors (optionally stored "
                   "in fp8) or a GGUF made with `python -m zimage_turbo quantize` (weights stay quantized). "
                   "Connect it to core's 'Apply Z-Image Fun ControlNet'.")
    CATEGORY = CATEGORY_LOADERS
    SEARCH_ALIASES = ["controlnet", "control net", "model patch", "fun controlnet", "union", "canny", "depth",
                      "pose", "inpaint", "model_patches"]
    RETURN_TYPES = ("MODEL_PATCH",)
    OUTPUT_TOOLTIPS = ("The ControlNet patch, for core's 'Apply Z-Image Fun ControlNet' (ZImageFunControlnet).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "patch_name": (model_files(*FOLDERS), {
                "tooltip": "A Z-Image Fun ControlNet patch from models/model_patches, e.g. "
                           "Z-Image-Turbo-Fun-Controlnet-Union-2.1-8steps.safetensors or its .gguf. The version "
                           "(control layers, inpaint channels) is read from the file."}),
            "weight_dtype": (list(WEIGHT_DTYPES), {
                "default": "default",
                "tooltip": "default keeps the file's precision; fp8 halves the memory of the bf16 patch (its "
                           "matrices are cast per use). GGUF weights always stay in their quantized blocks."}),
        }}

    def load(self, patch_name: str, weight_dtype: str = "default"):
        return (load_zimage_controlnet(model_path(patch_name, *FOLDERS), weight_dtype),)


NODE_CLASS_MAPPINGS = {"ZImageControlNetLoader": ZImageControlNetLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageControlNetLoader": "Z-Image ControlNet Loader (quantized)"}
