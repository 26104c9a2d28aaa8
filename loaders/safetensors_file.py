"""Safe reading of safetensors files: the header is checked before any tensor is touched; pickles are refused."""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from . import interrupt
from .errors import ModelFileError
from .file_access import check_model_file, open_model_file

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
# Far above any model file (a Z-Image DiT has ~500 tensors, a full SDXL checkpoint ~2 500, LLM shards a few
# thousand); every entry costs ~10x its JSON size as Python objects, so the count is what bounds the memory.
MAX_HEADER_ENTRIES = 1 << 14
MAX_ELEMENTS = 1 << 62  # product of a shape's non-zero sizes; beyond it torch cannot even describe the shape
MAX_RANK = 16  # dimensions of a tensor (model weights have at most 5)
INTERRUPT_EVERY = 16  # tensors loaded between two looks at ComfyUI's interrupt flag
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
    with open_model_file(path, expected) as f:
        size = os.fstat(f.fileno()).st_size
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
    header = _parse_header_json(path, expected, raw)
    del raw
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


class _TooManyEntries(Exception):
    pass


def _parse_header_json(path: Path, expected: str, raw: bytes) -> dict:
    """The header as a dict; ModelFileError for bad JSON, a non-object, or more than MAX_HEADER_ENTRIES objects.

    Every JSON object opens with a literal '{' (some may sit in strings): a header with far more of them than
    entries allowed is refused before parsing, one with more is parsed counting objects (stopping at the limit),
    any other has few enough objects. Either way the memory stays within a small multiple of the header's size.
    """
    objects = 0

    def count(pairs: list) -> dict:
        nonlocal objects
        objects += 1
        if objects > MAX_HEADER_ENTRIES + 2:  # the header itself and __metadata__ are objects too
            raise _TooManyEntries
        return dict(pairs)

    try:
        if not raw.startswith(b"{"):
            raise ValueError("header does not start with '{'")
        braces = raw.count(b"{")
        if braces > 2 * MAX_HEADER_ENTRIES:  # twice: metadata strings may hold JSON (its braces)
            raise _TooManyEntries
        header = json.loads(raw, object_pairs_hook=count if braces > MAX_HEADER_ENTRIES + 2 else None)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except _TooManyEntries:
        raise ModelFileError(path, expected, f"a header of more than {MAX_HEADER_ENTRIES} entries",
                             f"This pack reads files of at most {MAX_HEADER_ENTRIES} tensors (model files have a few "
                             "thousand at most); the file is damaged or not a model.") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ModelFileError(path, expected, f"an unreadable header ({reason})", "The file is damaged.") from None
    return header


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def _is_shape(value) -> bool:
    """Sizes torch can describe: at most MAX_RANK of them, whose non-zero product fits (a size-0 dimension
    beside huge ones would otherwise pass every byte-count check and overflow in torch)."""
    return (isinstance(value, list) and len(value) <= MAX_RANK and all(_is_count(d) for d in value)
            and (0 not in value or math.prod(d or 1 for d in value) < MAX_ELEMENTS))


def _tensor_entry(info) -> tuple[str, tuple[int, ...], int, int] | None:
    """(dtype, shape, begin, end) of a well-formed header entry, else None (no exception for any JSON value)."""
    if not isinstance(info, dict):
        return None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
        return None
    if not _is_shape(shape):
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
    real, _ = check_model_file(header.path, header.expected)  # still a regular file (never a pipe to block on)
    try:
        with safe_open(real, framework="pt", device="cpu") as f:
            for i, key in enumerate(wanted):
                if i % INTERRUPT_EVERY == 0:
                    interrupt.check_interrupted()
                out[key] = f.get_tensor(key)
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as exc:
        # read_header checks what the library checks; this is the backstop for anything it still refuses
        # (or a file changed on disk since its header was read).
        raise ModelFileError(header.path, header.expected, f"a file the safetensors library cannot read ({exc})",
                             "The file is damaged or was changed while loading; re-download it.") from None
    return out
