"""Seed variety (issue 19): off = today's output bit for bit; on = perturbed prompt in the chosen steps only,
deterministic per seed, batch = singles, larger seed-to-seed differences; the same patch under core KSampler."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).parent / "data" / "sampler_reference_issue19.safetensors"
# ZImageTurboSampler.sample(...) keyword arguments per reference latent, recorded from the sampler of commit
# 65fd407 (before seed variety existed) on the session's tiny DiT; both hosts gave identical tensors. Should the
# tiny DiT fixture change, re-record them from that commit's sampler with these cases.
REFERENCE_CASES = {
    "turbo_euler_simple_b2": dict(width=64, height=64, batch_size=2, seed=11, steps=8, cfg=1.0, shift=3.0,
                                  sampler_name="euler", scheduler="simple", denoise=1.0),
    "lowstep_res_multistep": dict(width=64, height=48, batch_size=1, seed=5, steps=6, cfg=1.0, shift=3.0,
                                  sampler_name="res_multistep", scheduler="lowstep", denoise=1.0),
    "cfg4_negative": dict(width=64, height=64, batch_size=1, seed=3, steps=5, cfg=4.0, shift=3.0,
                          sampler_name="euler", scheduler="simple", denoise=1.0, negative_seed=8),
}


@pytest.fixture(scope="module")
def tiny_model(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(tiny_paths["diffusion_models"])


def _cond(seed=3, tokens=12):
    return [[torch.randn(1, tokens, 256, generator=torch.Generator().manual_seed(seed)), {}]]


def _recording(model):
    """A clone recording (sigma, context, cond_or_uncond) of every diffusion-model call; added after the variety
    patch, it sees the context the DiT gets."""
    import comfy.patcher_extension
    seen: list[tuple[float, torch.Tensor, list[int]]] = []

    def wrapper(executor, x, timesteps, context, *args, **kwargs):
        opts = kwargs.get("transformer_options", {})
        seen.append((float(opts["sigmas"].flatten()[0]), context.clone(), list(opts.get("cond_or_uncond", []))))
        return executor(x, timesteps, context, *args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_recorder", wrapper)
    return clone, seen


def _sample(model, **kw):
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    negative_seed = kw.pop("negative_seed", None)
    negative = _cond(negative_seed) if negative_seed is not None else None
    latent, seeds = ZImageTurboSampler().sample(model, _cond(), negative=negative, **kw)
    return latent["samples"], seeds


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_variety_off_is_bit_identical_to_the_saved_reference(tiny_model, case):
    from safetensors.torch import load_file
    reference = load_file(str(REFERENCE))[case]
    out, _ = _sample(tiny_model, **REFERENCE_CASES[case])
    assert torch.equal(out, reference), f"{case}: max diff {(out - reference).abs().max().item()}"
    out_off, _ = _sample(tiny_model, **REFERENCE_CASES[case], variety=0.0, variety_until=0.9)
    assert torch.equal(out_off, reference)


def test_step_ranges():
    from zimage_turbo.sampling.variety import perturbed_step_count, step_index
    assert [perturbed_step_count(8, u) for u in (0, 0.1, 0.125, 0.25, 0.3, 1.0)] == [0, 1, 1, 2, 3, 8]
    sigmas = torch.tensor([1.0, 0.9, 0.5, 0.2, 0.0])
    assert [step_index(sigmas, s) for s in (1.0, 0.95, 0.9, 0.7, 0.5, 0.2, 0.1)] == [0, 0, 1, 1, 2, 3, 3]


def _variety_sample(model, seed, batch=1, strength=0.8, until=0.25, steps=8, cfg=1.0, negative=None):
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    return turbo_sample(model, _cond(), empty_latent(64, 64, batch), seed=seed, steps=steps, cfg=cfg,
                        negative=negative, variety=strength, variety_until=until)["samples"]


def _patched_recording(model, strength, until, seeds):
    """The variety patch with a recorder inside it (sees the context the DiT gets)."""
    from zimage_turbo.sampling.variety import add_seed_variety
    patched = add_seed_variety(model, strength, until, seeds)
    return _recording(patched)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_perturbation_only_in_the_chosen_steps(tiny_model, cfg):
    import comfy.sample
    from zimage_turbo.sampling.turbo import empty_latent, per_image_noise, with_flow_shift
    model, seen = _patched_recording(with_flow_shift(tiny_model, 3.0), 0.8, 0.25, [21, 22])
    latent = empty_latent(64, 64, 2)["samples"]
    noise = per_image_noise(latent, [21, 22])
    positive, negative = _cond(), _cond(9)
    comfy.sample.sample(model, noise, 8, cfg, "euler", "simple", positive, negative, latent, seed=21,
                        disable_pbar=True)
    calls_per_step = 1 if cfg == 1.0 else 2  # cfg 4 may batch cond+uncond in one call of 2 chunks
    chunks = sum(len(c) for _, _, c in seen)
    assert chunks == 8 * calls_per_step
    original = {0: positive[0][0], 1: negative[0][0]}
    perturbed_sigmas = set()
    for sigma, context, cond_or_uncond in seen:
        per = context.shape[0] // len(cond_or_uncond)
        for k, kind in enumerate(cond_or_uncond):
            rows = context[k * per:(k + 1) * per]
            same = torch.equal(rows, original[kind].expand_as(rows))
            if kind == 1:
                assert same, "the negative must never be perturbed"
            elif not same:
                perturbed_sigmas.add(round(sigma, 4))
                assert not torch.equal(rows[0], rows[1]), "each image of the batch gets its own perturbation"
    assert perturbed_sigmas == {1.0, 0.9545}, "exactly the first 2 of 8 steps (until 0.25)"


def test_variety_is_deterministic_and_batch_equals_singles(tiny_model):
    a = _variety_sample(tiny_model, seed=30, batch=3)
    b = _variety_sample(tiny_model, seed=30, batch=3)
    assert torch.equal(a, b)
    for i in range(3):
        single = _variety_sample(tiny_model, seed=30 + i)
        torch.testing.assert_close(a[i:i + 1], single, rtol=1e-4, atol=1e-4)


def test_variety_spreads_seeds_further_apart(tiny_model):
    """A mechanical check on the random tiny model (no quality claim): the mean squared difference between the
    latents of 4 seeds is larger with variety on than off."""
    def spread(strength):
        outs = [_variety_sample(tiny_model, seed=s, strength=strength, until=0.5, steps=4) for s in range(4)]
        return sum((outs[i] - outs[j]).pow(2).mean().item() for i in range(4) for j in range(i + 1, 4))
    off, on = spread(0.0), spread(1.5)
    assert on > off, (off, on)


def test_variety_off_returns_the_model_itself(tiny_model):
    from zimage_turbo.sampling.variety import add_seed_variety
    assert add_seed_variety(tiny_model, 0.0, 0.5) is tiny_model
    assert add_seed_variety(tiny_model, 0.5, 0.0) is tiny_model


def test_core_ksampler_with_the_variety_node(tiny_model, comfy_host):
    """The node's patch under core KSampler: image i of a batch is perturbed with seed + i, deterministic."""
    import nodes
    from zimage_turbo.nodes.variety import ZImageSeedVariety
    from zimage_turbo.sampling.turbo import with_flow_shift
    base = with_flow_shift(tiny_model, 3.0)
    (patched,) = ZImageSeedVariety().patch(base, 1.0, 0.3)
    latent = {"samples": torch.zeros(2, 16, 8, 8)}
    run = lambda m: nodes.KSampler().sample(m, 77, 6, 1.0, "euler", "simple", _cond(), _cond(9), latent)[0]["samples"]
    plain, first, second = run(base), run(patched), run(patched)
    assert torch.equal(first, second)
    assert not torch.allclose(first, plain)
    (run_state,) = patched.zimage_seed_variety.runs[-1:]
    assert run_state.seeds == [77, 78]
    assert [a for _, a in run_state.log] == [True, True, False, False, False, False]
    (off,) = ZImageSeedVariety().patch(base, 0.0, 0.3)
    assert torch.equal(run(off), plain)
