"""Flux VAE loader (16 latent channels) → ComfyUI VAE."""
from __future__ import annotations

import os

from .detect import classify, describe, loader_hint, strip_known_prefix
from .errors import ModelFileError
from .nonfinite import check_small_tensors_finite
from .safetensors_file import load_tensors, read_header
from .vae_guard import guard_vae

EXPECTED = "a Flux VAE with 16 latent channels (e.g. ae.safetensors)"


def load_flux_vae(path: str | os.PathLike):
    """Load the Flux.1 autoencoder as a standard VAE."""
    import comfy.sd

    header = read_header(path, expected=EXPECTED)
    prefix, shapes = strip_known_prefix(header.shapes())
    kind = classify(shapes)
    if kind is None or kind.name != "flux_vae":
        raise ModelFileError(path, EXPECTED, describe(shapes),
                             loader_hint(kind, "vae", "Put ae.safetensors in models/vae."))
    sd = {k[len(prefix):]: v for k, v in load_tensors(header, [prefix + k for k in shapes]).items()}
    check_small_tensors_finite(sd, path)
    vae = comfy.sd.VAE(sd=sd)  # the Flux VAE reads no metadata (the file's is untrusted and unused)
    vae.throw_exception_if_invalid()
    return guard_vae(vae, path)
