"""ZImageSeedVariety: the sampler's seed variety as a MODEL patch, for core KSampler / SamplerCustom graphs."""
from __future__ import annotations

from ..sampling.variety import add_seed_variety
from .common import CATEGORY_SAMPLING


class ZImageSeedVariety:
    """Different seeds, different compositions: a per-seed nudge of the prompt in the first steps only."""

    DESCRIPTION = ("Patches the MODEL so that in the first steps of sampling the prompt's features get a small "
                   "random nudge drawn from the sampler's seed (image i of a batch: seed + i). Turbo otherwise "
                   "gives nearly the same picture for every seed. Works with core KSampler and SamplerCustom; the "
                   "negative prompt is never changed. Strength 0 returns the model unchanged.")
    CATEGORY = CATEGORY_SAMPLING
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with seed variety, for KSampler.",)
    FUNCTION = "patch"
    SEARCH_ALIASES = ["seed variety", "variance", "diversity", "creativity", "same image every seed"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The Z-Image model."}),
            "strength": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 2.0, "step": 0.01,
                                   "tooltip": "How far the prompt is nudged per seed. 0 = off; 0.2-0.5 changes "
                                              "layout and pose a little, 1 a lot (content can drift)."}),
            "until": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05,
                                "tooltip": "Fraction of the steps nudged, from the start (0.25 of 8 steps = the "
                                           "first 2). The later steps see the prompt unchanged and refine it."}),
        }}

    def patch(self, model, strength: float, until: float):
        return (add_seed_variety(model, strength, until),)


NODE_CLASS_MAPPINGS = {"ZImageSeedVariety": ZImageSeedVariety}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageSeedVariety": "Z-Image Seed Variety"}
