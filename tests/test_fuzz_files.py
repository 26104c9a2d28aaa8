"""Hostile-file fuzzing of everything the pack parses: safetensors headers (own parser and the safetensors library),
GGUF state dicts (loaders/gguf_io.py over the reader), workflow JSON (headless/workflow.py).

Mutations start from valid tiny files. A case passes when the pack either accepts the file or raises its own
clear error (ModelFileError / WorkflowError), within 1 s, allocating less than 2x the file size plus a small
constant (tracemalloc for Python/numpy, the peak-RSS delta for native code). The raw GGUF reader has its own
fuzz in tests/quant/test_reader_fuzz.py.

Deterministic (derandomize=True, no example database). Counts: CI run PER_STRATEGY examples per strategy;
ZIT_FUZZ_LONG=1 runs >= 10 000 cases per format (see README, "Reliability").
"""
from __future__ import annotations

import copy
import json
import os
import struct
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from zimage_turbo.fixtures.shapes import DiTSpec, FluxVAESpec, Qwen3Spec
from zimage_turbo.fixtures.tiny_models import build_dit_state_dict, build_qwen3_state_dict, build_vae_state_dict
from zimage_turbo.headless.workflow import (WorkflowError, is_ui_format, model_files, parse_workflow, set_inputs,
                                            substitute_models, ui_to_api)
from zimage_turbo.loaders.config import infer_zimage_dit_config
from zimage_turbo.loaders.detect import classify, describe, strip_known_prefix
from zimage_turbo.loaders.errors import ModelFileError
from zimage_turbo.loaders.gguf_io import read_gguf_state_dict
from zimage_turbo.loaders.safetensors_file import load_tensors, read_header
from zimage_turbo.quant.gguf_writer import write_gguf
from zimage_turbo.fixtures.process_memory import reset_peak_rss, status_bytes

REPO = Path(__file__).resolve().parents[1]
LONG = os.environ.get("ZIT_FUZZ_LONG") == "1"
# Strategies per format: safetensors 5, GGUF 4, workflow 4 -> >= 2000 cases per format in CI, >= 10 000 long.
PER_STRATEGY = int(os.environ.get("ZIT_FUZZ_EXAMPLES", 2600 if LONG else 520))
FULL_LOADS = 300 if LONG else 40  # mutated files through the real loaders (ComfyUI model build), per loader
FUZZ = settings(max_examples=PER_STRATEGY, deadline=1000, derandomize=True, database=None,
                # the strategies are cheap but the checked call is not: data generation is never the slow part
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
MAX_SECONDS = 1.0
SLACK_BYTES = 8 << 20  # interpreter/allocator noise on top of the 2x-file-size budget (Python allocations)
# Peak RSS also moves with arena growth, page cache of the mmap'd file and the GC: seen 10 MB once in 10 000
# cases for a 100 KB file. A real over-allocation (a planted 2 GiB length) is far above this.
RSS_SLACK_BYTES = 32 << 20
_TMP = Path(tempfile.mkdtemp(prefix="zit_fuzz_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))

# The smallest DiT ComfyUI builds (its timestep embedder is 256 wide) and a smaller one it cannot (a damaged seed).
SMALL_DIT = DiTSpec(dim=256, n_layers=1, n_refiner_layers=1, head_dim=128, cap_feat_dim=32, ffn_hidden=64)
MICRO_DIT = DiTSpec(dim=32, n_layers=2, n_refiner_layers=1, head_dim=16, cap_feat_dim=16, ffn_hidden=64, t_freq_dim=32)
MICRO_QWEN3 = Qwen3Spec(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                        num_attention_heads=1, num_key_value_heads=1)
MICRO_VAE = FluxVAESpec(ch=8, ch_mult=(1, 2), num_res_blocks=1)


# ------------------------------------------------------------------------------------------------ measuring
def _run_case(fn, size: int, allowed: tuple[type[BaseException], ...]):
    """Call fn(); only `allowed` errors may escape; time and memory within budget. Returns the error or None."""
    rss_before = reset_peak_rss()
    tracemalloc.start()
    start = time.perf_counter()
    error = None
    try:
        fn()
    except allowed as exc:
        error = exc
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    budget = 2 * size + SLACK_BYTES
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f} s"
    assert peak < budget, f"allocated {peak} bytes for a {size}-byte file"
    if rss_before is not None:
        grown = status_bytes("VmHWM") - rss_before
        assert grown < 2 * size + RSS_SLACK_BYTES, f"peak RSS grew {grown} bytes for a {size}-byte file"
    return error


# ------------------------------------------------------------------------------------------------ safetensors
def _save(sd: dict, name: str, metadata: dict | None = None) -> bytes:
    path = _TMP / name
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path.read_bytes()


def _mixed_dtypes() -> dict:
    g = torch.Generator().manual_seed(3)
    return {"f32": torch.randn(3, 4, generator=g), "f16": torch.randn(5, generator=g).half(),
            "bf16": torch.randn(2, 2, 2, generator=g).bfloat16(), "i64": torch.arange(6).reshape(2, 3),
            "u8": torch.arange(7, dtype=torch.uint8), "flag": torch.tensor([True, False]),
            "f8": torch.randn(4, generator=g).to(torch.float8_e4m3fn), "scalar": torch.tensor(1.5),
            "empty": torch.zeros(0, 3)}


def _safetensors_bases() -> list[bytes]:
    micro = build_dit_state_dict(MICRO_DIT, dtype=torch.float16)
    return [
        _save(build_dit_state_dict(SMALL_DIT, dtype=torch.float16), "dit.safetensors", {"zimage_turbo": "small"}),
        _save({"model.diffusion_model." + k: v for k, v in micro.items()}, "dit_prefixed.safetensors"),
        _save(build_qwen3_state_dict(MICRO_QWEN3, dtype=torch.float16), "qwen3.safetensors"),
        _save(build_vae_state_dict(MICRO_VAE, dtype=torch.float16), "vae.safetensors"),
        _save(_mixed_dtypes(), "mixed.safetensors", {"format": "pt", "note": "ünïcode"}),
    ]


ST_BASES = _safetensors_bases()
ST_EXPECTED = "a Z-Image DiT (fuzz)"


def _safetensors_pipeline(path: Path) -> None:
    """What the loaders do before building a model: header, prefix, kind, config, then the tensors (library)."""
    header = read_header(path, expected=ST_EXPECTED)
    prefix, shapes = strip_known_prefix(header.shapes())
    kind = classify(shapes)
    assert isinstance(describe(shapes), str)
    if kind is not None and kind.name == "zimage_dit":
        config = infer_zimage_dit_config(shapes)
        assert config["dim"] > 0 and config["n_heads"] > 0
    if kind is not None and kind.name == "qwen3_te":
        from zimage_turbo.loaders.text_encoder import check_qwen3
        check_qwen3(path, shapes)
    tensors = load_tensors(header, [prefix + k for k in shapes])
    for key, tensor in tensors.items():
        assert tuple(tensor.shape) == header.tensors[key].shape


def _check_safetensors(data: bytes) -> None:
    path = _TMP / "case.safetensors"
    path.write_bytes(data)
    error = _run_case(lambda: _safetensors_pipeline(path), len(data), (ModelFileError,))
    if error is not None:
        message = str(error)
        assert message.startswith("case.safetensors: expected ") and ", found " in message, message


def _header_json(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _with_header(header, body: bytes, pad: int = 0) -> bytes:
    raw = json.dumps(header, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass") + b" " * pad
    return struct.pack("<Q", len(raw)) + raw + body


HUGE = [-1, -2**63, 2**31, 2**32, 2**53 + 1, 2**63, 2**64 - 1, 2**64, 10**30, 0, 1, 3]
json_scalars = (st.none() | st.booleans() | st.sampled_from(HUGE) | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
                | st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "F4", "f32", "", "__metadata__"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@FUZZ
@given(base=st.sampled_from(range(len(ST_BASES))), cut=st.integers(0, 1 << 20))
def test_safetensors_truncated(base, cut):
    data = ST_BASES[base]
    _check_safetensors(data[: cut % (len(data) + 1)])


@FUZZ
@given(base=st.sampled_from(range(len(ST_BASES))), in_header=st.booleans(),
       edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8))
def test_safetensors_byte_flips(base, in_header, edits):
    data = bytearray(ST_BASES[base])
    (n,) = struct.unpack("<Q", data[:8])
    span = n + 8 if in_header else len(data)
    for pos, value in edits:
        data[pos % span] = value
    _check_safetensors(bytes(data))


@FUZZ
@given(base=st.sampled_from(range(len(ST_BASES))), delta=st.integers(-64, 64),
       value=st.sampled_from([0, 1, 2, 7, 8, 2**31, 2**32, 100 * 1024 * 1024, 100 * 1024 * 1024 + 1, 2**63, 2**64 - 1])
       | st.integers(0, 2**64 - 1), absolute=st.booleans())
def test_safetensors_header_length(base, delta, value, absolute):
    data = ST_BASES[base]
    (n,) = struct.unpack("<Q", data[:8])
    planted = value if absolute else max(0, n + delta)
    _check_safetensors(struct.pack("<Q", planted) + data[8:])


FIELD_EDITS = ("dtype", "shape", "data_offsets", "delete_field", "extra_field", "entry", "metadata", "rename",
               "swap_offsets", "duplicate", "shape_dim", "offset_value", "pad", "leading_space")


@FUZZ
@given(base=st.sampled_from(range(len(ST_BASES))), pick=st.integers(0, 10_000),
       edit=st.sampled_from(FIELD_EDITS), value=json_values, number=st.sampled_from(HUGE) | st.integers(-5, 5000))
def test_safetensors_header_fields(base, pick, edit, value, number):
    """Valid JSON, hostile content: dtypes, shapes, offsets, types, metadata, duplicates, padding."""
    header, body = _header_json(ST_BASES[base])
    names = [k for k in header if k != "__metadata__"]
    name = names[pick % len(names)]
    entry = header[name]
    pad = 0
    if edit in ("dtype", "shape", "data_offsets"):
        entry[edit] = value
    elif edit == "delete_field":
        del entry[("dtype", "shape", "data_offsets")[pick % 3]]
    elif edit == "extra_field":
        entry["extra"] = value
    elif edit == "entry":
        header[name] = value
    elif edit == "metadata":
        header["__metadata__"] = value
    elif edit == "rename":
        header[str(value)[:40]] = header.pop(name)
    elif edit == "swap_offsets":
        entry["data_offsets"] = entry["data_offsets"][::-1]
    elif edit == "duplicate":
        other = header[names[(pick + 1) % len(names)]]
        entry["data_offsets"] = list(other["data_offsets"])
    elif edit == "shape_dim":
        shape = entry["shape"]
        if shape:
            shape[pick % len(shape)] = number
        else:
            entry["shape"] = [number]
    elif edit == "offset_value":
        entry["data_offsets"][pick % 2] = number
    elif edit == "pad":
        pad = pick % 64
    elif edit == "leading_space":
        raw = b" " + json.dumps(header).encode()
        _check_safetensors(struct.pack("<Q", len(raw)) + raw + body)
        return
    _check_safetensors(_with_header(header, body, pad))


@FUZZ
@given(value=json_values, body=st.integers(0, 64))
def test_safetensors_any_json_header(value, body):
    """Any JSON value as the header (wrong types everywhere)."""
    _check_safetensors(_with_header(value, b"\0" * body))


def test_safetensors_many_tensors_in_time():
    n = 4000  # several times the tensor count of any real model file (Z-Image DiT ~ 500, Qwen3-4B ~ 400)
    _check_safetensors(_with_header({f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]}
                                     for i in range(n)}, b"\0" * n))


@pytest.mark.parametrize("case", ["deep_nesting", "huge_dims", "negative", "float_shape",
                                  "string_offsets", "metadata_numbers", "bad_utf8", "nan", "lone_surrogate"])
def test_safetensors_targeted(case):
    header, body = _header_json(ST_BASES[4])
    if case == "deep_nesting":
        raw = b"{\"a\":" + b"[" * 200_000 + b"]" * 200_000 + b"}"
        data = struct.pack("<Q", len(raw)) + raw
    elif case == "huge_dims":
        header["f32"]["shape"] = [2**40, 2**40, 2**40]
        data = _with_header(header, body)
    elif case == "negative":
        header["f32"]["shape"] = [-3, -4]
        data = _with_header(header, body)
    elif case == "float_shape":
        header["f32"]["shape"] = [3.0, 4.0]
        data = _with_header(header, body)
    elif case == "string_offsets":
        header["f32"]["data_offsets"] = ["0", "48"]
        data = _with_header(header, body)
    elif case == "metadata_numbers":
        header["__metadata__"] = {"a": 1}
        data = _with_header(header, body)
    elif case == "bad_utf8":
        raw = b'{"\xff\xfe": 1}'
        data = struct.pack("<Q", len(raw)) + raw
    elif case == "nan":
        header["f32"]["shape"] = [float("nan")]
        data = _with_header(header, body)
    else:
        raw = b'{"\\ud800": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
        data = struct.pack("<Q", len(raw)) + raw + b"\0"
    with pytest.raises(ModelFileError):
        path = _TMP / "case.safetensors"
        path.write_bytes(data)
        _run_case(lambda: _safetensors_pipeline(path), len(data), ())


def test_safetensors_bases_are_valid():
    """The seeds themselves load (so mutations start from real files)."""
    for data in ST_BASES:
        _check_safetensors(data)
        path = _TMP / "case.safetensors"
        header = read_header(path)
        assert header.tensors


# ------------------------------------------------------------------------------------------------ full loads
def _full_load_cases(base: bytes, n: int, seed: int) -> list[bytes]:
    """n mutations of a micro file: header field edits and byte flips in the header (deterministic)."""
    rng = np.random.default_rng(seed)
    header, body = _header_json(base)
    names = sorted(k for k in header if k != "__metadata__")
    out = []
    for i in range(n):
        h = copy.deepcopy(header)
        name = names[int(rng.integers(len(names)))]
        choice = i % 4
        if choice == 0:  # another shape with the same byte count: passes the header check, wrong for the model
            shape = h[name]["shape"]
            numel = int(np.prod(shape)) if shape else 1
            h[name]["shape"] = [numel] if len(shape) != 1 else ([1, numel] if numel else [0])
        elif choice == 1:  # another dtype of the same width
            width = {"F16": ["BF16", "I16", "U16"], "BF16": ["F16", "I16"], "F32": ["I32", "U32"]}
            h[name]["dtype"] = str(rng.choice(width.get(h[name]["dtype"], [h[name]["dtype"]])))
        elif choice == 2:  # a tensor dropped (its bytes then belong to nobody unless it was last)
            del h[name]
        else:  # a tensor renamed into another block
            h[name.replace(".0.", ".7.").replace(".1.", ".0.")] = h.pop(name)
        out.append(_with_header(h, body))
    return out


def _full_vocab_micro_qwen3() -> bytes:
    """The micro encoder with a row for each id of ComfyUI's Qwen tokenizer (a smaller table is refused at load)."""
    from dataclasses import replace
    from zimage_turbo.loaders.gguf_tokenizer import bundled_id_count
    spec = replace(MICRO_QWEN3, vocab_size=bundled_id_count())
    return _save(build_qwen3_state_dict(spec, dtype=torch.float16), "qwen3_full_vocab.safetensors")


LOADER_CASES = {  # loader -> (module, function, seed file)
    "dit": ("zimage_turbo.loaders.dit", "load_zimage_dit", lambda: ST_BASES[0]),
    "text_encoder": ("zimage_turbo.loaders.text_encoder", "load_qwen3_text_encoder", _full_vocab_micro_qwen3),
}


@pytest.mark.parametrize("loader", list(LOADER_CASES))
def test_mutated_files_through_the_real_loaders(comfy_host, loader):
    """Files that pass the header check but are wrong for the model: the real loaders give ModelFileError."""
    import importlib
    module, func, base = LOADER_CASES[loader]
    load = getattr(importlib.import_module(module), func)
    seed = base()
    (_TMP / f"seed_{loader}.safetensors").write_bytes(seed)
    load(_TMP / f"seed_{loader}.safetensors")  # the seed itself passes every check and builds
    escaped, accepted = [], 0
    for i, data in enumerate(_full_load_cases(seed, FULL_LOADS, seed=len(loader))):
        path = _TMP / f"full_{loader}.safetensors"
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            load(path)
            accepted += 1
        except ModelFileError as exc:
            assert str(exc).startswith(path.name + ": expected ")
        except Exception as exc:  # noqa: BLE001 - collected to report every escape at once
            escaped.append(f"case {i}: {type(exc).__name__}: {str(exc)[:300]}")
        assert time.perf_counter() - start < 5.0
    assert not escaped, "\n".join(escaped)


# ------------------------------------------------------------------------------------------------ GGUF
DIT_EXPECTED = "a Z-Image DiT (fuzz)"


def _gguf_bases() -> list[bytes]:
    sd = build_dit_state_dict(SMALL_DIT, dtype=torch.float32)
    tensors = {}
    for key, value in sd.items():
        if value.ndim == 2 and value.shape[-1] % 32 == 0 and value.numel() > 1024:
            tensors[key] = (value, "Q8_0")
        else:
            tensors[key] = (value.reshape(-1) if key.endswith("pad_token") else value, "F32")
    meta = {"general.architecture": "lumina2", "general.name": "micro",
            "comfy.gguf.orig_shape.x_pad_token": ("i32", [1, SMALL_DIT.dim])}
    out = []
    for i, (ts, md) in enumerate([(tensors, meta),
                                  ({"blk.0.attn_q.weight": (torch.randn(32, 64), "Q4_0"),
                                    "token_embd.weight": (torch.randn(8, 32), "F16")},
                                   {"general.architecture": "qwen3", "tokenizer.ggml.tokens": ["a", "b", "cd"] * 4})]):
        path = _TMP / f"base{i}.gguf"
        if path.exists():
            path.unlink()
        write_gguf(path, ts, md)
        out.append(path.read_bytes())
    return out


GGUF_BASES = _gguf_bases()


def _gguf_meta_base() -> tuple[dict, dict]:
    from zimage_turbo.quant.gguf_reader import GGUFFile
    with GGUFFile(_TMP / "base0.gguf") as g:
        meta = {k: v for k, v in g.metadata.items() if not k.startswith("comfy.gguf.orig_shape.")}
        tensors = {i.name: (np.array(g.tensor_numpy(i.name)), i.type_id, i.shape) for i in g}
    return meta, tensors


_GGUF_META_BASE = _gguf_meta_base()


def _gguf_pipeline(path: Path) -> None:
    from zimage_turbo.loaders.dit import check_zimage_dit
    gguf = read_gguf_state_dict(path, DIT_EXPECTED)
    prefix, shapes = strip_known_prefix(gguf.shapes())
    assert isinstance(describe(shapes), str)
    kind = classify(shapes)
    if kind is not None and kind.name == "zimage_dit":
        check_zimage_dit(path, shapes)
        infer_zimage_dit_config(shapes)
    for key, tensor in gguf.tensors.items():  # dense tensors are real views/copies of the right size
        if not hasattr(tensor, "quant_type"):
            assert tensor.numel() * tensor.element_size() >= 0


def _check_gguf(data: bytes) -> None:
    path = _TMP / "case.gguf"
    path.write_bytes(data)
    error = _run_case(lambda: _gguf_pipeline(path), len(data), (ModelFileError,))
    if error is not None:
        assert str(error).startswith("case.gguf: expected "), str(error)


@FUZZ
@given(base=st.sampled_from(range(len(GGUF_BASES))), cut=st.integers(0, 1 << 20))
def test_gguf_truncated(base, cut):
    data = GGUF_BASES[base]
    _check_gguf(data[: cut % (len(data) + 1)])


@FUZZ
@given(base=st.sampled_from(range(len(GGUF_BASES))), head_only=st.booleans(),
       edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8))
def test_gguf_byte_flips(base, head_only, edits):
    data = bytearray(GGUF_BASES[base])
    span = min(len(data), 4096) if head_only else len(data)
    for pos, value in edits:
        data[pos % span] = value
    _check_gguf(bytes(data))


@FUZZ
@given(base=st.sampled_from(range(len(GGUF_BASES))), pos=st.integers(0, 4096), wide=st.booleans(),
       value=st.sampled_from([0, 1, 2, 3, 4, 5, 8, 9, 12, 31, 32, 33, 2**31, 2**32 - 1, 2**32, 2**62, 2**64 - 1])
       | st.integers(0, 2**64 - 1))
def test_gguf_planted_fields(base, pos, wide, value):
    """Counts, lengths, types, dims and offsets with absurd values, in the header and tensor infos."""
    data = bytearray(GGUF_BASES[base])
    n = 8 if wide else 4
    pos = pos % (min(len(data), 4096) - n)
    data[pos:pos + n] = struct.pack("<Q" if wide else "<I", value % (1 << (8 * n)))
    _check_gguf(bytes(data))


@FUZZ
@given(orig=st.lists(st.integers(-2**40, 2**40) | st.sampled_from([0, 1, 32, -1, 2**31]), max_size=10)
       | st.text(max_size=5) | st.floats(allow_nan=True), arch=st.sampled_from(["lumina2", "llama", "qwen3", "", "x" * 300]),
       target=st.sampled_from(["x_pad_token", "cap_embedder.1.weight", "layers.0.attention.qkv.weight", "nope"]))
def test_gguf_metadata(orig, arch, target):
    """The metadata the loader reads (architecture, city96's orig_shape) with hostile values."""
    meta, tensors = dict(_GGUF_META_BASE[0]), _GGUF_META_BASE[1]
    meta["general.architecture"] = arch
    if isinstance(orig, list) and orig:
        meta["comfy.gguf.orig_shape." + target] = ("i64", [max(-2**63, min(2**63 - 1, v)) for v in orig])
    elif not isinstance(orig, list):
        meta["comfy.gguf.orig_shape." + target] = orig
    path = _TMP / "meta.gguf"
    if path.exists():
        path.unlink()
    write_gguf(path, tensors, meta)
    _check_gguf(path.read_bytes())


# ------------------------------------------------------------------------------------------------ workflow JSON
WORKFLOW_TEXTS = [p.read_text() for p in sorted((REPO / "workflows").rglob("*.json"))]


def _object_info() -> dict:
    """object_info for the shipped workflows' node types, from the node classes' own INPUT_TYPES (no server)."""
    def jsonable(x):
        return json.loads(json.dumps(x, default=lambda o: None))
    info = {}
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("zit_build_workflows", REPO / "scripts" / "build_workflows.py")
    builder = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(builder)
    import nodes
    from zimage_turbo import NODE_CLASS_MAPPINGS
    # the node classes the workflow builder converts with: core's, core's extra and V3 nodes, the pack's
    mapping = {**nodes.NODE_CLASS_MAPPINGS, **builder.core_extra_node_classes(), **builder.core_v3_node_classes(),
               **NODE_CLASS_MAPPINGS}
    types = {n["type"] for text in WORKFLOW_TEXTS for n in json.loads(text).get("nodes", [])}
    types |= {n["class_type"] for text in WORKFLOW_TEXTS for n in json.loads(text).values() if isinstance(n, dict)
              and "class_type" in n}
    for name in types:
        if name in mapping:
            try:
                info[name] = {"input": jsonable(mapping[name].INPUT_TYPES())}
            except Exception:  # noqa: BLE001
                continue
    return info


@pytest.fixture(scope="module")
def object_info(comfy_host):
    info = _object_info()
    for text in WORKFLOW_TEXTS:  # the seeds convert cleanly
        workflow = parse_workflow(text)
        if is_ui_format(workflow):
            model_files(ui_to_api(workflow, info))
    return info


_INFO: dict = {}


def _workflow_pipeline(text, info) -> None:
    """What the runner does with a workflow file."""
    workflow = parse_workflow(text) if isinstance(text, (str, bytes)) else text
    prompt = ui_to_api(workflow, info) if is_ui_format(workflow) else workflow
    for _ in model_files(prompt):
        pass
    prompt = substitute_models(prompt, {"diffusion_models": "a.safetensors", "vae": "b.safetensors"})
    set_inputs(prompt, "ZImageTurboSampler", {"seed": 1})
    set_inputs(prompt, "CLIPTextEncode", {"text": "x"}, first_only=True)
    json.dumps(prompt)


def _check_workflow(text, info) -> None:
    size = len(text) if isinstance(text, (str, bytes)) else len(json.dumps(text))
    _run_case(lambda: _workflow_pipeline(text, info), size, (WorkflowError,))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate_tree(doc, pick: int, op: str, value):
    doc = copy.deepcopy(doc)
    paths = list(_paths(doc))
    path = paths[pick % len(paths)]
    if not path:
        return value if op == "replace" else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if op == "replace":
        parent[key] = value
    elif op == "delete":
        del parent[key]
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif op == "stringify":
        parent[key] = json.dumps(parent[key])[:20]
    elif op == "negate" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
        parent[key] = -parent[key] - 1
    return doc


@FUZZ
@given(base=st.sampled_from(range(len(WORKFLOW_TEXTS))), cut=st.integers(0, 1 << 16),
       edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.characters()), max_size=6))
def test_workflow_text_edits(object_info, base, cut, edits):
    text = list(WORKFLOW_TEXTS[base])
    for pos, ch in edits:
        text[pos % len(text)] = ch
    text = "".join(text)
    _check_workflow(text[: len(text) - cut % (len(text) // 4 + 1)], object_info)


@FUZZ
@given(base=st.sampled_from(range(len(WORKFLOW_TEXTS))), picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=4),
       op=st.sampled_from(["replace", "delete", "duplicate", "stringify", "negate"]), value=json_values)
def test_workflow_structure(object_info, base, picks, op, value):
    """Valid JSON, hostile structure: fields replaced by other types, deleted, duplicated, links broken."""
    doc = json.loads(WORKFLOW_TEXTS[base])
    for pick in picks:
        doc = _mutate_tree(doc, pick, op, value)
    _check_workflow(json.dumps(doc), object_info)


@FUZZ
@given(base=st.sampled_from(range(len(WORKFLOW_TEXTS))), pick=st.integers(0, 10_000),
       value=st.sampled_from([None, -1, 0, 10**20, "1", [], {}, [1], [None, None, None], "🦊" * 3]))
def test_workflow_ids_and_links(object_info, base, pick, value):
    """Node ids, link ids, slots and widget values set to odd scalars and containers."""
    doc = json.loads(WORKFLOW_TEXTS[base])
    targets = [p for p in _paths(doc) if p and p[-1] in ("id", "link", "links", "type", "widgets_values", "inputs",
                                                         "class_type", "mode", "name")]
    if not targets:
        targets = list(_paths(doc))[1:]
    path = targets[pick % len(targets)]
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    _check_workflow(json.dumps(doc), object_info)


@FUZZ
@given(value=json_values)
def test_workflow_any_json(object_info, value):
    _check_workflow(json.dumps(value), object_info)


def test_workflow_targeted(object_info):
    for text in ("", "[" * 100_000, "{\"nodes\": 5}", "{\"nodes\": [1, 2]}", "null", "{\"1\": 3}",
                 "{\"1\": {\"class_type\": 5, \"inputs\": {}}}", "\"x\"", "{\"nodes\": [], \"links\": [[1]]}",
                 "{\"²\": {\"class_type\": \"A\", \"inputs\": {}}, \"1\": {\"class_type\": \"A\", \"inputs\": {}}}"):
        _check_workflow(text, object_info)
    with pytest.raises(WorkflowError):
        parse_workflow("[" * 100_000)


# ------------------------------------------------------------------------------------------------ metadata values
# Every metadata key the text-encoder GGUF loader reads, with values of the wrong type, out of range, NaN/Inf,
# huge counts, arrays of the wrong element type or length, and token ids out of range. The checked call is what
# the loader does before ComfyUI builds anything (read_qwen3_gguf, then the tokenizer choice); a deterministic
# subset goes through the full loader. 4 x PER_STRATEGY cases: >= 2000 in CI, >= 10 000 long.
META_CASES = 4 * PER_STRATEGY
META_FUZZ = settings(FUZZ, max_examples=META_CASES)
META_QWEN3 = Qwen3Spec(vocab_size=300, hidden_size=128, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=1, num_key_value_heads=1)
QWEN3_READ_KEYS = ("general.architecture", "qwen3.block_count", "qwen3.embedding_length", "qwen3.feed_forward_length",
                   "qwen3.attention.head_count", "qwen3.attention.head_count_kv", "qwen3.attention.key_length",
                   "qwen3.rope.freq_base", "qwen3.attention.layer_norm_rms_epsilon")
TOKENIZER_READ_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                       "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id",
                       "tokenizer.ggml.padding_token_id")
DELETE = "<delete>"
INT_TYPES = {"u8": (0, 2**8), "i8": (-2**7, 2**7), "u16": (0, 2**16), "i16": (-2**15, 2**15), "u32": (0, 2**32),
             "i32": (-2**31, 2**31), "u64": (0, 2**64), "i64": (-2**63, 2**63)}
INT_EDGES = [0, 1, 2, 3, 4, -1, 127, 255, 299, 300, 301, 2**31 - 1, 2**32 - 1, 10**6, 2**40, 2**63 - 1, 2**64 - 1,
             151643, 151669, 1 << 16]
FLOAT_EDGES = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0, 1.0, 1e-6, 1e6, 5e6, 1e40, 3.0, 128.0]
STRINGS = ["", "qwen3", "gpt2", "qwen2", "llama", "llama-bpe", "default", "abc", "1e6", "36", "x" * 300, "Ġ t", "a b",
           "ünï ©ode", "[PAD0]"]


def _typed_int(type_name: str, value: int) -> tuple[str, int]:
    """`value` wrapped into the range of a GGUF integer type."""
    low, high = INT_TYPES[type_name]
    return type_name, low + (value - low) % (high - low)


ints = st.builds(_typed_int, st.sampled_from(sorted(INT_TYPES)), st.sampled_from(INT_EDGES) | st.integers(-2**64, 2**64))
floats = st.tuples(st.sampled_from(["f32", "f64"]), st.sampled_from(FLOAT_EDGES) | st.floats())
texts = st.sampled_from(STRINGS) | st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)
scalar_values = ints | floats | texts | st.booleans()
array_values = (st.builds(lambda t, v: (t, [_typed_int(t, x)[1] for x in v]), st.sampled_from(sorted(INT_TYPES)),
                          st.lists(st.sampled_from(INT_EDGES) | st.integers(-2**40, 2**40), max_size=6))
                | st.tuples(st.sampled_from(["f32", "f64"]), st.lists(st.sampled_from(FLOAT_EDGES), min_size=1, max_size=6))
                | st.lists(texts, max_size=6) | st.lists(st.booleans(), min_size=1, max_size=6)
                | st.lists(st.lists(texts, max_size=3), min_size=1, max_size=3))


def _meta_qwen3_base() -> tuple[dict, dict]:
    from zimage_turbo.fixtures.small_tokenizer import small_tokenizer_metadata
    from zimage_turbo.fixtures.tiny_models import qwen3_gguf_metadata, qwen3_gguf_tensors
    meta = {**qwen3_gguf_metadata(META_QWEN3), **small_tokenizer_metadata(META_QWEN3.vocab_size)}
    return meta, qwen3_gguf_tensors(META_QWEN3, "F16", seed=11)


_META_BASE, _META_TENSORS = _meta_qwen3_base()
_BASE_TOKENS = _META_BASE["tokenizer.ggml.tokens"]


@st.composite
def derived_values(draw, key: str):
    """Values built from the file's own: token lists, types and merges of other lengths or contents, ids and
    counts next to the real ones."""
    n = len(_BASE_TOKENS)
    delta = draw(st.sampled_from([-n, -1, 1, 2, 1000]) | st.integers(-5, 5))
    if key == "tokenizer.ggml.tokens":
        tokens = list(_BASE_TOKENS[:max(0, n + delta)]) + ["extra"] * max(0, delta)
        if tokens and draw(st.booleans()):
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(texts)
        return tokens
    if key == "tokenizer.ggml.token_type":
        kind = draw(st.sampled_from(["i32", "u8", "i64", "f32"]))
        value = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 0, 7, 255]))
        return (kind, [float(value) if kind == "f32" else value] * max(0, n + delta))
    if key == "tokenizer.ggml.merges":
        merges = list(_META_BASE["tokenizer.ggml.merges"])
        left = draw(st.sampled_from(_BASE_TOKENS) | texts)
        right = draw(st.sampled_from(_BASE_TOKENS) | texts)
        merges.insert(draw(st.integers(0, len(merges))), draw(st.sampled_from([f"{left} {right}", left, f"{left}  {right}"])))
        return merges
    base = _META_BASE.get(key, ("u32", 0))
    base = base[1] if isinstance(base, tuple) else base
    if isinstance(base, (int, float)) and not isinstance(base, bool):
        kind = draw(st.sampled_from(["u32", "i32", "u64", "f32"]))
        value = base + delta if kind != "f32" else float(base) * draw(st.sampled_from([1.0, -1.0, 0.5, 2.0]))
        return _typed_int(kind, int(value)) if kind != "f32" else (kind, value)
    return draw(texts)


@st.composite
def metadata_edits(draw):
    """1-3 (key, value) edits of the keys the loader reads; DELETE removes the key."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(QWEN3_READ_KEYS + TOKENIZER_READ_KEYS))
        value = draw(st.sampled_from([DELETE]) | scalar_values | array_values | derived_values(key))
        edits.append((key, value))
    return edits


_META_COUNTER = iter(range(1 << 62))


def _write_meta_case(edits) -> Path:
    meta = dict(_META_BASE)
    for key, value in edits:
        if value == DELETE:
            meta.pop(key, None)
        else:
            meta[key] = value
    # a new name each case: the loader caches tokenizer checks per file version
    path = _TMP / f"meta_{next(_META_COUNTER)}.gguf"
    write_gguf(path, _META_TENSORS, meta)
    return path


def _te_metadata_pipeline(path: Path, policy: str) -> None:
    """What the text-encoder loader does with a GGUF before ComfyUI builds the model."""
    from zimage_turbo.loaders.text_encoder import choose_tokenizer, read_qwen3_gguf
    gguf = read_qwen3_gguf(path)
    tokenizer_class, _ = choose_tokenizer(path, gguf.metadata, gguf.config["hidden_size"], policy,
                                          rows=gguf.config["vocab_size"], embedding=gguf.embedding_name)
    assert tokenizer_class is not None


@pytest.fixture(scope="module")
def te_metadata_host(comfy_host):
    """Imports and ComfyUI's bundled tokenizer warmed up; the unmutated base loads."""
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    path = _write_meta_case([])
    try:
        clip = load_qwen3_text_encoder(path)
        assert max(t for t, _ in clip.tokenize("a cat")["qwen3_4b"][0]) < META_QWEN3.vocab_size
    finally:
        path.unlink()


@META_FUZZ
@given(edits=metadata_edits(), policy=st.sampled_from(["auto", "auto", "gguf", "strict", "bundled"]))
def test_te_gguf_metadata_values(te_metadata_host, edits, policy):
    try:
        path = _write_meta_case(edits)
    except (TypeError, ValueError, OverflowError):
        return  # a value the GGUF format cannot hold (a mixed list): no file to check
    try:
        error = _run_case(lambda: _te_metadata_pipeline(path, policy), path.stat().st_size, (ModelFileError,))
    finally:
        path.unlink()
    if error is not None:
        assert str(error).startswith(f"{path.name}: expected "), str(error)


FULL_META_VALUES = [DELETE, DELETE, ("u32", 0), ("u32", 3), ("u32", 4), ("u64", 2**40), ("f32", float("nan")),
                    ("f32", 5e6), ("f64", 1e-5), ("f32", -1.0), "abc", "qwen2", ("u32", [1, 2]), [], ["x"], ("i32", 299),
                    ("u32", 300), ("u32", 128)]


def _full_meta_cases(n: int, seed: int) -> list[tuple[list, str]]:
    """n deterministic (edits, tokenizer policy) cases: one or two keys the loader reads, each set to a value
    (valid or not) from FULL_META_VALUES or derived from the file's own."""
    rng = np.random.default_rng(seed)
    keys = QWEN3_READ_KEYS + TOKENIZER_READ_KEYS
    cases = []
    for _ in range(n):
        edits = []
        for _ in range(int(rng.integers(1, 3))):
            key = keys[int(rng.integers(len(keys)))]
            if key == "tokenizer.ggml.tokens" and rng.random() < 0.5:
                value = list(_BASE_TOKENS[: len(_BASE_TOKENS) + int(rng.integers(-2, 3))])
            else:
                value = FULL_META_VALUES[int(rng.integers(len(FULL_META_VALUES)))]
            edits.append((key, value))
        cases.append((edits, ["auto", "auto", "gguf", "strict", "bundled"][int(rng.integers(5))]))
    return cases


def test_te_gguf_metadata_values_through_the_full_loader(te_metadata_host):
    """Mutated metadata through load_qwen3_text_encoder (ComfyUI model build included): a CLIP or ModelFileError."""
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    escaped, loaded = [], 0
    for i, (edits, policy) in enumerate(_full_meta_cases(FULL_LOADS, seed=16)):
        try:
            path = _write_meta_case(edits)
        except (TypeError, ValueError, OverflowError):
            continue  # a value the GGUF format cannot hold
        start = time.perf_counter()
        try:
            load_qwen3_text_encoder(path, tokenizer=policy)
            loaded += 1
        except ModelFileError as exc:
            assert str(exc).startswith(path.name + ": expected ")
        except Exception as exc:  # noqa: BLE001 - collected to report every escape at once
            escaped.append(f"case {i} {edits!r:.200}: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            path.unlink()
        assert time.perf_counter() - start < 5.0
    assert not escaped, "\n".join(escaped)
    assert loaded, "no mutated file loaded: the cases never reach the model build"
