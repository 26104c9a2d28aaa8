"""Comfy-Org's newer files (INT8 ConvRot DiT, mixed-fp8 Qwen3) through the pack's loaders, on tiny models written
with ComfyUI's own quantizers (`fixtures/comfy_quant_files.py`): equal to core UNETLoader's loading of the same
file (bit-exact on the CPU) and to ComfyUI's own dequantization of the weights; refused with a clear message on
hosts that cannot run them."""
from __future__ import annotations

import pytest
import torch

from zimage_turbo.fixtures.shapes import DiTSpec, dit_state_dict_shapes
from zimage_turbo.fixtures.tiny_models import (build_dit_state_dict, build_qwen3_state_dict, random_state_dict,
                                               save_safetensors_atomic)


def _host_runs_comfy_quant() -> bool:
    import comfy.quant_ops
    import comfy.utils
    return hasattr(comfy.utils, "convert_old_quants") and "int8_tensorwise" in getattr(comfy.quant_ops,
                                                                                       "QUANT_ALGOS", {})


@pytest.fixture(scope="module")
def new_host(comfy_host):
    if not _host_runs_comfy_quant():
        pytest.skip("this ComfyUI has no int8_tensorwise/convrot (its refusal is tested below)")


@pytest.fixture(scope="module")
def old_host(comfy_host):
    if _host_runs_comfy_quant():
        pytest.skip("this ComfyUI runs .comfy_quant files (tested above)")


def _sample(model, cond, size=(1, 16, 8, 8), steps=2, seed=7):
    import comfy.sample
    latent = torch.zeros(size)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, [[torch.zeros_like(cond[0][0]), {}]],
                               latent, denoise=1.0, disable_pbar=True, seed=seed)


def _cond(dim: int, tokens: int = 12):
    return [[torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(3)), {}]]


def _is_int8(weight) -> bool:
    return type(weight).__name__ == "QuantizedTensor" and weight._qdata.dtype == torch.int8


def test_int8_convrot_dit_equals_core_unet_loader(new_host, tmp_path):
    """At the real width (3840, which core detects) the pack and core UNETLoader give bit-identical latents."""
    import comfy.sd
    from zimage_turbo.fixtures.comfy_quant_files import int8_convrot
    from zimage_turbo.loaders.dit import load_zimage_dit
    spec = DiTSpec(dim=3840, n_layers=1, n_refiner_layers=2, head_dim=128, cap_feat_dim=64, ffn_hidden=10240)
    sd, _ = int8_convrot(random_state_dict(dit_state_dict_shapes(spec), seed=11, dtype=torch.bfloat16), 256)
    path = save_safetensors_atomic(sd, tmp_path / "z_image_turbo_int8_convrot.safetensors")
    del sd
    ours = load_zimage_dit(path)
    assert _is_int8(ours.model.diffusion_model.layers[0].feed_forward.w2.weight)  # stays int8 in memory
    a = _sample(ours, _cond(64), size=(1, 16, 4, 4), steps=1)
    del ours
    core = comfy.sd.load_diffusion_model(str(path))
    b = _sample(core, _cond(64), size=(1, 16, 4, 4), steps=1)
    assert torch.isfinite(a).all() and torch.equal(a, b)


def test_int8_convrot_dit_tiny_holds_comfyui_weights(new_host, tmp_path):
    """Tiny DiT: the loaded int8 weights dequantize exactly to ComfyUI's own dequantization of the file, and the
    model samples close to the dequantized and the unquantized models (ComfyUI's int8 matmul also quantizes the
    activations per row, so not bit-exact to a float model: bit-exactness is against core, above)."""
    from zimage_turbo.fixtures.comfy_quant_files import int8_convrot
    from zimage_turbo.loaders.dit import load_zimage_dit
    src = build_dit_state_dict()
    sd, ref = int8_convrot(src, 64)
    assert {v.dtype for v in sd.values()} == {torch.int8, torch.float32, torch.uint8}  # the published file's mix
    model = load_zimage_dit(save_safetensors_atomic(sd, tmp_path / "int8.safetensors"))
    for key in ("layers.0.attention.qkv.weight", "layers.1.feed_forward.w2.weight",
                "noise_refiner.0.attention.out.weight"):
        weight = model.model.diffusion_model.get_parameter(key)
        assert _is_int8(weight) and torch.equal(weight.dequantize(), ref[key]), key
    reference = load_zimage_dit(save_safetensors_atomic(ref, tmp_path / "dequantized.safetensors"))
    plain = load_zimage_dit(save_safetensors_atomic(src, tmp_path / "bf16.safetensors"))
    a, b, c = _sample(model, _cond(256)), _sample(reference, _cond(256)), _sample(plain, _cond(256))
    assert float((a - b).norm() / b.norm()) < 0.05 and float((a - c).norm() / c.norm()) < 0.1


BLOCK_FORMATS = ("nvfp4", "mxfp8")


@pytest.fixture(params=BLOCK_FORMATS)
def block_format_name(request, new_host) -> str:
    import comfy.quant_ops
    if request.param not in comfy.quant_ops.QUANT_ALGOS:
        pytest.skip(f"this ComfyUI has no {request.param} (mxfp8 needs comfy-kitchen)")
    return request.param


def test_block_format_dit_tiny_holds_comfyui_weights(block_format_name, tmp_path):
    """NVFP4 / MXFP8 files as the community writes them, the timestep embedder and adaLN quantized too: the pack
    reads nvfp4's packed weights ([rows, columns / 2] in the file) at the model's width (it used to call the file
    damaged), each weight dequantizes exactly to ComfyUI's own dequantization, and the model samples close to the
    dequantized one (nvfp4 also quantizes the activations). A file missing a quantized weight is refused by name."""
    from zimage_turbo.fixtures.comfy_quant_files import block_format
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.errors import ModelFileError
    fmt = block_format_name
    src = {k: v.float() for k, v in build_dit_state_dict().items()}  # scales applied in fp32, as the model does
    sd, ref = block_format(src, fmt)
    keys = ("t_embedder.mlp.0.weight", "layers.0.adaLN_modulation.0.weight", "layers.1.feed_forward.w2.weight",
            "noise_refiner.0.attention.qkv.weight")
    model = load_zimage_dit(save_safetensors_atomic(sd, tmp_path / f"z_image_turbo_{fmt}.safetensors"))
    for key in keys:
        weight = model.model.diffusion_model.get_parameter(key)
        assert type(weight).__name__ == "QuantizedTensor" and weight.shape == src[key].shape, key
        assert torch.equal(weight.dequantize(), ref[key]), key
    reference = load_zimage_dit(save_safetensors_atomic(ref, tmp_path / "dequantized.safetensors"))
    a, b = _sample(model, _cond(256)), _sample(reference, _cond(256))
    assert torch.isfinite(a).all() and float((a - b).norm() / b.norm()) < 0.05
    del sd["layers.1.feed_forward.w2.weight"]
    with pytest.raises(ModelFileError, match=r"missing tensors \(layers\.1\.feed_forward\.w2\.weight"):
        load_zimage_dit(save_safetensors_atomic(sd, tmp_path / f"incomplete_{fmt}.safetensors"))


def test_block_format_files_are_recognised_by_the_planner_and_quantize(block_format_name, tmp_path):
    """The planner files NVFP4 / MXFP8 models under their role, and the quantize command names them as already
    quantized (not damaged, which their packed shapes looked like)."""
    from zimage_turbo.fixtures.comfy_quant_files import block_format
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.planner.files import inspect_file
    from zimage_turbo.quant.convert import inspect_source
    fmt = block_format_name
    dit = save_safetensors_atomic(block_format(build_dit_state_dict(), fmt)[0], tmp_path / f"dit_{fmt}.safetensors")
    te = save_safetensors_atomic(block_format(build_qwen3_state_dict(), fmt)[0], tmp_path / f"te_{fmt}.safetensors")
    assert inspect_file(dit).role == "dit" and inspect_file(te).role == "te"
    with pytest.raises(ModelFileError, match=rf"dit_{fmt}.safetensors: .*found a Z-Image DiT .*already quantized"):
        inspect_source(dit)
    with pytest.raises(ModelFileError, match=rf"te_{fmt}.safetensors: .*found a Qwen3 text encoder\. The quantize"):
        inspect_source(te)


def test_nvfp4_dit_equals_core_unet_loader(new_host, tmp_path):
    """At the real width (which core detects), an NVFP4 file with adaLN and the timestep embedder quantized (the
    embedders core reads its config from kept bf16, as published files do) gives latents bit-identical to core
    UNETLoader's."""
    import comfy.quant_ops
    import comfy.sd
    from zimage_turbo.fixtures.comfy_quant_files import block_format, fits_blocks
    from zimage_turbo.loaders.dit import load_zimage_dit
    if "nvfp4" not in comfy.quant_ops.QUANT_ALGOS:
        pytest.skip("this ComfyUI has no nvfp4")
    spec = DiTSpec(dim=3840, n_layers=1, n_refiner_layers=2, head_dim=128, cap_feat_dim=64, ffn_hidden=10240)
    src = random_state_dict(dit_state_dict_shapes(spec), seed=12, dtype=torch.bfloat16)
    sd, _ = block_format(src, "nvfp4", lambda k, v: fits_blocks(k, v) and not k.startswith(("x_embedder",
                                                                                              "cap_embedder")))
    del src
    path = save_safetensors_atomic(sd, tmp_path / "z_image_turbo_nvfp4.safetensors")
    assert sd["layers.0.adaLN_modulation.0.weight"].shape == (4 * 3840, 128)  # packed: 256 inputs in 128 bytes
    del sd
    ours = load_zimage_dit(path)
    a = _sample(ours, _cond(64), size=(1, 16, 4, 4), steps=1)
    del ours
    core = comfy.sd.load_diffusion_model(str(path))
    b = _sample(core, _cond(64), size=(1, 16, 4, 4), steps=1)
    assert torch.isfinite(a).all() and torch.equal(a, b)


def _mixed_pick(key: str, value) -> bool:
    """Like the published mixed file: the layers' projections fp8, except the first layer's (kept bf16)."""
    return key.startswith("model.layers.") and not key.startswith("model.layers.0.")


def test_block_format_text_encoder_holds_comfyui_weights(block_format_name, tmp_path):
    """An NVFP4 / MXFP8 Qwen3 (the layers' projections quantized): nvfp4's packed weights are read at the model's
    width (the loader used to call the file damaged); the weights dequantize exactly to ComfyUI's own
    dequantization and the conditioning matches the dequantized model's."""
    from zimage_turbo.fixtures.comfy_quant_files import block_format, fits_blocks
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    fmt = block_format_name
    src = {k: v.float() for k, v in build_qwen3_state_dict().items()}
    sd, ref = block_format(src, fmt, lambda k, v: k.startswith("model.layers.") and fits_blocks(k, v))
    clip = load_qwen3_text_encoder(save_safetensors_atomic(sd, tmp_path / f"qwen_3_4b_{fmt}.safetensors"))
    modules = dict(clip.cond_stage_model.named_modules())
    quantized = {n: m for n, m in modules.items() if type(getattr(m, "weight", None)).__name__ == "QuantizedTensor"}
    assert len(quantized) >= 7  # (the last layer's are not read: Z-Image takes the encoder's second-to-last layer)
    for name, module in quantized.items():
        key = "model." + name.split(".model.", 1)[1] + ".weight"
        assert module.weight.shape == src[key].shape and torch.equal(module.weight.dequantize(), ref[key]), key
    reference = load_qwen3_text_encoder(save_safetensors_atomic(ref, tmp_path / "dequantized.safetensors"))
    prompt = "a red fox in the snow, 一只狐狸"
    a = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))[0][0]
    b = reference.encode_from_tokens_scheduled(reference.tokenize(prompt))[0][0]
    assert a.shape == b.shape and float((a - b).norm() / b.norm()) < 0.02


def test_fp8_mixed_text_encoder_holds_comfyui_weights(new_host, tmp_path):
    """Mixed fp8 Qwen3: fp8 layers stay fp8 with ComfyUI's mixed-precision ops and dequantize exactly to ComfyUI's
    own dequantization; the conditioning matches the dequantized bf16 model up to bf16 rounding (the fp8 ops compute
    in the encoder's bf16, the plain model's manual cast in fp32). Core CLIPLoader detects only the full-size
    Qwen3-4B, so the tiny encoder has no core twin to compare with."""
    from zimage_turbo.fixtures.comfy_quant_files import fp8_mixed
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    src = build_qwen3_state_dict()
    sd, ref = fp8_mixed(src, _mixed_pick)
    assert torch.float8_e4m3fn in {v.dtype for v in sd.values()} and torch.bfloat16 in {v.dtype for v in sd.values()}
    clip = load_qwen3_text_encoder(save_safetensors_atomic(sd, tmp_path / "qwen_3_4b_fp8_mixed.safetensors"))
    modules = dict(clip.cond_stage_model.named_modules())
    quantized = {n: m for n, m in modules.items() if type(getattr(m, "weight", None)).__name__ == "QuantizedTensor"}
    assert quantized and all(".layers.0." not in n for n in quantized)
    for name, module in quantized.items():
        key = "model." + name.split(".model.", 1)[1] + ".weight"
        assert module.weight._qdata.dtype == torch.float8_e4m3fn and torch.equal(module.weight.dequantize(), ref[key])
    reference = load_qwen3_text_encoder(save_safetensors_atomic(ref, tmp_path / "dequantized.safetensors"))
    prompt = "a red fox in the snow, 一只狐狸"
    a = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))[0][0]
    b = reference.encode_from_tokens_scheduled(reference.tokenize(prompt))[0][0]
    assert a.shape == b.shape and float((a - b).norm() / b.norm()) < 0.02
    raw = {k: (v.to(torch.bfloat16) if v.dtype == torch.float8_e4m3fn else v) for k, v in sd.items()
           if not k.endswith(("weight_scale", "comfy_quant"))}  # the fp8 values without their scales
    unscaled = load_qwen3_text_encoder(save_safetensors_atomic(raw, tmp_path / "unscaled.safetensors"))
    c = unscaled.encode_from_tokens_scheduled(unscaled.tokenize(prompt))[0][0]
    assert float((c - b).norm() / b.norm()) > 0.2  # the scales matter, and were applied


def test_comfy_quant_files_are_refused_on_hosts_without_the_format(old_host, tmp_path):
    from zimage_turbo.fixtures.comfy_quant_files import hand_written_int8_layout
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    dit = save_safetensors_atomic(hand_written_int8_layout(build_dit_state_dict()),
                                  tmp_path / "z_image_turbo_int8_convrot.safetensors")
    with pytest.raises(ModelFileError, match=r"z_image_turbo_int8_convrot.safetensors: .*int8_tensorwise.*convrot"
                                             r".*newer ComfyUI.*z_image_turbo_bf16"):
        load_zimage_dit(dit)
    te = save_safetensors_atomic(hand_written_int8_layout(build_qwen3_state_dict()),
                                 tmp_path / "qwen_3_4b_fp8_mixed.safetensors")
    with pytest.raises(ModelFileError, match=r"qwen_3_4b_fp8_mixed.safetensors: .*comfy_quant.*newer ComfyUI"
                                             r".*qwen_3_4b.safetensors"):
        load_qwen3_text_encoder(te)
