"""Hostile files through the loader API (issue 16): special files, shard indexes, many tensors, memory, sizes.

Each case calls a public entry point (load_zimage_dit, load_qwen3_text_encoder, load_flux_vae,
read_gguf_state_dict, read_header, GGUFFile) and must end in the pack's ModelFileError naming the file, or in a
bounded result, within MAX_SECONDS and within twice the file's size of memory (peak-RSS growth, which counts the
mapped pages too, plus a constant for the interpreter). Every call runs in a worker thread with a hard deadline,
so a regression (a FIFO that blocks, a quadratic parse) fails the test instead of hanging the run.
"""
from __future__ import annotations

import json
import os
import struct
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from zimage_turbo.loaders.errors import ModelFileError
from zimage_turbo.quant.gguf_reader import GGUF_MAGIC, MAX_TENSORS, GGUFError, GGUFFile
from zimage_turbo.fixtures.process_memory import reset_peak_rss, status_bytes

MAX_SECONDS = 1.0
DEADLINE = 30.0  # a call still running then is a hang
RSS_SLACK = 32 << 20  # interpreter, allocator arenas, torch's own caches: the same constant as tests/test_fuzz_files.py
TRACEMALLOC_SLACK = 8 << 20
MANY = 100_000
SPARSE_SIZE = 1 << 40


# ------------------------------------------------------------------------------------------------ measuring
@dataclass
class Outcome:
    result: Any
    error: BaseException | None
    seconds: float
    rss_growth: int | None


def _unblock(fifo: Path) -> None:
    """Let a reader stuck in open() on a FIFO go (a writer end that closes at once: the reader sees EOF)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _run(fn: Callable[[], Any], fifo: Path | None = None) -> Outcome:
    box: dict[str, Any] = {}

    def work() -> None:
        start = time.perf_counter()
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["error"] = exc
        box["seconds"] = time.perf_counter() - start

    before = reset_peak_rss()
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(DEADLINE)
    if worker.is_alive():
        if fifo is not None:
            _unblock(fifo)
        pytest.fail(f"still running after {DEADLINE:.0f} s: the call hangs")
    growth = status_bytes("VmHWM") - before if before is not None else None
    return Outcome(box.get("result"), box.get("error"), box["seconds"], growth)


def _memory_size(path: Path) -> int:
    """The bytes a file really holds (a sparse file's allocated blocks, not its apparent size)."""
    st = os.stat(path)
    return min(st.st_size, st.st_blocks * 512) if st.st_blocks else st.st_size


def bounded(fn: Callable[[], Any], path: Path, fifo: Path | None = None) -> Outcome:
    """fn() within MAX_SECONDS and 2x the file's size (+ slack) of memory. A first run over budget gets one more
    try (lazy imports, a cold page cache); a real regression is over budget both times."""
    budget = 2 * (_memory_size(path) if path.exists() and path.is_file() else 0)
    for _ in range(2):
        out = _run(fn, fifo)
        memory_ok = out.rss_growth is None or out.rss_growth < budget + RSS_SLACK
        if out.seconds < MAX_SECONDS and memory_ok:
            break
    assert out.seconds < MAX_SECONDS, f"took {out.seconds:.2f} s (ended in {out.error!r})"
    if out.rss_growth is not None:
        assert out.rss_growth < budget + RSS_SLACK, f"peak RSS grew {out.rss_growth >> 20} MiB for {budget >> 21} MiB"
    else:
        print("peak RSS cannot be reset on this system (/proc/self/clear_refs): measuring with tracemalloc instead")
        tracemalloc.start()
        try:
            fn()
        except BaseException:  # noqa: BLE001 - only the memory is measured here
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < budget + TRACEMALLOC_SLACK, f"allocated {peak >> 20} MiB for {budget >> 21} MiB"
    return out


def refused(out: Outcome, named: Path, *found: str) -> str:
    """The outcome is a ModelFileError whose message names `named` and contains each of `found`."""
    assert isinstance(out.error, ModelFileError), f"expected a ModelFileError, got {out.error!r} / {out.result!r}"
    message = str(out.error)
    assert message.startswith(f"{named.name}: expected "), message
    for text in found:
        assert text in message, message
    return message


# ------------------------------------------------------------------------------------------------ entry points
@pytest.fixture(scope="module")
def entries(comfy_host, tmp_path_factory) -> dict[str, Callable[[Path], Any]]:
    """The public loader API, warmed up once on a junk file (lazy imports are not what is measured)."""
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.gguf_io import read_gguf_state_dict
    from zimage_turbo.loaders.safetensors_file import read_header
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    from zimage_turbo.loaders.vae import load_flux_vae
    found = {"dit": load_zimage_dit, "te": load_qwen3_text_encoder, "vae": load_flux_vae,
             "gguf": lambda p: read_gguf_state_dict(p, "a GGUF model file"), "header": read_header}
    junk = tmp_path_factory.mktemp("warm")
    _gguf(junk / "w.gguf", _kv_string("general.architecture", "qwen3"), 1)
    _safetensors(junk / "w.safetensors", {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    for load in found.values():
        for name in ("w.gguf", "w.safetensors"):
            try:
                load(junk / name)
            except ModelFileError:
                pass
    return found


# ------------------------------------------------------------------------------------------------ file makers
def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv_string(key: str, value: str) -> bytes:
    return _s(key) + struct.pack("<I", 8) + _s(value)


def _gguf(path: Path, kvs: bytes = b"", n_kv: int = 0, infos: bytes = b"", n_tensors: int = 0,
          data: bytes = b"") -> Path:
    head = struct.pack("<IIQQ", GGUF_MAGIC, 3, n_tensors, n_kv) + kvs + infos
    path.write_bytes(head + b"\0" * (-len(head) % 32) + data)
    return path


def _f32_info(name: str, ne: tuple[int, ...], offset: int) -> bytes:
    return _s(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, 0, offset)


def many_tensors_gguf(path: Path, n: int, arch: str | None = None) -> Path:
    """n distinct F32 tensors of 8 elements (32 bytes each, no padding between them)."""
    kvs = _kv_string("general.architecture", arch) if arch else b""
    infos = b"".join(_f32_info(f"t{i}", (8,), 32 * i) for i in range(n))
    return _gguf(path, kvs, int(bool(arch)), infos, n, bytes(32 * n))


def _safetensors(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The big hostile files, written once for the module."""
    folder = tmp_path_factory.mktemp("hostile")
    for arch in (None, "lumina2", "qwen3"):
        many_tensors_gguf(folder / f"many_{arch}.gguf", MANY, arch)
    pair = _s("ab") + _s("cde")  # 2 M short strings, about 20 MB
    _gguf(folder / "strings.gguf", _s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2_000_000)
          + pair * 1_000_000, 1)
    _gguf(folder / "nested.gguf", _s("nest") + struct.pack("<IIQ", 9, 9, 1_000_000)  # 1 M empty arrays, 12 MB
          + struct.pack("<IQ", 4, 0) * 1_000_000, 1)
    entry = b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    _safetensors(folder / "entries.safetensors",  # a header of 1 M entries, about 70 MB
                 b"{" + b",".join(entry % i for i in range(1_000_000)) + b"}")
    return folder


# ------------------------------------------------------------------------------------------------ special files
def _special(kind: str, folder: Path) -> Path:
    from zimage_turbo.fixtures.shapes import Qwen3Spec
    from zimage_turbo.fixtures.tiny_models import write_qwen3_gguf
    path = folder / f"{kind}.file"
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink_loop":
        path.symlink_to(folder / "other.file")
        (folder / "other.file").symlink_to(path)
    elif kind == "dangling_symlink":
        path.symlink_to(folder / "gone.safetensors")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind in ("sparse_gguf", "sparse_safetensors"):
        if kind == "sparse_gguf":  # a valid GGUF (a micro Qwen3 encoder) grown to 1 TB without writing a byte
            write_qwen3_gguf(path, Qwen3Spec(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                             num_attention_heads=1, num_key_value_heads=1))
        else:
            _safetensors(path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16)
        try:
            os.truncate(path, SPARSE_SIZE)
        except OSError as exc:
            pytest.skip(f"this file system cannot hold a sparse 1 TB file ({exc})")
    return path


SPECIAL_FOUND = {"directory": "a directory", "symlink_loop": "a symbolic link loop",
                 "dangling_symlink": "a dangling symbolic link", "fifo": "a named pipe (FIFO)",
                 "sparse_gguf": "bytes after the end of the tensor data",
                 "sparse_safetensors": "data bytes that belong to no tensor"}
# What a loader that takes the other format says about a 1 TB file (it never maps it).
SPARSE_OTHER_FORMAT = {("sparse_gguf", "vae"): "a GGUF file", ("sparse_gguf", "header"): "a GGUF file",
                       ("sparse_safetensors", "gguf"): "not a GGUF file"}


@pytest.mark.parametrize("entry", ["dit", "te", "vae", "gguf", "header"])
@pytest.mark.parametrize("kind", list(SPECIAL_FOUND))
def test_special_files_are_refused(entries, tmp_path, kind, entry):
    path = _special(kind, tmp_path)
    out = bounded(lambda: entries[entry](path), path, fifo=path if kind == "fifo" else None)
    refused(out, path, SPARSE_OTHER_FORMAT.get((kind, entry), SPECIAL_FOUND[kind]))


def test_sparse_gguf_is_mapped_read_only(tmp_path):
    """A 1 TB file maps (read-only, no commit charge) and parses; only its size is wrong (not Errno 12)."""
    path = _special("sparse_gguf", tmp_path)
    with pytest.raises(GGUFError, match=f"after the end of the tensor data \\(the file has {SPARSE_SIZE} bytes"):
        GGUFFile(path)


# ------------------------------------------------------------------------------------------------ many tensors
def test_100k_tensor_infos_parse_in_time(files):
    path = files / "many_None.gguf"

    def parse():
        with GGUFFile(path) as g:
            return len(g), g.tensors[f"t{MANY - 1}"]
    out = bounded(parse, path)
    assert out.error is None, out.error
    count, last = out.result
    assert count == MANY and last.shape == (8,) and last.n_bytes == 32
    assert last.offset == os.path.getsize(path) - 32


def test_more_tensors_than_any_model_are_refused(tmp_path):
    path = many_tensors_gguf(tmp_path / "too_many.gguf", MAX_TENSORS + 1)
    out = bounded(lambda: GGUFFile(path), path)
    assert isinstance(out.error, GGUFError) and f"at most {MAX_TENSORS}" in str(out.error), out.error


@pytest.mark.parametrize("arch", [None, "lumina2", "qwen3"])
@pytest.mark.parametrize("entry", ["dit", "te"])
def test_loaders_refuse_100k_tiny_tensors_in_time(entries, files, entry, arch):
    path = files / f"many_{arch}.gguf"
    refused(bounded(lambda: entries[entry](path), path), path)


def test_state_dict_of_100k_tensors_maps_on_use(entries, files):
    path = files / "many_None.gguf"
    out = bounded(lambda: entries["gguf"](path), path)
    assert out.error is None, out.error
    sd = out.result
    assert len(sd.tensors) == MANY and sd.shapes()["t7"] == (8,)
    assert torch.equal(sd.tensors["t7"], torch.zeros(8))


@pytest.mark.parametrize("entry", ["dit", "te", "gguf"])
def test_gguf_loads_check_the_interrupt_between_tensors(entries, files, monkeypatch, entry):
    import comfy.model_management as mm
    from zimage_turbo.loaders import interrupt
    path = files / f"many_{'qwen3' if entry == 'te' else 'lumina2'}.gguf"
    real_check, calls = interrupt.check_interrupted, []

    def counting() -> None:
        calls.append(1)
        real_check()
    monkeypatch.setattr(interrupt, "check_interrupted", counting)
    try:
        sd = entries[entry](path)
    except ModelFileError:
        sd = None
    assert len(calls) >= MANY // 64, len(calls)  # every 64 tensors read
    if sd is not None:  # and every 64 tensors mapped
        before = len(calls)
        for i in range(640):
            assert sd.tensors[f"t{i}"].shape == (8,)
        assert len(calls) - before >= 10
    before = len(calls)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            entries[entry](path)
    finally:
        mm.interrupt_current_processing(False)
    assert len(calls) - before == 1, "the interrupted load went on reading"


def test_safetensors_load_checks_the_interrupt_between_tensors(comfy_host, tmp_path, monkeypatch):
    import comfy.model_management as mm
    from safetensors.torch import save_file
    from zimage_turbo.loaders import interrupt
    from zimage_turbo.loaders.safetensors_file import load_tensors, read_header
    path = tmp_path / "many.safetensors"
    save_file({f"t{i}": torch.full((2,), float(i)) for i in range(64)}, str(path))
    header = read_header(path)
    calls = []
    real_check = interrupt.check_interrupted
    monkeypatch.setattr(interrupt, "check_interrupted", lambda: calls.append(1) or real_check())
    assert torch.equal(load_tensors(header)["t63"], torch.full((2,), 63.0))
    assert len(calls) >= 4
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            load_tensors(header)
    finally:
        mm.interrupt_current_processing(False)


# ------------------------------------------------------------------------------------------------ memory
def test_two_million_strings_stay_in_the_mapping(entries, files):
    path = files / "strings.gguf"
    out = bounded(lambda: entries["gguf"](path), path)
    assert out.error is None, out.error
    tokens = out.result.metadata["tokenizer.ggml.tokens"]
    assert len(tokens) == 2_000_000 and tokens[0] == "ab" and tokens[1_999_999] == "cde"
    assert tokens[10:13] == ["ab", "cde", "ab"]


@pytest.mark.parametrize("entry", ["dit", "te", "header"])
def test_two_million_strings_through_the_loaders(entries, files, entry):
    path = files / "strings.gguf"
    refused(bounded(lambda: entries[entry](path), path), path)


@pytest.mark.parametrize("entry", ["dit", "te", "gguf"])
def test_a_million_nested_arrays_are_refused(entries, files, entry):
    path = files / "nested.gguf"
    refused(bounded(lambda: entries[entry](path), path), path, "arrays inside arrays")


@pytest.mark.parametrize("entry", ["dit", "te", "vae", "header"])
def test_a_million_header_entries_are_refused(entries, files, entry):
    path = files / "entries.safetensors"
    refused(bounded(lambda: entries[entry](path), path), path, "more than 16384 entries")


def test_header_entries_are_counted_while_parsing(entries, tmp_path):
    """Between the limit and twice the limit of '{', objects are counted as they are parsed: 20 000 entries are
    refused, while 30 000 braces inside a metadata string are no entries at all."""
    from zimage_turbo.loaders.safetensors_file import MAX_HEADER_ENTRIES
    many = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(20_000)}
    path = _safetensors(tmp_path / "entries.safetensors", many)
    refused(bounded(lambda: entries["header"](path), path), path, f"more than {MAX_HEADER_ENTRIES} entries")
    braces = {"__metadata__": {"notes": "{" * 30_000}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    path = _safetensors(tmp_path / "braces.safetensors", braces, b"\0" * 4)
    out = bounded(lambda: entries["header"](path), path)
    assert out.error is None and list(out.result.tensors) == ["w"], out.error


def test_planner_scans_a_folder_of_hostile_files(files, tmp_path):
    """The planner's model scan skips every hostile file (and never blocks on a pipe) in about the time of the
    parses themselves."""
    import shutil
    from zimage_turbo.planner.files import scan_models_dir
    folder = tmp_path / "models" / "diffusion_models"
    folder.mkdir(parents=True)
    for name in ("many_lumina2.gguf", "strings.gguf", "nested.gguf", "entries.safetensors"):
        shutil.copy(files / name, folder / name)
    for kind in SPECIAL_FOUND:
        _special(kind, folder).rename(folder / f"{kind}.gguf")
    (folder / "loop.gguf").symlink_to(folder / "loop.gguf")
    out = _run(lambda: scan_models_dir(tmp_path / "models"), fifo=folder / "fifo.gguf")
    assert out.error is None and out.result == [], (out.error, out.result)
    print(f"scan took {out.seconds:.2f} s")
    assert out.seconds < 4 * MAX_SECONDS, f"took {out.seconds:.2f} s"


# ------------------------------------------------------------------------------------------------ dim-0 beside huge
HUGE = 1 << 40


def _empty_beside_huge(fmt: str, folder: Path) -> Path:
    """A small tensor and one of shape [2^40, 2^40, 0]: no bytes, but a size torch cannot multiply out."""
    if fmt == "gguf":
        infos = _f32_info("small", (4,), 0) + _f32_info("empty", (0, HUGE, HUGE), 32)
        return _gguf(folder / "empty_beside_huge.gguf", infos=infos, n_tensors=2, data=b"\0" * 32)
    header = {"small": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
              "empty": {"dtype": "F32", "shape": [HUGE, HUGE, 0], "data_offsets": [16, 16]}}
    return _safetensors(folder / "empty_beside_huge.safetensors", header, b"\0" * 16)


DIM0_FOUND = {"gguf": "absurd dimensions", "safetensors": "a malformed entry for tensor 'empty'"}


@pytest.mark.parametrize("fmt, entry", [("gguf", "dit"), ("gguf", "te"), ("gguf", "gguf"), ("safetensors", "dit"),
                                        ("safetensors", "te"), ("safetensors", "vae"), ("safetensors", "header")])
def test_empty_tensor_beside_a_huge_size_is_refused(entries, tmp_path, fmt, entry):
    path = _empty_beside_huge(fmt, tmp_path)
    refused(bounded(lambda: entries[entry](path), path), path, DIM0_FOUND[fmt])


# ------------------------------------------------------------------------------------------------ shard indexes
SHARDS = ("diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors")
INDEX = "diffusion_pytorch_model.safetensors.index.json"


@pytest.fixture(scope="module")
def small_dit() -> dict[str, torch.Tensor]:
    from zimage_turbo.fixtures.shapes import DiTSpec
    from zimage_turbo.fixtures.tiny_models import build_dit_state_dict
    # the smallest DiT ComfyUI builds (its timestep embedder is 256 wide)
    spec = DiTSpec(dim=256, n_layers=1, n_refiner_layers=1, head_dim=128, cap_feat_dim=32, ffn_hidden=64)
    return build_dit_state_dict(spec, dtype=torch.float32)


def _sharded(sd: dict[str, torch.Tensor], folder: Path) -> dict[str, list[str]]:
    """The DiT in diffusers layout, split in two shards beside a valid index; {shard: its keys}."""
    from zimage_turbo.fixtures.tiny_models import dit_to_diffusers_layout, save_safetensors_atomic
    dsd = dit_to_diffusers_layout(sd)
    keys = sorted(dsd)
    split = {SHARDS[0]: keys[: len(keys) // 2], SHARDS[1]: keys[len(keys) // 2:]}
    for name, names in split.items():
        save_safetensors_atomic({k: dsd[k] for k in names}, folder / name)
    weight_map = {k: name for name, names in split.items() for k in names}
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return split


def _break(case: str, folder: Path, split: dict[str, list[str]]) -> tuple[Path, str]:
    """Damage the sharded checkpoint; (the file the error must name, a text it must contain)."""
    index = folder / INDEX
    doc = json.loads(index.read_text())
    if case == "missing_shard":
        (folder / SHARDS[1]).unlink()
        return folder / SHARDS[1], "no file at this path"
    if case == "shard_fifo":
        (folder / SHARDS[1]).unlink()
        os.mkfifo(folder / SHARDS[1])
        return folder / SHARDS[1], "a named pipe (FIFO)"
    if case == "weight_map_list":
        doc["weight_map"] = list(SHARDS)
    elif case == "mixed_value_types":
        doc["weight_map"][split[SHARDS[1]][0]] = 7
    elif case == "path_outside_folder":
        doc["weight_map"][split[SHARDS[1]][0]] = "../" + SHARDS[1]
    elif case == "index_fifo":  # no readable index: the shard alone is an incomplete DiT
        index.unlink()
        os.mkfifo(index)
        return folder / SHARDS[0], "a Z-Image DiT"
    elif case == "index_too_large":
        index.write_text(json.dumps(doc) + " " * (9 << 20))
        return folder / SHARDS[0], "a Z-Image DiT"
    index.write_text(json.dumps(doc))
    return index, "weight_map"


@pytest.mark.parametrize("case", ["missing_shard", "shard_fifo", "weight_map_list", "mixed_value_types",
                                  "path_outside_folder", "index_fifo", "index_too_large"])
def test_damaged_shard_index(entries, small_dit, tmp_path, case):
    split = _sharded(small_dit, tmp_path)
    named, found = _break(case, tmp_path, split)
    first = tmp_path / SHARDS[0]
    fifo = next((p for p in (tmp_path / INDEX, tmp_path / SHARDS[1]) if p.is_fifo()), None)
    refused(bounded(lambda: entries["dit"](first), first, fifo=fifo), named, found)


def test_either_shard_loads_the_whole_checkpoint(entries, small_dit, tmp_path):
    _sharded(small_dit, tmp_path)
    for name in SHARDS:  # every weight of the file arrives, whichever shard was picked
        weights = entries["dit"](tmp_path / name).model.diffusion_model.state_dict()
        for key, value in small_dit.items():
            torch.testing.assert_close(weights[key].float().reshape(value.shape), value, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("layout", ["comfy", "diffusers"])
def test_indexes_beside_a_whole_dit_are_never_read(entries, small_dit, tmp_path, monkeypatch, layout):
    """A valid single-file DiT loads whatever index files lie beside it: broken, a pipe, a folder, or one that
    names other files (no index is even opened for a file that is a whole DiT)."""
    from zimage_turbo.fixtures.tiny_models import dit_to_diffusers_layout, save_safetensors_atomic
    from zimage_turbo.loaders import dit_layouts
    sd = small_dit if layout == "comfy" else dit_to_diffusers_layout(small_dit)
    path = save_safetensors_atomic(sd, tmp_path / "z_image_single.safetensors")
    (tmp_path / "broken.safetensors.index.json").write_text("{not json")
    os.mkfifo(tmp_path / "pipe.safetensors.index.json")
    (tmp_path / "folder.safetensors.index.json").mkdir()
    (tmp_path / INDEX).write_text(json.dumps({"weight_map": {"x": SHARDS[0], "y": 3}}))

    def never(*args):
        raise AssertionError(f"an index was read for a single-file DiT: {args[0]}")
    monkeypatch.setattr(dit_layouts, "_read_index_json", never)
    out = _run(lambda: entries["dit"](path), fifo=tmp_path / "pipe.safetensors.index.json")
    assert out.error is None, out.error
    assert out.result.model.diffusion_model.x_embedder.weight.shape[0] == 256
