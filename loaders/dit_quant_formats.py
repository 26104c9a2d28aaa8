"""fp8 checkpoints with scales: the legacy "scaled fp8" marker and per-layer `.comfy_quant` entries.

The host does the arithmetic (its own fp8 ops); this module only tells it what the file holds, the way the
host's own detection would, since the pack builds the model config itself. Hosts differ:
- ComfyUI ≥ 0.4 converts scaled fp8 into `.comfy_quant` entries (`comfy.utils.convert_old_quants`) and
  runs them with its mixed-precision ops;
- ComfyUI 0.3.x reads the `scaled_fp8` marker into `model_config.scaled_fp8` and the
  `_quantization_metadata` file metadata into `layer_quant_config`; it cannot run `.comfy_quant` entries, so
  those files (Comfy-Org's int8 ConvRot and mixed fp8 releases, DiT or text encoder) are refused by name.

Before the host sees anything, :func:`check_quant_format` reads the quantization metadata as untrusted
(`_quantization_metadata` and each `.comfy_quant` entry: UTF-8 JSON objects naming a known format) and
refuses scaled layers whose scales are missing (a host would run them unscaled), of the wrong shape or not
finite — each error names the tensor or key at fault.
"""
from __future__ import annotations

import torch

from .errors import ModelFileError
from .metadata import BadMetadata, describe_value, parse_json_object

SCALED_FP8_MARKER = "scaled_fp8"
COMFY_QUANT_SUFFIX = ".comfy_quant"
METADATA_KEY = "_quantization_metadata"
MAX_ENTRY_BYTES = 1 << 16  # a `.comfy_quant` entry is a short JSON object
# Per-layer formats ComfyUI knows (comfy.quant_ops.QUANT_ALGOS of recent versions) -> the scale tensors a
# quantized layer must carry, and whether its weight_scale is one number ("tensor"), one per row or per
# tensor ("row"), or blocks (None: shape not checked).
FORMAT_SCALES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "float8_e4m3fn": (("weight_scale",), "tensor"), "float8_e5m2": (("weight_scale",), "tensor"),
    "int8_tensorwise": (("weight_scale",), "row"), "convrot_w4a4": (("weight_scale",), "row"),
    "mxfp8": (("weight_scale",), None), "nvfp4": (("weight_scale", "weight_scale_2"), None),
}
# Formats whose stored weight packs several values into each element of its input dimension (two 4-bit values
# a byte): the layer's weight is [rows, columns * n] where the file holds [rows, columns]. (Storage may also pad
# rows and columns, nvfp4 to 16 and mxfp8 to 32; Z-Image's widths are multiples of 32, so no padding is undone.)
PACKED_VALUES = {"nvfp4": 2, "convrot_w4a4": 2}
LEGACY_SCALES = ("scale_weight", "scale_input")  # scaled fp8: one number per layer each
MARKER_DTYPES = (torch.float32, torch.float8_e4m3fn, torch.float8_e5m2)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
HINT = "The file's quantization data is damaged; re-download it or use the model's bf16 file."


def has_scaled_weights(sd: dict, metadata: dict | None) -> bool:
    return (SCALED_FP8_MARKER in sd or any(k.endswith(COMFY_QUANT_SUFFIX) for k in sd)
            or METADATA_KEY in (metadata or {}))


def _host_formats() -> dict:
    import comfy.quant_ops
    return getattr(comfy.quant_ops, "QUANT_ALGOS", {})


def _layer_config(key: str, conf: object, where: str = "") -> dict:
    """A layer's quantization config: a JSON object whose "format" ComfyUI knows (`where`: which layer of `key`)."""
    if not isinstance(conf, dict):
        raise BadMetadata(key, "a JSON object naming a quantization format", f"{where}JSON {describe_value(conf)}")
    known = sorted(set(FORMAT_SCALES) | set(_host_formats()))
    fmt = conf.get("format")
    if not isinstance(fmt, str) or fmt not in known:
        raise BadMetadata(key, f"a quantization format ComfyUI knows ({', '.join(known)})",
                          where + ("no format" if fmt is None else describe_value(fmt)))
    return conf


def _entry_configs(sd: dict[str, torch.Tensor]) -> dict[str, dict]:
    """{layer: config} of the state dict's `.comfy_quant` entries (UTF-8 JSON in uint8 tensors)."""
    layers = {}
    for key, value in sd.items():
        if not key.endswith(COMFY_QUANT_SUFFIX):
            continue
        if value.dtype != torch.uint8 or value.ndim != 1 or value.numel() > MAX_ENTRY_BYTES:
            raise BadMetadata(key, f"JSON text (a 1-D uint8 tensor of at most {MAX_ENTRY_BYTES} bytes)",
                              f"a {str(value.dtype).replace('torch.', '')} tensor of shape {list(value.shape)}")
        layers[key[: -len(COMFY_QUANT_SUFFIX)]] = _layer_config(key, parse_json_object(key, value.numpy().tobytes()))
    return layers


def _metadata_configs(metadata: dict | None) -> dict[str, dict]:
    """{layer: config} of the `_quantization_metadata` entry of a file's metadata ({"layers": {...}})."""
    if METADATA_KEY not in (metadata or {}):
        return {}
    document = parse_json_object(METADATA_KEY, metadata[METADATA_KEY])
    layers = document.get("layers")
    if not isinstance(layers, dict):
        raise BadMetadata(METADATA_KEY, 'a JSON object with a "layers" object ({layer: {"format": …}})',
                          "no layers" if layers is None else f'"layers" of {describe_value(layers)}')
    return {name: _layer_config(METADATA_KEY, conf, f"for layer '{name[:80]}': ") for name, conf in layers.items()}


def _parsed_configs(sd: dict[str, torch.Tensor], metadata: dict | None, path) -> tuple[dict, dict]:
    """({layer: config} of the `.comfy_quant` entries in `sd`, {layer: config} of `_quantization_metadata`);
    ModelFileError naming the key when that data is malformed."""
    try:
        return _entry_configs(sd), _metadata_configs(metadata)
    except BadMetadata as exc:
        raise exc.for_file(path, HINT) from None


def layer_formats(sd: dict[str, torch.Tensor], metadata: dict | None, path) -> dict[str, str]:
    """{layer: format name} of a file's quantized layers (its `.comfy_quant` entries in `sd`, and its
    `_quantization_metadata`); ModelFileError naming the key when that data is malformed."""
    entries, from_metadata = _parsed_configs(sd, metadata, path)
    return {layer: conf["format"] for layer, conf in {**from_metadata, **entries}.items()}


def model_shapes(shapes: dict[str, tuple[int, ...]], formats: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """The shapes the model's layers have, from the shapes the file stores: a packed weight (nvfp4: two values
    a byte) is wider in the model than in the file. Everything else is as stored."""
    out = dict(shapes)
    for layer, fmt in formats.items():
        key, per_element = f"{layer}.weight", PACKED_VALUES.get(fmt, 1)
        shape = shapes.get(key)
        if per_element > 1 and shape is not None and len(shape) == 2:
            out[key] = (shape[0], shape[1] * per_element)
    return out


def header_model_shapes(headers: list) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in safetensors files (their headers) as the model's layers have it: :func:`model_shapes`
    with the formats of their `.comfy_quant` entries (small tensors, read here) and `_quantization_metadata`."""
    from .safetensors_file import load_tensors
    entries, shapes = {}, {}
    for header in headers:
        shapes.update(header.shapes())
        keys = [k for k in header.tensors if k.endswith(COMFY_QUANT_SUFFIX)]
        if keys:  # the file is opened only for them (load_tensors would open and map it even for none)
            entries.update(load_tensors(header, keys))
    first = headers[0]
    return model_shapes(shapes, layer_formats(entries, first.metadata, first.path))


def _scale_error(path, expected: str, name: str, found: str) -> ModelFileError:
    return ModelFileError(path, expected, found, HINT, key=name)


def _shape_text(t: torch.Tensor) -> str:
    return f"a tensor of shape {list(t.shape)}"


def _check_legacy_scales(sd: dict[str, torch.Tensor], path) -> None:
    """Scaled fp8: every fp8 matrix has its one-number `scale_weight`; scales are single numbers."""
    marker = sd[SCALED_FP8_MARKER]
    if marker.dtype not in MARKER_DTYPES:
        raise _scale_error(path, f"tensor '{SCALED_FP8_MARKER}' (the scaled-fp8 marker) to be float32 or fp8",
                           SCALED_FP8_MARKER, f"a {str(marker.dtype).replace('torch.', '')} tensor")
    for key, value in sd.items():
        base = key[: -len("weight")]
        if key.endswith(".weight") and value.dtype in FP8_DTYPES and value.ndim >= 2 and base + "scale_weight" not in sd:
            raise _scale_error(path, f"a scale '{base}scale_weight' for the fp8 weight '{key}' (a scaled-fp8 file)",
                               base + "scale_weight", "none: that layer would run unscaled")
        if key.rsplit(".", 1)[-1] in LEGACY_SCALES and value.numel() != 1:
            raise _scale_error(path, f"tensor '{key}' to be one number (the per-tensor scale of its layer)", key,
                               _shape_text(value))


def _check_layer_scales(sd: dict[str, torch.Tensor], layers: dict[str, dict], path) -> None:
    """Each quantized layer present carries the scales of its format, of a shape that fits its weight."""
    for layer, conf in layers.items():
        weight = sd.get(f"{layer}.weight")
        if weight is None:
            continue
        needed, kind = FORMAT_SCALES.get(conf["format"], ((), None))
        for scale in needed:
            name = f"{layer}.{scale}"
            if name not in sd:
                raise _scale_error(path, f"a scale '{name}' for the {conf['format']} weight '{layer}.weight'", name,
                                   "none: that layer would run unscaled")
        name = f"{layer}.weight_scale"
        value = sd.get(name)
        rows = weight.shape[0] if weight.ndim else 1
        fits = {"tensor": lambda v: v.numel() == 1, "row": lambda v: v.numel() in (1, rows)}.get(kind)
        if value is not None and fits is not None and not fits(value):
            what = "one number" if kind == "tensor" else f"one number or one per row ({rows})"
            raise _scale_error(path, f"tensor '{name}' to be {what} (the scale of '{layer}.weight')", name,
                               _shape_text(value))


def check_quant_format(sd: dict[str, torch.Tensor], metadata: dict | None, path, expected: str) -> dict[str, dict]:
    """Validate a scaled/mixed fp8 (or other `.comfy_quant`) file; returns {layer: config} from its entries and
    metadata. ModelFileError naming the key or tensor at fault: malformed JSON, unknown formats, missing scales
    (the layer would run unscaled) or scales of the wrong shape. (NaN/Inf scales: loaders/nonfinite.py.)"""
    entries, from_metadata = _parsed_configs(sd, metadata, path)
    if SCALED_FP8_MARKER in sd and not from_metadata:
        _check_legacy_scales(sd, path)
    layers = {**from_metadata, **entries}
    _check_layer_scales(sd, layers, path)
    return layers


def _require_host_support(sd: dict[str, torch.Tensor], layers: dict[str, dict], path, expected: str,
                          instead: str) -> None:
    """Refuse formats this ComfyUI cannot run: per-layer `.comfy_quant` entries on a host without
    `convert_old_quants` (it would read their int8/fp8 weights without scales), or formats it lacks."""
    import comfy.utils
    algos = _host_formats()
    entries = any(k.endswith(COMFY_QUANT_SUFFIX) for k in sd)
    formats = sorted({conf["format"] + (" with convrot" if conf.get("convrot") else "") for conf in layers.values()})
    unknown = [f for f in formats if f.split(" ")[0] not in algos]
    if (entries and not hasattr(comfy.utils, "convert_old_quants")) or unknown:
        raise ModelFileError(path, expected + " in a format this ComfyUI can run",
                             f"per-layer {'.comfy_quant ' if entries else ''}quantization "
                             f"({', '.join(unknown or formats)}), which needs a newer ComfyUI",
                             f"Update ComfyUI, or use {instead}.")


def require_comfy_quant_support(sd: dict[str, torch.Tensor], path, expected: str, instead: str,
                                metadata: dict | None = None) -> None:
    """Validate the file's quantization data (:func:`check_quant_format`) and refuse what this ComfyUI cannot run
    (Comfy-Org's int8 ConvRot and mixed fp8 releases on 0.3.x)."""
    if has_scaled_weights(sd, metadata):
        _require_host_support(sd, check_quant_format(sd, metadata, path, expected), path, expected, instead)


def apply_quant_format(sd: dict[str, torch.Tensor], metadata: dict | None, model_config, path, expected: str):
    """Prepare `sd` and `model_config` for a scaled/mixed fp8 file on this host; returns the new sd.

    Returns (sd, quantized) where quantized says the host's quantized ops are in charge (then the
    compute dtype must be chosen without the file's weight dtype, as core does).
    """
    import comfy.utils
    layers = check_quant_format(sd, metadata, path, expected)
    metadata = dict(metadata or {})
    if hasattr(comfy.utils, "convert_old_quants"):  # ComfyUI >= 0.4
        _require_host_support(sd, layers, path, expected, "the model's bf16 file")
        sd, metadata = comfy.utils.convert_old_quants(sd, "", metadata=metadata)
        quant_config = comfy.utils.detect_layer_quantization(sd, "")
        if quant_config:
            model_config.quant_config = quant_config
        return sd, bool(quant_config)
    _require_host_support(sd, layers, path, expected, "the model's bf16 file (z_image_turbo_bf16.safetensors, "
                          "z_image_bf16.safetensors) or a DiT GGUF")
    quantized = False
    if SCALED_FP8_MARKER in sd:
        marker = sd.pop(SCALED_FP8_MARKER)
        model_config.scaled_fp8 = torch.float8_e4m3fn if marker.dtype == torch.float32 else marker.dtype
        model_config.optimizations["fp8"] = marker.nelement() != 2
        quantized = True
    if layers:  # from `_quantization_metadata` only: a host without convert_old_quants refused `.comfy_quant` entries
        model_config.layer_quant_config = layers
        quantized = True
    return sd, quantized
