"""Z-Image DiT loader: file → config inferred from the weights → `supported_models.ZImage` → MODEL."""
from __future__ import annotations

import logging
import os

import torch

from . import host
from .config import infer_zimage_dit_config
from .detect import PACK_LOADERS, classify, describe, loader_hint, strip_known_prefix
from .errors import ModelFileError
from .dit_layouts import checkpoint_headers, diffusers_to_comfy, is_diffusers_layout
from .dit_quant_formats import apply_quant_format, has_scaled_weights, header_model_shapes, layer_formats, model_shapes
from .gguf_io import densify_unowned, is_gguf, logical_shape, read_gguf_state_dict
from .safetensors_file import load_tensors
from ..sampling.guards import add_forward_guard
from .nonfinite import check_small_tensors_finite

log = logging.getLogger(__name__)
EXPECTED = "a Z-Image DiT (e.g. z_image_turbo_bf16.safetensors)"
DIT_KINDS = ("zimage_dit", "zimage_dit_diffusers")
# Parameters some hosts' NextDiT builds but Z-Image checkpoints never carry (unused by Z-Image's forward),
# with the value they get when the file lacks them: the host leaves them uninitialised (torch.empty), which
# would put random NaN into the model's state dict (saved checkpoints, checks, other packs reading it).
UNUSED_MODEL_DEFAULTS: dict[str, float] = {"norm_final.weight": 1.0}
SCALE_KEY_MARKERS = ("scale_weight", "scale_input", "weight_scale", "input_scale", "comfy_quant")

# weight_dtype choice → (storage dtype or None for the file's own, fp8 matmul optimisation)
WEIGHT_DTYPES: dict[str, tuple[torch.dtype | None, bool]] = {
    "default": (None, False),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
    "fp32": (torch.float32, False),
    "fp8_e4m3fn": (torch.float8_e4m3fn, False),
    "fp8_e4m3fn_fast": (torch.float8_e4m3fn, True),
    "fp8_e5m2": (torch.float8_e5m2, False),
}


def _fix_pad_tokens(sd: dict[str, torch.Tensor], dim: int) -> None:
    """Pad tokens saved 1-D ([D] instead of [1, D]) by some converters load as [1, D]."""
    for key in ("x_pad_token", "cap_pad_token"):
        if key in sd and sd[key].ndim == 1 and sd[key].shape[0] == dim:
            sd[key] = sd[key].reshape(1, dim)


def allow_fp16(sd: dict[str, torch.Tensor], n_layers: int) -> bool:
    """ComfyUI's fp16-safety probe: small spread of a late block's ffn_norm1 weight."""
    key = f"layers.{n_layers - 2}.ffn_norm1.weight"
    if key not in sd:
        return False
    value = sd[key]
    value = value.dequantize(torch.float32) if hasattr(value, "dequantize") and hasattr(value, "quant_type") else value
    return float(value.float().std(unbiased=False)) < 0.42  # population std, as model_detection computes it


def match_timestep_embedder(diffusion_model: torch.nn.Module, hidden: int) -> None:
    """Rebuild the timestep MLP `hidden` wide where the host built another width (ComfyUI builds
    min(dim, 1024); diffusers-made files below width 1024 carry 1024), with the host's own embedder class,
    operations, dtype and device, so the file's weights load into it unchanged."""
    from comfy.ldm.lumina.model import TimestepEmbedder
    old = diffusion_model.t_embedder
    first, last = old.mlp[0], old.mlp[2]
    if first.out_features == hidden:
        return
    operations = type("TimestepOps", (), {"Linear": type(first)})
    weight = first.weight  # None for the pack's quantized ops (weights arrive with the state dict)
    diffusion_model.t_embedder = TimestepEmbedder(
        hidden, frequency_embedding_size=first.in_features, output_size=last.out_features,
        dtype=getattr(weight, "dtype", None), device=getattr(weight, "device", None), operations=operations)


def expected_state_dict_keys(module: torch.nn.Module) -> set[str]:
    """The state-dict keys a model's layers take, read from its structure: its state_dict() would leave out the
    weights of quantized layers not loaded yet (the pack's ops hold None, ComfyUI's mixed-precision ops no
    weight at all, warning once per layer)."""
    keys = set()
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        keys.update(prefix + k for k, v in sub._parameters.items() if v is not None)
        keys.update(prefix + k for k, v in sub._buffers.items()
                    if v is not None and k not in sub._non_persistent_buffers_set)
        if hasattr(sub, "in_features") or hasattr(sub, "num_embeddings"):  # Linear / Embedding, loaded or not
            keys.add(prefix + "weight")
        if getattr(sub, "has_bias", False):  # the pack's quantized ops, before loading
            keys.add(prefix + "bias")
    return keys


def check_zimage_dit(path: str | os.PathLike, shapes: dict) -> None:
    """Raise ModelFileError unless `shapes` (prefix stripped) is a Z-Image DiT in ComfyUI layout."""
    kind = classify(shapes)
    if kind is None or kind.name not in DIT_KINDS:
        raise ModelFileError(path, EXPECTED, describe(shapes),
                             loader_hint(kind, "dit", "Put Z-Image DiT files in models/diffusion_models."))


def unused_parameter_defaults(module: torch.nn.Module, absent: set[str]) -> dict[str, torch.Tensor]:
    """Defined values (UNUSED_MODEL_DEFAULTS) for the unused parameters the host built and the file lacks."""
    values = {}
    for key in absent & set(UNUSED_MODEL_DEFAULTS):
        parameter = module.get_parameter(key)
        values[key] = torch.full(parameter.shape, UNUSED_MODEL_DEFAULTS[key], dtype=parameter.dtype)
    return values


def build_zimage_model(sd: dict[str, torch.Tensor], path: str | os.PathLike = "<state dict>",
                       weight_dtype: str = "default", quantized: bool = False, metadata: dict | None = None):
    """Build a ComfyUI ZImage MODEL (ModelPatcher) from a ComfyUI-layout state dict; config from shapes.

    `quantized`: the state dict holds QuantizedTensors (GGUF): the model gets the pack's quantized ops and
    patcher, and its compute dtype is chosen for the device (weights stay in their blocks).
    """
    import comfy.ldm.lumina.model
    import comfy.model_management as mm
    import comfy.supported_models
    import comfy.utils

    shapes = model_shapes({k: logical_shape(v) for k, v in sd.items()}, layer_formats(sd, metadata, path))
    check_zimage_dit(path, shapes)
    check_small_tensors_finite(sd, path)  # norms, biases, pad tokens, scales: NaN here makes black images
    config = infer_zimage_dit_config(shapes)
    _fix_pad_tokens(sd, config["dim"])
    config["allow_fp16"] = allow_fp16(sd, config["n_layers"])
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    dtype, fp8_fast = WEIGHT_DTYPES[weight_dtype]

    model_config = comfy.supported_models.ZImage(host.supported_unet_config(comfy.ldm.lumina.model.NextDiT, config))
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    supported = list(model_config.supported_inference_dtypes)
    host_scaled = False
    if has_scaled_weights(sd, metadata):
        sd, host_scaled = apply_quant_format(sd, metadata, model_config, path, EXPECTED)
    file_dtype = None if (quantized or host_scaled) else comfy.utils.weight_dtype(sd)
    unet_dtype = dtype or mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd), supported_dtypes=supported,
                                        weight_dtype=file_dtype)
    manual_cast_dtype = mm.unet_manual_cast(None if host_scaled else unet_dtype, load_device, supported)
    host.set_inference_dtype(model_config, unet_dtype, manual_cast_dtype, load_device)
    if quantized:
        from ..quant.ops import QuantOps
        model_config.custom_operations = QuantOps
    if fp8_fast:
        model_config.optimizations["fp8"] = True

    model = model_config.get_model(sd, "")
    match_timestep_embedder(model.diffusion_model, shapes["t_embedder.mlp.0.weight"][0])
    absent = expected_state_dict_keys(model.diffusion_model) - set(sd)
    missing = sorted(k for k in absent - set(UNUSED_MODEL_DEFAULTS) if not any(m in k for m in SCALE_KEY_MARKERS))
    if missing:
        raise ModelFileError(path, EXPECTED + " with every tensor",
                             f"{len(missing)} missing tensors ({', '.join(missing[:4])}…)",
                             "The file is incomplete or a different model variant.")
    sd.update(unused_parameter_defaults(model.diffusion_model, absent))
    if quantized:
        from ..quant.patcher import QuantModelPatcher
        densify_unowned(model.diffusion_model, sd)
        _fix_pad_tokens(sd, config["dim"])
        patcher = QuantModelPatcher(model, load_device=load_device, offload_device=offload_device)
    else:
        patcher = host.new_model_patcher(model, load_device, offload_device)
    if not mm.is_device_cpu(offload_device):
        model.to(offload_device)
    model.load_model_weights(sd, "", **({"assign": True} if host.patcher_assigns(patcher) else {}))
    add_forward_guard(patcher, path)
    log.info("Z-Image DiT %s: dim %d, %d layers, %d refiner layers, %d heads, weights %s, compute %s",
             os.path.basename(str(path)), config["dim"], config["n_layers"], config["n_refiner_layers"],
             config["n_heads"], unet_dtype, manual_cast_dtype or unet_dtype)
    return patcher


def load_zimage_dit(path: str | os.PathLike, weight_dtype: str = "default"):
    """Load a Z-Image DiT as a standard MODEL, whatever the file holds (recognised by content).

    ComfyUI or diffusers layout; bf16/fp16/fp32, fp8, scaled fp8 or .comfy_quant safetensors, a shard of a
    multi-file diffusers checkpoint (every shard of its index is loaded), or GGUF.
    """
    if is_gguf(path):
        return load_zimage_dit_gguf(path, weight_dtype)
    headers = checkpoint_headers(path, EXPECTED)  # the file, or every shard of the index that lists it
    prefix, shapes = strip_known_prefix(header_model_shapes(headers))
    check_zimage_dit(path, shapes)
    sd: dict[str, torch.Tensor] = {}
    for header in headers:
        keys = [k for k in header.tensors if k.startswith(prefix)]
        sd.update({k[len(prefix):]: v for k, v in load_tensors(header, keys).items()})
    if is_diffusers_layout(sd):
        sd = diffusers_to_comfy(sd)
    return build_zimage_model(sd, path, weight_dtype, metadata=headers[0].metadata)


GGUF_DIT_ARCHITECTURES = (None, "lumina2", "zimage", "z_image")
GGUF_ARCH_HINTS = {"qwen3": f"Load text-encoder GGUFs with {PACK_LOADERS['te']}.",
                   "zimage_control": f"This is a ControlNet patch: load it with {PACK_LOADERS['controlnet']}."}


def load_zimage_dit_gguf(path: str | os.PathLike, weight_dtype: str = "default"):
    """A Z-Image DiT GGUF (city96-style or from this pack's quantizer): weights stay quantized."""
    gguf = read_gguf_state_dict(path, EXPECTED)
    if gguf.architecture not in GGUF_DIT_ARCHITECTURES:
        raise ModelFileError(path, EXPECTED, f"a GGUF of architecture '{gguf.architecture}'",
                             GGUF_ARCH_HINTS.get(gguf.architecture, GGUF_ARCH_HINTS["qwen3"]))
    prefix, shapes = strip_known_prefix(gguf.shapes())
    check_zimage_dit(path, shapes)
    sd = {k[len(prefix):]: v for k, v in gguf.tensors.items() if k.startswith(prefix)}
    return build_zimage_model(sd, path, weight_dtype, quantized=True)
