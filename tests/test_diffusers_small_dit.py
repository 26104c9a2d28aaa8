"""A Z-Image DiT made by diffusers' own `ZImageTransformer2DModel` below width 1024 loads in every format.

diffusers builds the timestep MLP 1024 wide whatever the width; ComfyUI's NextDiT builds min(dim, 1024). So
every small diffusers-made model (and every converter's output of one: city96's, llama.cpp's) has a timestep
embedder ComfyUI would not build. The loader builds what the file holds. Each file here is checked against
diffusers' forward on the same weights (fp32): the float files directly, the quantized ones against diffusers
run on that file's own dequantized weights (gguf-py's numpy dequantization). The ComfyUI layout is made with
ComfyUI's own diffusers key map (`comfy.utils.z_image_to_diffusers`), the GGUFs with gguf-py's writer.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zimage_turbo.fixtures.tiny_models import save_safetensors_atomic

DIM, HEADS, LAYERS, REFINERS, CAP = 384, 3, 2, 1, 32
TOKENS = 32  # image and caption tokens, multiples of 32: no padding anywhere in either model
MAX_ABS = 1e-4


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Trained-looking weights (diffusers zero-initialises some layers, which would hide mapping errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))


@pytest.fixture(scope="module")
def diffusers_dit():
    from diffusers import ZImageTransformer2DModel
    model = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=DIM,
                                     n_layers=LAYERS, n_refiner_layers=REFINERS, n_heads=HEADS, n_kv_heads=HEADS,
                                     cap_feat_dim=CAP, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512]).eval()
    _randomize(model, seed=384)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert tuple(sd["t_embedder.mlp.0.weight"].shape) == (1024, 256)  # the case: wider than ComfyUI's min(dim, 1024)
    return model, sd


def _comfy_layout(diffusers_sd: dict[str, torch.Tensor], comfy_host) -> dict[str, torch.Tensor]:
    """ComfyUI layout through ComfyUI's own key map (q/k/v written into their slices of the fused qkv)."""
    import comfy.utils
    key_map = comfy.utils.z_image_to_diffusers({"n_layers": LAYERS, "dim": DIM, "n_refiner_layers": REFINERS})
    out: dict[str, torch.Tensor] = {}
    for key, value in diffusers_sd.items():
        target = key_map[key]
        if isinstance(target, str):
            out[target] = value.clone()
            continue
        name, (dim, offset, size) = target
        fused = out.setdefault(name, torch.zeros((3 * DIM, *value.shape[1:]), dtype=value.dtype))
        fused.narrow(dim, offset, size).copy_(value)
    return out


def _forward_comfy(model, x, sigma, cap):
    with torch.no_grad():
        return model(x, sigma, cap, num_tokens=TOKENS)[0]


def _forward_diffusers(model, x, sigma, cap):
    with torch.no_grad():
        return -model([x[0].unsqueeze(1)], 1 - sigma, [cap[0]], return_dict=False)[0][0].squeeze(1)


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 16, 8, 16, generator=g), torch.tensor([0.7]), torch.randn(1, TOKENS, CAP, generator=g)


def _diffusers_on(diffusers_sd: dict[str, torch.Tensor]):
    from diffusers import ZImageTransformer2DModel
    model = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=DIM,
                                     n_layers=LAYERS, n_refiner_layers=REFINERS, n_heads=HEADS, n_kv_heads=HEADS,
                                     cap_feat_dim=CAP, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512]).eval()
    model.load_state_dict(diffusers_sd, strict=True)
    return model


def _loaded(path):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(path, "fp32").model.diffusion_model


@pytest.mark.parametrize("layout", ["diffusers", "comfyui"])
def test_float_safetensors_match_diffusers(comfy_host, diffusers_dit, tmp_path, layout):
    model, sd = diffusers_dit
    file_sd = sd if layout == "diffusers" else _comfy_layout(sd, comfy_host)
    path = save_safetensors_atomic(file_sd, tmp_path / f"zimage_small_{layout}.safetensors")
    ours = _loaded(path)
    assert ours.t_embedder.mlp[0].out_features == 1024
    x, sigma, cap = _inputs()
    diff = (_forward_comfy(ours, x, sigma, cap) - _forward_diffusers(model, x, sigma, cap)).abs().max()
    assert float(diff) <= MAX_ABS


# GGUF: city96's convention (ComfyUI names, architecture lumina2, 1-D and tiny tensors F32); Q8_0 on the main
# blocks' 2-D weights (llama.cpp's lumina2 rule: embedders and refiners are never quantized), BF16 elsewhere.
def _gguf_type(name: str, value: torch.Tensor, target: str):
    from gguf import GGMLQuantizationType as T
    if value.ndim == 1 or value.numel() <= 1024:
        return T.F32
    if target == "Q8_0" and name.startswith("layers.") and value.shape[-1] % 32 == 0:
        return T.Q8_0
    return T.BF16


def _gguf_bytes(value: torch.Tensor, qtype) -> np.ndarray:
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize
    array = value.float().numpy()
    if qtype == T.F32:
        return array
    return quantize(array, qtype)


def _write_city96_gguf(path, comfy_sd: dict[str, torch.Tensor], target: str, pad_1d: bool) -> dict[str, torch.Tensor]:
    """Write the GGUF with gguf-py; return what each tensor dequantizes to (gguf-py), in ComfyUI names."""
    from gguf import GGUFWriter
    from gguf.quants import dequantize
    writer = GGUFWriter(str(path), "lumina2")
    writer.add_file_type(8 if target == "Q8_0" else 32)
    restored: dict[str, torch.Tensor] = {}
    for name, value in comfy_sd.items():
        if pad_1d and name.endswith("pad_token"):
            value = value.reshape(-1)
        qtype = _gguf_type(name, value, target)
        data = _gguf_bytes(value, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
        restored[name] = torch.from_numpy(np.ascontiguousarray(dequantize(data, qtype))).reshape(value.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return restored


def _diffusers_from_comfy(restored: dict[str, torch.Tensor], diffusers_sd: dict[str, torch.Tensor],
                          comfy_host) -> dict[str, torch.Tensor]:
    """The dequantized ComfyUI-layout weights back in diffusers' names (slices of the fused qkv)."""
    import comfy.utils
    key_map = comfy.utils.z_image_to_diffusers({"n_layers": LAYERS, "dim": DIM, "n_refiner_layers": REFINERS})
    out = {}
    for key, like in diffusers_sd.items():
        target = key_map[key]
        if isinstance(target, str):
            out[key] = restored[target].reshape(like.shape).float()
        else:
            name, (dim, offset, size) = target
            out[key] = restored[name].narrow(dim, offset, size).float().contiguous()
    return out


@pytest.mark.parametrize("target", ["BF16", "Q8_0"])
@pytest.mark.parametrize("pad_1d", [False, True], ids=["pad2d", "pad1d"])
def test_gguf_matches_diffusers_on_its_dequantized_weights(comfy_host, diffusers_dit, tmp_path, target, pad_1d):
    _, sd = diffusers_dit
    path = tmp_path / f"zimage_small-{target}.gguf"
    restored = _write_city96_gguf(path, _comfy_layout(sd, comfy_host), target, pad_1d)
    reference = _diffusers_on(_diffusers_from_comfy(restored, sd, comfy_host))
    ours = _loaded(path)
    assert ours.t_embedder.mlp[0].out_features == 1024
    assert tuple(ours.x_pad_token.shape) == (1, DIM)
    x, sigma, cap = _inputs()
    diff = (_forward_comfy(ours, x, sigma, cap) - _forward_diffusers(reference, x, sigma, cap)).abs().max()
    assert float(diff) <= MAX_ABS
    if target == "Q8_0":  # the blocks stayed quantized in the model
        weight = ours.layers[0].attention.qkv.weight
        assert getattr(weight, "quant_type", None) is not None, type(weight)
