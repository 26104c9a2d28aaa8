"""Z-Image Fun ControlNet patches: the pack's loader (safetensors, fp8, GGUF) against core's ModelPatchLoader.

Tiny patches in the published key layout (1.0: 6 control layers, 2.1: 15 with refiner control and inpaint
channels) for a 6-layer tiny DiT, applied with core's own `ZImageFunControlnet` and sampled with the same seed.
The reference is core's `ModelPatchLoader` on the same file; core builds `ZImage_Control` with the 6B DiT's
sizes (3840 wide, 30 heads), so for the reference only its constructor gets the tiny sizes.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from zimage_turbo.fixtures.shapes import TINY_DIT
from zimage_turbo.fixtures.tiny_controlnet import build_controlnet_state_dict, write_tiny_controlnet
from zimage_turbo.fixtures.tiny_models import build_dit_state_dict, save_safetensors_atomic

CONTROL_DIT = dataclasses.replace(TINY_DIT, n_layers=6)  # 15 control layers at 30/15 = every 2nd block: 0, 2, 4
SIZE = 64


def _has_controlnet_host() -> bool:
    try:
        import comfy.ldm.lumina.controlnet  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def cn(comfy_host, tmp_path_factory):
    """The modules and tiny files the tests share (skipped, with the reason, on hosts without the ControlNet)."""
    if not _has_controlnet_host():
        print(f"ComfyUI {comfy_host['version']} has no Z-Image Fun ControlNet (comfy/ldm/lumina/controlnet.py): "
              "skipping the ControlNet comparisons on this host")
        pytest.skip(f"ComfyUI {comfy_host['version']} has no Z-Image Fun ControlNet")
    import comfy_extras.nodes_model_patch as core_patch
    folder = tmp_path_factory.mktemp("controlnet")
    dit_path = save_safetensors_atomic(build_dit_state_dict(CONTROL_DIT), folder / "dit6.safetensors")
    patches = {v: write_tiny_controlnet(folder / f"cn-{v}.safetensors", v, CONTROL_DIT) for v in ("1.0", "2.0", "2.1")}
    return {"core": core_patch, "folder": folder, "dit_path": dit_path, "patches": patches}


@pytest.fixture(scope="module")
def dit(cn):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(cn["dit_path"])


@pytest.fixture(scope="module")
def vae(cn, tiny_paths):
    from zimage_turbo.loaders.vae import load_flux_vae
    return load_flux_vae(tiny_paths["vae"])


def core_model_patch(cn, path):
    """Core's ModelPatchLoader on `path`, with ZImage_Control built at the tiny DiT's sizes."""
    import comfy.ldm.lumina.controlnet as controlnet
    import folder_paths
    original = controlnet.ZImage_Control
    heads = CONTROL_DIT.dim // CONTROL_DIT.head_dim

    class TinyZImageControl(original):
        def __init__(self, **kwargs):
            super().__init__(dim=CONTROL_DIT.dim, n_heads=heads, n_kv_heads=heads, **kwargs)

    folder_paths.add_model_folder_path("model_patches", str(path.parent))
    controlnet.ZImage_Control = TinyZImageControl
    try:
        return cn["core"].ModelPatchLoader().load_model_patch(path.name)[0]
    finally:
        controlnet.ZImage_Control = original


def _image(seed: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(1, SIZE, SIZE, channels, generator=torch.Generator().manual_seed(seed))


def _mask() -> torch.Tensor:
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 16:48, 8:40] = 1.0
    return mask


def sample(cn, model, patch=None, vae=None, strength=1.0, steps=2, **images):
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    if patch is not None:
        model = cn["core"].ZImageFunControlnet().diffsynth_controlnet(model, patch, vae, strength=strength,
                                                                       **images)[0]
    cond = [[torch.randn(1, 12, CONTROL_DIT.cap_feat_dim, generator=torch.Generator().manual_seed(3)), {}]]
    return turbo_sample(model, cond, empty_latent(SIZE, SIZE), seed=5, steps=steps)["samples"]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("version", ["1.0", "2.0", "2.1"])
def test_config_read_from_the_weights_as_core_does(cn, version):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    ours, core = load_zimage_controlnet(cn["patches"][version]).model, core_model_patch(cn, cn["patches"][version]).model
    for attr in ("n_control_layers", "additional_in_dim", "refiner_control", "broken", "control_in_dim"):
        assert getattr(ours, attr) == getattr(core, attr), attr
    assert ours.broken == (version == "2.0")
    assert set(ours.state_dict()) == set(core.state_dict())


@pytest.mark.parametrize("version", ["1.0", "2.1"])
def test_bf16_patch_equals_core_model_patch_loader(cn, dit, vae, version):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    path = cn["patches"][version]
    image = _image(11)
    ours = sample(cn, dit, load_zimage_controlnet(path), vae, image=image)
    core = sample(cn, dit, core_model_patch(cn, path), vae, image=image)
    plain = sample(cn, dit)
    assert torch.equal(ours, core) or _rel(ours, core) <= 1e-5
    assert _rel(ours, plain) > 1e-3, "the ControlNet changed nothing"


def test_inpaint_with_mask_equals_core(cn, dit, vae):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    path = cn["patches"]["2.1"]
    images = {"image": _image(11), "inpaint_image": _image(12), "mask": _mask()}
    ours = sample(cn, dit, load_zimage_controlnet(path), vae, **images)
    core = sample(cn, dit, core_model_patch(cn, path), vae, **images)
    assert torch.equal(ours, core) or _rel(ours, core) <= 1e-5
    unmasked = sample(cn, dit, load_zimage_controlnet(path), vae, image=images["image"],
                      inpaint_image=images["inpaint_image"])
    assert _rel(ours, unmasked) > 1e-4, "the mask changed nothing"


def test_strength_zero_equals_no_controlnet(cn, dit, vae):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    ours = sample(cn, dit, load_zimage_controlnet(cn["patches"]["2.1"]), vae, strength=0.0, image=_image(11))
    assert torch.equal(ours, sample(cn, dit))


def test_fp8_storage_close_to_bf16(cn, dit, vae):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    path = cn["patches"]["2.1"]
    patch = load_zimage_controlnet(path, "fp8_e4m3fn")
    assert patch.model.control_layers[1].feed_forward.w1.weight.dtype == torch.float8_e4m3fn
    assert patch.model.control_layers[1].ffn_norm1.weight.dtype == torch.bfloat16
    ref = sample(cn, dit, load_zimage_controlnet(path), vae, image=_image(11))
    assert _rel(sample(cn, dit, patch, vae, image=_image(11)), ref) < 0.05


def _dequantized_reference_file(gguf_path, out_path):
    """The GGUF's tensors dequantized by gguf-py (numpy, independent of the pack) into an f32 safetensors."""
    import gguf
    import numpy as np
    reader = gguf.GGUFReader(str(gguf_path))
    sd = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        sd[t.name] = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type))
                                      .astype(np.float32).reshape(shape))
    return save_safetensors_atomic(sd, out_path)


def test_gguf_patch_and_dit_equal_dequantized_forward(cn, vae, tmp_path):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.quant.convert import convert_to_gguf
    from zimage_turbo.quant.tensor import QuantizedTensor
    patch_gguf = tmp_path / "cn-2.1-Q8_0.gguf"
    report = convert_to_gguf(cn["patches"]["2.1"], patch_gguf, "Q8_0")
    assert report["control_layers.0.attention.qkv.weight"][0] == "Q8_0"
    assert report["control_layers.0.attention_norm1.weight"][0] == "F32"
    assert report["control_all_x_embedder.2-1.weight"][0] == "BF16"
    dit_gguf = convert_to_gguf(cn["dit_path"], tmp_path / "dit6-Q8_0.gguf", "Q8_0") and tmp_path / "dit6-Q8_0.gguf"
    dit_q = load_zimage_dit(dit_gguf)
    patch = load_zimage_controlnet(patch_gguf)
    images = {"image": _image(11), "inpaint_image": _image(12), "mask": _mask()}
    ours = sample(cn, dit_q, patch, vae, **images)
    reference = core_model_patch(cn, _dequantized_reference_file(patch_gguf, tmp_path / "cn-deq.safetensors"))
    expected = sample(cn, dit_q, reference, vae, **images)
    assert _rel(ours, expected) < 1e-5
    for layer in (patch.model.control_layers[2].attention.qkv, patch.model.control_noise_refiner[0].after_proj,
                  patch.model.control_layers[14].feed_forward.w2):
        assert isinstance(layer.weight, QuantizedTensor) and layer.weight.quant_type.name == "Q8_0"
    with pytest.raises(FileExistsError):
        convert_to_gguf(cn["patches"]["2.1"], patch_gguf, "Q8_0")


def test_gguf_q4_k_patch_runs_close(cn, dit, vae, tmp_path):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    from zimage_turbo.quant.convert import convert_to_gguf
    out = tmp_path / "cn-1.0-Q4_K.gguf"
    convert_to_gguf(cn["patches"]["1.0"], out, "Q4_K")
    ref = sample(cn, dit, load_zimage_controlnet(cn["patches"]["1.0"]), vae, image=_image(11))
    assert _rel(sample(cn, dit, load_zimage_controlnet(out), vae, image=_image(11)), ref) < 0.15


@pytest.mark.parametrize("what,found", [("dit", "Z-Image DiT"), ("qwen_image", "Qwen-Image ControlNet"),
                                        ("flux", "Flux ControlNet")])
def test_wrong_files_are_named(cn, tmp_path, what, found):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    from zimage_turbo.loaders.errors import ModelFileError
    sd = {"dit": lambda: build_dit_state_dict(TINY_DIT),
          "qwen_image": lambda: {"controlnet_blocks.0.y_rms.weight": torch.ones(8), "img_in.weight": torch.ones(8, 64)},
          "flux": lambda: {"controlnet_blocks.0.weight": torch.ones(8, 8), "controlnet_x_embedder.weight": torch.ones(8, 64)},
          }[what]()
    path = save_safetensors_atomic(sd, tmp_path / f"{what}.safetensors")
    with pytest.raises(ModelFileError) as err:
        load_zimage_controlnet(path)
    assert path.name in str(err.value) and found in str(err.value) and "Fun ControlNet" in str(err.value)


def test_damaged_patch_is_named(cn, tmp_path):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    from zimage_turbo.loaders.errors import ModelFileError
    sd = build_controlnet_state_dict("2.1", CONTROL_DIT)
    del sd["control_layers.3.attention.to_v.weight"]
    path = save_safetensors_atomic(sd, tmp_path / "cut.safetensors")
    with pytest.raises(ModelFileError, match="cut.safetensors.*damaged"):
        load_zimage_controlnet(path)


def test_patch_given_to_the_dit_loader_is_named(cn):
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.errors import ModelFileError
    with pytest.raises(ModelFileError, match="Fun ControlNet patch"):
        load_zimage_dit(cn["patches"]["2.1"])


def test_old_host_says_a_newer_comfyui_is_needed(comfy_host, tmp_path):
    """On hosts without the Z-Image ControlNet (0.3.75) the loader names the version and what is missing."""
    if _has_controlnet_host():
        pytest.skip(f"ComfyUI {comfy_host['version']} has the Z-Image ControlNet")
    from zimage_turbo.loaders.controlnet import ControlNetHostError, load_zimage_controlnet
    path = write_tiny_controlnet(tmp_path / "cn.safetensors", "2.1")
    with pytest.raises(ControlNetHostError, match=f"newer ComfyUI.*{comfy_host['version']}"):
        load_zimage_controlnet(path)


def test_node_lists_patches_and_loads(cn, comfy_host):
    import folder_paths
    from zimage_turbo.nodes.controlnet import ZImageControlNetLoader
    folder_paths.add_model_folder_path("model_patches", str(cn["folder"]))
    inputs = ZImageControlNetLoader.INPUT_TYPES()["required"]
    assert "cn-2.1.safetensors" in inputs["patch_name"][0]
    assert all("tooltip" in spec[1] for spec in inputs.values())
    patch = ZImageControlNetLoader().load("cn-2.1.safetensors", "fp8_e4m3fn")[0]
    assert patch.model.n_control_layers == 15
    assert json.loads(json.dumps(ZImageControlNetLoader.SEARCH_ALIASES))


# ------------------------------------------------------------------------------ planner and workflows (no host)
def test_planner_counts_the_patch_with_the_dit(tmp_path):
    from zimage_turbo.planner.catalog import published_files
    from zimage_turbo.planner.estimate import GiB, choose, plan, resident_bytes
    from zimage_turbo.planner.files import inspect_file, synthetic_control_patch
    from zimage_turbo.quant.convert import convert_to_gguf
    files = published_files()
    te, vae = (next(f for f in files if f.role == r) for r in ("te", "vae"))
    dit = next(f for f in files if f.role == "dit" and f.main_type == "Q4_K")
    patch = synthetic_control_patch("Q8_0", "2.1")
    without = plan(te, dit, vae, 6 * GiB)
    with_patch = plan(te, dit, vae, 6 * GiB, control_patch=patch)
    assert with_patch.stage("sample").weights == without.stage("sample").weights + resident_bytes(patch)
    assert with_patch.stage("sample").activations > without.stage("sample").activations
    assert (with_patch.tier, with_patch.workflow) == \
        ("controlnet_canny_6gb", "workflows/08 ControlNet Canny 6 GB.json")
    assert "ControlNet:" in with_patch.table()
    assert choose(files, 12 * GiB, control_patch=patch).best.tier == "controlnet_canny_12gb"
    fp8 = plan(te, dit, vae, 6 * GiB, control_patch=synthetic_control_patch("BF16"), patch_dtype="fp8_e4m3fn")
    bf16 = plan(te, dit, vae, 6 * GiB, control_patch=synthetic_control_patch("BF16"))
    assert fp8.stage("sample").weights < bf16.stage("sample").weights
    # the synthetic GGUF record is what the quantize command writes (same tensors, same bytes)
    src = write_tiny_controlnet(tmp_path / "cn.safetensors", "2.1", CONTROL_DIT)
    convert_to_gguf(src, tmp_path / "cn-Q8_0.gguf", "Q8_0")
    real = inspect_file(tmp_path / "cn-Q8_0.gguf")
    synthetic = synthetic_control_patch("Q8_0", "2.1", CONTROL_DIT)
    assert real.role == "control_patch" and real.fmt == "gguf"
    assert {t.name: (t.dtype, t.n_bytes) for t in real.tensors} == \
        {t.name: (t.dtype, t.n_bytes) for t in synthetic.tensors}


CONTROLNET_WORKFLOWS = [f"controlnet_{kind}_{tier}" for kind in ("canny", "depth", "inpaint")
                        for tier in ("6gb", "12gb")]


@pytest.mark.parametrize("name", CONTROLNET_WORKFLOWS)
def test_controlnet_workflows_have_what_users_need(name):
    from zimage_turbo.fixtures.workflow_files import shipped_graphs
    ui, api = shipped_graphs(name)
    by_type = {n["class_type"]: (k, n) for k, n in api.items()}
    _, loader = by_type["ZImageControlNetLoader"]
    apply_id, apply = by_type["ZImageFunControlnet"]
    sampler = by_type["ZImageTurboSampler"][1]["inputs"]
    assert sampler["model"] == [apply_id, 0]
    assert apply["inputs"]["model"][0] == by_type["ZImageDiffusionModelLoader"][0]
    assert apply["inputs"]["model_patch"][0] == by_type["ZImageControlNetLoader"][0]
    kind = name.split("_")[1]
    image_id = by_type["LoadImage"][0]
    if kind == "canny":
        assert apply["inputs"]["image"] == [by_type["Canny"][0], 0]
        assert by_type["Canny"][1]["inputs"]["image"] == [image_id, 0]
    elif kind == "depth":
        assert apply["inputs"]["image"] == [image_id, 0] and "Canny" not in by_type
    else:
        assert apply["inputs"]["inpaint_image"] == [image_id, 0] and apply["inputs"]["mask"] == [image_id, 1]
        assert "image" not in apply["inputs"]
    models = [m for n in ui["nodes"] for m in n["properties"].get("models", [])]
    patch_entry = next(m for m in models if m["directory"] == "model_patches")
    assert patch_entry["name"] == loader["inputs"]["patch_name"]
    assert patch_entry["url"] == ("https://huggingface.co/alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union-2.1/resolve/"
                                  f"main/{patch_entry['name']}")
    assert ("lite" in patch_entry["name"]) == name.endswith("_6gb")
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert f"models/model_patches/{patch_entry['name']}" in note and "quantize" in note


def test_scaled_fp8_patch_from_the_quantize_command(cn, dit, vae, tmp_path):
    from zimage_turbo.__main__ import main
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    out = tmp_path / "cn-2.1-fp8_scaled.safetensors"
    assert main(["quantize", str(cn["patches"]["2.1"]), str(out), "--type", "scaled_fp8"]) == 0
    patch = load_zimage_controlnet(out)
    assert patch.model.control_layers[1].feed_forward.w1.weight.numel() * 1 <= CONTROL_DIT.dim * CONTROL_DIT.ffn_hidden
    ref = sample(cn, dit, load_zimage_controlnet(cn["patches"]["2.1"]), vae, image=_image(11))
    assert _rel(sample(cn, dit, patch, vae, image=_image(11)), ref) < 0.06


def test_patch_with_a_resized_tensor_is_named(cn, tmp_path):
    from zimage_turbo.loaders.controlnet import load_zimage_controlnet
    from zimage_turbo.loaders.errors import ModelFileError
    sd = build_controlnet_state_dict("1.0", CONTROL_DIT)
    sd["control_layers.2.feed_forward.w2.weight"] = sd["control_layers.2.feed_forward.w2.weight"][:, :512].clone()
    path = save_safetensors_atomic(sd, tmp_path / "resized.safetensors")
    with pytest.raises(ModelFileError, match="resized.safetensors.*damaged.*w2"):
        load_zimage_controlnet(path)


def test_planner_node_takes_a_control_patch(comfy_host, tiny_paths, tmp_path):
    import folder_paths
    from zimage_turbo.nodes.planner import ZImageVRAMPlanner
    folder = tmp_path / "model_patches"
    write_tiny_controlnet(folder / "cn-plan.safetensors", "2.1")
    folder_paths.add_model_folder_path("model_patches", str(folder))
    for kind in ("diffusion_models", "text_encoders", "vae"):
        folder_paths.add_model_folder_path(kind, str(tiny_paths[kind].parent))
    optional = ZImageVRAMPlanner.INPUT_TYPES()["optional"]
    assert "cn-plan.safetensors" in optional["control_patch"][0] and optional["control_patch"][1]["tooltip"]
    report = ZImageVRAMPlanner().plan(6.0, 1024, 1024, 1, control_patch="cn-plan.safetensors",
                                      control_patch_dtype="fp8_e4m3fn")["result"][0]
    assert "ControlNet:   cn-plan.safetensors" in report and "controlnet_canny_6gb" in report
