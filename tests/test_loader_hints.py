"""Every kind of file the detector knows, given to a loader that refuses it, gets a hint naming what to do: the
pack loader it belongs to (diffusers-layout and damaged files included), that it looks damaged, or what to use
instead; never the generic "put X in models/Y" when the file was recognised."""
from __future__ import annotations

import pytest
import torch

from zimage_turbo.fixtures.shapes import TINY_DIT, TINY_QWEN3, TINY_VAE, dit_state_dict_shapes, \
    qwen3_state_dict_shapes, vae_state_dict_shapes
from zimage_turbo.fixtures.tiny_models import dit_to_diffusers_layout, save_safetensors_atomic
from zimage_turbo.loaders.detect import FOREIGN_HINTS, KIND_ROLES, KINDS, PACK_LOADERS

DIT_LOADER, TE_LOADER, VAE_LOADER = "Z-Image Diffusion Model Loader", "Z-Image Text Encoder Loader", \
    "Z-Image VAE Loader"


def _zeros(shapes: dict) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}


def _damaged(sd: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    """One tensor of another shape, as a botched merge or conversion leaves it."""
    bad = dict(sd)
    bad[key] = torch.zeros(tuple(d + 1 for d in sd[key].shape), dtype=sd[key].dtype)
    return bad


FILES = {
    "dit_diffusers": lambda: dit_to_diffusers_layout(_zeros(dit_state_dict_shapes(TINY_DIT))),
    "dit_damaged": lambda: _damaged(_zeros(dit_state_dict_shapes(TINY_DIT)), "layers.0.attention.out.weight"),
    "te_damaged": lambda: _damaged(_zeros(qwen3_state_dict_shapes(TINY_QWEN3)), "model.layers.1.mlp.up_proj.weight"),
    "vae_damaged": lambda: _damaged(_zeros(vae_state_dict_shapes(TINY_VAE)), "decoder.conv_out.weight"),
    "flux_dit": lambda: _zeros({"double_blocks.0.img_attn.qkv.weight": (96, 32)}),
    "t5": lambda: _zeros({"encoder.block.0.layer.0.SelfAttention.q.weight": (32, 32)}),
    "sd_vae": lambda: _zeros({"decoder.conv_in.weight": (64, 4, 3, 3)}),
}

# (loader, file, words the hint must hold)
CASES = [
    ("text_encoder", "dit_diffusers", DIT_LOADER), ("vae", "dit_diffusers", DIT_LOADER),
    ("text_encoder", "dit_damaged", DIT_LOADER), ("text_encoder", "dit_damaged", "damaged"),
    ("vae", "dit_damaged", DIT_LOADER), ("dit", "dit_damaged", "damaged or incomplete"),
    ("dit", "te_damaged", TE_LOADER), ("vae", "te_damaged", TE_LOADER), ("text_encoder", "te_damaged", "damaged"),
    ("dit", "vae_damaged", VAE_LOADER), ("text_encoder", "vae_damaged", VAE_LOADER),
    ("dit", "flux_dit", "Load Diffusion Model"), ("text_encoder", "t5", "Qwen3-4B"), ("vae", "sd_vae", "Flux VAE"),
]


def _loader(name: str):
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    from zimage_turbo.loaders.vae import load_flux_vae
    return {"dit": load_zimage_dit, "text_encoder": load_qwen3_text_encoder, "vae": load_flux_vae}[name]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hint_files")
    return {name: save_safetensors_atomic(build(), folder / f"{name}.safetensors") for name, build in FILES.items()}


@pytest.mark.parametrize("loader,file,words", CASES)
def test_refused_file_names_where_it_belongs(comfy_host, written, loader, file, words):
    from zimage_turbo.loaders.errors import ModelFileError
    with pytest.raises(ModelFileError) as info:
        _loader(loader)(written[file])
    assert str(info.value).startswith(f"{file}.safetensors: expected ")
    assert words in info.value.hint, str(info.value)


def test_dit_gguf_without_architecture_given_to_the_text_encoder_loader(comfy_host, tmp_path):
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    from zimage_turbo.quant.gguf_writer import write_gguf
    path = tmp_path / "z_image_turbo-Q8_0.gguf"
    write_gguf(path, {k: (torch.zeros(s), "F16") for k, s in dit_state_dict_shapes(TINY_DIT).items()}, {})
    with pytest.raises(ModelFileError) as info:
        load_qwen3_text_encoder(path)
    assert DIT_LOADER in info.value.hint


def test_every_known_kind_has_a_hint():
    """A kind added to the detector must say which loader takes it or what to use instead."""
    missing = [k.name for k in KINDS if k.name not in KIND_ROLES and k.name not in FOREIGN_HINTS]
    assert missing == []
    assert set(KIND_ROLES.values()) <= set(PACK_LOADERS)
