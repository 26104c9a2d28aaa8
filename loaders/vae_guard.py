"""A VAE whose decodes are checked for NaN/Inf, so a damaged VAE stops the prompt instead of saving black.

The loader's VAE keeps its ComfyUI class with `decode` and `decode_tiled` extended (a subclass set on the
instance), so core VAEDecode / VAEDecodeTiled get the check as well as ZImageVAEDecode; shallow copies (the
decode planner's) keep it. The check is one reduction over the decoded picture; only when it fails is the
latent examined, to say whether the VAE or its input is at fault.
"""
from __future__ import annotations

import functools
import os

import torch

from ..sampling.guards import NonFiniteError, has_non_finite

FP16_HINT = " Decoding in float16 can also overflow: start ComfyUI with --bf16-vae or --fp32-vae."


def decoded_check(vae, samples: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """`images`, or NonFiniteError naming the VAE file when they hold NaN/Inf (they would save as black)."""
    if not has_non_finite(images):
        return images
    name = getattr(vae, "zimage_file_name", None) or "the VAE"
    if has_non_finite(samples):
        raise NonFiniteError(f"{name}: the latent given to the VAE holds NaN/Inf: the sampler (or the node that "
                             f"made the latent) produced NaN/Inf.")
    hint = FP16_HINT if getattr(vae, "vae_dtype", None) == torch.float16 else ""
    raise NonFiniteError(f"{name}: the VAE decoded NaN/Inf from a finite latent: its weights hold NaN/Inf, the "
                         f"file is damaged; download it again.{hint}")


@functools.lru_cache(maxsize=None)
def guarded_class(base: type) -> type:
    """`base` (ComfyUI's VAE class) with checked `decode` and `decode_tiled`."""

    class GuardedVAE(base):
        zimage_guarded = True

        def decode(self, samples_in, *args, **kwargs):
            return decoded_check(self, samples_in, super().decode(samples_in, *args, **kwargs))

        def decode_tiled(self, samples, *args, **kwargs):
            return decoded_check(self, samples, super().decode_tiled(samples, *args, **kwargs))

    GuardedVAE.__name__ = GuardedVAE.__qualname__ = f"Guarded{base.__name__}"
    return GuardedVAE


def guard_vae(vae, path: str | os.PathLike | None = None):
    """The VAE (the same object) with its decodes checked; `path` names the file in messages."""
    if not getattr(vae, "zimage_guarded", False):
        vae.__class__ = guarded_class(type(vae))
    if path is not None:
        vae.zimage_file_name = os.path.basename(os.fspath(path))
    return vae
