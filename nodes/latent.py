"""ZImageLatent: an empty Z-Image latent from a size preset."""
from __future__ import annotations

from ..sampling.sizes import CUSTOM, DEFAULT_PRESET, SIZE_PRESETS, resolve_size
from ..sampling.turbo import empty_latent
from .common import CATEGORY_SAMPLING


class ZImageLatent:
    """Empty 16-channel latent at a preset size (1024², common aspect ratios at ~1 and ~2 megapixels) or custom."""

    DESCRIPTION = "An empty Z-Image latent. Presets keep ~1 MP or ~2 MP with sides that are multiples of 16."
    CATEGORY = CATEGORY_SAMPLING
    RETURN_TYPES = ("LATENT", "INT", "INT")
    RETURN_NAMES = ("LATENT", "width", "height")
    OUTPUT_TOOLTIPS = ("Empty latent for the sampler's latent_image.", "Width in pixels.", "Height in pixels.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "size": (list(SIZE_PRESETS) + [CUSTOM], {"default": DEFAULT_PRESET,
                     "tooltip": "Width x height (aspect, megapixels). Z-Image is native at 1024x1024; 2 MP works."}),
            "width": ("INT", {"default": 1024, "min": 16, "max": 16384, "step": 16,
                              "tooltip": "Used when size is custom."}),
            "height": ("INT", {"default": 1024, "min": 16, "max": 16384, "step": 16,
                               "tooltip": "Used when size is custom."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Images per run."}),
        }}

    def make(self, size: str, width: int, height: int, batch_size: int):
        w, h = resolve_size(size, width, height)
        return (empty_latent(w, h, batch_size), w, h)


NODE_CLASS_MAPPINGS = {"ZImageLatent": ZImageLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageLatent": "Z-Image Latent (size presets)"}
