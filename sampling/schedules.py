"""Sigma schedules for Z-Image-Turbo's flow-matching model.

ComfyUI's own schedulers (simple, beta, …) are used as they are; the pack adds schedules designed for the
4–9 step range Turbo was distilled for. Every schedule maps a step count to sigmas in [1, 0] (last one 0).

`lowstep` spends resolution where few-step samplers need it: early steps fix the composition, late steps the
detail. Its time grid is t(u) = 1 − u²(3 − 2u) for u = i/N (a smoothstep: dense near both ends, sparse in the
middle), then the model's flow shift σ = s·t / (1 + (s − 1)·t) is applied (s = 3 for Z-Image).
With shift 3 it gives (rounded to 4 decimals):

| steps | sigmas |
|---|---|
| 4 | 1.0000 0.9419 0.7500 0.3571 0.0000 |
| 6 | 1.0000 0.9740 0.8955 0.7500 0.5122 0.1935 0.0000 |
| 8 | 1.0000 0.9853 0.9419 0.8663 0.7500 0.5813 0.3571 0.1187 0.0000 |
| 9 | 1.0000 0.9883 0.9541 0.8955 0.8075 0.6821 0.5122 0.3023 0.0963 0.0000 |

`simple` at shift 3 (ComfyUI's native Turbo schedule) is, for 8 steps:
1.0000 0.9545 0.9000 0.8333 0.7500 0.6429 0.5000 0.3000 0.0000.
"""
from __future__ import annotations

from typing import Callable

import torch

PACK_SCHEDULES: dict[str, Callable[[int, float], torch.Tensor]] = {}


def flow_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching time shift ComfyUI's ModelSamplingDiscreteFlow applies (time_snr_shift)."""
    return shift * t / (1 + (shift - 1) * t)


def lowstep_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    """Smoothstep time grid + flow shift: dense at the start (composition) and the end (detail)."""
    u = torch.arange(steps + 1, dtype=torch.float64) / steps
    t = 1 - u * u * (3 - 2 * u)
    return flow_shift(t, shift).to(torch.float32)


PACK_SCHEDULES["lowstep"] = lowstep_sigmas


def schedule_names() -> list[str]:
    """ComfyUI's schedulers followed by the pack's own."""
    import comfy.samplers
    return list(comfy.samplers.KSampler.SCHEDULERS) + [n for n in PACK_SCHEDULES if n not in comfy.samplers.KSampler.SCHEDULERS]


def is_pack_schedule(name: str) -> bool:
    return name in PACK_SCHEDULES


def pack_sigmas(name: str, steps: int, shift: float, denoise: float = 1.0) -> torch.Tensor:
    """Sigmas of a pack schedule; with denoise < 1 the tail of a longer schedule, as ComfyUI's KSampler does."""
    if denoise <= 0.0:
        return torch.zeros(0)
    if denoise >= 0.9999:
        return PACK_SCHEDULES[name](steps, shift)
    total = int(steps / denoise)
    return PACK_SCHEDULES[name](total, shift)[-(steps + 1):]
