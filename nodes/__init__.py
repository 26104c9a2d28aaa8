"""The pack's ComfyUI nodes: one module per node family, each exporting NODE_CLASS_MAPPINGS and display names."""
from __future__ import annotations

from . import diffusion_model, latent, sampler, save, text_encoder, vae
from . import planner, vae_decode

_MODULES = (text_encoder, diffusion_model, vae, sampler, latent, save, vae_decode, planner)
NODE_CLASS_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_DISPLAY_NAME_MAPPINGS.items()}
