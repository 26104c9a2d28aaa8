"""Image sizes the device cannot hold: refused before anything is allocated, with the largest size that fits.

The estimate is the planner's (planner/estimate.py): the DiT's activations, B·T·(15·D·ds + 8·head_dim) for
T = image tokens + caption tokens (measured on NextDiT, within 15 %), plus the latents the sampler keeps
(latent, noise, x, denoised: 4 fp32 copies). Attention adds nothing quadratic: ComfyUI runs PyTorch SDPA
(flash / memory-efficient) on GPUs and a chunked attention on the CPU.

Free memory is ComfyUI's own figure (`get_free_memory`: RAM on the CPU) plus, on a GPU, what the models
ComfyUI holds on the card could give back by unloading or streaming. A request is refused only when the
estimate exceeds that by more than the formula's tolerance, so a size that runs is never refused; the size
suggested is the largest whose estimate fits. An out-of-memory error during sampling (the estimate missed,
or other programs took the memory) becomes the same message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..planner.estimate import GiB, DiTDims, dit_activation_bytes

ESTIMATE_TOLERANCE = 1.15  # the planner's formula is within 15 % of the measured peak
LATENT_COPIES = 4  # latent, noise, the sampler's x and denoised, fp32
LATENT_CHANNELS, LATENT_SCALE, PATCH_PX, MIN_SIDE = 16, 8, 16, 64
OUT_OF_MEMORY_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


class SizeTooLargeError(ValueError):
    """The requested image size (and batch) cannot fit the device's free memory: refused before allocating."""


class SamplingOutOfMemoryError(torch.OutOfMemoryError):
    """Out of memory while sampling, with the size asked and the largest that fits. A torch OutOfMemoryError,
    so ComfyUI still frees its models after it as after any out-of-memory error."""


@dataclass(frozen=True)
class Request:
    """What a sampling run holds at once: `batch` pictures of width×height px, a caption of `prompt_tokens`
    tokens, on a DiT of `dims` computing with `ds`-byte elements."""
    width: int
    height: int
    batch: int
    prompt_tokens: int
    dims: DiTDims
    ds: int

    def resized(self, width: int, height: int) -> "Request":
        return Request(width, height, self.batch, self.prompt_tokens, self.dims, self.ds)

    @property
    def bytes(self) -> int:
        latent_pixels = math.ceil(self.height / LATENT_SCALE) * math.ceil(self.width / LATENT_SCALE)
        latent = LATENT_COPIES * self.batch * LATENT_CHANNELS * 4 * latent_pixels
        activations = dit_activation_bytes(self.dims, self.width, self.height, self.batch, self.prompt_tokens, self.ds)
        return activations + latent

    def describe(self) -> str:
        return f"{self.width}×{self.height}" + (f", batch {self.batch}" if self.batch > 1 else "")


def dit_dims(model) -> DiTDims | None:
    """The DiT geometry of a Z-Image MODEL from its config (None when it is not one)."""
    config = model.model.model_config.unet_config
    dim, heads = config.get("dim"), config.get("n_heads")
    if not dim or not heads:
        return None
    return DiTDims(int(dim), int(dim) // int(heads), 0, 0)


def compute_bytes(model) -> int:
    """Bytes per activation element of the MODEL (its compute dtype; fp8 weights compute in 16 bit)."""
    base = model.model
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    return max(2, dtype.itemsize)


def request_for(model, width: int, height: int, batch: int, prompt_tokens: int) -> Request | None:
    dims = dit_dims(model)
    return None if dims is None else Request(width, height, batch, prompt_tokens, dims, compute_bytes(model))


def is_cpu_like(device) -> bool:
    return getattr(device, "type", str(device)) in ("cpu", "mps")


def loaded_model_memory(device) -> list[tuple[object, int]]:
    """(patcher, bytes it holds on `device`) of every model ComfyUI has loaded there."""
    import comfy.model_management as mm
    held = []
    for loaded in list(mm.current_loaded_models):
        if loaded.device == device and hasattr(loaded, "model_loaded_memory"):
            held.append((loaded.model, int(loaded.model_loaded_memory())))
    return held


def free_memory(device) -> int:
    """Bytes a sampling run can use on `device`: ComfyUI's free memory (RAM on the CPU), plus on a GPU what the
    loaded models give back when ComfyUI unloads or streams them."""
    import comfy.model_management as mm
    free = int(mm.get_free_memory(device))
    if is_cpu_like(device):
        return free
    return free + sum(size for _, size in loaded_model_memory(device))


def device_label(device) -> str:
    return "the CPU (RAM)" if getattr(device, "type", str(device)) == "cpu" else str(device)


def largest_fitting(request: Request, available: int) -> tuple[int, int] | None:
    """The largest width×height (multiples of 16, same aspect ratio, same batch) whose estimate fits."""
    per_token = request.resized(PATCH_PX, PATCH_PX).bytes - request.resized(0, 0).bytes
    fixed = request.resized(0, 0).bytes
    tokens = (available - fixed) / per_token if per_token > 0 else 0
    asked = math.ceil(request.width / PATCH_PX) * math.ceil(request.height / PATCH_PX)
    scale = math.sqrt(max(tokens, 0) / asked)
    width = int(request.width * scale) // PATCH_PX * PATCH_PX
    height = int(request.height * scale) // PATCH_PX * PATCH_PX
    while width >= MIN_SIDE and height >= MIN_SIDE and request.resized(width, height).bytes > available:
        width, height = width - PATCH_PX, height - PATCH_PX
    return (width, height) if width >= MIN_SIDE and height >= MIN_SIDE else None


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def size_advice(request: Request, available: int) -> str:
    largest = largest_fitting(request, available)
    if largest is None:
        return "no size fits: free memory (close other programs, unload models) or use a smaller batch"
    batch = f" at batch {request.batch}" if request.batch > 1 else ""
    return f"the largest size that fits is about {largest[0]}×{largest[1]}{batch}"


def check_fits(request: Request | None, device) -> None:
    """Raise SizeTooLargeError when `request` cannot fit the free memory of `device` (nothing is allocated)."""
    if request is None:
        return
    available = free_memory(device)
    need = request.bytes
    if need > available * ESTIMATE_TOLERANCE:
        raise SizeTooLargeError(
            f"{request.describe()} needs about {_gib(need)} for the diffusion model's activations on "
            f"{device_label(device)}, but {_gib(available)} is free: {size_advice(request, available)}.")


def is_out_of_memory(exc: BaseException) -> bool:
    """A torch out-of-memory error, the CPU allocator's failure or Python's MemoryError."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OUT_OF_MEMORY_MARKERS)


def run_translating_out_of_memory(run, request: Request | None, device):
    """`run()`, with an out-of-memory error turned into SamplingOutOfMemoryError (size asked, largest that
    fits); the free memory is measured once the failed run's tensors are released."""
    failure = None
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are translated, the rest re-raised
        if isinstance(exc, SamplingOutOfMemoryError) or not is_out_of_memory(exc):
            raise
        failure = str(exc)
    raise out_of_memory_error(request, device, failure) from None


def out_of_memory_error(request: Request | None, device, cause: str) -> SamplingOutOfMemoryError:
    """The error for an out-of-memory failure while sampling `request`."""
    first_line = cause.strip().splitlines()[0] if cause.strip() else "out of memory"
    if request is None:
        return SamplingOutOfMemoryError(f"out of memory while sampling on {device_label(device)} ({first_line}).")
    available = free_memory(device)
    return SamplingOutOfMemoryError(
        f"{request.describe()}: out of memory while sampling on {device_label(device)} ({first_line}). It needs "
        f"about {_gib(request.bytes)}, {_gib(available)} is free: {size_advice(request, available)}.")
