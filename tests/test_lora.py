"""Core LoRA loading on every DiT format; on quantized weights the LoRA runs beside the layer (low rank)."""
from __future__ import annotations

import pytest
import torch

from zimage_turbo.quant.convert import convert_to_gguf

TARGETS = ("layers.0.attention.qkv", "layers.1.feed_forward.w2", "noise_refiner.0.attention.out")
RANK = 4


def _lora_state_dict(model, seed=0):
    """A LoRA in the common `lora_unet_*` naming, for a few layers of the model."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for target in TARGETS:
        weight = model.model.diffusion_model.get_submodule(target).weight
        out_f, in_f = (tuple(weight.logical_shape) if hasattr(weight, "logical_shape") else tuple(weight.shape))
        name = "lora_unet_" + target.replace(".", "_")
        sd[f"{name}.lora_down.weight"] = torch.randn(RANK, in_f, generator=g) * 0.05
        sd[f"{name}.lora_up.weight"] = torch.randn(out_f, RANK, generator=g) * 0.05
        sd[f"{name}.alpha"] = torch.tensor(float(RANK) / 2)
    return sd


def _sample(model):
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    cond = [[torch.randn(1, 12, 256, generator=torch.Generator().manual_seed(3)), {}]]
    return turbo_sample(model, cond, empty_latent(64, 64), seed=5, steps=2)["samples"]


def _apply(model, lora_sd, strength):
    import comfy.sd
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora_sd, strength, 0)
    return patched


@pytest.fixture(scope="module")
def models(comfy_host, tiny_paths, tmp_path_factory):
    from zimage_turbo.loaders.dit import load_zimage_dit
    gguf = tmp_path_factory.mktemp("lora") / "dit-q8.gguf"
    convert_to_gguf(tiny_paths["diffusion_models"], gguf, "Q8_0")
    return load_zimage_dit(tiny_paths["diffusion_models"]), load_zimage_dit(gguf)


def test_lora_same_effect_on_bf16_and_q8_gguf(models):
    bf16, q8 = models
    lora = _lora_state_dict(bf16)
    base_bf16, base_q8 = _sample(bf16), _sample(q8)
    with_bf16, with_q8 = _sample(_apply(bf16, lora, 1.0)), _sample(_apply(q8, lora, 1.0))
    effect = (with_bf16 - base_bf16).norm()
    assert effect / base_bf16.norm() > 0.01, "the LoRA must visibly change the output"
    assert float((with_q8 - with_bf16).norm() / with_bf16.norm()) < 0.03
    assert float(((with_q8 - base_q8) - (with_bf16 - base_bf16)).norm() / effect) < 0.15


def test_quantized_lora_is_a_side_computation(models, monkeypatch):
    """No dense delta is computed for quantized weights: comfy.lora.calculate_weight never sees them."""
    import comfy.lora
    _, q8 = models
    lora = _lora_state_dict(q8)
    patched = _apply(q8, lora, 0.8)
    seen: list[str] = []
    original = comfy.lora.calculate_weight

    def recording(patches, weight, key, *args, **kwargs):
        seen.append(key)
        return original(patches, weight, key, *args, **kwargs)

    monkeypatch.setattr(comfy.lora, "calculate_weight", recording)
    out = _sample(patched)
    assert torch.isfinite(out).all()
    quantized_keys = [f"diffusion_model.{t}.weight" for t in TARGETS]
    assert not [k for k in seen if k in quantized_keys]
    layer = patched.model.diffusion_model.get_submodule(TARGETS[0])
    assert len(layer.lora_side) == 1 and layer.lora_side[0].scale == pytest.approx(0.8 * 0.5)
    # unpatching removes the side computation again
    patched.unpatch_model()
    assert layer.lora_side == []


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.7])
def test_partially_loaded_gguf_with_lora_equals_fully_loaded(models, fraction):
    """ComfyUI's low-VRAM partial loading (layers left on the offload device, cast per use) changes nothing.

    `load(lowvram_model_memory=...)` is what load_models_gpu does when the model does not fit; on the CPU the
    "offloaded" layers take the same per-use cast path (comfy_cast_weights) as on a small card.
    """
    import comfy.model_management as mm
    _, q8 = models
    patched = _apply(q8, _lora_state_dict(q8, seed=7), 0.9)
    g = torch.Generator().manual_seed(11)
    x, context = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 12, 256, generator=g)

    def forward():
        with torch.inference_mode():
            return patched.model.apply_model(x, torch.tensor([0.6]), c_crossattn=context, num_tokens=12)
    cpu = torch.device("cpu")
    mm.unload_all_models()
    patched.load(cpu, lowvram_model_memory=0, full_load=True)
    full = forward()
    patched.unpatch_model(cpu)
    budget = max(1, int(patched.model_size() * fraction))
    patched.load(cpu, lowvram_model_memory=budget, full_load=False)
    try:
        cast_per_use = [m for m in patched.model.modules() if getattr(m, "comfy_cast_weights", False)]
        assert patched.model.model_lowvram and len(cast_per_use) > 10
        assert any(getattr(m, "lora_side", None) for m in cast_per_use), "a LoRA'd layer must be among them"
        assert torch.equal(forward(), full)
    finally:
        patched.unpatch_model(cpu)
