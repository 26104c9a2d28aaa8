"""Every Z-Image DiT format users have, on the tiny model, against the bf16 reference and independent refs."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from zimage_turbo.fixtures.tiny_models import dit_to_diffusers_layout, save_safetensors_atomic
from zimage_turbo.quant.convert import convert_to_gguf, convert_to_scaled_fp8
from zimage_turbo.quant.gguf_writer import write_gguf


@pytest.fixture(scope="module")
def dit(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    path = tiny_paths["diffusion_models"]
    return path, load_file(str(path)), load_zimage_dit


def _sample(model, steps=2):
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    cond = [[torch.randn(1, 12, 256, generator=torch.Generator().manual_seed(3)), {}]]
    return turbo_sample(model, cond, empty_latent(64, 64), seed=5, steps=steps)["samples"]


@pytest.fixture(scope="module")
def reference(dit):
    path, _, load = dit
    return _sample(load(path))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _gguf(sd, path, qtype_of, **meta):
    tensors = {k: (v.float(), qtype_of(k, v), tuple(v.shape)) for k, v in sd.items()}
    write_gguf(path, tensors, {"general.architecture": "lumina2", **meta})
    return path


@pytest.mark.parametrize("target,tol", [("Q8_0", 0.03), ("Q6_K", 0.05), ("Q5_K", 0.08), ("Q4_K", 0.15),
                                         ("Q4_0", 0.2)])
def test_quantize_command_gguf_round_trip(dit, reference, tmp_path, target, tol):
    import gguf
    from zimage_turbo.quant.tensor import QuantizedTensor
    path, sd, load = dit
    out = tmp_path / f"dit-{target}.gguf"
    report = convert_to_gguf(path, out, target, stats=True)
    assert any(t == target for t, _ in report.values())
    reader = gguf.GGUFReader(str(out))
    assert {t.name for t in reader.tensors} == set(sd)
    model = load(out)
    assert isinstance(model.model.diffusion_model.layers[0].feed_forward.w2.weight, QuantizedTensor)
    err = _rel(_sample(model), reference)
    assert err < tol, f"{target}: relative error {err:.4f}"
    with pytest.raises(FileExistsError):
        convert_to_gguf(path, out, target)


@pytest.mark.parametrize("plain", ["F16", "BF16", "F32"])
def test_gguf_float_types_near_exact(dit, reference, tmp_path, plain):
    path, sd, load = dit
    out = _gguf(sd, tmp_path / f"dit-{plain}.gguf", lambda k, v: plain if v.ndim == 2 else "F32")
    assert _rel(_sample(load(out)), reference) < (1e-5 if plain != "F16" else 5e-3)


def test_gguf_with_one_dimensional_pad_tokens(dit, reference, tmp_path):
    """Files that stored x_pad_token/cap_pad_token as [D] (ComfyUI-GGUF issue #379) load and match."""
    path, sd, load = dit
    sd = {k: (v.reshape(-1) if k.endswith("pad_token") else v) for k, v in sd.items()}
    out = _gguf(sd, tmp_path / "dit-pad1d.gguf", lambda k, v: "Q8_0" if v.ndim == 2 and v.shape[1] % 32 == 0 else "F32")
    model = load(out)
    assert tuple(model.model.diffusion_model.x_pad_token.shape) == (1, sd["x_pad_token"].numel())
    assert _rel(_sample(model), reference) < 0.03


def test_gguf_of_another_architecture_is_refused(dit, tmp_path):
    from zimage_turbo.loaders.errors import ModelFileError
    path, sd, load = dit
    out = tmp_path / "llama.gguf"
    write_gguf(out, {"token_embd.weight": (torch.zeros(8, 32), "F32", (8, 32))}, {"general.architecture": "llama"})
    with pytest.raises(ModelFileError, match="llama.gguf: expected a Z-Image DiT.*architecture 'llama'"):
        load(out)


@pytest.mark.parametrize("dtype,tol", [(torch.float8_e5m2, 0.5), (torch.float8_e4m3fn, 0.35)])
def test_plain_fp8_files(dit, reference, tmp_path, dtype, tol):
    path, sd, load = dit
    fp8 = {k: (v.to(dtype) if v.ndim == 2 and "pad" not in k else v) for k, v in sd.items()}
    out = save_safetensors_atomic(fp8, tmp_path / "dit_fp8.safetensors")
    assert _rel(_sample(load(out)), reference) < tol


def test_scaled_fp8_from_quantize_command(dit, reference, tmp_path):
    path, sd, load = dit
    out = tmp_path / "dit_scaled_fp8.safetensors"
    convert_to_scaled_fp8(path, out)
    written = load_file(str(out))
    assert written["scaled_fp8"].dtype == torch.float8_e4m3fn
    assert written["layers.0.attention.qkv.weight"].dtype == torch.float8_e4m3fn
    assert written["layers.0.attention.qkv.scale_weight"].numel() == 1
    assert _rel(_sample(load(out)), reference) < 0.1


def test_comfy_quant_layers(dit, reference, tmp_path, comfy_host):
    """Per-layer `.comfy_quant` fp8 (ComfyUI 0.4+ format): loads where the host runs it, clear error where not."""
    import comfy.utils
    from zimage_turbo.loaders.errors import ModelFileError
    path, sd, load = dit
    out_sd = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and k.startswith("layers."):
            scale = v.float().abs().max() / 448.0
            out_sd[k] = (v.float() / scale).to(torch.float8_e4m3fn)
            base = k[: -len("weight")]
            out_sd[base + "weight_scale"] = scale.reshape(()).float()
            out_sd[base + "comfy_quant"] = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()),
                                                        dtype=torch.uint8)
        else:
            out_sd[k] = v
    out = save_safetensors_atomic(out_sd, tmp_path / "dit_comfy_quant.safetensors")
    if hasattr(comfy.utils, "convert_old_quants"):
        assert _rel(_sample(load(out)), reference) < 0.1
    else:
        with pytest.raises(ModelFileError, match="comfy_quant.*Update ComfyUI"):
            load(out)


def test_diffusers_layout_single_file_and_shards(dit, reference, tmp_path):
    path, sd, load = dit
    dsd = dit_to_diffusers_layout(sd)
    single = save_safetensors_atomic(dsd, tmp_path / "single" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(_sample(load(single)), reference)
    keys = sorted(dsd)
    half = len(keys) // 2
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:half],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[half:]}
    folder = tmp_path / "sharded"
    for name, names in shards.items():
        save_safetensors_atomic({k: dsd[k] for k in names}, folder / name)
    index = {"metadata": {}, "weight_map": {k: n for n, names in shards.items() for k in names}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(_sample(load(folder / "diffusion_pytorch_model-00002-of-00002.safetensors")), reference)


def test_diffusers_forward_matches_diffusers_model(comfy_host):
    """The ComfyUI model loaded from a diffusers-layout state dict equals diffusers' ZImageTransformer2DModel.

    diffusers fixes the timestep MLP at 1024 wide where ComfyUI uses min(dim, 1024): dim >= 1024 here.
    """
    from diffusers import ZImageTransformer2DModel
    from zimage_turbo.fixtures.shapes import DiTSpec, dit_state_dict_shapes
    from zimage_turbo.fixtures.tiny_models import random_state_dict
    from zimage_turbo.loaders.dit import build_zimage_model
    from zimage_turbo.loaders.dit_layouts import diffusers_to_comfy
    s = DiTSpec(dim=1152, n_layers=1, n_refiner_layers=1, head_dim=128, cap_feat_dim=64, ffn_hidden=3072)
    dsd = dit_to_diffusers_layout(random_state_dict(dit_state_dict_shapes(s), seed=21, dtype=torch.float32))
    ref = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=s.dim,
                                   n_layers=s.n_layers, n_refiner_layers=s.n_refiner_layers, n_heads=s.n_heads,
                                   n_kv_heads=s.n_heads, cap_feat_dim=s.cap_feat_dim, axes_dims=[32, 48, 48],
                                   axes_lens=[1536, 512, 512]).eval()
    missing, unexpected = ref.load_state_dict(dsd, strict=False)
    assert not unexpected and not missing
    model = build_zimage_model(diffusers_to_comfy(dsd), weight_dtype="fp32").model.diffusion_model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, 16, generator=g)  # 32 image tokens and 32 caption tokens: no padding anywhere
    cap = torch.randn(1, 32, s.cap_feat_dim, generator=g)
    sigma = torch.tensor([0.7])
    with torch.no_grad():
        ours = model(x, sigma, cap, num_tokens=32)
        theirs = ref([x[0].unsqueeze(1)], 1 - sigma, [cap[0]], return_dict=False)[0][0].squeeze(1)
    torch.testing.assert_close(ours[0], -theirs, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("fake,found", [
    ({"cap_embedder.1.weight": (2304, 2304), "layers.0.adaLN_modulation.1.weight": (9216, 1024)}, "Lumina 2"),
    ({"double_blocks.0.img_attn.qkv.weight": (9216, 3072)}, "Flux"),
    ({"input_blocks.0.0.weight": (320, 4, 3, 3)}, "SD1.x/SDXL"),
    ({"transformer_blocks.0.img_mod.1.weight": (18432, 3072)}, "Qwen-Image"),
])
def test_other_architectures_are_named(dit, tmp_path, fake, found):
    from zimage_turbo.loaders.errors import ModelFileError
    _, _, load = dit
    out = save_safetensors_atomic({k: torch.zeros(s, dtype=torch.float16) for k, s in fake.items()},
                                  tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match=f"other.safetensors: expected a Z-Image DiT.*found an? {found}"):
        load(out)


def test_quantize_command_line(dit, tmp_path):
    """`python -m zimage_turbo quantize` writes the file, prints per-tensor errors, refuses to overwrite."""
    import subprocess
    import sys
    from pathlib import Path
    path, sd, _ = dit
    out = tmp_path / "cli-q8.gguf"
    cmd = [sys.executable, "-m", "zimage_turbo", "quantize", str(path), str(out), "--type", "Q8_0", "--stats"]
    repo = Path(__file__).resolve().parents[1]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "layers.0.attention.qkv.weight" in first.stdout and "Q8_0" in first.stdout
    before = out.read_bytes()
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=300)
    assert second.returncode != 0 and "already exists" in second.stderr
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != out.name]  # no temporary files left behind


# The published DiT GGUFs' layouts (issue 20). jayn7/Z-Image-Turbo-GGUF is ComfyUI-GGUF style (FACTS §4.4): arch
# lumina2, ComfyUI key names, 1-D and ≤1024-element tensors F32, embedders/refiners/final layer and the [1, D] pad
# tokens BF16 (ComfyUI-GGUF issue #419), `layers.*` matrices in the K type with some in a higher one (the _M mixes).
# leejet/Z-Image-Turbo-GGUF is stable-diffusion.cpp's: no general.architecture, keys under model.diffusion_model.,
# 1-D pad tokens (ComfyUI-GGUF issue #379), every matrix whose rows fit the block size quantized (embedders and
# refiners too), the rest F16.
_KEEP_16BIT = ("t_embedder.", "x_embedder.", "final_layer.", "cap_embedder.", "context_refiner.", "noise_refiner.")


def _jayn7_type(key, v):
    if v.ndim == 1 or v.numel() <= 1024:
        return "F32"
    if key.startswith(_KEEP_16BIT) or key.endswith("pad_token"):
        return "BF16"
    return "Q6_K" if v.shape[1] % 256 == 0 and key.endswith(("w2.weight", "attention.out.weight")) else "Q8_0"


def _leejet_type(base):
    def pick(key, v):
        if v.ndim < 2 or key.endswith("pad_token"):
            return "F32"
        return base if v.shape[1] % 32 == 0 else "F16"
    return pick


@pytest.mark.parametrize("layout,tol", [("jayn7", 0.04), ("leejet-Q8_0", 0.04), ("leejet-Q4_0", 0.25)])
def test_published_dit_gguf_layouts(dit, reference, tmp_path, layout, tol):
    from zimage_turbo.quant.tensor import QuantizedTensor
    path, sd, load = dit
    if layout == "jayn7":
        out = _gguf(sd, tmp_path / "z_image_turbo-Q6_K_mix.gguf", _jayn7_type)
        embed_type = "BF16"
    else:
        flat = {("model.diffusion_model." + k): (v.reshape(-1) if k.endswith("pad_token") else v) for k, v in sd.items()}
        qtype = layout.split("-")[1]
        tensors = {k: (v.float(), _leejet_type(qtype)(k[len("model.diffusion_model."):], v), tuple(v.shape))
                   for k, v in flat.items()}
        out = tmp_path / f"z_image_turbo-{qtype}.gguf"
        write_gguf(out, tensors, {})
        embed_type = qtype
    model = load(out)
    dm = model.model.diffusion_model
    assert tuple(dm.x_pad_token.shape) == (1, sd["x_pad_token"].numel())
    assert isinstance(dm.layers[0].attention.qkv.weight, QuantizedTensor)
    embed = dm.cap_embedder[1].weight
    assert (embed.quant_type.name if isinstance(embed, QuantizedTensor) else "BF16") == embed_type
    assert _rel(_sample(model), reference) < tol


@pytest.mark.parametrize("source,weight_dtype", [("safetensors", "default"), ("safetensors", "fp8_e4m3fn"),
                                                 ("Q8_0", "default")])
def test_model_state_dict_is_defined_where_the_file_has_no_tensor(dit, tmp_path, source, weight_dtype):
    """Hosts whose NextDiT builds an unused `norm_final` (0.3.x) left it uninitialised when the file (every
    Z-Image checkpoint) lacks it: random NaN in the model's state dict, which broke checks reading it."""
    from zimage_turbo.fixtures.lora_files import dequantized_state_dict
    from zimage_turbo.loaders.dit import UNUSED_MODEL_DEFAULTS
    path, sd, load = dit
    if source != "safetensors":
        path = tmp_path / f"dit-{source}.gguf"
        convert_to_gguf(dit[0], path, source)
    model_sd = dequantized_state_dict(load(path, weight_dtype))
    for key, value in model_sd.items():
        assert torch.isfinite(value).all(), f"{key} holds NaN/Inf"
    for key, fill in UNUSED_MODEL_DEFAULTS.items():
        assert key not in sd
        if key in model_sd:
            assert torch.equal(model_sd[key], torch.full_like(model_sd[key], fill)), key
