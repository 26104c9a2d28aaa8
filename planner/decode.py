"""VAE decode that never runs out of memory: whole when it fits the free VRAM, else tiled with a tile size and
overlap chosen from the planner's decode formula. Goes through ComfyUI's own `VAE.decode` / `VAE.decode_tiled`
(which load the VAE through model management, unload other models as needed and report tile progress)."""
from __future__ import annotations

import copy
import logging

from .estimate import MIN_TILE, decode_reservation, pick_decode_tiles

log = logging.getLogger(__name__)


def decode_budget(vae) -> int:
    """Bytes a decode can use on the VAE's device: free memory + what ComfyUI may unload from other models,
    minus its reserve and the VAE's own weights when they are not on the card yet."""
    import comfy.model_management as mm
    device = vae.device
    free = mm.get_free_memory(device)
    if getattr(device, "type", str(device)) in ("cpu", "mps"):
        return int(free)
    unloadable = 0
    vae_loaded = 0
    for loaded in list(mm.current_loaded_models):
        if loaded.device != device:
            continue
        size = loaded.model_loaded_memory() if hasattr(loaded, "model_loaded_memory") else 0
        if loaded.model is vae.patcher:
            vae_loaded = size
        else:
            unloadable += size
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


def reserving_vae(vae, tile: int | None = None):
    """A shallow copy of the VAE whose `memory_used_decode` is the planner's decode figure (measured peak
    ×1.3, per tile when tiling) instead of ComfyUI's 3.4× larger formula, which on a small card would unload
    everything and stream the VAE's own weights. ComfyUI's OOM fallback to tiles stays in place."""
    reserving = copy.copy(vae)

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
