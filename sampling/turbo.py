"""Z-Image-Turbo sampling on ComfyUI's own samplers: flow shift, per-image seeds, pack schedules, cfg-1 fast path."""
from __future__ import annotations

import torch

from . import limits
from .guards import NonFiniteError, check_context_width, has_non_finite, model_file_name
from .schedules import is_pack_schedule, pack_sigmas
from .variety import add_seed_variety

LATENT_CHANNELS = 16
LATENT_SCALE = 8
SEED_MODULUS = 2 ** 64  # seeds are unsigned 64-bit: seed + i wraps (2^64 - 1 + 1 is 0)


def empty_latent(width: int, height: int, batch_size: int = 1) -> dict:
    """A zero Flux latent (16 channels, 1/8 size) in ComfyUI's LATENT dict form."""
    import comfy.model_management as mm
    samples = torch.zeros([batch_size, LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE],
                          device=mm.intermediate_device())
    return {"samples": samples}


def with_flow_shift(model, shift: float):
    """A clone of `model` whose flow-matching schedule uses `shift` (what ModelSamplingAuraFlow does)."""
    import comfy.model_sampling

    class ModelSamplingShifted(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = ModelSamplingShifted(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1.0)
    patched = model.clone()
    patched.add_object_patch("model_sampling", sampling)
    return patched


def zero_conditioning(conditioning: list) -> list:
    """The conditioning with every tensor zeroed (ConditioningZeroOut), a stand-in negative."""
    out = []
    for cond, extra in conditioning:
        extra = dict(extra)
        if extra.get("pooled_output") is not None:
            extra["pooled_output"] = torch.zeros_like(extra["pooled_output"])
        out.append([torch.zeros_like(cond), extra])
    return out


def image_seeds(latent: dict, seed: int) -> list[int]:
    """Seed of each image in the batch: seed + i (or seed + batch_index[i] for a latent taken from a batch),
    modulo 2^64, so the last seed of the widget's range is followed by 0, 1, …"""
    n = latent["samples"].shape[0]
    offsets = latent.get("batch_index") or list(range(n))
    return [(seed + int(o)) % SEED_MODULUS for o in offsets[:n]]


def per_image_noise(latent_image: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Noise drawn image by image, so image i of a batch equals a single run with seeds[i]."""
    import comfy.sample
    return torch.cat([comfy.sample.prepare_noise(latent_image[i:i + 1], s) for i, s in enumerate(seeds)])


def check_caption_width(model, conditioning: list, what: str = "positive") -> None:
    """Raise ConditioningMismatchError when the conditioning's width is not the DiT's caption width."""
    expected = model.model.model_config.unet_config.get("cap_feat_dim")
    for cond, _ in conditioning or []:
        check_context_width(expected, cond.shape[-1], what)


def check_sampling_fits(model, latent_shape, positive: list) -> limits.Request | None:
    """Raise SizeTooLargeError, before anything is allocated, when sampling a latent of `latent_shape`
    [B, C, h, w] with this conditioning cannot fit the device's free memory; returns the request checked."""
    prompt_tokens = max((cond.shape[1] for cond, _ in positive or []), default=0)
    request = limits.request_for(model, latent_shape[-1] * LATENT_SCALE, latent_shape[-2] * LATENT_SCALE,
                                 latent_shape[0], prompt_tokens)
    limits.check_fits(request, model.load_device)
    return request


def checked_empty_latent(model, positive: list, width: int, height: int, batch_size: int = 1) -> dict:
    """`empty_latent`, after refusing (before allocating) a size the model's device cannot hold."""
    check_sampling_fits(model, (batch_size, LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE), positive)
    return empty_latent(width, height, batch_size)


def check_final_latent(model, samples: torch.Tensor, sampler_name: str, scheduler: str) -> None:
    """Raise NonFiniteError when the sampler's result holds NaN/Inf (it would decode to a black picture)."""
    if has_non_finite(samples):
        raise NonFiniteError(f"{model_file_name(model)}: the sampler's final latent holds NaN/Inf "
                             f"({sampler_name}/{scheduler}): the model or the sampler overflowed. Try another "
                             f"sampler or weight_dtype; a damaged file stops at its first step instead.")


def turbo_sample(model, positive: list, latent: dict, seed: int, steps: int = 8, cfg: float = 1.0,
                 shift: float = 3.0, sampler_name: str = "euler", scheduler: str = "simple", denoise: float = 1.0,
                 negative: list | None = None, variety: float = 0.0, variety_until: float = 0.3) -> dict:
    """Sample a LATENT with ComfyUI's sampler objects (previews, progress bar and interrupts included).

    Image i of a batch uses seed + i (modulo 2^64). At cfg 1 ComfyUI evaluates only the positive conditioning, so the
    negative (the zeroed positive when none is given) is never run. `scheduler` is a ComfyUI scheduler or one
    of the pack's schedules (see schedules.py). denoise < 1 with an input latent is img2img (a noise_mask in
    the latent restricts it to the mask, inpaint-style); denoise 0 returns the input unchanged. `variety` > 0
    perturbs the prompt per image in the first `variety_until` of the steps (see variety.py); 0 leaves the
    sampling exactly as without it.
    """
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview

    check_caption_width(model, positive)
    if negative is not None and cfg != 1.0:
        check_caption_width(model, negative, "negative")
    request = check_sampling_fits(model, latent["samples"].shape, positive)
    patched = with_flow_shift(model, shift)
    if negative is None:
        negative = zero_conditioning(positive)
    latent_image = comfy.sample.fix_empty_latent_channels(patched, latent["samples"])
    seeds = image_seeds(latent, seed)
    out = latent.copy()
    if denoise <= 0.0:
        out["samples"] = latent_image.clone()
        return out
    noise = per_image_noise(latent_image, seeds)
    patched = add_seed_variety(patched, variety, variety_until, seeds)
    noise_mask = latent.get("noise_mask")
    callback = latent_preview.prepare_callback(patched, steps)
    disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED

    def run() -> torch.Tensor:
        if is_pack_schedule(scheduler):
            sigmas = pack_sigmas(scheduler, steps, shift, denoise)
            sampler = comfy.samplers.sampler_object(sampler_name)
            return comfy.sample.sample_custom(patched, noise, cfg, sampler, sigmas, positive, negative, latent_image,
                                              noise_mask=noise_mask, callback=callback, disable_pbar=disable_pbar,
                                              seed=seed)
        return comfy.sample.sample(patched, noise, steps, cfg, sampler_name, scheduler, positive, negative,
                                   latent_image, denoise=denoise, noise_mask=noise_mask, callback=callback,
                                   disable_pbar=disable_pbar, seed=seed)

    samples = limits.run_translating_out_of_memory(run, request, model.load_device)
    check_final_latent(model, samples, sampler_name, scheduler)
    out["samples"] = samples
    return out
