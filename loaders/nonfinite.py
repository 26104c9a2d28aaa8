"""NaN/Inf in a model file's small tensors (norms, biases, scales, pad tokens), refused at load.

One NaN in a norm or a scale turns every output into NaN, which the PNG writer clips to black. These
tensors are tiny, so checking them costs nothing: every 1-D tensor (up to MAX_VECTOR elements) and every
tensor of at most SMALL_NUMEL elements. Large weights are not scanned here (that would read the whole
file); the sampler checks the model's outputs instead.
"""
from __future__ import annotations

import os

import torch

from .errors import ModelFileError
from .gguf_io import densify, logical_shape

SMALL_NUMEL = 4096
MAX_VECTOR = 1 << 20  # a 1-D tensor longer than this is no norm or bias
_CHECKED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
HINT = "The file is damaged (NaN/Inf weights make black images); re-download it."


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def is_small(shape: tuple[int, ...]) -> bool:
    """Whether a tensor of this shape is checked at load."""
    numel = _numel(shape)
    return numel <= SMALL_NUMEL or (len(shape) <= 1 and numel <= MAX_VECTOR)


def _non_finite(tensor: torch.Tensor) -> tuple[int, int] | None:
    """(NaN count, Inf count) of a small tensor with any non-finite value, else None (integer tensors: None)."""
    tensor = densify(tensor)
    if not tensor.is_floating_point():
        return None
    if tensor.dtype not in _CHECKED_DTYPES:
        tensor = tensor.float()  # fp8 and other narrow floats
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return None
    nans = int(torch.isnan(tensor).sum())
    return nans, int(bad.sum()) - nans


def check_small_tensors_finite(sd: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """ModelFileError naming the first small tensor of `sd` that holds NaN or Inf."""
    for name, tensor in sd.items():
        shape = logical_shape(tensor)
        if not is_small(shape):
            continue
        counts = _non_finite(tensor)
        if counts is None:
            continue
        nans, infs = counts
        what = " and ".join(w for w, n in (("NaN", nans), ("Inf", infs)) if n)
        raise ModelFileError(path, f"finite values in tensor '{name[:200]}'",
                             f"{what} ({nans + infs} of {_numel(shape)} values)", HINT, key=name)
