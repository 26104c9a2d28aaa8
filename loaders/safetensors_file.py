"""Safe reading of safetensors files: the header is checked before any tensor is touched; pickles are refused."""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import ModelFileError

MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E8M0": 1}
_PICKLE_SIGNATURES = {b"PK\x03\x04": "a PyTorch zip/pickle checkpoint (.pt/.ckpt)", b"\x80\x02": "a Python pickle",
                      b"\x80\x03": "a Python pickle", b"\x80\x04": "a Python pickle", b"\x80\x05": "a Python pickle",
                      b"GGUF": "a GGUF file"}
SAFETENSORS = "a safetensors file"
_INTEGER_DTYPES = frozenset({"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"})
QUANT_ENTRY_SUFFIX = ".comfy_quant"  # per-layer quantization entries (JSON in U8 tensors, int weights allowed)


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    expected: str = SAFETENSORS  # what the loader wanted, for errors raised while loading tensors

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.tensors.items()}


def sniff_foreign_format(head: bytes) -> str | None:
    """Name the format of a file that is not safetensors, from its first bytes, if recognisable."""
    for signature, name in _PICKLE_SIGNATURES.items():
        if head.startswith(signature):
            return name
    return None


def read_header(path: str | os.PathLike, expected: str = SAFETENSORS) -> SafetensorsHeader:
    """Parse and validate a safetensors header without loading tensor data.

    Raises ModelFileError (naming the file, what was expected and what was found) for empty, truncated,
    pickled or otherwise malformed files.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if size == 0:
            raise ModelFileError(path, expected, "an empty file (0 bytes)", "Re-download the file.")
        foreign = sniff_foreign_format(head)
        if foreign:
            hint = ("This pack never loads pickle files (they can run code); use the .safetensors release."
                    if "pickle" in foreign else "Pick a loader that accepts this format.")
            raise ModelFileError(path, expected, foreign, hint)
        if len(head) < 8:
            raise ModelFileError(path, expected, f"a {size}-byte file, too short for a safetensors header",
                                 "The file is truncated; re-download it.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise ModelFileError(path, expected, f"a header length of {header_len} bytes in a {size}-byte file",
                                 "The file is truncated or not a safetensors file.")
        raw = f.read(header_len)
    try:
        if not raw.startswith(b"{"):
            raise ValueError("header does not start with '{'")
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ModelFileError(path, expected, f"an unreadable header ({reason})", "The file is damaged.") from None
    data_size = size - 8 - header_len
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileError(path, expected, "a malformed __metadata__ entry (not a map of strings)",
                             "The file is damaged.")
    tensors: dict[str, TensorEntry] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, info in header.items():
        entry = _tensor_entry(info)
        if entry is None:
            raise ModelFileError(path, expected, f"a malformed entry for tensor '{name[:200]}'", "The file is damaged.")
        dtype, shape, begin, end = entry
        count = 1
        for d in shape:
            count *= d
        if not begin <= end <= data_size:
            raise ModelFileError(path, expected,
                                 f"tensor '{name[:200]}' with byte range {begin}..{end} outside the {data_size} data bytes",
                                 "The file is truncated; re-download it.")
        if end - begin != count * _DTYPE_BYTES[dtype]:
            raise ModelFileError(path, expected, f"tensor '{name[:200]}' of shape {list(shape)[:8]} {dtype} stored in "
                                 f"{end - begin} bytes instead of {count * _DTYPE_BYTES[dtype]}", "The file is damaged.")
        tensors[name] = TensorEntry(dtype, shape)
        ranges.append((begin, end, name))
    # As the safetensors library requires: the tensors tile the data section, without gaps or overlaps.
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise ModelFileError(path, expected, f"tensor '{name[:200]}' at byte {begin} where byte {position} was due "
                                 "(tensor data overlaps or leaves gaps)", "The file is damaged.")
        position = end
    if position != data_size:
        raise ModelFileError(path, expected, f"{data_size - position} data bytes that belong to no tensor",
                             "The file is damaged or not a safetensors file.")
    return SafetensorsHeader(path, tensors, dict(metadata), expected)


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def _tensor_entry(info) -> tuple[str, tuple[int, ...], int, int] | None:
    """(dtype, shape, begin, end) of a well-formed header entry, else None (no exception for any JSON value)."""
    if not isinstance(info, dict):
        return None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
        return None
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        return None
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        return None
    return dtype, tuple(shape), offsets[0], offsets[1]


def load_tensors(header: SafetensorsHeader, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Load (memory-mapped) the tensors of a validated file, optionally only `keys`."""
    wanted = list(keys if keys is not None else header.tensors)
    if header.expected != SAFETENSORS and not any(k.endswith(QUANT_ENTRY_SUFFIX) for k in header.tensors):
        # model weights are floating point; integer/bool tensors only belong to per-layer quantization formats
        for key in wanted:
            entry = header.tensors.get(key)
            if entry is not None and entry.dtype in _INTEGER_DTYPES:
                raise ModelFileError(header.path, header.expected, f"tensor '{key[:200]}' stored as {entry.dtype}, "
                                     "an integer type where model weights are floating point",
                                     "The file is damaged or holds another kind of data.")
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(header.path), framework="pt", device="cpu") as f:
            for key in wanted:
                out[key] = f.get_tensor(key)
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as exc:
        # read_header checks what the library checks; this is the backstop for anything it still refuses
        # (or a file changed on disk since its header was read).
        raise ModelFileError(header.path, header.expected, f"a file the safetensors library cannot read ({exc})",
                             "The file is damaged or was changed while loading; re-download it.") from None
    return out
