"""Seed variety: a per-image, seeded perturbation of the prompt's conditioning during the first steps only.

Turbo's distillation maps different noise seeds to nearly the same composition. The composition is fixed in the
first few (high-noise) steps, so nudging what the model reads from the prompt in those steps — and only there —
moves the layout, pose and framing from seed to seed, while the later steps (which see the prompt unchanged) keep
the detail and the prompt's content. The method, as the community nodes that motivated it do it (see README,
"Seed variety"): add Gaussian noise to the text embedding.

What is perturbed: the caption features (the DiT's `context`, the text encoder's hidden states) of the
*positive* rows of each model call — the negative (uncond) rows of a cfg > 1 batch are never touched. Each
token's features get `strength · rms(token) · ε` added, ε ~ N(0, 1) drawn once per image from a generator
seeded with that image's seed (image i of a batch: seed + i, as the noise), so the same seed and settings give
the same image, and image i of a batch equals a single run with seed + i. Padding tokens (all zero) stay zero.

When: the first ⌈until · N⌉ steps of the N steps that run (a step's evaluations, including a multistep sampler's
intermediate ones, belong to the step whose sigma interval holds them). With strength 0 nothing is installed, so
the output is bit-identical to sampling without it.

Mechanism: a MODEL clone with an OUTER_SAMPLE wrapper (per run: the seeds, fresh ε) and a DIFFUSION_MODEL
wrapper (per call: which step, which rows) — so the same patch works under the pack's sampler and core KSampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

VARIETY_WRAPPER_KEY = "zimage_turbo_seed_variety"
STATE_KEY = "zimage_turbo_seed_variety"
NOISE_SALT = 0x5EED_7A12  # ε's generator differs from the sampling noise's (same seed, other stream)
POSITIVE = 0  # ComfyUI's cond_or_uncond index of the positive conditioning


def perturbed_step_count(steps: int, until: float) -> int:
    """How many of the first `steps` steps are perturbed for `until` (a fraction of the schedule)."""
    if steps <= 0 or until <= 0:
        return 0
    return min(steps, math.ceil(until * steps - 1e-9))


def step_index(sample_sigmas: torch.Tensor, sigma: float) -> int:
    """The step an evaluation at `sigma` belongs to: step k covers (sigmas[k+1], sigmas[k]]."""
    later = sample_sigmas[1:].float()
    tol = 1e-6 * max(1.0, float(sigma))
    return int((later >= sigma - tol).sum().item())


def variety_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """ε for one image: float32 on the CPU, so every device and host gets the same values for a seed."""
    gen = torch.Generator(device="cpu").manual_seed((int(seed) ^ NOISE_SALT) & 0xFFFF_FFFF_FFFF_FFFF)
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def perturb(context: torch.Tensor, noise: torch.Tensor, strength: float) -> torch.Tensor:
    """context + strength · rms(token) · noise, per token (zero tokens stay zero)."""
    ctx = context.float()
    rms = ctx.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return (ctx + strength * rms * noise.to(ctx.device)).to(context.dtype)


@dataclass
class VarietyRun:
    """The state of one sampling run: the seeds, ε per image, what the wrapper did (tests read `log`)."""
    strength: float
    until: float
    seeds: list[int]
    noise: dict[tuple[int, tuple[int, ...]], torch.Tensor] = field(default_factory=dict)
    log: list[tuple[int, bool]] = field(default_factory=list)  # (step, perturbed) per model call

    def noise_for(self, image: int, shape: tuple[int, ...]) -> torch.Tensor:
        seed = self.seeds[image] if image < len(self.seeds) else self.seeds[-1] + image - len(self.seeds) + 1
        key = (seed, shape)
        if key not in self.noise:
            self.noise[key] = variety_noise(seed, shape)
        return self.noise[key]

    def apply(self, context: torch.Tensor, sigma: float, sample_sigmas: torch.Tensor,
              cond_or_uncond: list[int]) -> torch.Tensor:
        """The context with the positive rows perturbed when this call's step is one of the first ones."""
        step = step_index(sample_sigmas, sigma)
        active = step < perturbed_step_count(len(sample_sigmas) - 1, self.until)
        self.log.append((step, active))
        if not active or POSITIVE not in cond_or_uncond:
            return context
        per_chunk = context.shape[0] // len(cond_or_uncond)
        rows = []
        for chunk, kind in enumerate(cond_or_uncond):
            part = context[chunk * per_chunk:(chunk + 1) * per_chunk]
            if kind == POSITIVE:
                noise = torch.stack([self.noise_for(i, tuple(part.shape[1:])) for i in range(per_chunk)])
                part = perturb(part, noise, self.strength)
            rows.append(part)
        return torch.cat(rows)


@dataclass(frozen=True)
class SeedVariety:
    """The patch's settings; `seeds` fixed by the pack's sampler, else seed + i from the run's seed."""
    strength: float
    until: float
    seeds: tuple[int, ...] | None = None
    runs: list = field(default_factory=list, compare=False)  # every VarietyRun, for tests and inspection

    def start_run(self, seed: int | None, batch: int) -> VarietyRun:
        seeds = list(self.seeds) if self.seeds else [int(seed or 0) + i for i in range(batch)]
        run = VarietyRun(self.strength, self.until, seeds)
        self.runs.append(run)
        del self.runs[:-4]  # keep the last few only (a long session must not grow)
        return run


def _outer_sample_wrapper(variety: SeedVariety):
    def wrapper(executor, *args, **kwargs):
        guider = executor.class_obj
        noise = args[0]
        seed = kwargs["seed"] if "seed" in kwargs else (args[7] if len(args) > 7 else None)
        import comfy.model_patcher
        original = guider.model_options
        guider.model_options = comfy.model_patcher.create_model_options_clone(original)
        guider.model_options.setdefault("transformer_options", {})[STATE_KEY] = variety.start_run(
            seed, int(noise.shape[0]))
        try:
            return executor(*args, **kwargs)
        finally:
            guider.model_options = original
    return wrapper


def _diffusion_model_wrapper(executor, x, timesteps, context, *args, **kwargs):
    options = kwargs.get("transformer_options") or {}
    run: VarietyRun | None = options.get(STATE_KEY)
    sample_sigmas = options.get("sample_sigmas")
    sigmas = options.get("sigmas")
    if run is not None and sample_sigmas is not None and sigmas is not None:
        context = run.apply(context, float(sigmas.flatten()[0]), sample_sigmas,
                            list(options.get("cond_or_uncond") or [POSITIVE]))
    return executor(x, timesteps, context, *args, **kwargs)


def add_seed_variety(model, strength: float, until: float, seeds: list[int] | None = None):
    """A clone of the MODEL whose first steps see a per-image perturbed prompt; the model itself when strength
    or until is 0 (so variety off is exactly sampling without it)."""
    if strength <= 0 or until <= 0:
        return model
    import comfy.patcher_extension
    variety = SeedVariety(float(strength), float(until), tuple(int(s) for s in seeds) if seeds else None)
    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, VARIETY_WRAPPER_KEY,
                                 _outer_sample_wrapper(variety))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, VARIETY_WRAPPER_KEY,
                                 _diffusion_model_wrapper)
    patched.zimage_seed_variety = variety  # tests and callers can read the runs
    return patched
