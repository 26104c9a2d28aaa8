"""Fast, defensive GGUF reader: a read-only mmap + numpy, zero-copy tensor views.

``GGUFFile(path)`` parses the header, metadata and tensor infos of a GGUF v2/v3 little-endian file.
Only regular files are opened (see :mod:`.regular_file`: no FIFO, directory or symlink loop). Every count,
length, offset, alignment and dimension is checked against the file size before it is used, so a damaged or
hostile file raises :class:`GGUFError` (file name, byte offset, reason) instead of crashing, hanging or
allocating absurd amounts. Parsing is linear in the number of entries, and what it keeps is bounded by a small
multiple of the file size: counts beyond the limits below (far above any model file) are refused, and arrays
of strings (e.g. 151k tokenizer tokens) stay in the mapping as :class:`GGUFStringArray` (start offsets only),
decoded on access. Their starts are found without a per-string Python loop (see :func:`_string_starts`) and
their UTF-8 is checked at parse time in bounded pieces.

Tensors come back as zero-copy, read-only views of the mapped bytes (:meth:`GGUFFile.tensor_bytes`), with the
GGML type id and the logical shape in torch order (GGUF ``ne`` reversed). The mapping is shared and
read-only (no commit charge: a file larger than the machine's memory still opens).
"""
from __future__ import annotations

import codecs
import contextlib
import gc
import math
import mmap
import os
import struct
import warnings
from collections.abc import Sequence
from typing import Any, Iterator, NamedTuple, Optional

import numpy as np
import torch

from .regular_file import open_regular_file

GGUF_MAGIC = 0x46554747  # b"GGUF" little-endian
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 8
# Limits far above any model file (the largest published GGUFs hold ~1 200 tensors and ~50 metadata keys, and
# llama.cpp writes no nested arrays): beyond them a file is refused before its entries are stored.
MAX_TENSORS = 1 << 17
MAX_METADATA_KEYS = 1 << 16
MAX_NESTED_ARRAYS = 1 << 16  # arrays inside arrays, in the whole file
MAX_TRAILING_BYTES = 1 << 20  # bytes after the last tensor's data (writers pad to the alignment)

# GGUF metadata value type -> (name, numpy dtype or None for string/array)
_SCALAR_TYPES: dict[int, np.dtype] = {
    0: np.dtype("<u1"), 1: np.dtype("<i1"), 2: np.dtype("<u2"), 3: np.dtype("<i2"),
    4: np.dtype("<u4"), 5: np.dtype("<i4"), 6: np.dtype("<f4"), 7: np.dtype("<u1"),
    10: np.dtype("<u8"), 11: np.dtype("<i8"), 12: np.dtype("<f8"),
}
T_BOOL, T_STRING, T_ARRAY = 7, 8, 9
VALUE_TYPE_NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool",
                    8: "str", 9: "array", 10: "u64", 11: "i64", 12: "f64"}

_STRING_WINDOW = 1 << 18  # bytes searched for string starts per pass
_UTF8_PIECE = 1 << 18  # bytes of a string array checked as UTF-8 at a time
_DECODE_CHUNK = 1 << 16  # strings decoded together by GGUFStringArray
_U64 = struct.Struct("<Q").unpack_from
_U32 = struct.Struct("<I").unpack_from
_DIMS = [struct.Struct(f"<{n}Q").unpack_from for n in range(MAX_DIMS + 1)]
_TYPE_AND_OFFSET = struct.Struct("<IQ").unpack_from


class GGUFError(ValueError):
    """A malformed or unsupported GGUF file: carries the file name and the byte offset."""

    def __init__(self, path: str, offset: int, message: str):
        self.path, self.offset, self.reason = path, offset, message
        super().__init__(f"{os.path.basename(path)}: at byte {offset}: {message}")


class GGUFTensorInfo(NamedTuple):
    """Where one tensor's bytes are and what they hold (immutable; a tuple, so 100 000 of them are cheap)."""
    name: str
    type_id: int
    shape: tuple[int, ...]  # torch order (GGUF ne reversed)
    offset: int  # absolute byte offset in the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        from .types import QUANT_TYPES
        qt = QUANT_TYPES.get(self.type_id)
        return qt.name if qt else f"type{self.type_id}"


class GGUFStringArray(Sequence):
    """A GGUF array of strings, kept in the mapped file and decoded on access (``tolist()`` decodes all).

    Holds a view of the strings' bytes (so the mapping outlives :meth:`GGUFFile.close` while the array is
    referenced) and the start of each string; the UTF-8 was checked when the file was parsed.
    """

    __slots__ = ("_region", "_starts")

    def __init__(self, region: np.ndarray, starts: np.ndarray) -> None:
        self._region, self._starts = region, starts  # starts: offsets of the u64 length prefixes in region

    def __len__(self) -> int:
        return len(self._starts)

    def _end(self, i: int) -> int:
        return int(self._starts[i + 1]) if i + 1 < len(self._starts) else len(self._region)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"string array index {index} out of range ({n} entries)")
        return self._region[int(self._starts[i]) + 8:self._end(i)].tobytes().decode("utf-8")

    def _chunk(self, first: int, stop: int) -> list[str]:
        base = int(self._starts[first])
        raw = self._region[base:self._end(stop - 1)].tobytes()
        bounds = (self._starts[first:stop].astype(np.int64) - base).tolist() + [len(raw)]
        return [raw[a + 8:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])]

    def __iter__(self) -> Iterator[str]:
        for first in range(0, len(self), _DECODE_CHUNK):
            yield from self._chunk(first, min(len(self), first + _DECODE_CHUNK))

    def __contains__(self, value: object) -> bool:
        return any(value == s for s in self)

    def tolist(self) -> list[str]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (GGUFStringArray, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(self[i]) for i in range(min(3, len(self))))
        return f"GGUFStringArray([{head}{', …' if len(self) > 3 else ''}], {len(self)} strings)"


class _Cursor:
    """Bounds-checked little-endian reads over the mapped file."""

    def __init__(self, buf: np.ndarray, mm: mmap.mmap, path: str, pos: int = 0):
        self.buf, self.mm, self.path, self.pos = buf, mm, path, pos
        self.size = len(buf)

    def fail(self, msg: str, at: Optional[int] = None) -> GGUFError:
        return GGUFError(self.path, self.pos if at is None else at, msg)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what}: needs {n} bytes but only {max(0, self.size - self.pos)} remain")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.mm, self.pos)
        self.pos += n
        return v[0] if len(v) == 1 else v

    def u32(self, what: str) -> int:
        return self.unpack("<I", what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)

    def string(self, what: str) -> str:
        start = self.pos
        n = self.u64(f"{what} length")
        self.need(n, what)
        raw = self.mm[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8 ({e.reason})", start) from None


def _u64_at_every_byte(buf: np.ndarray, pos: int, width: int) -> np.ndarray:
    """The little-endian u64 starting at each of the byte positions pos .. pos+width-1 (bytes past the end of
    the file read as 0xFF, i.e. as an impossible length)."""
    size = len(buf)
    pad = np.full(width + 16, 0xFF, dtype=np.uint8)
    avail = min(size - pos, width + 16)
    pad[:avail] = buf[pos:pos + avail]
    out = np.empty(width, dtype=np.uint64)
    for r in range(8):  # the u64s at positions r, r+8, r+16 ... are one unaligned view each
        n = len(range(r, width, 8))
        out[r::8] = pad[r:r + 8 * n].view("<u8")
    return out


def _string_starts(buf: np.ndarray, pos: int, count: int, path: str) -> tuple[np.ndarray, int]:
    """(offsets from ``pos`` of ``count`` consecutive GGUF strings (u64 length + bytes), end of the last one).

    Vectorised: within a window of W bytes, ``nxt[p] = p + 8 + len_at(p)`` is built for the positions whose
    string would end inside the window (few besides the real starts: a length is a small number only where
    its high bytes are zero), and the chain from the window's first string is enumerated by pointer doubling
    over those positions: O(n log n) numpy work for the n candidates, no per-string Python code. A string that
    ends past the window ends the window's chain; the next window starts after it. Each window yields at
    least one string, so the loop is bounded by ``count``.
    """
    size, base = len(buf), pos
    out = np.empty(count, dtype=np.uint32 if size - base < 1 << 32 else np.int64)
    found = 0
    while found < count:
        if pos + 8 > size:
            raise GGUFError(path, pos, f"string array truncated: {count - found} of {count} strings missing")
        width = min(size - pos, _STRING_WINDOW)
        lens = _u64_at_every_byte(buf, pos, width)
        cand = np.flatnonzero(lens <= np.uint64(width))
        nxt = cand + 8 + lens[cand].astype(np.int64)
        keep = nxt <= width
        cand, nxt = cand[keep], nxt[keep]
        want = count - found
        if len(cand) and cand[0] == 0:
            none = len(cand)  # candidate index meaning "no further candidate"
            index = np.full(width + 1, none, dtype=np.int32)  # byte position -> candidate index
            index[cand] = np.arange(none, dtype=np.int32)
            jump = np.append(index[nxt], np.int32(none))
            chain = np.zeros(1, dtype=np.int32)  # candidate indices reached, in order
            while len(chain) < want:
                tail = jump[chain]
                tail = tail[tail < none]
                if len(tail) == 0:
                    break
                chain = np.concatenate([chain, tail[: want - len(chain)]])
                jump = jump[jump]
            # step k appends the positions 2^k .. 2^(k+1)-1 ahead; "no further" maps to itself, so dropping it
            # keeps a prefix of the chain
            starts = cand[chain]
            end = int(nxt[chain[-1]])
            if len(starts) < want and end < width:  # the next string starts here but ends past the window
                starts = np.append(starts, end)
                end = end + 8 + int(lens[end])
        else:  # the first string itself ends past the window
            starts, end = np.zeros(1, dtype=np.int64), 8 + int(lens[0])
        if pos + end > size:
            last = pos + int(starts[-1])
            raise GGUFError(path, last, f"string of {end - 8 - int(starts[-1])} bytes runs past end of file "
                                        f"({size} bytes)")
        out[found:found + len(starts)] = starts + (pos - base)
        found += len(starts)
        pos += end
    return out, pos


def _utf8_problem(buf: np.ndarray, base: int, starts: np.ndarray, end: int) -> Optional[tuple[int, str]]:
    """(index, reason) of the first string that is not valid UTF-8 on its own, or None.

    The strings are checked together, in pieces of bounded size, length prefixes included: a prefix whose bytes
    are all ASCII (any length below 128 in each byte) separates its neighbours like a space would, others are
    blanked to spaces in a copy of the piece. A character cut by a string boundary then fails too, as it must.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    total, n = end - base, len(starts)
    for a in range(0, total, _UTF8_PIECE):
        b = min(total, a + _UTF8_PIECE)
        piece = buf[base + a:base + b]
        lo, hi = int(np.searchsorted(starts, max(0, a - 7))), int(np.searchsorted(starts, b))
        own = starts[lo:hi].astype(np.int64)
        following = np.append(starts[lo + 1:hi + 1].astype(np.int64), total) if hi == n else \
            starts[lo + 1:hi + 1].astype(np.int64)
        wide = ((following - own - 8).astype(np.uint64) & np.uint64(0x8080808080808080)) != 0
        if wide.any():
            prefix = (own[wide, None] - a + np.arange(8)).ravel()
            piece = piece.copy()
            piece[prefix[(prefix >= 0) & (prefix < b - a)]] = 0x20
        try:
            decoder.decode(memoryview(piece), b == total)
        except UnicodeDecodeError as exc:
            return _first_bad_string(buf, base, starts, total, max(0, a - 4), b), exc.reason
    return None


def _first_bad_string(buf: np.ndarray, base: int, starts: np.ndarray, total: int, a: int, b: int) -> int:
    """Index of the first string overlapping bytes [a, b) of the array that does not decode alone."""
    first = max(0, int(np.searchsorted(starts, a, side="right")) - 1)
    for i in range(first, int(np.searchsorted(starts, b))):
        stop = int(starts[i + 1]) if i + 1 < len(starts) else total
        try:
            buf[base + int(starts[i]) + 8:base + stop].tobytes().decode("utf-8")
        except UnicodeDecodeError:
            return i
    return first


class GGUFFile:
    """A parsed GGUF file; use as a context manager or call :meth:`close`.

    ``metadata``: key -> value (str, int, float, bool; numeric arrays as numpy arrays; string arrays as
    :class:`GGUFStringArray`; nested arrays as lists). ``tensors``: name -> :class:`GGUFTensorInfo` in file
    order. Raises :class:`GGUFError` for a malformed file and :class:`~.regular_file.NotARegularFile` (an
    ``OSError``) for a path that is no regular file.
    """

    def __init__(self, path: "str | os.PathLike[str]"):
        self.path = os.fspath(path)
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, str] = {}
        self.tensors: dict[str, GGUFTensorInfo] = {}
        self._mm: Optional[mmap.mmap] = None
        self._nested_left = MAX_NESTED_ARRAYS
        with open_regular_file(self.path) as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise GGUFError(self.path, 0, f"file too small for a GGUF header ({size} bytes)")
            # read-only and shared: no commit charge for the file's size, and nothing can write the file
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.file_size = size
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)
        try:
            with _gc_paused():
                self._parse()
        except Exception:
            self.close()
            raise

    # ---------------------------------------------------------------------------------------- parsing
    def _parse(self) -> None:
        c = _Cursor(self._buf, self._mm, self.path)
        magic = c.u32("magic")
        if magic != GGUF_MAGIC:
            raise GGUFError(self.path, 0, f"not a GGUF file (magic {magic:#010x})")
        version = c.u32("version")
        if version not in SUPPORTED_VERSIONS:
            swapped = struct.unpack("<I", struct.pack(">I", version))[0]
            if swapped in SUPPORTED_VERSIONS or (version & 0xFFFF) == 0:
                raise GGUFError(self.path, 4, f"big-endian GGUF (version bytes {version:#010x}) is not supported")
            raise GGUFError(self.path, 4, f"unsupported GGUF version {version} (supported: 2, 3)")
        self.version = version
        n_tensors = c.u64("tensor count")
        n_kv = c.u64("metadata count")
        remaining = self.file_size - c.pos
        # minimal sizes: a KV is >= 8 (key len) + 4 (type) + 1 bytes, a tensor info >= 8 + 4 + 4 + 8
        if n_kv * 13 > remaining:
            raise GGUFError(self.path, 16, f"metadata count {n_kv} cannot fit in {remaining} remaining bytes")
        if n_tensors * 24 > remaining:
            raise GGUFError(self.path, 8, f"tensor count {n_tensors} cannot fit in {remaining} remaining bytes")
        if n_kv > MAX_METADATA_KEYS:
            raise GGUFError(self.path, 16, f"{n_kv} metadata keys (this reader accepts at most {MAX_METADATA_KEYS}; "
                                           "model files have a few dozen)")
        if n_tensors > MAX_TENSORS:
            raise GGUFError(self.path, 8, f"{n_tensors} tensors (this reader accepts at most {MAX_TENSORS}; model "
                                          "files have a few thousand at most)")
        for _ in range(n_kv):
            at = c.pos
            key = c.string("metadata key")
            vtype = c.u32(f"type of {key!r}")
            if key in self.metadata:
                raise GGUFError(self.path, at, f"duplicate metadata key {key!r}")
            self.metadata[key] = self._value(c, vtype, key, 0)
            self.metadata_types[key] = self._type_name(vtype)
        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in self.metadata:
            alignment = self.metadata["general.alignment"]
            if (self.metadata_types["general.alignment"] != "u32" or not isinstance(alignment, int)
                    or alignment <= 0 or alignment & (alignment - 1)):
                raise GGUFError(self.path, c.pos, f"general.alignment must be a power-of-two u32, got {alignment!r}")
        self.alignment = alignment
        infos_at = c.pos
        c.pos = self._tensor_infos_end(infos_at, n_tensors)
        self.data_offset = -(-c.pos // alignment) * alignment
        self._read_tensor_infos(infos_at, n_tensors)

    def _tensor_infos_end(self, pos: int, n_tensors: int) -> int:
        """Where the tensor infos end (their lengths only: the data section starts at the next alignment)."""
        mm, size, at = self._mm, self.file_size, pos
        try:
            for _ in range(n_tensors):
                at = pos
                (n,) = _U64(mm, pos)
                if n > size:
                    raise GGUFError(self.path, at, f"tensor name of {n} bytes runs past end of file ({size} bytes)")
                (n_dims,) = _U32(mm, pos + 8 + n)
                if n_dims > MAX_DIMS:
                    raise GGUFError(self.path, pos + 8 + n, f"tensor info with {n_dims} dims (max {MAX_DIMS})")
                pos += 8 + n + 4 + 8 * n_dims + 12
        except struct.error:
            raise GGUFError(self.path, at, f"tensor info truncated by end of file ({size} bytes)") from None
        if pos > size:
            raise GGUFError(self.path, at, f"tensor info truncated by end of file ({size} bytes)")
        return pos

    def _read_tensor_infos(self, pos: int, n_tensors: int) -> None:
        """Read, check and store each tensor info (type, shape, data range, no duplicate name) in one pass."""
        from .types import QUANT_TYPES
        mm, alignment, data_offset, tensors = self._mm, self.alignment, self.data_offset, self.tensors
        data_size = self.file_size - data_offset
        data_end = 0
        for _ in range(n_tensors):
            at = pos
            (n,) = _U64(mm, pos)
            pos += 8 + n
            try:
                name = mm[at + 8:pos].decode("utf-8")
            except UnicodeDecodeError as e:
                raise GGUFError(self.path, at, f"tensor name is not valid UTF-8 ({e.reason})") from None
            (n_dims,) = _U32(mm, pos)
            ne = _DIMS[n_dims](mm, pos + 4)
            pos += 4 + 8 * n_dims
            type_id, offset = _TYPE_AND_OFFSET(mm, pos)
            pos += 12
            if name in tensors:
                raise GGUFError(self.path, at, f"duplicate tensor name {name!r}")
            qt = QUANT_TYPES.get(type_id)
            if qt is None:
                raise GGUFError(self.path, at, f"tensor {name!r} has unknown GGML type id {type_id}")
            numel = math.prod(ne)
            if numel == 0 and math.prod(d or 1 for d in ne) >= 1 << 62:  # torch cannot describe such a shape
                raise GGUFError(self.path, at, f"tensor {name!r} has absurd dimensions {list(ne)}")
            if ne and ne[0] % qt.block_size:
                raise GGUFError(self.path, at, f"tensor {name!r}: row length {ne[0]} is not a multiple of "
                                               f"{qt.name} block size {qt.block_size}")
            n_bytes = numel // qt.block_size * qt.type_size
            if offset % alignment:
                raise GGUFError(self.path, at, f"tensor {name!r}: data offset {offset} not aligned to {alignment}")
            if n_bytes > data_size or offset > data_size - n_bytes:
                raise GGUFError(self.path, at, f"tensor {name!r}: data [{offset}, {offset + n_bytes}) past the end "
                                               f"of the data section ({max(0, data_size)} bytes)")
            if offset + n_bytes > data_end:
                data_end = offset + n_bytes
            tensors[name] = GGUFTensorInfo(name, type_id, ne[::-1] if n_dims > 1 else ne, data_offset + offset,
                                           n_bytes)
        if data_size - data_end > MAX_TRAILING_BYTES:
            raise GGUFError(self.path, data_offset + data_end,
                            f"{data_size - data_end} bytes after the end of the tensor data (the file has "
                            f"{self.file_size} bytes; at most {MAX_TRAILING_BYTES} bytes of padding are accepted)")

    @staticmethod
    def _type_name(vtype: int) -> str:
        return VALUE_TYPE_NAMES.get(vtype, str(vtype))

    def _value(self, c: _Cursor, vtype: int, key: str, depth: int) -> Any:
        if vtype == T_STRING:
            return c.string(f"value of {key!r}")
        dt = _SCALAR_TYPES.get(vtype)
        if dt is not None:
            c.need(dt.itemsize, f"value of {key!r}")
            v = self._buf[c.pos:c.pos + dt.itemsize].view(dt)[0]
            c.pos += dt.itemsize
            return bool(v) if vtype == T_BOOL else v.item()
        if vtype == T_ARRAY:
            return self._array(c, key, depth)
        raise c.fail(f"metadata {key!r} has unknown value type {vtype}", c.pos - 4)

    def _array(self, c: _Cursor, key: str, depth: int) -> Any:
        if depth >= MAX_ARRAY_NESTING:
            raise c.fail(f"metadata {key!r}: arrays nested deeper than {MAX_ARRAY_NESTING}")
        etype = c.u32(f"element type of {key!r}")
        at = c.pos
        count = c.u64(f"element count of {key!r}")
        remaining = c.size - c.pos
        dt = _SCALAR_TYPES.get(etype)
        if dt is not None:
            if count * dt.itemsize > remaining:
                raise c.fail(f"array {key!r} of {count} x {self._type_name(etype)} runs past end of file", at)
            arr = self._buf[c.pos:c.pos + count * dt.itemsize].view(dt).copy()
            c.pos += count * dt.itemsize
            return arr.astype(bool) if etype == T_BOOL else arr
        if etype == T_STRING:
            if count * 8 > remaining:
                raise c.fail(f"string array {key!r} of {count} entries runs past end of file", at)
            return self._string_array(c, key, count)
        if etype == T_ARRAY:
            if count * 12 > remaining:
                raise c.fail(f"nested array {key!r} of {count} entries runs past end of file", at)
            if count > self._nested_left:
                raise c.fail(f"metadata {key!r}: more than {MAX_NESTED_ARRAYS} arrays inside arrays in the file "
                             "(model files have none)", at)
            self._nested_left -= count
            return [self._array(c, key, depth + 1) for _ in range(count)]
        raise c.fail(f"array {key!r} has unknown element type {etype}", at - 4)

    def _string_array(self, c: _Cursor, key: str, count: int) -> GGUFStringArray:
        base = c.pos
        if count == 0:
            return GGUFStringArray(self._buf[base:base], np.zeros(0, dtype=np.uint32))
        starts, end = _string_starts(self._buf, base, count, self.path)
        problem = _utf8_problem(self._buf, base, starts, end)
        if problem is not None:
            index, reason = problem
            raise c.fail(f"entry {index} of string array {key!r} is not valid UTF-8 ({reason})",
                         base + int(starts[index]))
        c.pos = end
        return GGUFStringArray(self._buf[base:end], starts)

    # ---------------------------------------------------------------------------------------- access
    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Drop the mapping; tensors and string arrays already returned keep it alive until they are freed."""
        mm, self._mm = self._mm, None
        self._buf = None  # type: ignore[assignment]
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views are still alive; the mapping goes when they do

    @property
    def closed(self) -> bool:
        return self._mm is None

    def _require_open(self) -> mmap.mmap:
        if self._mm is None:
            raise ValueError(f"{self.path} is closed")
        return self._mm

    def __iter__(self) -> Iterator[GGUFTensorInfo]:
        return iter(self.tensors.values())

    def __len__(self) -> int:
        return len(self.tensors)

    def info(self, name: str) -> GGUFTensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{os.path.basename(self.path)} has no tensor {name!r}") from None

    def tensor_numpy(self, name: str) -> np.ndarray:
        """Zero-copy, read-only uint8 numpy view of a tensor's raw bytes."""
        ti = self.info(name)
        self._require_open()
        return self._buf[ti.offset:ti.offset + ti.n_bytes]

    def tensor_bytes(self, name: str) -> torch.Tensor:
        """Zero-copy uint8 torch view of a tensor's raw bytes (valid while referenced; never write to it)."""
        return readonly_tensor(self.tensor_numpy(name))

    def load(self, name: str) -> "Any":
        """The tensor as a :class:`~.tensor.QuantizedTensor` over the mapped bytes (no copy)."""
        from .tensor import QuantizedTensor
        ti = self.info(name)
        return QuantizedTensor.from_raw(self.tensor_bytes(name), ti.type_id, ti.shape, tensor_name=name)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing: a parse creates a few objects per tensor, none in a
    cycle, and the collections they would trigger in a process holding torch cost more than the parse itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def readonly_tensor(view: np.ndarray) -> torch.Tensor:
    """A torch uint8 tensor over a read-only numpy view of the mapping, without copying.

    torch keeps the numpy array alive, and the array holds a buffer export on the mmap, so the mapping cannot
    be closed under the tensor. torch warns (once) that it does not support read-only memory: the pack never
    writes to loaded weights, so that warning is silenced here, in this one place.
    """
    if view.size == 0:
        return torch.empty(0, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
        return torch.frombuffer(view, dtype=torch.uint8)


def read_gguf(path: "str | os.PathLike[str]") -> GGUFFile:
    """Open and parse a GGUF file (same as ``GGUFFile(path)``)."""
    return GGUFFile(path)
