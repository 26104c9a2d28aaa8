"""The pack's ComfyUI nodes: one module per node family, each exporting NODE_CLASS_MAPPINGS and display names."""
from __future__ import annotations

from . import diffusion_model, latent, sampler, save, text_encoder, vae
from . import common, planner, vae_decode
from . import controlnet
from . import variety
from . import lora

_MODULES = (text_encoder, diffusion_model, vae, sampler, latent, save, vae_decode, planner, controlnet)
_MODULES += (variety,)
_MODULES += (lora,)
NODE_CLASS_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_DISPLAY_NAME_MAPPINGS.items()}

# Every pack node is found by the words users search for (node-specific words first).
for _cls in NODE_CLASS_MAPPINGS.values():
    _cls.SEARCH_ALIASES = list(dict.fromkeys([*getattr(_cls, "SEARCH_ALIASES", []), *common.SEARCH_ALIASES]))

try:  # before the first /object_info, so every .gguf is listed from the start
    common.register_gguf_folders()
except ImportError:  # no ComfyUI host (tools that only read the node declarations)
    pass
