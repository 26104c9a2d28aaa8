"""fp8 checkpoints with scales: the legacy "scaled fp8" marker and per-layer `.comfy_quant` entries.

The host does the arithmetic (its own fp8 ops); this module only tells it what the file holds, the way the
host's own detection would, since the pack builds the model config itself. Hosts differ:
- ComfyUI ≥ 0.4 converts scaled fp8 into `.comfy_quant` entries (`comfy.utils.convert_old_quants`) and
  runs them with its mixed-precision ops;
- ComfyUI 0.3.x reads the `scaled_fp8` marker into `model_config.scaled_fp8` and the
  `_quantization_metadata` file metadata into `layer_quant_config`; it cannot run `.comfy_quant` entries, so
  those files (Comfy-Org's int8 ConvRot and mixed fp8 releases, DiT or text encoder) are refused by name.
"""
from __future__ import annotations

import json

import torch

from .errors import ModelFileError

SCALED_FP8_MARKER = "scaled_fp8"
COMFY_QUANT_SUFFIX = ".comfy_quant"
METADATA_KEY = "_quantization_metadata"


def has_scaled_weights(sd: dict, metadata: dict | None) -> bool:
    return (SCALED_FP8_MARKER in sd or any(k.endswith(COMFY_QUANT_SUFFIX) for k in sd)
            or METADATA_KEY in (metadata or {}))


def comfy_quant_formats(sd: dict[str, torch.Tensor]) -> list[str]:
    """The formats named by a state dict's `.comfy_quant` entries, e.g. ["int8_tensorwise with convrot"]."""
    found: set[str] = set()
    for key, value in sd.items():
        if key.endswith(COMFY_QUANT_SUFFIX):
            try:
                conf = json.loads(bytes(value.tolist()).decode("utf-8"))
            except (ValueError, TypeError, AttributeError):
                conf = {}
            name = str(conf.get("format", "unknown")) if isinstance(conf, dict) else "unknown"
            found.add(name + (" with convrot" if isinstance(conf, dict) and conf.get("convrot") else ""))
    return sorted(found)


def require_comfy_quant_support(sd: dict[str, torch.Tensor], path, expected: str, instead: str) -> None:
    """Refuse per-layer `.comfy_quant` files (Comfy-Org's int8 ConvRot and mixed fp8 releases) on a ComfyUI that
    cannot run them: it would read their int8/fp8 weights without scales."""
    import comfy.quant_ops
    import comfy.utils
    formats = comfy_quant_formats(sd)
    if not formats:
        return
    algos = getattr(comfy.quant_ops, "QUANT_ALGOS", {})
    unknown = [f for f in formats if f.split(" ")[0] not in algos]
    if not hasattr(comfy.utils, "convert_old_quants") or unknown:
        raise ModelFileError(path, expected + " in a format this ComfyUI can run",
                             f"per-layer .comfy_quant quantization ({', '.join(unknown or formats)}), which needs a "
                             "newer ComfyUI", f"Update ComfyUI, or use {instead}.")


def apply_quant_format(sd: dict[str, torch.Tensor], metadata: dict | None, model_config, path, expected: str):
    """Prepare `sd` and `model_config` for a scaled/mixed fp8 file on this host; returns the new sd.

    Returns (sd, quantized) where quantized says the host's quantized ops are in charge (then the
    compute dtype must be chosen without the file's weight dtype, as core does).
    """
    import comfy.utils
    metadata = dict(metadata or {})
    if hasattr(comfy.utils, "convert_old_quants"):  # ComfyUI >= 0.4
        sd, metadata = comfy.utils.convert_old_quants(sd, "", metadata=metadata)
        quant_config = comfy.utils.detect_layer_quantization(sd, "")
        if quant_config:
            model_config.quant_config = quant_config
        return sd, bool(quant_config)
    require_comfy_quant_support(sd, path, expected, "the model's bf16 file (z_image_turbo_bf16.safetensors, "
                                "z_image_bf16.safetensors) or a DiT GGUF")
    quantized = False
    if SCALED_FP8_MARKER in sd:
        marker = sd.pop(SCALED_FP8_MARKER)
        model_config.scaled_fp8 = torch.float8_e4m3fn if marker.dtype == torch.float32 else marker.dtype
        model_config.optimizations["fp8"] = marker.nelement() != 2
        quantized = True
    if METADATA_KEY in metadata:
        layers = json.loads(metadata[METADATA_KEY]).get("layers")
        if layers:
            model_config.layer_quant_config = layers
            quantized = True
    return sd, quantized
