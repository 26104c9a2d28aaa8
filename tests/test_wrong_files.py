"""The wrong-file matrix, beyond tests/test_bad_files.py: truncation at several points, other architectures given
to each loader (Flux DiT, SDXL UNet, Lumina 2, LLaMA/Qwen2/T5/CLIP encoders, SD VAE; GGUF of LLaMA/Qwen2/Qwen3 and
DiT GGUF to the text encoder), a pickle renamed .safetensors, an encoder whose width does not fit the DiT, and the
no-pickle/no-eval rule. Every case gives a message naming the file, what was expected, what was found and a hint.
"""
from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zimage_turbo.loaders.errors import ModelFileError
from zimage_turbo.quant.gguf_writer import write_gguf

LOADERS = {
    "dit": ("zimage_turbo.loaders.dit", "load_zimage_dit", "Z-Image DiT", "diffusion_models"),
    "text_encoder": ("zimage_turbo.loaders.text_encoder", "load_qwen3_text_encoder", "Qwen3", "text_encoders"),
    "vae": ("zimage_turbo.loaders.vae", "load_flux_vae", "Flux VAE", "vae"),
}


def _load(loader: str):
    module, name, expected, _ = LOADERS[loader]
    return getattr(importlib.import_module(module), name), expected


def _assert_clear(exc: ModelFileError, path: Path, expected: str, found: str) -> str:
    message = str(exc)
    assert message.startswith(path.name + ": expected "), message
    assert expected in exc.expected, message
    assert re.search(found, exc.found), f"found {exc.found!r}, wanted /{found}/"
    assert exc.hint, f"no hint in {message!r}"
    return message


def _tiny(shape):
    return torch.zeros(shape, dtype=torch.float16)


# Key sets of other model families (tiny tensors: detection reads names and shapes, never the values).
FOREIGN_SAFETENSORS = {
    "flux_dit": ({f"double_blocks.{i}.img_attn.qkv.weight": (24, 8) for i in range(4)}
                 | {f"single_blocks.{i}.linear1.weight": (8, 8) for i in range(4)}, "Flux DiT"),
    "sdxl_unet": ({f"model.diffusion_model.input_blocks.{i}.0.weight": (8, 4, 3, 3) for i in range(8)}
                  | {"model.diffusion_model.out.2.weight": (4, 8, 3, 3)}, "SDXL UNet"),
    "sdxl_checkpoint": ({f"model.diffusion_model.input_blocks.{i}.0.weight": (8, 4, 3, 3) for i in range(9)}
                        | {"first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
                           "conditioner.embedders.0.transformer.text_model.embeddings.position_ids": (1, 77)},
                        "SDXL UNet"),
    "lumina2_dit": ({"cap_embedder.1.weight": (8, 8), "layers.0.adaLN_modulation.1.weight": (8, 8),
                     "layers.0.attention.qkv.weight": (24, 8)}, "Lumina 2"),
    "llama_te": ({f"model.layers.{i}.self_attn.q_proj.weight": (8, 8) for i in range(3)}
                 | {"model.embed_tokens.weight": (16, 8)}, "LLaMA/Qwen2"),
    "t5_te": ({"encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8), "shared.weight": (16, 8)}, "T5"),
    "clip_te": ({"text_model.encoder.layers.0.self_attn.q_proj.weight": (8, 8)}, "CLIP"),
    "sd_vae": ({"decoder.conv_in.weight": (8, 4, 3, 3), "encoder.conv_in.weight": (8, 3, 3, 3)}, "SD1.x/SDXL VAE"),
    "unknown": ({"foo.weight": (2, 2), "bar.bias": (2,)}, "unrecognised model"),
}


@pytest.fixture(scope="module")
def foreign_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("foreign")
    out = {}
    for name, (shapes, _) in FOREIGN_SAFETENSORS.items():
        path = folder / f"{name}.safetensors"
        save_file({k: _tiny(s) for k, s in shapes.items()}, str(path))
        out[name] = path
    return out


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("foreign", list(FOREIGN_SAFETENSORS))
def test_other_architectures_are_named(comfy_host, foreign_files, loader, foreign):
    load, expected = _load(loader)
    path = foreign_files[foreign]
    with pytest.raises(ModelFileError) as info:
        load(path)
    _assert_clear(info.value, path, expected, re.escape(FOREIGN_SAFETENSORS[foreign][1]))


# The tiny real-layout files given to the wrong loader, both ways (VAE as DiT and DiT as VAE, …).
SWAPS = [("dit", "vae", "Flux VAE"), ("vae", "diffusion_models", "Z-Image DiT"), ("dit", "text_encoders", "Qwen3"),
         ("text_encoder", "vae", "Flux VAE"), ("vae", "text_encoders", "Qwen3")]


@pytest.mark.parametrize("loader,given,found", SWAPS)
def test_real_layout_files_swapped(comfy_host, tiny_paths, loader, given, found):
    load, expected = _load(loader)
    with pytest.raises(ModelFileError) as info:
        load(tiny_paths[given])
    message = _assert_clear(info.value, tiny_paths[given], expected, re.escape(found))
    assert "loader" in info.value.hint or "models/" in info.value.hint, message


def _cut_points(size: int, header_len: int) -> dict[str, int]:
    return {"4_bytes": 4, "7_bytes": 7, "length_only": 8, "mid_header": 8 + header_len // 2,
            "header_end": 8 + header_len - 1, "first_data_byte": 8 + header_len + 1, "mid_data": size // 2,
            "last_byte_missing": size - 1}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_truncated_at_several_points(comfy_host, tiny_paths, tmp_path, loader):
    import struct
    load, expected = _load(loader)
    source = tiny_paths[LOADERS[loader][3]]
    size = source.stat().st_size
    with open(source, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    for label, cut in _cut_points(size, header_len).items():
        path = tmp_path / f"cut_{label}.safetensors"
        with open(source, "rb") as src, open(path, "wb") as dst:
            remaining = cut
            while remaining:
                chunk = src.read(min(remaining, 64 << 20))
                dst.write(chunk)
                remaining -= len(chunk)
        with pytest.raises(ModelFileError) as info:
            load(path)
        _assert_clear(info.value, path, expected, r"too short|header length|outside the|bytes")
        assert "truncated" in info.value.hint or "re-download" in info.value.hint.lower(), str(info.value)
        path.unlink()


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("kind", ["ckpt", "pt_zip", "pickle_protocol_2"])
def test_pickle_renamed_safetensors_is_never_unpickled(comfy_host, tmp_path, monkeypatch, loader, kind):
    """A .ckpt/.pt renamed .safetensors: refused by its first bytes; the unpickler is never reached."""
    import zipfile
    load, expected = _load(loader)
    path = tmp_path / "model.safetensors"
    if kind == "pt_zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
            z.writestr("archive/version", "3")
    else:
        path.write_bytes(pickle.dumps({"state_dict": {"w": [1.0] * 64}}, protocol=4 if kind == "ckpt" else 2))

    def forbidden(*args, **kwargs):
        raise AssertionError("an unpickler was called")
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(ModelFileError) as info:
        load(path)
    _assert_clear(info.value, path, expected, "pickle")
    assert "pickle" in info.value.hint


# ------------------------------------------------------------------------------------------------ GGUF
def _gguf(path: Path, arch: str | None, tensors: dict, extra: dict | None = None) -> Path:
    meta = {"general.architecture": arch} if arch else {}
    meta.update(extra or {})
    write_gguf(path, tensors, meta)
    return path


def _llama_like_gguf(path: Path, arch: str, with_qk_norm: bool = False) -> Path:
    h, hd = 256, 128
    tensors = {"token_embd.weight": (torch.randn(64, h), "F16"), "output_norm.weight": (torch.ones(h), "F32")}
    for i in range(3):
        tensors.update({f"blk.{i}.attn_q.weight": (torch.randn(2 * hd, h), "Q8_0"),
                        f"blk.{i}.attn_k.weight": (torch.randn(hd, h), "Q8_0"),
                        f"blk.{i}.attn_v.weight": (torch.randn(hd, h), "Q8_0"),
                        f"blk.{i}.attn_output.weight": (torch.randn(h, 2 * hd), "Q8_0"),
                        f"blk.{i}.ffn_gate.weight": (torch.randn(512, h), "Q8_0"),
                        f"blk.{i}.ffn_up.weight": (torch.randn(512, h), "Q8_0"),
                        f"blk.{i}.ffn_down.weight": (torch.randn(h, 512), "Q8_0"),
                        f"blk.{i}.attn_norm.weight": (torch.ones(h), "F32"),
                        f"blk.{i}.ffn_norm.weight": (torch.ones(h), "F32")})
        if with_qk_norm:
            tensors[f"blk.{i}.attn_q_norm.weight"] = (torch.ones(hd), "F32")
            tensors[f"blk.{i}.attn_k_norm.weight"] = (torch.ones(hd), "F32")
    meta = {f"{arch}.embedding_length": ("u32", h), f"{arch}.block_count": ("u32", 3),
            f"{arch}.attention.head_count": ("u32", 2), f"{arch}.attention.head_count_kv": ("u32", 1)}
    return _gguf(path, arch, tensors, meta)


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory, tiny_paths) -> dict[str, Path]:
    from zimage_turbo.quant.convert import convert_to_gguf
    folder = tmp_path_factory.mktemp("gguf_wrong")
    files = {"llama": _llama_like_gguf(folder / "llama.gguf", "llama"),
             "qwen2": _llama_like_gguf(folder / "qwen2.gguf", "qwen2"),
             "qwen2vl": _llama_like_gguf(folder / "qwen2vl.gguf", "qwen2vl"),
             "qwen3": _llama_like_gguf(folder / "qwen3.gguf", "qwen3", with_qk_norm=True)}
    convert_to_gguf(tiny_paths["diffusion_models"], folder / "dit.gguf", "Q8_0")
    files["dit"] = folder / "dit.gguf"
    files["flux"] = _gguf(folder / "flux.gguf", "flux", {f"double_blocks.{i}.img_attn.qkv.weight":
                                                        (torch.randn(96, 32), "Q8_0") for i in range(8)})
    return files


GGUF_MATRIX = [
    # (loader, file, what the message must say was found)
    ("dit", "llama", r"architecture 'llama'"),
    ("dit", "qwen2", r"architecture 'qwen2'"),
    ("dit", "qwen2vl", r"architecture 'qwen2vl'"),
    ("dit", "qwen3", r"architecture 'qwen3'"),
    ("dit", "flux", r"architecture 'flux'"),
    ("text_encoder", "llama", r"architecture 'llama'"),
    ("text_encoder", "qwen2", r"architecture 'qwen2'"),
    ("text_encoder", "qwen2vl", r"architecture 'qwen2vl'"),
    ("text_encoder", "dit", r"architecture 'lumina2'|Z-Image DiT"),
    ("text_encoder", "flux", r"architecture 'flux'"),
    ("vae", "dit", r"GGUF"),
    ("vae", "qwen3", r"GGUF"),
]


@pytest.mark.parametrize("loader,name,found", GGUF_MATRIX)
def test_wrong_gguf_for_each_loader(comfy_host, gguf_files, loader, name, found):
    """GGUF loading of text encoders is recognised by content; a GGUF of another model is named by architecture."""
    load, expected = _load(loader)
    path = gguf_files[name]
    with pytest.raises(ModelFileError) as info:
        load(path)
    _assert_clear(info.value, path, "" if loader == "text_encoder" else expected, found)


@pytest.mark.parametrize("loader", ["dit", "text_encoder"])
@pytest.mark.parametrize("cut", [30, 200, 0.5, -1])
def test_truncated_gguf(comfy_host, gguf_files, tmp_path, loader, cut):
    load, _ = _load(loader)
    source = gguf_files["dit" if loader == "dit" else "qwen3"].read_bytes()
    n = int(len(source) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(source) + cut)
    path = tmp_path / "cut.gguf"
    path.write_bytes(source[:n])
    with pytest.raises(ModelFileError) as info:
        load(path)
    _assert_clear(info.value, path, "", r"damaged GGUF|GGUF")


# ------------------------------------------------------------------------------------------------ sizes
@pytest.fixture(scope="module")
def wide_encoder_run(comfy_host, tiny_paths, tmp_path_factory):
    """Conditioning from a Qwen3 encoder 384 wide, and the tiny DiT that takes 256-wide caption features."""
    import dataclasses
    from zimage_turbo.fixtures.shapes import TINY_QWEN3
    from zimage_turbo.fixtures.tiny_models import build_qwen3_state_dict
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    wide = dataclasses.replace(TINY_QWEN3, hidden_size=384, vocab_size=151936)
    path = tmp_path_factory.mktemp("wide") / "qwen3_wide.safetensors"
    save_file(build_qwen3_state_dict(wide), str(path))
    clip = load_qwen3_text_encoder(path)
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a fox"))
    return load_zimage_dit(tiny_paths["diffusion_models"]), cond


def _assert_names_both_widths(message: str) -> None:
    assert "384" in message and "256" in message, message
    assert "text encoder" in message.lower(), message


def test_encoder_width_that_does_not_fit_the_dit_fails_clearly(wide_encoder_run):
    """The pack's sampler refuses before sampling, naming both sizes."""
    from zimage_turbo.sampling.guards import ConditioningMismatchError
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    model, cond = wide_encoder_run
    with pytest.raises(ConditioningMismatchError) as info:
        turbo_sample(model, cond, empty_latent(64, 64), seed=1, steps=1)
    _assert_names_both_widths(str(info.value))


def test_encoder_width_mismatch_is_clear_through_core_ksampler(wide_encoder_run):
    """Core KSampler (comfy.sample.sample) on the pack's MODEL: the model's guard names both sizes too."""
    import comfy.sample
    from zimage_turbo.sampling.guards import ConditioningMismatchError
    model, cond = wide_encoder_run
    latent = torch.zeros(1, 16, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 1)
    with pytest.raises(ConditioningMismatchError) as info:
        comfy.sample.sample(model.clone(), noise, 1, 1.0, "euler", "simple", cond, [], latent, disable_pbar=True)
    _assert_names_both_widths(str(info.value))


# ------------------------------------------------------------------------------------------------ no pickle, no eval
DANGEROUS = [
    (r"\bpickle\.(load|loads|Unpickler)\b", "pickle"), (r"\bimport pickle\b|\bfrom pickle\b", "pickle import"),
    (r"\bcPickle\b|\bdill\b|\bjoblib\.load\b|\bshelve\b|\bmarshal\.loads?\b", "other unpicklers"),
    (r"\bload_torch_file\(", "ComfyUI's torch.load wrapper"), (r"allow_pickle\s*=\s*True", "numpy pickle"),
    (r"(?<![\w.])eval\(|(?<![\w.])exec\(|\b__import__\(", "eval/exec"), (r"yaml\.load\((?![^)]*SafeLoader)", "yaml.load"),
]


def test_no_pickle_or_eval_anywhere_in_the_package():
    """Beyond test_bad_files' grep: every unpickler, eval/exec, and torch.load only with weights_only=True."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in parts) or parts[0] == "tests":
            continue
        text = path.read_text()
        for pattern, what in DANGEROUS:
            for match in re.finditer(pattern, text):
                line = text.count("\n", 0, match.start()) + 1
                offenders.append(f"{path.relative_to(root)}:{line}: {what}")
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{path.relative_to(root)}: torch.load without weights_only=True")
    assert not offenders, "\n".join(offenders)
