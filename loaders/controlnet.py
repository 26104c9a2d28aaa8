"""Z-Image Fun ControlNet loader: patch file → core's `ZImage_Control` in a ModelPatcher (a MODEL_PATCH).

The result is what core's `ModelPatchLoader` returns, so core's `ZImageFunControlnet` ("Apply Z-Image Fun
ControlNet") applies it unchanged, and ComfyUI's model management loads, partly loads or offloads it beside
the DiT (the apply node's patch lists it among the models a sampler loads). What differs from core:
- GGUF patches (e.g. from `python -m zimage_turbo quantize`): weights stay in their blocks and dequantize per
  use through the pack's quantized ops (`QuantOps`, `QuantModelPatcher`), fused q/k/v included;
- `weight_dtype`: the matrices of a bf16/fp16 file can be stored in fp8 (cast per use, like the DiT loader);
- the width, heads, FFN size and layer counts come from the weights (core assumes the 6B DiT's 3840);
- a wrong file (a DiT, a Qwen-Image or Flux ControlNet, a damaged patch) is named in a ModelFileError.
"""
from __future__ import annotations

import logging
import os

import torch

from . import host
from .controlnet_layout import controlnet_problem, controlnet_to_comfy, infer_controlnet_config, is_controlnet
from .detect import classify, describe, loader_hint
from .dit_quant_formats import has_scaled_weights, require_comfy_quant_support
from .errors import ModelFileError
from .gguf_io import densify_unowned, is_gguf, logical_shape, read_gguf_state_dict
from .nonfinite import check_small_tensors_finite
from .safetensors_file import load_tensors, read_header

log = logging.getLogger(__name__)
EXPECTED = "a Z-Image Fun ControlNet patch (e.g. Z-Image-Turbo-Fun-Controlnet-Union-2.1-8steps.safetensors)"
GGUF_ARCHITECTURE = "zimage_control"  # what this pack's quantize command writes for a patch
GGUF_ARCHITECTURES = (None, GGUF_ARCHITECTURE, "lumina2", "zimage", "z_image")
# weight_dtype choice → storage dtype of the patch's matrices (None: as in the file)
WEIGHT_DTYPES: dict[str, torch.dtype | None] = {
    "default": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


class ControlNetHostError(RuntimeError):
    """The running ComfyUI has no Z-Image Fun ControlNet (core gained it after 0.4.0, in December 2025)."""


def controlnet_class():
    """Core's `ZImage_Control`, or a clear error naming the ComfyUI version that lacks it."""
    try:
        from comfy.ldm.lumina.controlnet import ZImage_Control
    except ImportError:
        try:
            import comfyui_version
            version = comfyui_version.__version__
        except ImportError:
            version = "unknown"
        raise ControlNetHostError(
            f"Z-Image Fun ControlNet needs a newer ComfyUI: this is ComfyUI {version}, which has no Z-Image "
            "ControlNet model (comfy/ldm/lumina/controlnet.py) nor the 'Apply Z-Image Fun ControlNet' node; "
            "both came after 0.4.0. Update ComfyUI.") from None
    return ZImage_Control


def check_zimage_controlnet(path: str | os.PathLike, shapes: dict) -> None:
    """Raise ModelFileError unless `shapes` (any layout) is a Z-Image Fun ControlNet patch."""
    if not is_controlnet(shapes):
        raise ModelFileError(path, EXPECTED, describe(shapes),
                             loader_hint(classify(shapes), "controlnet",
                                         "Put Z-Image Fun ControlNet files in models/model_patches."))


def _stored(sd: dict[str, torch.Tensor], dtype: torch.dtype | None) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict in the chosen storage: matrices in `dtype`, vectors too unless `dtype` is fp8 (they keep
    the file's). Returns (sd, mixed): mixed when matrices and vectors differ (weights must be assigned)."""
    if dtype is None:
        return sd, False
    fp8 = dtype.itemsize == 1
    return {k: (v.to(dtype) if v.is_floating_point() and (v.ndim >= 2 or not fp8) else v)
            for k, v in sd.items()}, fp8


def _host_scaled_fp8_ops(sd: dict[str, torch.Tensor], metadata: dict | None, load_device):
    """(sd, operations, model dtype) for a scaled-fp8 / `.comfy_quant` patch: the host's own fp8 ops do the
    arithmetic, as for the DiT (every host with the Z-Image ControlNet has `convert_old_quants`)."""
    import types

    import comfy.model_management as mm
    import comfy.ops
    import comfy.utils
    sd, _ = comfy.utils.convert_old_quants(sd, "", metadata=dict(metadata or {}))
    compute = torch.bfloat16 if mm.should_use_bf16(load_device) else torch.float32
    quant_config = comfy.utils.detect_layer_quantization(sd, "")
    ops = comfy.ops.pick_operations(None, compute, load_device, model_config=types.SimpleNamespace(
        quant_config=quant_config))
    return sd, ops, compute


def build_zimage_controlnet(sd: dict[str, torch.Tensor], path: str | os.PathLike = "<state dict>",
                            weight_dtype: str = "default", quantized: bool = False, metadata: dict | None = None):
    """A MODEL_PATCH (ModelPatcher over core's `ZImage_Control`) from a patch state dict (either layout).

    `quantized`: the state dict holds QuantizedTensors (GGUF): quantized ops and patcher, blocks kept.
    A scaled-fp8 file (the quantize command's `--type scaled_fp8`) runs on the host's fp8 ops.
    """
    import comfy.model_management as mm
    import comfy.ops
    import comfy.utils

    zimage_control = controlnet_class()
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    check_zimage_controlnet(path, {k: logical_shape(v) for k, v in sd.items()})
    check_small_tensors_finite(sd, path)
    scaled = not quantized and has_scaled_weights(sd, metadata)
    if scaled:  # scales checked by the names in the file, before q/k/v are joined
        require_comfy_quant_support(sd, path, EXPECTED, "the patch's bf16 file", metadata)
    try:
        sd = controlnet_to_comfy(sd)
    except (KeyError, RuntimeError) as exc:  # q/k/v missing, or parts that cannot be joined (e.g. their scales)
        reason = exc.args[0] if isinstance(exc, KeyError) else str(exc).strip().splitlines()[-1][:200]
        raise ModelFileError(path, EXPECTED, f"a damaged patch ({reason})", "Re-download the file.") from None
    shapes = {k: logical_shape(v) for k, v in sd.items()}
    problem = controlnet_problem(shapes)
    if problem:
        raise ModelFileError(path, EXPECTED, f"a damaged Z-Image Fun ControlNet patch ({problem})",
                             "Re-download the file.")
    config = infer_controlnet_config(shapes, sd)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    if quantized:
        from ..quant.ops import QuantOps
        from ..quant.patcher import QuantModelPatcher
        model = zimage_control(device=offload_device, dtype=torch.float32, operations=QuantOps, **config)
        densify_unowned(model, sd)
        patcher = QuantModelPatcher(model, load_device=load_device, offload_device=offload_device)
        assign = False
    elif scaled:
        sd, ops, model_dtype = _host_scaled_fp8_ops(sd, metadata, load_device)
        model = zimage_control(device=offload_device, dtype=model_dtype, operations=ops, **config)
        patcher = host.new_model_patcher(model, load_device, offload_device)
        assign = host.patcher_assigns(patcher)
    else:
        sd, mixed = _stored(sd, WEIGHT_DTYPES[weight_dtype])
        # As core: the model in the file's (main) dtype, manual_cast ops; fp8 matrices are assigned as they are.
        model_dtype = comfy.utils.weight_dtype({k: v for k, v in sd.items() if v.ndim == 1} if mixed else sd)
        model = zimage_control(device=offload_device, dtype=model_dtype, operations=comfy.ops.manual_cast, **config)
        patcher = host.new_model_patcher(model, load_device, offload_device)
        assign = host.patcher_assigns(patcher) or mixed
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False, **({"assign": True} if assign else {}))
    except RuntimeError as exc:  # tensors of shapes that do not fit the rest of the file
        raise ModelFileError(path, EXPECTED, "a damaged Z-Image Fun ControlNet patch ("
                             + str(exc).strip().splitlines()[-1].strip()[:200] + ")", "Re-download the file.") from None
    if missing or unexpected:
        found = (f"{len(missing)} missing tensors ({', '.join(sorted(missing)[:3])}…)" if missing else
                 f"{len(unexpected)} unknown tensors ({', '.join(sorted(unexpected)[:3])}…)")
        raise ModelFileError(path, EXPECTED + " with every tensor", found,
                             "The file is incomplete or another ControlNet variant.")
    log.info("Z-Image Fun ControlNet %s: dim %d, %d control layers, refiner control %s%s, inpaint channels %d, "
             "weights %s", os.path.basename(str(path)), config["dim"], config["n_control_layers"],
             config["refiner_control"], " (2.0 layout)" if config["broken"] else "", config["additional_in_dim"],
             "quantized (GGUF)" if quantized else weight_dtype)
    return patcher


def load_zimage_controlnet(path: str | os.PathLike, weight_dtype: str = "default"):
    """Load a Z-Image Fun ControlNet patch (safetensors as published, or GGUF) as a MODEL_PATCH."""
    controlnet_class()  # the host check comes before reading a multi-GB file
    if is_gguf(path):
        gguf = read_gguf_state_dict(path, EXPECTED)
        if gguf.architecture not in GGUF_ARCHITECTURES:
            raise ModelFileError(path, EXPECTED, f"a GGUF of architecture '{gguf.architecture}'",
                                 "Load text-encoder GGUFs with the Z-Image text encoder loader.")
        check_zimage_controlnet(path, gguf.shapes())
        return build_zimage_controlnet(dict(gguf.tensors), path, weight_dtype, quantized=True)
    header = read_header(path, expected=EXPECTED)
    check_zimage_controlnet(path, header.shapes())
    return build_zimage_controlnet(load_tensors(header), path, weight_dtype, metadata=header.metadata)
