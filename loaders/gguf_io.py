"""GGUF files → state dicts: quantized tensors stay `QuantizedTensor` (raw blocks), float tensors are torch views."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..quant.gguf_reader import GGUFError, GGUFFile
from ..quant.tensor import QuantizedTensor
from ..quant.types import UnsupportedQuantType, get_quant_type
from .errors import ModelFileError

GGUF_MAGIC = b"GGUF"
# GGML float types that become plain torch tensors (views of the mapped file).
PLAIN_TYPES: dict[str, torch.dtype] = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."  # city96's converter stores shapes it had to change here


@dataclass
class GGUFStateDict:
    """A GGUF file's tensors (by their names in the file) and metadata."""
    path: str
    architecture: str | None
    metadata: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    type_names: dict[str, str]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: logical_shape(v) for k, v in self.tensors.items()}


def is_gguf(path: str | os.PathLike) -> bool:
    """True when the file starts with the GGUF magic (decided by content, not by name)."""
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def logical_shape(t: torch.Tensor) -> tuple[int, ...]:
    """The tensor's shape as the model sees it (for a QuantizedTensor, not the raw byte shape)."""
    return tuple(t.logical_shape) if isinstance(t, QuantizedTensor) else tuple(t.shape)


def read_gguf_state_dict(path: str | os.PathLike, expected: str, keep: "callable | None" = None) -> GGUFStateDict:
    """Map a GGUF file into a state dict without copying tensor data.

    `keep(name) -> bool` skips tensors that are not needed (they are never touched). Errors in the file
    become ModelFileError naming the file, `expected` and what was wrong.
    """
    try:
        gguf = GGUFFile(path)
    except GGUFError as exc:
        raise ModelFileError(path, expected, f"a damaged GGUF file ({exc.reason} at byte {exc.offset})",
                             "Re-download the file.") from None
    metadata = gguf.metadata
    tensors: dict[str, torch.Tensor] = {}
    type_names: dict[str, str] = {}
    for info in gguf:
        if keep is not None and not keep(info.name):
            continue
        try:
            qtype = get_quant_type(info.type_id, info.name)
        except UnsupportedQuantType as exc:
            raise ModelFileError(path, expected + " with tensor types this pack can read", str(exc),
                                 "Update the pack or use another quantization of the model.") from None
        shape = info.shape
        orig = metadata.get(ORIG_SHAPE_KEY + info.name)
        if orig is not None:
            shape = _orig_shape(orig, info.shape)
            if shape is None:
                raise ModelFileError(path, expected, f"a damaged GGUF file (the original shape {str(orig)[:80]} "
                                     f"stored for tensor '{info.name}' does not fit its shape {list(info.shape)})",
                                     "Re-download the file.")
        raw = gguf.tensor_bytes(info.name)
        if qtype.name in PLAIN_TYPES:
            if raw.data_ptr() % PLAIN_TYPES[qtype.name].itemsize:
                raw = raw.clone()  # a file with general.alignment 1 may place floats at odd addresses
            tensors[info.name] = raw.view(PLAIN_TYPES[qtype.name]).reshape(shape)
        else:
            if qtype.dequant is None:
                raise ModelFileError(path, expected + " with tensor types this pack can read",
                                     f"tensor '{info.name}' of type {qtype.name}, which has no dequantizer",
                                     "Use another quantization of the model.")
            try:
                tensors[info.name] = QuantizedTensor.from_raw(raw, qtype, shape, tensor_name=info.name)
            except ValueError as exc:
                raise ModelFileError(path, expected, f"a damaged GGUF file ({exc})", "Re-download the file.") from None
        type_names[info.name] = qtype.name
    arch = metadata.get("general.architecture")
    return GGUFStateDict(os.fspath(path), arch if isinstance(arch, str) else None, metadata, tensors, type_names)


def _orig_shape(orig: Any, stored: tuple[int, ...]) -> tuple[int, ...] | None:
    """A city96 `orig_shape` entry as a shape, when it is positive integers with the stored tensor's size."""
    if not isinstance(orig, np.ndarray) or orig.ndim != 1 or orig.dtype.kind not in "iu" or not 0 < orig.size <= 8:
        return None
    shape = tuple(int(x) for x in orig.tolist())
    numel = stored_numel = 1
    for d in shape:
        numel *= d
    for d in stored:
        stored_numel *= d
    if any(d <= 0 for d in shape) or numel != stored_numel:
        return None
    return shape


def densify(t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A dense copy of a quantized tensor (used only for small tensors no quantized op owns)."""
    return t.dequantize(dtype) if isinstance(t, QuantizedTensor) else t


def densify_unowned(model: torch.nn.Module, sd: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Dequantize, in place, the quantized tensors of `sd` whose module is not a quantized op.

    Norm weights, pad tokens and the like are plain parameters: they must arrive dense. Large weights of
    Linear/Embedding layers stay quantized.
    """
    from ..quant.ops import QuantLayer
    owned = set()
    for name, module in model.named_modules():
        if isinstance(module, QuantLayer):
            owned.update({f"{prefix}{name}.weight", f"{prefix}{name}.bias"})
    for key, value in sd.items():
        if isinstance(value, QuantizedTensor) and key not in owned:
            sd[key] = value.dequantize(torch.float32)
