"""The live ComfyUI's figures for the planner (imports ComfyUI; the estimate module does not)."""
from __future__ import annotations

from .estimate import HostProfile


def live_host_profile() -> HostProfile:
    import comfy.model_management as mm
    import comfy.supported_models
    device = mm.get_torch_device()
    flash = bool(mm.xformers_enabled() or mm.pytorch_attention_flash_attention())
    try:
        fp8 = bool(mm.supports_fp8_compute(device))
    except Exception:  # noqa: BLE001 - older hosts / CPU
        fp8 = False
    try:
        vae_bytes = mm.dtype_size(mm.vae_dtype(device))
    except Exception:  # noqa: BLE001
        vae_bytes = 2
    return HostProfile(memory_usage_factor=float(comfy.supported_models.ZImage.memory_usage_factor),
                       flash_attention=flash, extra_reserved=int(mm.extra_reserved_memory()), vae_bytes=vae_bytes,
                       fp8_compute=fp8, lowvram_weight_ratio=float(getattr(mm, "MIN_WEIGHT_MEMORY_RATIO", 0.0)))


def detected_vram() -> int | None:
    """Total memory of the ComfyUI device in bytes, None on CPU."""
    import comfy.model_management as mm
    device = mm.get_torch_device()
    if getattr(device, "type", "cpu") in ("cpu", "mps"):
        return None
    return int(mm.get_total_memory(device))
