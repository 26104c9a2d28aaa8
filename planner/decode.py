"""VAE decode that never runs out of memory: whole when it fits the free VRAM, else tiled with a tile size and
overlap chosen from the planner's decode formula. Goes through ComfyUI's own `VAE.decode` / `VAE.decode_tiled`
(which load the VAE through model management, unload other models as needed and report tile progress).

Each tile checks ComfyUI's interrupt flag before it decodes (a cancel takes effect before the next tile, not
after the whole picture), and the decoded picture is checked for NaN/Inf (loaders/vae_guard.py)."""
from __future__ import annotations

import copy
import logging

from ..loaders import interrupt
from ..loaders.vae_guard import guard_vae
from ..sampling.limits import is_cpu_like, loaded_model_memory
from .estimate import MIN_TILE, decode_reservation, pick_decode_tiles

log = logging.getLogger(__name__)


def decode_budget(vae) -> int:
    """Bytes a decode can use on the VAE's device: free memory + what ComfyUI may unload from other models,
    minus its reserve and the VAE's own weights when they are not on the card yet."""
    import comfy.model_management as mm
    device = vae.device
    free = mm.get_free_memory(device)
    if is_cpu_like(device):
        return int(free)
    held = loaded_model_memory(device)
    vae_loaded = sum(size for model, size in held if model is vae.patcher)
    unloadable = sum(size for _, size in held) - vae_loaded
    vae_size = vae.patcher.model_size() - vae_loaded
    return int(free + unloadable - mm.extra_reserved_memory() - vae_size)


def plan_decode(samples, vae, tile_size: int = 0, budget: int | None = None) -> tuple[int, int] | None:
    """None for a whole decode, else (tile, overlap) in latent units. `tile_size` > 0 (pixels) forces tiling."""
    import comfy.model_management as mm
    compression = vae.spacial_compression_decode()
    b, _, h, w = samples.shape[0], samples.shape[1], samples.shape[-2], samples.shape[-1]
    if tile_size > 0:
        tile = max(MIN_TILE, tile_size // compression)
        return tile, min(32, max(4, tile // 4))
    ds = mm.dtype_size(vae.vae_dtype)
    available = decode_budget(vae) if budget is None else budget
    return pick_decode_tiles(w * compression, h * compression, available, ds, b)


class InterruptibleDecoder:
    """The VAE's first-stage model, whose `decode` (called once per tile by ComfyUI's tiled decode) first
    checks the interrupt flag; every other attribute is the model's own."""

    def __init__(self, model) -> None:
        self.model = model

    def decode(self, *args, **kwargs):
        interrupt.check_interrupted()
        return self.model.decode(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def reserving_vae(vae, tile: int | None = None):
    """A shallow copy of the VAE whose `memory_used_decode` is the planner's decode figure (measured peak
    ×1.3, per tile when tiling) instead of ComfyUI's 3.4× larger formula, which on a small card would unload
    everything and stream the VAE's own weights. ComfyUI's OOM fallback to tiles stays in place. Its
    decodes are interruptible per tile and checked for NaN/Inf (any VAE, not only the pack loader's)."""
    reserving = guard_vae(copy.copy(vae))
    reserving.first_stage_model = InterruptibleDecoder(vae.first_stage_model)

    def memory_used_decode(shape, dtype):
        h, w = shape[-2], shape[-1]
        batch = shape[0] if tile is None else 1
        if tile is not None:
            h, w = min(h, tile), min(w, tile)
        return decode_reservation(w * 8, h * 8, batch, _dtype_size(dtype))
    reserving.memory_used_decode = memory_used_decode
    return reserving


def _dtype_size(dtype) -> int:
    import comfy.model_management as mm
    return mm.dtype_size(dtype)


def decode(vae, samples, tile_size: int = 0, budget: int | None = None):
    """IMAGE [B,H,W,3] from a latent tensor; returns (images, tiles or None)."""
    import comfy.utils
    tiles = plan_decode(samples, vae, tile_size, budget)
    if tiles is None:
        pbar = comfy.utils.ProgressBar(1)
        images = reserving_vae(vae).decode(samples)
        pbar.update(1)
    else:
        tile, overlap = tiles
        log.info("ZImageVAEDecode: tiled decode, %d px tiles, %d px overlap", tile * 8, overlap * 8)
        images = reserving_vae(vae, tile).decode_tiled(samples, tile_x=tile, tile_y=tile, overlap=overlap)
    if images.ndim == 5:
        images = images.reshape(-1, *images.shape[-3:])
    return images, tiles
