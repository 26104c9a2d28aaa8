"""ZImageVAELoader: Flux VAE → VAE."""
from __future__ import annotations

from ..loaders.vae import load_flux_vae
from .common import CATEGORY_LOADERS, model_files, model_path

FOLDERS = ("vae",)


class ZImageVAELoader:
    """Load the Flux.1 VAE (16-channel latents) Z-Image decodes with."""

    DESCRIPTION = "Loads the Flux.1 autoencoder (ae.safetensors) that turns Z-Image latents into pictures."
    CATEGORY = CATEGORY_LOADERS
    SEARCH_ALIASES = ["vae", "flux vae", "ae"]
    RETURN_TYPES = ("VAE",)
    OUTPUT_TOOLTIPS = ("The VAE, for VAEDecode / VAEDecodeTiled / VAEEncode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (model_files(*FOLDERS), {
            "tooltip": "The Flux VAE from models/vae, e.g. ae.safetensors."})}}

    def load(self, vae_name: str):
        return (load_flux_vae(model_path(vae_name, *FOLDERS)),)


NODE_CLASS_MAPPINGS = {"ZImageVAELoader": ZImageVAELoader}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageVAELoader": "Z-Image VAE Loader"}
