"""GGUF v3 writer: metadata typed from Python values, tensors raw or quantized on the fly.

``write_gguf(path, tensors, metadata)`` writes to a temporary file next to ``path`` and moves it into
place at the end, refusing to replace an existing file unless ``overwrite=True``. Tensor data offsets and
the data section are aligned to ``alignment`` (written as ``general.alignment`` when not 32).

Metadata typing: ``str`` -> string, ``bool`` -> bool, ``int`` -> i32 if it fits, else u32, u64 or i64,
``float`` -> f32, numpy scalars/arrays -> their own type, lists -> arrays (strings, bools, ints with the
same rule over all elements, floats -> f32, nested lists -> arrays of arrays). For an exact type give a
``(type_name, value)`` tuple, e.g. ``{"qwen3.block_count": ("u32", 36), "x": ("f64", [1.0, 2.0])}``;
type names: u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str.
"""
from __future__ import annotations

import math
import os
import struct
import tempfile
from typing import Any, BinaryIO, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .final_name import move_into_place
from .gguf_reader import DEFAULT_ALIGNMENT, GGUF_MAGIC
from .types import QuantType, get_quant_type

_TYPE_IDS = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8,
             "u64": 10, "i64": 11, "f64": 12}
_NP_OF = {"u8": "<u1", "i8": "<i1", "u16": "<u2", "i16": "<i2", "u32": "<u4", "i32": "<i4", "f32": "<f4",
          "bool": "<u1", "u64": "<u8", "i64": "<i8", "f64": "<f8"}
_NAME_OF_NP = {np.dtype(v).newbyteorder("<").str: k for k, v in _NP_OF.items() if k != "bool"}
_ARRAY = 9
_INT_TYPES_FOR_QTYPE = {"I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "F64": np.float64}

TensorSpec = Union[tuple, Any]


def _int_type(values: Sequence[int]) -> str:
    lo, hi = min(values, default=0), max(values, default=0)
    if -(1 << 31) <= lo and hi < (1 << 31):
        return "i32"
    if lo >= 0 and hi < (1 << 32):
        return "u32"
    if lo >= 0 and hi < (1 << 64):
        return "u64"
    if -(1 << 63) <= lo and hi < (1 << 63):
        return "i64"
    raise ValueError(f"integer {lo if lo < -(1 << 63) else hi} does not fit in 64 bits")


def _infer(value: Any) -> tuple[str, Any]:
    """Python value -> (type name or 'array:<elem>', value)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and value[0] in _TYPE_IDS:
        t, v = value
        if isinstance(v, (list, tuple, np.ndarray)):
            return f"array:{t}", v
        return t, v
    if isinstance(value, (bool, np.bool_)):
        return "bool", bool(value)
    if isinstance(value, str):
        return "str", value
    if isinstance(value, np.generic):
        return _NAME_OF_NP[value.dtype.newbyteorder("<").str], value.item()
    if isinstance(value, int):
        return _int_type([value]), value
    if isinstance(value, float):
        return "f32", value
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            return "array:bool", value
        if value.dtype.kind in "US":
            return "array:str", [str(v) for v in value.reshape(-1)]
        return f"array:{_NAME_OF_NP[value.dtype.newbyteorder('<').str]}", value.reshape(-1)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return "array:str", list(value)
        if value and all(isinstance(v, (bool, np.bool_)) for v in value):
            return "array:bool", list(value)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            return f"array:{_int_type([int(v) for v in value])}", list(value)
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value):
            return "array:f32", list(value)
        if all(isinstance(v, (list, tuple, np.ndarray)) for v in value):
            return "array:array", list(value)
        raise TypeError(f"cannot store a list mixing {sorted({type(v).__name__ for v in value})} in GGUF")
    raise TypeError(f"cannot store {type(value).__name__} in GGUF metadata")


def _pack_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pack_scalar(t: str, v: Any) -> bytes:
    if t == "str":
        return _pack_string(v)
    return np.array(v, dtype=_NP_OF[t]).tobytes()


def _pack_value(value: Any) -> bytes:
    """Type id + payload for one metadata value."""
    t, v = _infer(value)
    if not t.startswith("array:"):
        return struct.pack("<I", _TYPE_IDS[t]) + _pack_scalar(t, v)
    et = t[len("array:"):]
    if et == "array":
        body = b"".join(_pack_value(list(x) if isinstance(x, tuple) else x)[4:] for x in v)
        return struct.pack("<IIQ", _ARRAY, _ARRAY, len(v)) + body
    head = struct.pack("<IIQ", _ARRAY, _TYPE_IDS[et], len(v))
    if et == "str":
        return head + b"".join(_pack_string(s) for s in v)
    return head + np.asarray(v, dtype=_NP_OF[et]).tobytes()


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if getattr(x, "raw_bytes", None) is not None:
            x = x.raw_bytes()
        x = x.cpu()
        if x.dtype == torch.bfloat16:
            x = x.to(torch.float32)
        return x.contiguous().numpy()
    return np.asarray(x)


def _tensor_bytes(name: str, spec: TensorSpec) -> tuple[QuantType, tuple[int, ...], np.ndarray]:
    """Normalise one tensor spec -> (type, torch-order shape, raw uint8 bytes)."""
    from .quantize import quantize

    if hasattr(spec, "quant_type") and hasattr(spec, "logical_shape"):  # QuantizedTensor
        qt, shape, data = spec.quant_type, tuple(spec.logical_shape), _to_numpy(spec)
    else:
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise TypeError(f"tensor {name!r}: expected (data, type[, shape]) or a QuantizedTensor")
        data = spec[0]
        qt = get_quant_type(spec[1], name)
        data = _to_numpy(data)
        shape = tuple(int(s) for s in spec[2]) if len(spec) == 3 and spec[2] is not None else tuple(data.shape)
        if data.dtype != np.uint8:
            if qt.name in _INT_TYPES_FOR_QTYPE:
                data = np.ascontiguousarray(data, dtype=_INT_TYPES_FOR_QTYPE[qt.name]).reshape(-1).view(np.uint8)
            else:
                if data.dtype.kind not in "fiub":
                    raise TypeError(f"tensor {name!r}: cannot quantize dtype {data.dtype}")
                data = quantize(data.astype(np.float32, copy=False).reshape(shape), qt).numpy()
    numel = math.prod(shape)
    if shape and shape[-1] % qt.block_size:
        raise ValueError(f"tensor {name!r}: row length {shape[-1]} not a multiple of {qt.name} block size {qt.block_size}")
    data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if data.size != qt.n_bytes(numel):
        raise ValueError(f"tensor {name!r}: {qt.name} {shape} needs {qt.n_bytes(numel)} bytes, got {data.size}")
    return qt, shape, data


def _pad(f: BinaryIO, pos: int, alignment: int) -> int:
    n = -pos % alignment
    f.write(b"\0" * n)
    return pos + n


def write_gguf(path: "str | os.PathLike[str]", tensors: Mapping[str, TensorSpec],
               metadata: Optional[Mapping[str, Any]] = None, alignment: int = DEFAULT_ALIGNMENT,
               overwrite: bool = False, publish: Callable[[str, str, bool], None] = move_into_place) -> None:
    """Write a GGUF v3 file.

    ``tensors``: name -> ``(data, type, shape)`` where ``data`` is raw uint8 blocks (numpy/torch) or a
    float array quantized here with :func:`~.quantize.quantize`; ``type`` is a GGML type id or name;
    ``shape`` is the logical torch-order shape (optional for float data). A
    :class:`~.tensor.QuantizedTensor` may be given directly. The file is written under a hidden temporary
    name in the same folder, removed on any failure or interrupt (KeyboardInterrupt included), and given its
    name by ``publish(tmp, path, overwrite)`` (the quantize command passes one that defers signals).
    """
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment}")
    meta = dict(metadata or {})
    if alignment != DEFAULT_ALIGNMENT or "general.alignment" in meta:
        given = meta.get("general.alignment", alignment)
        given = given[1] if isinstance(given, tuple) else given
        if int(given) != alignment:
            raise ValueError(f"general.alignment={given} disagrees with alignment={alignment}")
        meta["general.alignment"] = ("u32", alignment)
    kv = b"".join(_pack_string(str(k)) + _pack_value(v) for k, v in meta.items())
    items = [(name, *_tensor_bytes(name, spec)) for name, spec in tensors.items()]

    infos, offset = [], 0
    for name, qt, shape, data in items:
        ne = list(reversed(shape)) or [1]
        infos.append(_pack_string(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, qt.type_id, offset))
        offset += data.size + (-data.size % alignment)

    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            head = struct.pack("<IIQQ", GGUF_MAGIC, 3, len(items), len(meta)) + kv + b"".join(infos)
            f.write(head)
            pos = _pad(f, len(head), alignment)
            for _, _, _, data in items:
                f.write(memoryview(data))
                pos = _pad(f, pos + data.size, alignment)
        publish(tmp, path, overwrite)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
