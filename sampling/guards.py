"""Checks that turn a conditioning/model mismatch into a clear message instead of a bare torch shape error."""
from __future__ import annotations

import torch

CAPTION_WIDTH_WRAPPER_KEY = "zimage_turbo_caption_width"


class ConditioningMismatchError(ValueError):
    """The conditioning does not fit the diffusion model (e.g. a text encoder of another size)."""


def check_context_width(expected: int | None, width: int, what: str = "the") -> None:
    """Raise ConditioningMismatchError when a conditioning `width` wide does not fit a DiT taking `expected`."""
    if expected is not None and width != expected:
        raise ConditioningMismatchError(
            f"{what} conditioning is {width} wide but this Z-Image DiT takes caption features {expected} wide: "
            f"the text encoder does not belong to this model (Z-Image-Turbo uses Qwen3-4B, hidden size 2560). "
            f"Load the text encoder that matches the DiT.")


def add_caption_width_guard(patcher, expected: int) -> None:
    """Check every forward's context width, whatever sampler runs the model (core KSampler included).

    A DIFFUSION_MODEL wrapper of ComfyUI's patcher extension: it travels with clones of the MODEL.
    """
    def guard(executor, x: torch.Tensor, timesteps, context: torch.Tensor, *args, **kwargs):
        check_context_width(expected, context.shape[-1])
        return executor(x, timesteps, context, *args, **kwargs)

    import comfy.patcher_extension
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, CAPTION_WIDTH_WRAPPER_KEY, guard)
