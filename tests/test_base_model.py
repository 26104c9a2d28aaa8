"""Z-Image Base through the pack (issue 19): the sampler's presets, cfg > 1 as one batched call of positive and
negative per step, equality with core KSampler, and the fp16-safety rule ComfyUI applies to Base/Turbo files."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_model(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(tiny_paths["diffusion_models"])


def _cond(seed, tokens=12):
    return [[torch.randn(1, tokens, 256, generator=torch.Generator().manual_seed(seed)), {}]]


def _counting(model):
    """A clone recording, per diffusion-model call, the batch's chunks (0 = positive, 1 = negative)."""
    import comfy.patcher_extension
    calls: list[list[int]] = []

    def wrapper(executor, x, timesteps, context, *args, **kwargs):
        calls.append(list(kwargs["transformer_options"]["cond_or_uncond"]))
        return executor(x, timesteps, context, *args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_counter", wrapper)
    return clone, calls


def test_presets_table():
    from zimage_turbo.sampling.presets import PRESETS, preset_names, resolve_preset
    assert preset_names()[0] == "custom"
    assert (PRESETS["turbo"].steps, PRESETS["turbo"].cfg, PRESETS["turbo"].shift) == (8, 1.0, 3.0)
    assert (PRESETS["base"].steps, PRESETS["base"].cfg, PRESETS["base"].shift) == (28, 4.0, 3.0)
    assert resolve_preset("custom", 5, 2.0, 6.0, "heun", "beta").steps == 5
    with pytest.raises(ValueError, match="unknown sampling preset"):
        resolve_preset("sdxl", 5, 2.0, 6.0, "heun", "beta")


@pytest.mark.parametrize("negative_tokens", [12, 7])
def test_base_preset_is_core_ksampler_with_two_model_inputs_per_step(tiny_model, comfy_host, negative_tokens):
    """cfg 4: every step runs the positive and the negative. ComfyUI batches them into one call of 2 when their
    conditionings concatenate (same token count); otherwise it makes two calls. Either way the latent equals
    core KSampler + ModelSamplingAuraFlow with the same settings."""
    import nodes
    from comfy_extras.nodes_model_advanced import ModelSamplingAuraFlow
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    positive, negative = _cond(3), _cond(8, tokens=negative_tokens)
    model, calls = _counting(tiny_model)
    node = ZImageTurboSampler()
    assert node.check_lazy_status(cfg=1.0, negative=None, preset="base") == ["negative"]
    assert node.check_lazy_status(cfg=4.0, negative=None, preset="turbo") == []
    out, _ = node.sample(model, positive, 32, 32, 1, 123, 3, 1.0, 6.0, "heun", "beta", 1.0, negative=negative,
                         preset="base")  # the widgets say otherwise: the preset wins
    assert sum(len(c) for c in calls) == 2 * 28, "two model inputs per step, 28 steps"
    if negative_tokens == 12:
        assert len(calls) == 28 and all(sorted(c) == [0, 1] for c in calls), "one batched call of 2 per step"
    else:
        assert len(calls) == 56 and all(len(c) == 1 for c in calls)

    core_model = ModelSamplingAuraFlow().patch_aura(tiny_model, 3.0)[0]
    latent = {"samples": torch.zeros(1, 16, 4, 4)}
    core = nodes.KSampler().sample(core_model, 123, 28, 4.0, "euler", "simple", positive, negative, latent)[0]
    assert torch.equal(out["samples"], core["samples"])


def test_turbo_preset_runs_the_positive_only(tiny_model):
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    model, calls = _counting(tiny_model)
    ZImageTurboSampler().sample(model, _cond(3), 32, 32, 1, 5, 3, 4.0, 3.0, "euler", "simple", 1.0,
                                negative=_cond(8), preset="turbo")
    assert calls == [[0]] * 8


def _ffn_norm_with_spread(dim: int, spread: float) -> torch.Tensor:
    """A norm weight around 1 whose population std is `spread` (what model_detection measures)."""
    x = torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = (x - x.mean()) / x.std(unbiased=False)
    return (1.0 + spread * x).float()


@pytest.mark.parametrize("spread", [0.05, 0.41997, 0.42005, 0.9])
def test_fp16_safety_as_comfyui_decides_it(comfy_host, spread):
    """ComfyUI allows fp16 for a Z-Image DiT (Base or Turbo) only when the ffn_norm1 weight of layer n-2 has a
    population std < 0.42 (0.30 hosts; 0.3.75 never allows fp16). The pack's config-from-weights path must take
    the same decision on the same weights, at real width 3840 where ComfyUI detects the model itself."""
    import comfy.model_detection
    import comfy.supported_models
    from zimage_turbo.fixtures.shapes import DiTSpec, dit_state_dict_shapes
    from zimage_turbo.loaders.dit import allow_fp16
    spec = DiTSpec(dim=3840, n_layers=2, n_refiner_layers=1, head_dim=128, cap_feat_dim=2560, ffn_hidden=10240)
    sd = {k: torch.empty(s, device="meta") for k, s in dit_state_dict_shapes(spec).items()}
    sd["layers.0.ffn_norm1.weight"] = _ffn_norm_with_spread(3840, spread)
    comfy_config = comfy.model_detection.detect_unet_config(sd, "")
    ours = allow_fp16(sd, spec.n_layers)
    if "allow_fp16" in comfy_config:  # host with the fp16 rule
        assert ours == comfy_config["allow_fp16"] == (spread < 0.42)
    pack_dtypes = comfy.supported_models.ZImage({**comfy_config, "allow_fp16": ours}).supported_inference_dtypes
    host_dtypes = comfy.supported_models.ZImage(comfy_config).supported_inference_dtypes
    assert pack_dtypes == host_dtypes


def test_saved_parameters_follow_the_preset_and_variety():
    """The A1111 text of a picture sampled with preset base names what ran (28 steps, cfg 4, the negative)."""
    from zimage_turbo.saving.a1111 import parameters_from_prompt
    prompt = {
        "1": {"class_type": "ZImageDiffusionModelLoader", "inputs": {"unet_name": "z_image_bf16.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["2", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["2", 0]}},
        "5": {"class_type": "ZImageTurboSampler", "inputs": {
            "model": ["1", 0], "positive": ["4", 0], "negative": ["6", 0], "seed": 3, "steps": 8, "cfg": 1.0,
            "shift": 3.0, "sampler_name": "heun", "scheduler": "beta", "denoise": 1.0, "batch_size": 1,
            "preset": "base", "variety": 0.4, "variety_until": 0.25}},
    }
    (params,) = parameters_from_prompt(prompt, 1024, 1024)
    assert (params.settings["Steps"], params.settings["CFG scale"], params.settings["Sampler"]) == (28, 4.0, "Euler")
    assert params.negative == "blurry" and params.settings["Seed variety"] == "0.4 until 0.25"
    prompt["5"]["inputs"].update(preset="custom", variety=0.0)
    (params,) = parameters_from_prompt(prompt, 1024, 1024)
    assert params.settings["Steps"] == 8 and params.negative == "" and "Seed variety" not in params.settings
