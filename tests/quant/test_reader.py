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


def _sequential_strings(raw: bytes, pos: int, count: int) -> list[str]:
    """Reference: the strings of a GGUF string array read one by one."""
    out = []
    for _ in range(count):
        (n,) = struct.unpack_from("<Q", raw, pos)
        out.append(raw[pos + 8:pos + 8 + n].decode("utf-8"))
        pos += 8 + n
    return out


@pytest.mark.parametrize("window", [16, 64, 300, 1 << 18])
def test_string_starts_match_a_sequential_read(tmp_path, monkeypatch, window):
    """Lengths that look like other strings' starts (zero bytes, 'a' = 97, lengths past 128 and past the window):
    the vectorised search finds exactly the sequential chain, across windows and UTF-8 pieces."""
    from zimage_turbo.quant import gguf_reader
    monkeypatch.setattr(gguf_reader, "_STRING_WINDOW", window)
    monkeypatch.setattr(gguf_reader, "_UTF8_PIECE", 40)
    rng = np.random.default_rng(window)
    alphabet = ["\x00", "\x01", "a", "é", "你", "🙂", "\x08", " "]
    toks = ["".join(rng.choice(alphabet, size=n)) for n in rng.choice([0, 1, 7, 8, 9, 97, 130, 400], size=300)]
    p = str(tmp_path / "s.gguf")
    write_gguf(p, {}, {"t": toks})
    raw = open(p, "rb").read()
    start = raw.index(b"t" + struct.pack("<IIQ", 9, 8, len(toks))) + 1 + 16
    assert _sequential_strings(raw, start, len(toks)) == toks
    with GGUFFile(p) as g:
        got = g.metadata["t"]
        assert got == toks and got.tolist() == toks and list(got) == toks
        assert [got[i] for i in (0, -1, 150)] == [toks[0], toks[-1], toks[150]] and got[5:9] == toks[5:9]


def test_string_array_is_lazy_and_outlives_close(tmp_path):
    from zimage_turbo.quant.gguf_reader import GGUFStringArray
    p = str(tmp_path / "lazy.gguf")
    toks = [f"tok{i}" for i in range(1000)]
    write_gguf(p, {}, {"t": toks, "empty": ("str", [])})
    g = GGUFFile(p)
    got, empty = g.metadata["t"], g.metadata["empty"]
    g.close()
    assert isinstance(got, GGUFStringArray) and len(got) == 1000 and got[999] == "tok999"  # mapping still there
    assert len(empty) == 0 and empty == [] and list(empty) == []
    assert got != toks[:-1] and got != ["x"] * 1000 and got != "tok0"
    assert repr(got).startswith("GGUFStringArray(['tok0', 'tok1', 'tok2', …], 1000 strings")
    with pytest.raises(IndexError):
        got[1000]


@pytest.mark.parametrize("pair, entry", [((b"a\xc3", b"\xa9b"), 0),  # one character cut in two by the boundary
                                         ((b"ok", b"\xa9" + b"x" * 140), 1),  # 140-byte entry: high length byte
                                         ((b"x" * 200, b"y" * 199 + b"\xff"), 1)])
def test_each_string_must_be_utf8_on_its_own(tmp_path, pair, entry):
    p = str(tmp_path / "cut.gguf")
    body = b"".join(struct.pack("<Q", len(s)) + s for s in pair)
    data = struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + struct.pack("<Q", 1) + b"t" + struct.pack("<IIQ", 9, 8, 2) + body
    with open(p, "wb") as f:
        f.write(data + b"\0" * (-len(data) % 32))
    with pytest.raises(GGUFError, match=f"entry {entry} of string array 't' is not valid UTF-8"):
        GGUFFile(p)


def test_mapping_is_read_only_and_views_stay_valid(tmp_path):
    p = str(tmp_path / "ro.gguf")
    write_gguf(p, {"w": (torch.randn(4, 32), "Q8_0"), "e": (np.zeros(0, np.float32), "F32", (0, 32))}, {})
    with GGUFFile(p) as g:
        assert not g.tensor_numpy("w").flags.writeable
        t, empty = g.tensor_bytes("w"), g.tensor_bytes("e")
        assert empty.numel() == 0 and g.tensors["e"].shape == (0, 32)
    assert g.closed and t.numpy().tobytes() == open(p, "rb").read()[g.tensors["w"].offset:][:t.numel()]


def test_trailing_bytes_beyond_padding_are_refused(tmp_path):
    from zimage_turbo.quant.gguf_reader import MAX_TRAILING_BYTES
    p = str(tmp_path / "t.gguf")
    write_gguf(p, {"w": (torch.randn(2, 32), "Q8_0")}, {})
    raw = open(p, "rb").read()
    with GGUFFile(p) as g:
        end = g.tensors["w"].offset + g.tensors["w"].n_bytes
    GGUFFile(_patched(tmp_path, raw + b"\0" * 4096, "padded.gguf")).close()
    trailing = len(raw) + MAX_TRAILING_BYTES + 1 - end
    with pytest.raises(GGUFError, match=f"at byte {end}: {trailing} bytes after the end of the tensor data"):
        GGUFFile(_patched(tmp_path, raw + b"\0" * (MAX_TRAILING_BYTES + 1), "long.gguf"))


def test_counts_beyond_any_model_file_are_refused(tmp_path):
    from zimage_turbo.quant.gguf_reader import MAX_METADATA_KEYS, MAX_NESTED_ARRAYS
    n = MAX_NESTED_ARRAYS + 1
    nested = struct.pack("<Q", 1) + b"n" + struct.pack("<IIQ", 9, 9, n) + struct.pack("<IQ", 4, 0) * n
    head = struct.pack("<IIQQ", 0x46554747, 3, 0, 1)
    with pytest.raises(GGUFError, match=f"more than {MAX_NESTED_ARRAYS} arrays inside arrays"):
        GGUFFile(_patched(tmp_path, head + nested, "nested.gguf"))
    kvs = MAX_METADATA_KEYS + 1
    with pytest.raises(GGUFError, match=f"{kvs} metadata keys .*at most {MAX_METADATA_KEYS}"):
        GGUFFile(_patched(tmp_path, struct.pack("<IIQQ", 0x46554747, 3, 0, kvs) + b"\0" * (13 * kvs), "kv.gguf"))


def test_an_empty_tensor_with_huge_sizes_is_refused(tmp_path):
    """[2^40, 2^40, 0] holds no bytes, but torch cannot multiply its sizes (integer multiplication overflow)."""
    info = struct.pack("<Q", 1) + b"e" + struct.pack("<I3QIQ", 3, 0, 2**40, 2**40, 0, 0)
    data = struct.pack("<IIQQ", 0x46554747, 3, 1, 0) + info
    with pytest.raises(GGUFError, match=r"tensor 'e' has absurd dimensions \[0, 1099511627776, 1099511627776\]"):
        GGUFFile(_patched(tmp_path, data + b"\0" * (-len(data) % 32), "e.gguf"))


def test_only_regular_files_are_opened(tmp_path):
    from zimage_turbo.quant.regular_file import NotARegularFile
    os.mkfifo(tmp_path / "pipe.gguf")
    with pytest.raises(NotARegularFile, match="named pipe"):
        GGUFFile(tmp_path / "pipe.gguf")  # does not block
    with pytest.raises(NotARegularFile, match="directory"):
        GGUFFile(tmp_path)
