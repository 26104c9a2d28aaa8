"""Hostile-input fuzzing of the GGUF reader: only GGUFError, never a crash, hang or huge allocation.

Deterministic (derandomize=True, no example database). ``ZIT_FUZZ_LONG=1`` runs >= 10000 examples.
"""
from __future__ import annotations

import os
import struct
import tempfile
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zimage_turbo.quant.gguf_reader import GGUFError, GGUFFile
from zimage_turbo.quant.gguf_writer import write_gguf

LONG = os.environ.get("ZIT_FUZZ_LONG") == "1"
PER_STRATEGY = 2600 if LONG else 520  # 4-5 strategies -> >= 2000 (>= 10000 long)
FUZZ = settings(max_examples=PER_STRATEGY, deadline=1000, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
MAX_PEAK = 64 << 20  # bytes the parser may allocate for these KB-sized files


def _base_files() -> list[bytes]:
    d = tempfile.mkdtemp()
    out = []
    specs = [
        ({"w": (torch.randn(2, 64), "Q8_0"), "b": (torch.randn(8), "F32"), "k": (torch.randn(1, 256), "Q4_K")},
         {"general.architecture": "fuzz", "n": ("u32", 3), "toks": ["a", "bc", "", "d" * 40] * 6,
          "ids": np.arange(12, dtype=np.int32), "nest": [[1, 2], [3]], "f": 0.5, "ok": True}, 32),
        ({"e": (torch.randn(4, 32), "Q5_0")}, {"s": "x" * 50, "u": ("u64", 7)}, 64),
    ]
    for i, (tensors, meta, align) in enumerate(specs):
        p = os.path.join(d, f"base{i}.gguf")
        write_gguf(p, tensors, meta, alignment=align)
        out.append(open(p, "rb").read())
    return out


BASES = _base_files()
_TMP = tempfile.mkdtemp()
INTERESTING_U64 = [0, 1, 2**31, 2**32 - 1, 2**32, 2**60, 2**62, 2**63, 2**64 - 1, 1000, 4096, 12345678]
INTERESTING_U32 = [0, 1, 3, 4, 5, 7, 8, 9, 13, 31, 33, 41, 99, 255, 2**31, 2**32 - 1]


def _check(data: bytes) -> None:
    path = os.path.join(_TMP, "f.gguf")
    with open(path, "wb") as f:
        f.write(data)
    tracemalloc.start()
    try:
        with GGUFFile(path) as g:
            for name in g.tensors:
                t = g.tensor_bytes(name)
                assert t.numel() == g.tensors[name].n_bytes
                assert g.tensors[name].offset + t.numel() <= len(data)
            _ = list(g.metadata.values())
    except GGUFError as e:
        assert "f.gguf" in str(e) and "at byte" in str(e)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MAX_PEAK, peak


@FUZZ
@given(base=st.sampled_from(range(len(BASES))), cut=st.integers(0, 10_000))
def test_truncation(base, cut):
    data = BASES[base]
    _check(data[: cut % (len(data) + 1)])


@FUZZ
@given(base=st.sampled_from(range(len(BASES))),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8))
def test_random_bytes(base, edits):
    data = bytearray(BASES[base])
    for pos, val in edits:
        data[pos % len(data)] = val
    _check(bytes(data))


@FUZZ
@given(base=st.sampled_from(range(len(BASES))), pos=st.integers(0, 10_000),
       val=st.sampled_from(INTERESTING_U64) | st.integers(0, 2**64 - 1))
def test_huge_u64_fields(base, pos, val):
    """Counts, string lengths, dims and offsets are u64: plant absurd values anywhere (8-byte aligned or not)."""
    data = bytearray(BASES[base])
    pos = pos % (len(data) - 7)
    data[pos:pos + 8] = struct.pack("<Q", val)
    _check(bytes(data))


@FUZZ
@given(base=st.sampled_from(range(len(BASES))), pos=st.integers(0, 10_000),
       val=st.sampled_from(INTERESTING_U32) | st.integers(0, 2**32 - 1))
def test_u32_fields(base, pos, val):
    """Value types, n_dims, tensor type ids, alignment: plant odd u32s."""
    data = bytearray(BASES[base])
    pos = pos % (len(data) - 3)
    data[pos:pos + 4] = struct.pack("<I", val)
    _check(bytes(data))


def test_targeted_hostile_headers():
    """Hand-made worst cases: 2^60 strings, giant tensor count, bad alignment, absurd dims, bad type id."""
    def header(n_tensors: int, kvs: bytes, n_kv: int) -> bytes:
        return struct.pack("<IIQQ", 0x46554747, 3, n_tensors, n_kv) + kvs

    def s(x: str) -> bytes:
        return struct.pack("<Q", len(x)) + x.encode()

    cases = {
        "string array": header(0, s("t") + struct.pack("<IIQ", 9, 8, 2**60) + s("a"), 1),
        "tensor count": header(2**62, b"", 0),
        "metadata count": header(0, b"", 2**40),
        "alignment": header(0, s("general.alignment") + struct.pack("<II", 4, 3), 1),
        "alignment zero": header(0, s("general.alignment") + struct.pack("<II", 4, 0), 1),
        "dims": header(1, s("w") + struct.pack("<I2QIQ", 2, 2**40, 2**40, 0, 0), 0),
        "n_dims": header(1, s("w") + struct.pack("<I", 1000), 0),
        "type id": header(1, s("w") + struct.pack("<I1QIQ", 1, 32, 77, 0), 0),
        "offset": header(1, s("w") + struct.pack("<I1QIQ", 1, 32, 0, 2**63), 0),
        "nesting": header(0, s("n") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 9, 1) * 20, 1),
        "value type": header(0, s("k") + struct.pack("<I", 13), 1),
    }
    for what, data in cases.items():
        with pytest.raises(GGUFError):
            _check_raises(data)


def _check_raises(data: bytes) -> None:
    path = os.path.join(_TMP, "h.gguf")
    with open(path, "wb") as f:
        f.write(data + b"\0" * 64)
    GGUFFile(path).close()


@settings(max_examples=PER_STRATEGY // 2, deadline=1000, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(toks=st.lists(st.text(max_size=40) | st.sampled_from(["", "a" * 97, "é" * 70, "\x00" * 8, "x" * 300]),
                     max_size=60),
       window=st.sampled_from([16, 24, 64, 1 << 18]), piece=st.sampled_from([8, 40, 1 << 18]))
def test_string_arrays_round_trip(toks, window, piece):
    """Any strings, any window and UTF-8 piece size: the lazy array holds exactly what was written."""
    from zimage_turbo.quant import gguf_reader
    saved = gguf_reader._STRING_WINDOW, gguf_reader._UTF8_PIECE
    gguf_reader._STRING_WINDOW, gguf_reader._UTF8_PIECE = window, piece
    try:
        path = os.path.join(_TMP, "strings.gguf")
        write_gguf(path, {}, {"t": toks, "n": 1}, overwrite=True)
        with GGUFFile(path) as g:
            assert g.metadata["t"] == toks and g.metadata["n"] == 1
    finally:
        gguf_reader._STRING_WINDOW, gguf_reader._UTF8_PIECE = saved
