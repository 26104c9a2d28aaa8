"""In-process tests of the loaders on tiny random models, each against an independent reference."""
from __future__ import annotations


import pytest
import torch

from zimage_turbo.fixtures.shapes import TINY_QWEN3, DiTSpec, dit_state_dict_shapes
from zimage_turbo.fixtures.tiny_models import random_state_dict, save_safetensors_atomic


def _sample(model, cond, seed=7, steps=2, size=(1, 16, 8, 8), cfg=1.0, negative=None):
    import comfy.sample
    latent = torch.zeros(size)
    noise = comfy.sample.prepare_noise(latent, seed)
    negative = negative if negative is not None else [[torch.zeros_like(cond[0][0]), {}]]
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", cond, negative, latent,
                               denoise=1.0, disable_pbar=True, seed=seed)


def _cond(dim: int, tokens: int = 12, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, dim, generator=g), {}]]


def test_dit_matches_comfyui_detection_path(comfy_host, tmp_path):
    """At dim 3840 ComfyUI can detect Z-Image itself: our config-from-weights path must give the same latent."""
    import comfy.sd
    from zimage_turbo.loaders.dit import load_zimage_dit
    spec = DiTSpec(dim=3840, n_layers=1, n_refiner_layers=2, head_dim=128, cap_feat_dim=64, ffn_hidden=10240)
    sd = random_state_dict(dit_state_dict_shapes(spec), seed=11, dtype=torch.bfloat16)
    path = save_safetensors_atomic(sd, tmp_path / "dit3840.safetensors")
    ours = load_zimage_dit(path)
    core = comfy.sd.load_diffusion_model_state_dict(dict(sd))
    assert type(core.model.model_config).__name__ == "ZImage"
    assert ours.model.model_config.unet_config["dim"] == core.model.model_config.unet_config["dim"]
    cond = _cond(64)
    a, b = _sample(ours, cond, steps=1, size=(1, 16, 4, 4)), _sample(core, cond, steps=1, size=(1, 16, 4, 4))
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_dit_config_inferred_from_weights(comfy_host, tiny_paths):
    from zimage_turbo.fixtures.shapes import TINY_DIT
    from zimage_turbo.loaders.dit import load_zimage_dit
    cfg = load_zimage_dit(tiny_paths["diffusion_models"]).model.model_config.unet_config
    assert (cfg["dim"], cfg["n_layers"], cfg["n_refiner_layers"], cfg["n_heads"], cfg["cap_feat_dim"]) == (
        TINY_DIT.dim, TINY_DIT.n_layers, TINY_DIT.n_refiner_layers, TINY_DIT.n_heads, TINY_DIT.cap_feat_dim)


@pytest.mark.parametrize("file_dtype,weight_dtype,tol", [
    (torch.float16, "default", 2e-2), (torch.float32, "default", 2e-2), (torch.bfloat16, "fp16", 2e-2),
    (torch.float8_e4m3fn, "default", 0.35), (torch.bfloat16, "fp8_e4m3fn", 0.35),
])
def test_dit_precisions_match_bf16_reference(comfy_host, tiny_paths, tmp_path, file_dtype, weight_dtype, tol):
    """fp16/fp32/fp8 files (and weight_dtype overrides) sample close to the bf16 file."""
    from safetensors.torch import load_file
    from zimage_turbo.loaders.dit import load_zimage_dit
    sd = load_file(str(tiny_paths["diffusion_models"]))
    ref = _sample(load_zimage_dit(tiny_paths["diffusion_models"]), _cond(256))
    path = save_safetensors_atomic({k: v.to(file_dtype) for k, v in sd.items()}, tmp_path / "dit.safetensors")
    model = load_zimage_dit(path, weight_dtype)
    out = _sample(model, _cond(256))
    err = (out - ref).norm() / ref.norm()
    assert err < tol, f"relative error {err:.4f} > {tol}"
    if "fp8" in weight_dtype:  # "default" follows ComfyUI: fp8 files are upcast on CPU
        assert model.model.diffusion_model.layers[0].attention.qkv.weight.dtype == torch.float8_e4m3fn


def test_text_encoder_matches_transformers_qwen3(comfy_host, tiny_paths):
    """CONDITIONING equals transformers' Qwen3Model hidden_states[-2] on the same weights and token ids."""
    from safetensors.torch import load_file
    from transformers import Qwen3Config, Qwen3Model
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    clip = load_qwen3_text_encoder(tiny_paths["text_encoders"])
    prompt = "a photo of a cat 一只猫 🐱"
    tokens = clip.tokenize(prompt)
    ids = [t for t, _ in tokens["qwen3_4b"][0]]
    cond = clip.encode_from_tokens_scheduled(tokens)[0][0]

    s = TINY_QWEN3
    cfg = Qwen3Config(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                      num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
                      num_key_value_heads=s.num_key_value_heads, head_dim=s.head_dim, rms_norm_eps=s.rms_norm_eps,
                      rope_theta=s.rope_theta, max_position_embeddings=4096, attn_implementation="eager")
    ref_model = Qwen3Model(cfg).float().eval()
    sd = {k[len("model."):]: v.float() for k, v in load_file(str(tiny_paths["text_encoders"])).items()}
    missing, unexpected = ref_model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected
    with torch.no_grad():
        ref = ref_model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2]
    assert ids[:3] == [151644, 872, 198]  # <|im_start|>user\n : Z-Image's chat template
    assert cond.shape == ref.shape
    torch.testing.assert_close(cond.float(), ref, rtol=1e-3, atol=1e-3)


def test_vae_matches_comfyui_vae(comfy_host, tiny_paths):
    import comfy.sd
    import comfy.utils
    from zimage_turbo.loaders.vae import load_flux_vae
    ours = load_flux_vae(tiny_paths["vae"])
    core = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tiny_paths["vae"]), safe_load=True))
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    a, b = ours.decode(latent), core.decode(latent)
    assert a.shape == (1, 64, 64, 3)
    torch.testing.assert_close(a, b)
    assert ours.latent_channels == 16


def test_sampler_node_equals_core_ksampler_with_auraflow_shift(comfy_host, tiny_paths):
    """ZImageTurboSampler == core ModelSamplingAuraFlow(shift 3) + KSampler(euler, simple, cfg 1), bit for bit."""
    import nodes
    from comfy_extras import nodes_model_advanced
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    model = load_zimage_dit(tiny_paths["diffusion_models"])
    cond = _cond(256)
    ours, _ = ZImageTurboSampler().sample(model, cond, 64, 64, 1, 123, 3, 1.0, 3.0, "euler", "simple", 1.0)
    aura = nodes_model_advanced.ModelSamplingAuraFlow()
    patch = getattr(aura, "patch_aura", None) or aura.execute
    shifted = patch(model, 3.0)[0]
    neg = [[torch.zeros_like(cond[0][0]), {}]]
    (core,) = nodes.KSampler().sample(shifted, 123, 3, 1.0, "euler", "simple", cond, neg,
                                      {"samples": torch.zeros(1, 16, 8, 8)})
    assert torch.equal(ours["samples"], core["samples"])


@pytest.mark.parametrize("cfg,expected_batches_per_step", [(1.0, 1), (2.5, 2)])
def test_cfg1_runs_no_negative_pass(comfy_host, tiny_paths, cfg, expected_batches_per_step):
    """At cfg 1 the model sees only the positive conditioning; above 1 it sees positive and negative."""
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    model = load_zimage_dit(tiny_paths["diffusion_models"]).clone()
    seen: list[int] = []

    def counting(apply_model, args):
        seen.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(counting)
    steps = 3
    turbo_sample(model, _cond(256), empty_latent(64, 64), seed=1, steps=steps, cfg=cfg)
    assert sum(seen) == steps * expected_batches_per_step
