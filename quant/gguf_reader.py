"""Fast, defensive GGUF reader: mmap + numpy, zero-copy tensor views.

``GGUFFile(path)`` parses the header, metadata and tensor infos of a GGUF v2/v3 little-endian file.
Every count, length, offset, alignment and dimension is checked against the file size before it is
used, so a damaged or hostile file raises :class:`GGUFError` (file name, byte offset, reason) instead of
crashing, hanging or allocating absurd amounts. Arrays of strings (e.g. 151k tokenizer tokens) are parsed
without a per-element Python loop: string starts are found by pointer doubling over a window of the file
(see :func:`_string_starts`), and all strings are decoded with one ``bytes.decode``.

Tensors come back as zero-copy views of the mapped bytes (:meth:`GGUFFile.tensor_bytes`), with the GGML
type id and the logical shape in torch order (GGUF ``ne`` reversed).
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
import torch

GGUF_MAGIC = 0x46554747  # b"GGUF" little-endian
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 8

# GGUF metadata value type -> (name, numpy dtype or None for string/array)
_SCALAR_TYPES: dict[int, np.dtype] = {
    0: np.dtype("<u1"), 1: np.dtype("<i1"), 2: np.dtype("<u2"), 3: np.dtype("<i2"),
    4: np.dtype("<u4"), 5: np.dtype("<i4"), 6: np.dtype("<f4"), 7: np.dtype("<u1"),
    10: np.dtype("<u8"), 11: np.dtype("<i8"), 12: np.dtype("<f8"),
}
T_BOOL, T_STRING, T_ARRAY = 7, 8, 9
VALUE_TYPE_NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool",
                    8: "str", 9: "array", 10: "u64", 11: "i64", 12: "f64"}

_STRING_WINDOW = 1 << 20  # bytes scanned per pointer-doubling pass


class GGUFError(ValueError):
    """A malformed or unsupported GGUF file: carries the file name and the byte offset."""

    def __init__(self, path: str, offset: int, message: str):
        self.path, self.offset, self.reason = path, offset, message
        super().__init__(f"{os.path.basename(path)}: at byte {offset}: {message}")


@dataclass(frozen=True)
class GGUFTensorInfo:
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


def _string_starts(buf: np.ndarray, pos: int, count: int, path: str) -> np.ndarray:
    """Offsets of ``count`` consecutive GGUF strings (u64 length + bytes) starting at ``pos``.

    Vectorised: within a window of W bytes, ``nxt[p] = p + 8 + len_at(p)`` is built for every byte
    position, then the chain from ``pos`` is enumerated by doubling (positions 1, 2, 4, ... steps ahead
    from the jump tables ``nxt^(2^k)``), O(W log W) numpy work per window and no per-string Python code.
    Each window yields at least one string, so the loop is bounded by ``count`` and by file size / W.
    """
    size = len(buf)
    starts: list[np.ndarray] = []
    found = 0
    while found < count:
        if pos + 8 > size:
            raise GGUFError(path, pos, f"string array truncated: {count - found} of {count} strings missing")
        w_end = min(size, pos + _STRING_WINDOW)
        W = w_end - pos
        # u64 length at every byte position p in [pos, w_end) (bytes past the file read as 0xFF -> invalid)
        pad = np.full(W + 8, 0xFF, dtype=np.uint8)
        avail = min(size, w_end + 8) - pos
        pad[:avail] = buf[pos:pos + avail]
        lens = np.zeros(W, dtype=np.uint64)
        for b in range(8):
            lens |= pad[b:b + W].astype(np.uint64) << np.uint64(8 * b)
        sentinel = W  # "left the window"
        ok = lens <= np.uint64(W)
        nxt = np.where(ok, np.arange(W, dtype=np.int64) + 8 + np.minimum(lens, W).astype(np.int64), sentinel)
        nxt = np.minimum(nxt, sentinel)
        # strings whose end passes the window (or the file) end the chain; keep the jump table closed
        jump = np.append(nxt, sentinel)
        chain = np.zeros(1, dtype=np.int64)  # relative positions reached, in order
        want = count - found
        while len(chain) < want:
            tail = jump[chain]
            tail = tail[tail < sentinel]
            if len(tail) == 0:
                break
            chain = np.concatenate([chain, tail[: want - len(chain)]])
            jump = jump[jump]
        # each step of the doubling above appends the positions len(chain)..2*len(chain)-1 ahead; since
        # jump maps sentinel to itself, truncation at the first sentinel keeps the list a valid prefix.
        chain = chain[:want]
        last = int(chain[-1])
        if pos + last + 8 > size:
            raise GGUFError(path, pos + last, "string length truncated by end of file")
        end = pos + last + 8 + int(lens[last])
        if end > size:
            raise GGUFError(path, pos + last, f"string of {int(lens[last])} bytes runs past end of file ({size} bytes)")
        starts.append(chain + pos)
        found += len(chain)
        pos = end
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


class GGUFFile:
    """A parsed GGUF file; use as a context manager or call :meth:`close`.

    ``metadata``: key -> value (str, int, float, bool; numeric arrays as numpy arrays; string arrays as
    lists of str; nested arrays as lists). ``tensors``: name -> :class:`GGUFTensorInfo` in file order.
    """

    def __init__(self, path: "str | os.PathLike[str]"):
        self.path = os.fspath(path)
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, str] = {}
        self.tensors: dict[str, GGUFTensorInfo] = {}
        self._mm: Optional[mmap.mmap] = None
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise GGUFError(self.path, 0, f"file too small for a GGUF header ({size} bytes)")
            # ACCESS_COPY: writable private mapping, so torch.frombuffer needs no copy and never writes the file
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        self.file_size = size
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)
        try:
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
        infos = []
        for _ in range(n_tensors):
            at = c.pos
            name = c.string("tensor name")
            n_dims = c.u32(f"n_dims of {name!r}")
            if n_dims > MAX_DIMS:
                raise GGUFError(self.path, c.pos - 4, f"tensor {name!r} has {n_dims} dims (max {MAX_DIMS})")
            c.need(8 * n_dims, f"dims of {name!r}")
            ne = [int(v) for v in struct.unpack_from(f"<{n_dims}Q", self._mm, c.pos)]
            c.pos += 8 * n_dims
            type_id = c.u32(f"type of {name!r}")
            offset = c.u64(f"data offset of {name!r}")
            if name in self.tensors or any(i[0] == name for i in infos):
                raise GGUFError(self.path, at, f"duplicate tensor name {name!r}")
            infos.append((name, ne, type_id, offset, at))
        self.data_offset = -(-c.pos // alignment) * alignment
        data_size = self.file_size - self.data_offset
        from .types import QUANT_TYPES
        for name, ne, type_id, offset, at in infos:
            qt = QUANT_TYPES.get(type_id)
            if qt is None:
                raise GGUFError(self.path, at, f"tensor {name!r} has unknown GGML type id {type_id}")
            numel = 1
            for d in ne:
                if d >= 1 << 62:
                    raise GGUFError(self.path, at, f"tensor {name!r} has absurd dimension {d}")
                numel *= d
            if ne and ne[0] % qt.block_size:
                raise GGUFError(self.path, at, f"tensor {name!r}: row length {ne[0]} is not a multiple of "
                                               f"{qt.name} block size {qt.block_size}")
            n_bytes = numel // qt.block_size * qt.type_size
            if offset % alignment:
                raise GGUFError(self.path, at, f"tensor {name!r}: data offset {offset} not aligned to {alignment}")
            if n_bytes > data_size or offset > data_size - n_bytes:
                raise GGUFError(self.path, at, f"tensor {name!r}: data [{offset}, {offset + n_bytes}) past the end "
                                               f"of the data section ({max(0, data_size)} bytes)")
            self.tensors[name] = GGUFTensorInfo(name, type_id, tuple(reversed(ne)), self.data_offset + offset, n_bytes)

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
            return [self._array(c, key, depth + 1) for _ in range(count)]
        raise c.fail(f"array {key!r} has unknown element type {etype}", at - 4)

    def _string_array(self, c: _Cursor, key: str, count: int) -> list[str]:
        if count == 0:
            return []
        starts = _string_starts(self._buf, c.pos, count, self.path)
        lens = np.zeros(len(starts), dtype=np.int64)
        for b in range(8):
            lens |= self._buf[starts + b].astype(np.int64) << (8 * b)
        begin = starts + 8
        end = begin + lens
        c.pos = int(end[-1])
        # gather all string bytes into one buffer (mask out the length prefixes) and decode once
        base = int(starts[0])
        region = self._buf[base:c.pos]
        keep = np.ones(len(region), dtype=bool)
        keep[(starts - base)[:, None] + np.arange(8)] = False
        data = region[keep]
        try:
            text = data.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            # characters per string = bytes - utf-8 continuation bytes
            byte_end = np.cumsum(lens)
            cont = np.flatnonzero((data & 0xC0) == 0x80)
            n_cont = np.bincount(np.searchsorted(byte_end, cont, side="right"), minlength=len(lens))[: len(lens)]
            ch_end = np.cumsum(lens - n_cont).tolist()
            if ch_end[-1] == len(text):
                ch_start = [0] + ch_end[:-1]
                return [text[a:b] for a, b in zip(ch_start, ch_end)]
        # some entry is not valid UTF-8 on its own: decode one by one to report which
        out = []
        for i, (a, b) in enumerate(zip(begin.tolist(), end.tolist())):
            try:
                out.append(self._mm[a:b].decode("utf-8"))
            except UnicodeDecodeError as e:
                raise c.fail(f"entry {i} of string array {key!r} is not valid UTF-8 ({e.reason})", a) from None
        return out

    # ---------------------------------------------------------------------------------------- access
    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Drop the mapping; tensors already returned keep it alive until they are freed."""
        mm, self._mm = self._mm, None
        self._buf = None  # type: ignore[assignment]
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views are still alive; the mapping goes when they do

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
        """Zero-copy uint8 numpy view of a tensor's raw bytes."""
        ti = self.info(name)
        self._require_open()
        return self._buf[ti.offset:ti.offset + ti.n_bytes]

    def tensor_bytes(self, name: str) -> torch.Tensor:
        """Zero-copy uint8 torch view of a tensor's raw bytes (valid while referenced)."""
        # via numpy: the array holds a buffer export on the mmap, so close() cannot unmap memory that a
        # live tensor still points at (torch.frombuffer alone would not prevent that)
        return torch.from_numpy(self.tensor_numpy(name))

    def load(self, name: str) -> "Any":
        """The tensor as a :class:`~.tensor.QuantizedTensor` over the mapped bytes (no copy)."""
        from .tensor import QuantizedTensor
        ti = self.info(name)
        return QuantizedTensor.from_raw(self.tensor_bytes(name), ti.type_id, ti.shape, tensor_name=name)


def read_gguf(path: "str | os.PathLike[str]") -> GGUFFile:
    """Open and parse a GGUF file (same as ``GGUFFile(path)``)."""
    return GGUFFile(path)
