"""The real ComfyUI server with the pack: node registration, the shipped workflow end to end, bad files."""
from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image

from zimage_turbo.fixtures.tiny_models import TINY_FILE_NAMES
from zimage_turbo.fixtures.workflow_files import shipped_graphs as _load
from zimage_turbo.headless.server import history_error, output_images
from zimage_turbo.headless.workflow import set_inputs, substitute_models, ui_to_api

pytestmark = pytest.mark.server
PACK_NODES = {
    "ZImageTextEncoderLoader": ("Z-Image Text Encoder Loader", ["CLIP"]),
    "ZImageDiffusionModelLoader": ("Z-Image Diffusion Model Loader", ["MODEL"]),
    "ZImageVAELoader": ("Z-Image VAE Loader", ["VAE"]),
    "ZImageTurboSampler": ("Z-Image Turbo Sampler", ["LATENT", "STRING"]),
    "ZImageLatent": ("Z-Image Latent (size presets)", ["LATENT", "INT", "INT"]),
    "ZImageSaveImage": ("Z-Image Save Image (with parameters)", []),
}


def _tiny_prompt(api: dict, seed: int, prefix: str, size: int = 64) -> dict:
    prompt = substitute_models(api, TINY_FILE_NAMES)
    set_inputs(prompt, "ZImageTurboSampler", {"seed": seed, "width": size, "height": size, "steps": 2})
    set_inputs(prompt, "SaveImage", {"filename_prefix": prefix})
    return prompt


def _png(server, entry) -> tuple[Image.Image, bytes]:
    images = output_images(entry)
    assert len(images) == 1
    path = server.base_dir / "output" / images[0]["subfolder"] / images[0]["filename"]
    assert path.exists()
    data = path.read_bytes()
    return Image.open(io.BytesIO(data)), data


def test_nodes_registered_with_names_categories_tooltips(server):
    info = server.object_info()
    for node, (display, output) in PACK_NODES.items():
        assert node in info, f"{node} missing from /object_info"
        entry = info[node]
        assert entry["display_name"] == display
        assert entry["category"].startswith("Z-Image Turbo/")
        assert entry["output"] == output
        assert entry["description"]
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"


def test_api_twin_is_the_ui_graph_converted(server):
    ui, api = _load("basic")
    assert ui_to_api(ui, server.object_info()) == api


def test_shipped_workflow_makes_png_with_embedded_graph_deterministically(server):
    ui, api = _load("basic")
    results = {}
    for label, seed in (("a1", 5), ("b", 6), ("a2", 5)):
        prompt = _tiny_prompt(api, seed, f"zit_{label}")
        entry = server.run(prompt, workflow=ui, timeout=300)
        assert history_error(entry) is None
        image, _ = _png(server, entry)
        assert image.size == (64, 64)
        assert json.loads(image.text["prompt"]) == prompt
        assert json.loads(image.text["workflow"]) == ui
        results[label] = image.convert("RGB").tobytes()
    assert results["a1"] == results["a2"], "same seed gave a different image"
    assert results["a1"] != results["b"], "another seed gave the same image"


@pytest.mark.parametrize("folder,kind", [
    ("diffusion_models", "vae_as_dit"), ("diffusion_models", "truncated"), ("text_encoders", "empty"),
    ("vae", "pickle"), ("text_encoders", "dit_as_te"),
])
def test_bad_file_fails_the_prompt_clearly_and_server_goes_on(server, tiny_models_dir, folder, kind):
    _, api = _load("basic")
    name = f"bad_{kind}.safetensors"
    target = server.base_dir / "models" / folder / name
    source = {"vae_as_dit": "vae", "dit_as_te": "diffusion_models"}
    if kind in source:
        shutil.copy(tiny_models_dir / source[kind] / TINY_FILE_NAMES[source[kind]], target)
    elif kind == "truncated":
        target.write_bytes((tiny_models_dir / folder / TINY_FILE_NAMES[folder]).read_bytes()[:4096])
    elif kind == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes(b"\x80\x04\x95" + b"\0" * 32)
    bad = substitute_models(_tiny_prompt(api, 1, "zit_bad"), {folder: name})
    entry = server.run(bad, timeout=300)
    error = history_error(entry)
    assert error is not None and name in error and "expected" in error
    good = server.run(_tiny_prompt(api, 2, "zit_after_bad"), timeout=300)
    assert history_error(good) is None and output_images(good)


def _with_save_node(prompt: dict, prefix: str) -> dict:
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["class_type"] = "ZImageSaveImage"
            node["inputs"] = {"images": node["inputs"]["images"], "filename_prefix": prefix, "parameters": True}
    return prompt


def test_save_node_writes_a1111_parameters_and_never_overwrites(server, tiny_models_dir):
    import hashlib
    from zimage_turbo.saving.a1111 import parse_parameters
    ui, api = _load("basic")
    prompt = _with_save_node(_tiny_prompt(api, 21, "unused"), "zit_params")
    set_inputs(prompt, "ZImageTurboSampler", {"batch_size": 2})
    taken = server.base_dir / "output" / "zit_params_00002_.png"
    taken.write_bytes(b"someone else's file")
    entry = server.run(prompt, workflow=ui, timeout=300)
    assert history_error(entry) is None
    names = [img["filename"] for img in output_images(entry)]
    assert len(set(names)) == 2 and taken.name not in names
    assert taken.read_bytes() == b"someone else's file"
    dit = tiny_models_dir / "diffusion_models" / TINY_FILE_NAMES["diffusion_models"]
    model_hash = hashlib.sha256(dit.read_bytes()).hexdigest()[:10]
    prompt_text = prompt["4"]["inputs"]["text"]
    for i, name in enumerate(names):
        image = Image.open(server.base_dir / "output" / name)
        params = parse_parameters(image.text["parameters"])
        assert params.positive == prompt_text and params.negative == ""
        assert params.settings["Seed"] == str(21 + i)
        assert params.settings["Steps"] == "2" and params.settings["Size"] == "64x64"
        assert params.settings["Sampler"] == "Euler" and params.settings["CFG scale"] == "1.0"
        assert params.settings["Model hash"] == model_hash
        assert params.settings["Model"] == TINY_FILE_NAMES["diffusion_models"].rsplit(".", 1)[0]
        assert json.loads(image.text["workflow"]) == ui


@pytest.mark.parametrize("cfg,should_fail", [(1.0, False), (2.0, True)])
def test_negative_prompt_is_not_evaluated_at_cfg_1(server, cfg, should_fail):
    """The negative branch hangs off a broken text encoder: it must only be touched when cfg > 1."""
    _, api = _load("basic")
    bad = server.base_dir / "models" / "text_encoders" / "bad_negative_te.safetensors"
    bad.write_bytes(b"")
    prompt = _tiny_prompt(api, 3, f"zit_neg_{cfg}")
    prompt["90"] = {"class_type": "ZImageTextEncoderLoader", "inputs": {"text_encoder_name": bad.name}}
    prompt["91"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["90", 0]}}
    sampler = next(n for n in prompt.values() if n["class_type"] == "ZImageTurboSampler")
    sampler["inputs"].update({"negative": ["91", 0], "cfg": cfg})
    error = history_error(server.run(prompt, timeout=300))
    if should_fail:
        assert error is not None and bad.name in error
    else:
        assert error is None
