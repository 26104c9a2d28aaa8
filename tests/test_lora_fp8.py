"""LoRA on fp8 DiTs (plain fp8 storage, scaled fp8, `.comfy_quant` layers): never baked into the stored weights.

On each format, a plain LoRA (run beside the layer, q/k/v row slices included) and LoHa / LoKr / full-diff / DoRA
patches (applied to the weight upcast for each use) must give the format's own dequantized-weight forward plus the
delta computed here from the LoRA's tensors, in fp32, within float error; the stored tensors of every quantized
layer (weights and scales) must be byte for byte the file's, in their quantized type, while the patched model is
loaded and run and after it is unloaded. ComfyUI's low-VRAM partial loading must give the full load's output, and
core's `LoraLoaderModelOnly` must keep working on the pack's MODEL.

The LoRAs here patch the quantized layers only (the scaled formats keep a few small layers in bf16, which core
patches as on any bf16 model: see test_lora_formats.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from zimage_turbo.fixtures.lora_files import (WRITERS, apply_lora, dense_model, forward,
                                              full_and_partial_load_outputs, reference_state_dict, run_loaded,
                                              stored_bytes)

# the loader's weight_dtype choices that store the bf16 file's weights as fp8, and files holding fp8 with scales
PLAIN_FP8 = ("fp8_e4m3fn", "fp8_e5m2", "fp8_e4m3fn_fast")
FILE_FORMATS = ("scaled_fp8", "comfy_quant_fp8", "comfy_quant_int8", "comfy_quant_nvfp4", "comfy_quant_mxfp8")
STORED_TYPES = (torch.float8_e4m3fn, torch.float8_e5m2, torch.int8, torch.uint8)  # uint8: nvfp4's packed values
SCALE_PARAMETERS = ("scale_weight", "scale_input", "weight_scale", "input_scale")
QUANTIZED_ACTIVATIONS = ("comfy_quant_int8", "comfy_quant_nvfp4")
EVERY_FORMAT = PLAIN_FP8 + FILE_FORMATS
# fp8_e4m3fn_fast stores and runs as fp8_e4m3fn does on a CPU (no fp8 matmul): the stacked test covers it
MATRIX_FORMATS = tuple(f for f in EVERY_FORMAT if f != "fp8_e4m3fn_fast")
# core rounds each patched weight back into its format: 4-bit nvfp4 loses about a third of the patch's effect
CORE_ROUNDING_NOISE = {"comfy_quant_nvfp4": 0.5}
PATCH_KINDS = ("musubi_kohya", "loha", "lokr", "full_diff", "dora")


def _scaled_fp8(sd: dict) -> dict:
    from zimage_turbo.quant.convert import scaled_fp8_state_dict
    return scaled_fp8_state_dict(sd)[0]


def _comfy_quant_fp8(sd: dict) -> dict:
    from zimage_turbo.fixtures.comfy_quant_files import fp8_mixed
    return fp8_mixed(sd, lambda key, value: True)[0]


def _comfy_quant_int8(sd: dict) -> dict:
    from zimage_turbo.fixtures.comfy_quant_files import int8_convrot
    return int8_convrot(sd)[0]


def _block_writer(fmt: str):
    def write(sd: dict) -> dict:
        from zimage_turbo.fixtures.comfy_quant_files import block_format
        return block_format(sd, fmt)[0]
    return write


FILE_WRITERS = {"scaled_fp8": _scaled_fp8, "comfy_quant_fp8": _comfy_quant_fp8, "comfy_quant_int8": _comfy_quant_int8,
                "comfy_quant_nvfp4": _block_writer("nvfp4"), "comfy_quant_mxfp8": _block_writer("mxfp8")}


@pytest.fixture(scope="module")
def dit_sd(comfy_host, tiny_paths):
    from safetensors.torch import load_file
    return load_file(str(tiny_paths["diffusion_models"]))


@dataclass
class Fp8Dit:
    """The tiny DiT in one fp8 format as the pack's loader loads it, with what the tests compare against."""

    model: object
    dense: dict  # the format's own dequantized weights (fp32), every tensor of the file
    quantized: set  # the keys of the weights (and biases) its layers store quantized
    base: torch.Tensor  # its output without a LoRA
    name: str  # the format (FILE_FORMATS, PLAIN_FP8)


@pytest.fixture(scope="module")
def fp8_dit(request, comfy_host, tiny_paths, dit_sd, tmp_path_factory) -> Fp8Dit:
    """(indirectly parametrized with a format name)"""
    import comfy.utils
    from zimage_turbo.fixtures.tiny_models import save_safetensors_atomic
    from zimage_turbo.loaders.dit import load_zimage_dit
    name = request.param
    if name.startswith("comfy_quant") and not hasattr(comfy.utils, "convert_old_quants"):
        pytest.skip(f"ComfyUI {comfy_host['version']} cannot run .comfy_quant layers (the loader refuses such files, "
                    "see test_dit_formats.py::test_comfy_quant_layers)")
    block_format = name.rpartition("_")[2]
    if name.startswith("comfy_quant") and block_format in ("nvfp4", "mxfp8") and block_format not in _host_formats():
        pytest.skip(f"this ComfyUI has no {block_format} (mxfp8 needs comfy-kitchen)")
    path, weight_dtype = tiny_paths["diffusion_models"], "default"
    if name in PLAIN_FP8:
        weight_dtype = name
    else:
        path = save_safetensors_atomic(FILE_WRITERS[name](dit_sd), tmp_path_factory.mktemp("lora_fp8") / f"{name}.sft")
    with torch.inference_mode():  # as ComfyUI runs its nodes (core's LoRA code expects inference tensors)
        model = load_zimage_dit(path, weight_dtype)
        quantized = quantized_keys(model, dit_sd)
        if name in QUANTIZED_ACTIVATIONS:
            # these layers quantize their input for an int8 matmul unless a weight function runs: with one (that
            # changes nothing) the host dequantizes the weight instead, which is the forward the reference computes
            for key in quantized:  # weights only: these layers keep their biases in float
                model.add_weight_wrapper(f"diffusion_model.{key}", _unchanged)
        return Fp8Dit(model, dequantized_state_dict(model, dit_sd), quantized, forward(model), name)


def _host_formats() -> dict:
    import comfy.quant_ops
    return getattr(comfy.quant_ops, "QUANT_ALGOS", {})


def _unchanged(weight: torch.Tensor) -> torch.Tensor:
    return weight


def _stored_dtype(layer: torch.nn.Module, name: str) -> torch.dtype | None:
    value = layer.state_dict(keep_vars=True).get(name)
    return None if value is None else value.dtype


def _is_stored_quantized(layer: torch.nn.Module) -> bool:
    return _stored_dtype(layer, "weight") in STORED_TYPES


def quantized_keys(model, dit_sd: dict) -> set[str]:
    """The weights and biases of the file that their layer stores quantized (fp8 / int8, with or without scales)."""
    keys = set()
    for key in dit_sd:
        path, _, name = key.rpartition(".")
        layer = model.model.diffusion_model.get_submodule(path) if path else None
        if hasattr(layer, "comfy_cast_weights") and _stored_dtype(layer, name) in STORED_TYPES:
            keys.add(key)
    return keys


def dequantized_state_dict(model, dit_sd: dict) -> dict:
    """Each tensor as the format's own arithmetic hands it to the layer, in fp32: ComfyUI's QuantizedTensor
    dequantized (`.comfy_quant`, scaled fp8 on hosts that convert it), fp8 upcast and times `scale_weight` (scaled
    fp8 on 0.3.x), fp8 upcast (plain fp8)."""
    sd = {}
    for key in dit_sd:
        path, _, name = key.rpartition(".")
        owner = model.model.diffusion_model.get_submodule(path) if path else model.model.diffusion_model
        value = getattr(owner, name)
        if type(value).__name__ == "QuantizedTensor":
            sd[key] = value.dequantize().float()
        elif name == "weight" and getattr(owner, "scale_weight", None) is not None:
            sd[key] = value.float() * owner.scale_weight.float()
        else:
            sd[key] = value.float()
    return sd


def stored_tensors(model) -> dict[str, tuple[str, torch.dtype, torch.Tensor]]:
    """Every tensor the quantized layers store: (the weight's class, its dtype, its raw bytes)."""
    stored = {}
    for name, layer in model.model.diffusion_model.named_modules():
        if _is_stored_quantized(layer):
            kind = type(layer.weight).__name__
            stored.update({f"{name}.{key}": (kind, *value) for key, value in stored_bytes(layer).items()})
    return stored


def assert_storage_unchanged(model, before: dict) -> None:
    after = stored_tensors(model)
    assert after.keys() == before.keys()
    for key, (kind, dtype, raw) in before.items():
        assert after[key][:2] == (kind, dtype), f"{key} is now {after[key][:2]}, was {(kind, dtype)}"
        assert torch.equal(after[key][2], raw), f"{key}: the stored bytes changed"
    weights = [dtype for key, (_, dtype, _) in before.items() if key.endswith(".weight")]
    assert weights and all(dtype in STORED_TYPES for dtype in weights)


def lora_on_quantized_layers(kind: str, dit: Fp8Dit, **seed) -> tuple[dict, list]:
    """(LoRA file tensors, deltas): a LoRA of `kind` on the model's quantized layers, its deltas computed from the
    format's own dequantized weights (DoRA's depends on them)."""
    lora, deltas = WRITERS[kind]({k: v for k, v in dit.dense.items() if k in dit.quantized}, **seed)
    assert len(deltas) >= 3, f"{kind}: at least three quantized layers patched"
    return lora, deltas


def _tolerance(reference: torch.Tensor) -> float:
    """fp32 float error on the tiny DiT's output."""
    return 2e-5 * float(reference.abs().max())


@pytest.mark.parametrize("fp8_dit", MATRIX_FORMATS, indirect=True)
@pytest.mark.parametrize("kind", PATCH_KINDS)
def test_patch_equals_dequantized_forward_plus_delta_and_storage_stays(kind, fp8_dit):
    import comfy.model_management as mm
    lora, deltas = lora_on_quantized_layers(kind, fp8_dit)
    before = stored_tensors(fp8_dit.model)
    patched, _, report = apply_lora(fp8_dit.model, lora, 1.3)
    assert report.unmatched == [] and report.shape_mismatch == []
    assert report.dit_patched == sorted({f"diffusion_model.{key}" for key, _, _ in deltas})
    reference = forward(dense_model(reference_state_dict(fp8_dit.dense, deltas, 1.3)))
    mm.load_models_gpu([patched])
    try:
        out = run_loaded(patched)
        assert_storage_unchanged(patched, before)  # loaded with its patches, run: the file's tensors as they were
    finally:
        mm.unload_all_models()
    assert_storage_unchanged(fp8_dit.model, before)
    assert float((out - reference).abs().max()) <= _tolerance(reference)
    assert float((fp8_dit.base - reference).abs().max()) > 100 * _tolerance(reference), "the patch has an effect"


@pytest.mark.parametrize("fp8_dit", EVERY_FORMAT, indirect=True)
def test_stacked_patches_full_and_partial_load(fp8_dit):
    """Four loaders stacked (q/k/v slice LoRA, LoHa, LoKr, full diff; negative and > 1 strengths) equal the dense
    reference; ComfyUI's low-VRAM partial load gives exactly the full load's output; storage stays."""
    before = stored_tensors(fp8_dit.model)
    model, dense = fp8_dit.model, fp8_dit.dense
    for kind, strength, seed in (("musubi_kohya", 1.4, 30), ("loha", -0.6, 31), ("lokr", 1.7, 32),
                                 ("full_diff", 0.5, 33)):
        lora, deltas = lora_on_quantized_layers(kind, fp8_dit, seed=seed)
        dense = reference_state_dict(dense, deltas, strength)
        model, _, _ = apply_lora(model, lora, strength)
    reference = forward(dense_model(dense))
    full, partial = full_and_partial_load_outputs(model)
    assert float((full - reference).abs().max()) <= _tolerance(reference)
    assert torch.equal(partial, full)
    assert_storage_unchanged(fp8_dit.model, before)


def _core_reads(model, lora: dict) -> bool:
    import comfy.lora
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    return all(k.rsplit(".", 2 if k.endswith(".weight") else 1)[0] in key_map for k in lora)


@pytest.mark.parametrize("fp8_dit", MATRIX_FORMATS, indirect=True)
@pytest.mark.parametrize("kind", ["comfyui", "lokr"])
def test_core_lora_loader_model_only_still_works(kind, fp8_dit, comfy_host):
    """Core's loader (LoraLoaderModelOnly's call) on the pack's fp8 MODEL applies the same patches as the pack's
    loader, up to the noise of rounding each patched weight back into its stored format, which core does (and the
    pack's loader does not). At strength 4 the patches' effect is several times that noise."""
    lora, _ = lora_on_quantized_layers(kind, fp8_dit)
    if not _core_reads(fp8_dit.model, lora):
        pytest.skip(f"ComfyUI {comfy_host['version']} does not read the {kind} layout")
    core, _ = comfy_host["sd"].load_lora_for_models(fp8_dit.model, None, lora, 4.0, 0)
    ours, _, _ = apply_lora(fp8_dit.model, lora, 4.0)
    core_out, ours_out = forward(core), forward(ours)
    effect = float((ours_out - fp8_dit.base).norm())
    assert effect > 0.1 * float(fp8_dit.base.norm())
    assert float((core_out - ours_out).norm()) < CORE_ROUNDING_NOISE.get(fp8_dit.name, 0.25) * effect
