"""Wrong, truncated, empty and pickled files give a ModelFileError naming the file, expectation and finding."""
from __future__ import annotations

import pickle
import shutil
import zipfile

import pytest

LOADERS = {
    "diffusion_models": ("zimage_turbo.loaders.dit", "load_zimage_dit", "Z-Image DiT"),
    "text_encoders": ("zimage_turbo.loaders.text_encoder", "load_qwen3_text_encoder", "Qwen3 text encoder"),
    "vae": ("zimage_turbo.loaders.vae", "load_flux_vae", "Flux VAE"),
}
WRONG_KIND = {"diffusion_models": ("vae", "Flux VAE"), "text_encoders": ("diffusion_models", "Z-Image DiT"),
              "vae": ("text_encoders", "Qwen3 text encoder")}


def _loader(folder):
    import importlib
    module, name, expected = LOADERS[folder]
    return getattr(importlib.import_module(module), name), expected


def _make_bad(kind: str, tmp_path, tiny_paths, folder):
    path = tmp_path / f"bad_{kind}.safetensors"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated_header":
        path.write_bytes(tiny_paths[folder].read_bytes()[:1000])
    elif kind == "truncated_data":
        data = tiny_paths[folder].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}}))
    elif kind == "torch_zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({}))
    elif kind == "garbage":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 64)
    elif kind == "wrong_model":
        shutil.copy(tiny_paths[WRONG_KIND[folder][0]], path)
    return path


FOUND = {"empty": "empty file", "truncated_header": "header length", "truncated_data": "outside the",
         "pickle": "pickle", "torch_zip": "pickle checkpoint", "garbage": "unreadable header"}


@pytest.mark.parametrize("folder", list(LOADERS))
@pytest.mark.parametrize("kind", ["empty", "truncated_header", "truncated_data", "pickle", "torch_zip", "garbage",
                                  "wrong_model"])
def test_bad_file_gives_clear_error(comfy_host, tiny_paths, tmp_path, folder, kind):
    from zimage_turbo.loaders.errors import ModelFileError
    load, expected = _loader(folder)
    path = _make_bad(kind, tmp_path, tiny_paths, folder)
    with pytest.raises(ModelFileError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(path.name + ": expected ")
    assert expected in message
    assert (WRONG_KIND[folder][1] if kind == "wrong_model" else FOUND[kind]) in message
