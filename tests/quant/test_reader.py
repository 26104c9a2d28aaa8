"""GGUF reader vs gguf-py's GGUFReader, versions, endianness, big string arrays, writer behaviour."""
from __future__ import annotations

import os
import struct
import time

import gguf
import numpy as np
import pytest
import torch

from zimage_turbo.quant.gguf_reader import GGUFError, GGUFFile
from zimage_turbo.quant.gguf_writer import write_gguf


def _oracle(path: str) -> tuple[dict, dict]:
    """gguf-py's view: metadata key -> python value, tensor name -> (type id, torch shape, bytes)."""
    r = gguf.GGUFReader(path)
    meta = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        v = f.contents()
        meta[f.name] = v
    tensors = {t.name: (int(t.tensor_type), tuple(int(d) for d in reversed(t.shape.tolist())),
                        np.asarray(t.data).reshape(-1).view(np.uint8).tobytes()) for t in r.tensors}
    return meta, tensors


def _plain(v):
    """numpy arrays -> lists; nested arrays flattened (gguf-py's contents() flattens them)."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, list) and v and isinstance(v[0], (list, np.ndarray)):
        return [x for sub in v for x in _plain(sub)]
    return v


def _ours(path: str) -> tuple[dict, dict]:
    with GGUFFile(path) as g:
        meta = {k: _plain(v) for k, v in g.metadata.items()}
        tensors = {n: (ti.type_id, ti.shape, g.tensor_numpy(n).tobytes()) for n, ti in g.tensors.items()}
    return meta, tensors


def _assert_same(path: str) -> None:
    om, ot = _oracle(path)
    mm, mt = _ours(path)
    assert mm.keys() == om.keys()
    for k in om:
        a, b = mm[k], om[k]
        if isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-7), k
        elif isinstance(b, list) and b and isinstance(b[0], float):
            assert a == pytest.approx(b, rel=1e-7), k
        else:
            assert a == b, k
    assert mt == ot


def _gguf_py_file(path: str, alignment: int | None = None) -> None:
    w = gguf.GGUFWriter(path, "testarch")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_uint8("u8", 200); w.add_int8("i8", -5); w.add_uint16("u16", 65000); w.add_int16("i16", -30000)
    w.add_uint32("u32", 4_000_000_000); w.add_int32("i32", -7); w.add_float32("f32", 1.25)
    w.add_uint64("u64", 2**63 + 5); w.add_int64("i64", -2**40); w.add_float64("f64", 1e-300)
    w.add_bool("flag", True); w.add_string("s", "héllo\n\x00world")
    w.add_array("ints", [1, -2, 3]); w.add_array("floats", [0.5, 1.5]); w.add_array("strs", ["a", "", "ü"])
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((3, 8)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 3, 4)).astype(np.float16))
    q = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q8", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


@pytest.mark.parametrize("alignment", [None, 64])
def test_matches_gguf_py_on_gguf_py_files(tmp_path, alignment):
    p = str(tmp_path / "a.gguf")
    _gguf_py_file(p, alignment)
    _assert_same(p)
    with GGUFFile(p) as g:
        assert g.version == 3 and g.alignment == (alignment or 32)
        assert g.metadata_types["u32"] == "u32" and g.metadata["s"] == "héllo\n\x00world"
        assert g.tensors["f16"].shape == (2, 3, 4)
        assert g.tensors["q8"].shape == (4, 64) and g.tensors["q8"].type_id == 8


def test_matches_gguf_py_on_our_files(tmp_path):
    p = str(tmp_path / "b.gguf")
    rng = np.random.default_rng(1)
    write_gguf(p, {"w": (torch.randn(16, 256), "Q4_K"), "e": (rng.standard_normal((8, 64)), "Q5_1"),
                   "raw": (np.zeros(34 * 2, np.uint8), 8, (64,)), "b": (torch.ones(5), "F32")},
               {"general.architecture": "t", "n": ("u32", 36), "big": 2**40, "neg": -3, "f": 0.1,
                "toks": ["x", "yy", "ζ"], "arr": np.arange(4, dtype=np.uint16), "flags": [True, False],
                "nested": [[1, 2], [3]], "d": ("f64", [1.0, 2.0])}, alignment=128)
    _assert_same(p)
    with GGUFFile(p) as g:
        assert g.metadata_types["n"] == "u32" and g.metadata_types["big"] == "u64" and g.metadata_types["neg"] == "i32"
        assert g.metadata_types["f"] == "f32" and g.metadata_types["d"] == "array"
        assert g.metadata["nested"][0].tolist() == [1, 2]
        assert all(ti.offset % 128 == 0 for ti in g)


def test_zero_copy_views(tmp_path):
    p = str(tmp_path / "c.gguf")
    write_gguf(p, {"w": (torch.randn(4, 32), "Q8_0")}, {})
    with GGUFFile(p) as g:
        t = g.tensor_bytes("w")
        assert t.dtype == torch.uint8 and t.numel() == g.tensors["w"].n_bytes
        assert t.data_ptr() == g.tensor_numpy("w").ctypes.data
        with open(p, "rb") as f:
            f.seek(g.tensors["w"].offset)
            assert f.read(t.numel()) == t.numpy().tobytes()
    assert t.sum() >= 0  # view stays valid after close


def _patched(tmp_path, data: bytes, name: str = "x.gguf") -> str:
    p = str(tmp_path / name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def test_versions_and_endianness(tmp_path):
    p = str(tmp_path / "v.gguf")
    write_gguf(p, {"w": (torch.randn(2, 32), "Q8_0")}, {"k": "v"})
    raw = open(p, "rb").read()
    v2 = _patched(tmp_path, raw[:4] + struct.pack("<I", 2) + raw[8:], "v2.gguf")
    with GGUFFile(v2) as g:
        assert g.version == 2 and g.metadata["k"] == "v"
    for version, msg in [(1, "unsupported GGUF version 1"), (4, "unsupported GGUF version 4")]:
        with pytest.raises(GGUFError, match=msg):
            GGUFFile(_patched(tmp_path, raw[:4] + struct.pack("<I", version) + raw[8:]))
    with pytest.raises(GGUFError, match="big-endian") as ei:
        GGUFFile(_patched(tmp_path, raw[:4] + struct.pack(">I", 3) + raw[8:], "be.gguf"))
    assert "be.gguf" in str(ei.value) and "byte 4" in str(ei.value)
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFFile(_patched(tmp_path, b"GGML" + raw[4:]))
    with pytest.raises(GGUFError, match="too small"):
        GGUFFile(_patched(tmp_path, b"GGUF"))


def test_151k_string_array_is_fast(tmp_path):
    p = str(tmp_path / "tok.gguf")
    pieces = ["a", "Ġthe", "你好", "é", "\n", "\x00", "<|im_start|>", "", "🙂"]
    toks = [pieces[i % 9] * (i % 4) + str(i % 997) for i in range(151_643)]
    write_gguf(p, {}, {"tokenizer.ggml.tokens": toks, "tokenizer.ggml.token_type": np.ones(len(toks), np.int32)})
    GGUFFile(p).close()  # warm imports
    t0 = time.perf_counter()
    with GGUFFile(p) as g:
        got = g.metadata["tokenizer.ggml.tokens"]
    elapsed = time.perf_counter() - t0
    assert got == toks
    print(f"151k tokens parsed in {elapsed * 1000:.0f} ms")
    assert elapsed < 1.0, elapsed


def test_long_strings_cross_window(tmp_path, monkeypatch):
    from zimage_turbo.quant import gguf_reader
    monkeypatch.setattr(gguf_reader, "_STRING_WINDOW", 64)
    toks = ["a" * 100, "b", "", "c" * 63, "d" * 56, "e" * 3000, "f"] * 5
    p = str(tmp_path / "long.gguf")
    write_gguf(p, {}, {"t": toks})
    with GGUFFile(p) as g:
        assert g.metadata["t"] == toks


def test_invalid_utf8_in_string_array(tmp_path):
    p = str(tmp_path / "u.gguf")
    write_gguf(p, {}, {"t": ["ab", "cd"]})
    raw = bytearray(open(p, "rb").read())
    i = raw.index(b"cd")
    raw[i] = 0xC3  # truncated 2-byte sequence
    with pytest.raises(GGUFError, match="entry 1 .* not valid UTF-8"):
        GGUFFile(_patched(tmp_path, bytes(raw)))


def test_writer_refuses_overwrite_and_cleans_up(tmp_path):
    p = str(tmp_path / "o.gguf")
    write_gguf(p, {"w": (torch.randn(1, 32), "Q8_0")}, {"a": 1})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_gguf(p, {}, {"a": 2})
    write_gguf(p, {}, {"a": 2}, overwrite=True)
    with GGUFFile(p) as g:
        assert g.metadata["a"] == 2 and not g.tensors
    with pytest.raises(ValueError):
        write_gguf(str(tmp_path / "bad.gguf"), {"w": (np.zeros(3, np.uint8), "Q8_0", (32,))}, {})
    assert sorted(os.listdir(tmp_path)) == ["o.gguf"]
