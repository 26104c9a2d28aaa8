"""ZImageVAEDecode: whole decode when it fits the free VRAM, automatic tiled decode when it does not."""
from __future__ import annotations

from ..planner.decode import decode


class ZImageVAEDecode:
    """VAEDecode that never runs out of memory on small cards."""

    DESCRIPTION = ("Decodes the latent in one piece when it fits the free VRAM (after ComfyUI unloads what it "
                   "can), otherwise in overlapping tiles whose size is chosen from the free VRAM. Progress shows "
                   "per tile.")
    CATEGORY = "Z-Image Turbo/latent"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded pictures.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The latent to decode, from the sampler."}),
            "vae": ("VAE", {"tooltip": "The Flux VAE."}),
        }, "optional": {
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 64,
                                  "tooltip": "0 = automatic (whole when it fits, else tiles sized to the free "
                                             "VRAM). Above 0: always tile with this size in pixels."}),
        }}

    def decode(self, samples, vae, tile_size: int = 0):
        images, _ = decode(vae, samples["samples"], tile_size)
        return (images,)


NODE_CLASS_MAPPINGS = {"ZImageVAEDecode": ZImageVAEDecode}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageVAEDecode": "Z-Image VAE Decode (auto tiled)"}
