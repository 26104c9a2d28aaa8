"""Checks around every forward of the pack's DiT that turn silent failures into one clear message.

A DIFFUSION_MODEL wrapper (ComfyUI's patcher extension) installed by the loader: it travels with every clone
of the MODEL, so core KSampler gets the same checks as the pack's sampler. Per forward it checks
- the conditioning's width (a text encoder of another model: ConditioningMismatchError);
- the image size against the device's free memory, before the forward allocates (sampling/limits.py), and
  turns an out-of-memory error of the forward into the same message;
- the output for NaN/Inf (one reduction over the small output, ~0.1 % of a step on the tiny model; a damaged
  file, Q8_0 blocks whose scale is NaN, fp16 overflow): the prompt stops at the step it happened, naming the
  file, instead of a black picture saved as a success. Only on failure are the inputs examined, to say whether
  the conditioning (the text encoder), the input latent or the model itself produced the NaN.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..planner.estimate import DiTDims
from . import limits
from .variety import step_index

FORWARD_GUARD_KEY = "zimage_turbo_forward_guard"
FP16_HINT = (" Computing in float16 can also overflow: pick weight_dtype bf16 or fp32 in the loader (or start "
             "ComfyUI with --bf16-unet).")


class ConditioningMismatchError(ValueError):
    """The conditioning does not fit the diffusion model (e.g. a text encoder of another size)."""


class NonFiniteError(RuntimeError):
    """A model produced NaN/Inf: the prompt stops instead of saving a black picture."""


def check_context_width(expected: int | None, width: int, what: str = "the") -> None:
    """Raise ConditioningMismatchError when a conditioning `width` wide does not fit a DiT taking `expected`."""
    if expected is not None and width != expected:
        raise ConditioningMismatchError(
            f"{what} conditioning is {width} wide but this Z-Image DiT takes caption features {expected} wide: "
            f"the text encoder does not belong to this model (Z-Image-Turbo uses Qwen3-4B, hidden size 2560). "
            f"Load the text encoder that matches the DiT.")


def has_non_finite(tensor: torch.Tensor) -> bool:
    """True when any element is NaN or ±Inf (one reduction)."""
    return not bool(torch.isfinite(tensor).all())


def step_label(transformer_options: dict) -> str:
    """'at step k of n' for the forward being run (from ComfyUI's sample_sigmas / sigmas)."""
    sample_sigmas, sigmas = transformer_options.get("sample_sigmas"), transformer_options.get("sigmas")
    if sample_sigmas is None or sigmas is None:
        return "during sampling"
    step = step_index(sample_sigmas, float(sigmas.flatten()[0])) + 1
    return f"at step {step} of {len(sample_sigmas) - 1}"


@dataclass(eq=False)
class ForwardGuard:
    """The DIFFUSION_MODEL wrapper of one loaded DiT (`file_name` is what its messages name)."""
    file_name: str
    caption_width: int | None
    dims: DiTDims | None  # None when the config lacks them
    fitting: set = field(default_factory=set)  # (x shape, caption length) already found to fit

    def __call__(self, executor, x: torch.Tensor, timesteps, context: torch.Tensor, *args, **kwargs):
        check_context_width(self.caption_width, context.shape[-1])
        request = self._request(x, context)
        self._check_fits(request, x)
        out = limits.run_translating_out_of_memory(lambda: executor(x, timesteps, context, *args, **kwargs),
                                                   request, x.device)
        if has_non_finite(out):
            raise self.non_finite_error(x, context, kwargs.get("transformer_options") or {})
        return out

    def _request(self, x: torch.Tensor, context: torch.Tensor) -> limits.Request | None:
        if self.dims is None or x.ndim != 4:
            return None
        return limits.Request(x.shape[-1] * limits.LATENT_SCALE, x.shape[-2] * limits.LATENT_SCALE, x.shape[0],
                              context.shape[1], self.dims, max(2, x.element_size()))

    def _check_fits(self, request: limits.Request | None, x: torch.Tensor) -> None:
        key = (tuple(x.shape), None if request is None else request.prompt_tokens)
        if key in self.fitting:
            return
        limits.check_fits(request, x.device)
        if len(self.fitting) > 16:
            self.fitting.clear()
        self.fitting.add(key)

    def non_finite_error(self, x: torch.Tensor, context: torch.Tensor, options: dict) -> NonFiniteError:
        when = step_label(options)
        if has_non_finite(context):
            return NonFiniteError(
                f"the conditioning from the text encoder holds NaN/Inf (seen by {self.file_name} {when}): the "
                f"text encoder's weights hold NaN/Inf (a damaged file) or overflowed. Load an intact text encoder.")
        if has_non_finite(x):
            return NonFiniteError(
                f"{self.file_name}: the latent given to the diffusion model holds NaN/Inf {when}: the input latent "
                f"(or the node that made it) holds NaN/Inf.")
        hint = FP16_HINT if x.dtype == torch.float16 else ""
        return NonFiniteError(
            f"{self.file_name}: the diffusion model produced NaN/Inf {when}. Its weights (or a LoRA or ControlNet "
            f"patch applied to it) hold NaN/Inf: the file is damaged, download it again.{hint}")


def add_forward_guard(patcher, path: str | os.PathLike) -> None:
    """Install the checks on a Z-Image MODEL loaded from `path` (see the module doc)."""
    import comfy.patcher_extension
    config = patcher.model.model_config.unet_config
    guard = ForwardGuard(os.path.basename(os.fspath(path)), config.get("cap_feat_dim"), limits.dit_dims(patcher))
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, FORWARD_GUARD_KEY, guard)


def forward_guard(model) -> ForwardGuard | None:
    """The guard the pack's loader installed on this MODEL (or a clone of it), None for other models."""
    import comfy.patcher_extension
    guards = model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, FORWARD_GUARD_KEY)
    return guards[0] if guards else None


def model_file_name(model) -> str:
    """The file a MODEL was loaded from (for messages), or a generic name."""
    guard = forward_guard(model)
    return guard.file_name if guard is not None else "the diffusion model"
