"""ComfyUI-ZImage-Turbo: fast, small Z-Image-Turbo loaders and sampler for ComfyUI.

Importing the package does no work: ComfyUI reads NODE_CLASS_MAPPINGS, which imports the node modules on
first access, so `quant/` and the fixtures stay usable without a ComfyUI host.
"""
from __future__ import annotations

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]


def __getattr__(name: str):
    if name in __all__:
        from . import nodes
        return getattr(nodes, name)
    raise AttributeError(name)
