"""Issue 16, metadata values and non-finite values at load: every case ends in a ModelFileError naming the file
and the key (or tensor) at fault, within 1 s, through the real loaders.

Families: GGUF metadata of the wrong type or range, huge counts, tokenizer metadata, inconsistent model
structure (text encoder GGUFs written with fixtures' write_qwen3_gguf plus mutated metadata); quantization
metadata in safetensors and fp8 scales (DiT files from the quantize command's scaled-fp8 form); NaN/Inf in
small tensors (norms, biases, pad tokens, scales) of DiT, text encoder and VAE files.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import struct
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zimage_turbo.fixtures.shapes import Qwen3Spec
from zimage_turbo.fixtures.small_tokenizer import small_tokenizer_metadata
from zimage_turbo.fixtures.tiny_models import qwen3_gguf_tensors, write_qwen3_gguf
from zimage_turbo.loaders.errors import ModelFileError

MAX_SECONDS = 1.0
NAN, INF = float("nan"), float("inf")
# A tiny encoder whose vocabulary (1000 rows) is far smaller than ComfyUI's Qwen tokenizer (151669 ids): only a
# tokenizer of its own can drive it, so every bad tokenizer value is an error (no fallback).
SMALL = Qwen3Spec(vocab_size=1000, hidden_size=256, intermediate_size=256, num_hidden_layers=3,
                  num_attention_heads=2, num_key_value_heads=1)
TOKENIZER = small_tokenizer_metadata(SMALL.vocab_size)
_TOKENS = TOKENIZER["tokenizer.ggml.tokens"]


@pytest.fixture(scope="module")
def small_tensors():
    return qwen3_gguf_tensors(SMALL, "F16", seed=3)


@pytest.fixture(scope="module")
def warm(comfy_host, small_tensors, tmp_path_factory):
    """The loaders' imports and ComfyUI's bundled tokenizer loaded once (the 1 s budget is for the checks)."""
    import comfy.ldm.lumina.model  # noqa: F401  (the DiT loader imports these on its first call)
    import comfy.supported_models  # noqa: F401
    from zimage_turbo.loaders.gguf_tokenizer import bundled_id_count, bundled_tokenizer
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    bundled_tokenizer()
    assert bundled_id_count() == len(bundled_tokenizer())  # read from tokenizer_config.json, checked here
    path = write_qwen3_gguf(tmp_path_factory.mktemp("warm") / "valid.gguf", SMALL, "F16", tensors=small_tensors,
                            metadata=TOKENIZER)
    return load_qwen3_text_encoder(path)


def _timed_error(load, path: Path, *args, **kwargs) -> ModelFileError:
    start = time.perf_counter()
    with pytest.raises(ModelFileError) as info:
        load(path, *args, **kwargs)
    elapsed = time.perf_counter() - start
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f} s"
    return info.value


def _assert_names(error: ModelFileError, path: Path, key: str) -> None:
    message = str(error)
    assert message.startswith(f"{path.name}: expected ") and ", found " in message, message
    assert error.key == key, (error.key, message)
    assert key in message, message


def _te_error(tmp_path: Path, tensors, metadata: dict, spec: Qwen3Spec = SMALL, **kwargs) -> tuple[Path, ModelFileError]:
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    path = write_qwen3_gguf(tmp_path / "Qwen3-hostile.gguf", spec, "F16", tensors=tensors, metadata=metadata)
    return path, _timed_error(load_qwen3_text_encoder, path, **kwargs)


# ------------------------------------------------------------------------------------ GGUF metadata values
WRONG_VALUES = [
    ("qwen3.block_count", "abc"), ("qwen3.block_count", ("f32", NAN)), ("qwen3.block_count", ("f32", INF)),
    ("qwen3.block_count", ("u32", [3, 3])), ("qwen3.block_count", ("f32", 3.0)), ("qwen3.block_count", ("i32", -1)),
    ("qwen3.block_count", ("u32", 0)), ("qwen3.block_count", ("u32", 2)), ("qwen3.block_count", ("u32", 5)),
    ("qwen3.block_count", True), ("qwen3.block_count", [["a"], ["b"]]),
    ("qwen3.embedding_length", "256"), ("qwen3.embedding_length", ("f64", NAN)), ("qwen3.embedding_length", ("u32", 512)),
    ("qwen3.embedding_length", ("u32", [256])), ("qwen3.attention.head_count", "2"),
    ("qwen3.attention.head_count", ("u32", 3)), ("qwen3.attention.head_count_kv", ("f32", 1.5)),
    ("qwen3.feed_forward_length", ("u32", [256, 256])), ("qwen3.attention.key_length", ("u32", 0)),
    ("qwen3.rope.freq_base", "abc"), ("qwen3.rope.freq_base", ("f32", [1e6, 1e6])), ("qwen3.rope.freq_base", ("f32", NAN)),
    ("qwen3.rope.freq_base", ("f32", INF)), ("qwen3.rope.freq_base", ("f32", 0.0)), ("qwen3.rope.freq_base", ("f32", -1.0)),
    ("qwen3.attention.layer_norm_rms_epsilon", ("f32", NAN)), ("qwen3.attention.layer_norm_rms_epsilon", ("f32", -1.0)),
    ("qwen3.attention.layer_norm_rms_epsilon", ("f32", 0.0)), ("qwen3.attention.layer_norm_rms_epsilon", "1e-6"),
    ("general.architecture", ("u32", 5)), ("general.architecture", ["qwen3"]),
]


@pytest.mark.parametrize("key,value", WRONG_VALUES, ids=[f"{k}={v!r}"[:60] for k, v in WRONG_VALUES])
def test_gguf_metadata_of_the_wrong_type_or_range(warm, small_tensors, tmp_path, key, value):
    path, error = _te_error(tmp_path, small_tensors, {**TOKENIZER, key: value})
    _assert_names(error, path, key)


def test_message_shape(warm, small_tensors, tmp_path):
    path, error = _te_error(tmp_path, small_tensors, {**TOKENIZER, "qwen3.block_count": "abc"})
    assert str(error).startswith("Qwen3-hostile.gguf: expected qwen3.block_count to be an integer from 1 to 4096 "
                                 "matching the 3 blocks of tensors, found 'abc' (a string). ")


@pytest.mark.parametrize("count", [2**32 - 1, 10**6, 2**40, 2**64 - 1])
def test_huge_block_counts_end_at_once(warm, small_tensors, tmp_path, count):
    """Such counts used to hang the loader (it looped over them); nothing is sized by a metadata value now."""
    path, error = _te_error(tmp_path, small_tensors, {**TOKENIZER, "qwen3.block_count": ("u64", count)})
    _assert_names(error, path, "qwen3.block_count")
    assert f"found {count} (an integer)" in str(error)


# ------------------------------------------------------------------------------------ tokenizer metadata
def _merges_naming(missing: str) -> list[str]:
    return TOKENIZER["tokenizer.ggml.merges"] + [missing]


TOKENIZER_CASES = [
    ("tokenizer.ggml.tokens", ("u32", 5)), ("tokenizer.ggml.tokens", ("u32", list(range(1000)))),
    ("tokenizer.ggml.tokens", "abc"), ("tokenizer.ggml.tokens", _TOKENS + ["x"]), ("tokenizer.ggml.tokens", []),
    ("tokenizer.ggml.tokens", [["a"], ["b"]]),
    ("tokenizer.ggml.pre", ["qwen2"]), ("tokenizer.ggml.pre", ("u32", 2)), ("tokenizer.ggml.model", ("u32", 1)),
    ("tokenizer.ggml.merges", ("u32", [1, 2])), ("tokenizer.ggml.merges", _merges_naming("zz qq")),
    ("tokenizer.ggml.merges", _merges_naming("Ġ c")), ("tokenizer.ggml.merges", _merges_naming("single")),
    ("tokenizer.ggml.merges", "Ġ t"),
    ("tokenizer.ggml.token_type", ("i32", 1)), ("tokenizer.ggml.token_type", ("i32", [1, 1, 1])),
    ("tokenizer.ggml.token_type", ["1"] * 1000),
    ("tokenizer.ggml.eos_token_id", "x"), ("tokenizer.ggml.eos_token_id", ("f32", NAN)),
    ("tokenizer.ggml.eos_token_id", ("u32", 1000)), ("tokenizer.ggml.eos_token_id", ("i32", -1)),
    ("tokenizer.ggml.padding_token_id", ("u32", 151643)),
]


@pytest.mark.parametrize("key,value", TOKENIZER_CASES, ids=[f"{k[16:]}={v!r}"[:50] for k, v in TOKENIZER_CASES])
def test_tokenizer_metadata(warm, small_tensors, tmp_path, key, value):
    """Validated before the tokenizers library sees it: never "Error while initializing BPE" nor a PyO3 error."""
    path, error = _te_error(tmp_path, small_tensors, {**TOKENIZER, key: value})
    _assert_names(error, path, key)
    assert "BPE" not in str(error) and "extract" not in str(error)


def test_unknown_pre_tokenizer_is_named(warm, small_tensors, tmp_path):
    """A well-typed tokenizer this pack cannot rebuild, on a vocabulary ComfyUI's tokenizer does not fit either."""
    path, error = _te_error(tmp_path, small_tensors, {**TOKENIZER, "tokenizer.ggml.pre": "mystery"})
    _assert_names(error, path, "token_embd.weight")
    assert "pre-tokenizer 'mystery'" in str(error) and "1000 rows" in str(error)


@pytest.fixture(scope="module")
def full_vocab(comfy_host):
    """A tiny encoder with Qwen3's full 151936-row vocabulary (ComfyUI's tokenizer fits it), embedding in Q4_0."""
    spec = replace(SMALL, vocab_size=151936)
    return spec, qwen3_gguf_tensors(spec, "F16", seed=4, embed_type="Q4_0")


def test_bad_tokenizer_on_a_full_vocabulary(warm, full_vocab, tmp_path, caplog):
    """auto: ComfyUI's tokenizer, with a warning naming the key; gguf and strict: the error naming it."""
    import comfy.text_encoders.z_image as z_image
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    spec, tensors = full_vocab
    bad = {**small_tokenizer_metadata(spec.vocab_size), "tokenizer.ggml.merges": ("u32", [1, 2])}
    path = write_qwen3_gguf(tmp_path / "full.gguf", spec, "F16", tensors=tensors, metadata=bad)
    with caplog.at_level(logging.WARNING):
        clip = load_qwen3_text_encoder(path)
    assert type(clip.tokenizer) is z_image.ZImageTokenizer
    assert clip.tokenizer.zimage_tokenizer_check.status == "invalid"
    assert "full.gguf" in caplog.text and "tokenizer.ggml.merges" in caplog.text
    for policy in ("gguf", "strict"):
        _assert_names(_timed_error(load_qwen3_text_encoder, path, tokenizer=policy), path, "tokenizer.ggml.merges")


# ------------------------------------------------------------------------------------ model structure
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_too_few_layers(warm, tmp_path, layers):
    spec = replace(SMALL, num_hidden_layers=layers)
    path, error = _te_error(tmp_path, qwen3_gguf_tensors(spec, "F16", seed=5), TOKENIZER, spec)
    _assert_names(error, path, "qwen3.block_count")
    assert f"{layers} blocks of tensors" in str(error) and "at least 3 layers" in str(error)


def test_missing_block_is_named(warm, small_tensors, tmp_path):
    tensors = {k: v for k, v in small_tensors.items() if not k.startswith("blk.1.")}
    path, error = _te_error(tmp_path, tensors, TOKENIZER)
    assert "block 'model.layers.1' missing before block 'model.layers.2'" in str(error)


def test_small_vocabulary_without_tokenizer_is_refused(warm, small_tensors, tmp_path):
    """ComfyUI's tokenizer would emit ids past the 1000 rows at the first prompt: refused at load."""
    path, error = _te_error(tmp_path, small_tensors, {})
    _assert_names(error, path, "token_embd.weight")
    assert "1000 rows" in str(error) and "151669 ids" in str(error)
    path, error = _te_error(tmp_path, small_tensors, TOKENIZER, tokenizer="bundled")
    _assert_names(error, path, "token_embd.weight")


def test_small_vocabulary_with_its_tokenizer_encodes(warm):
    """The file's own tokenizer drives a vocabulary smaller than ComfyUI's: every id is an embedding row."""
    clip = warm
    assert clip.tokenizer.zimage_tokenizer_check.status == "differs"
    tokens = clip.tokenize("a cat and the dog 猫 🐱")
    ids = [t for t, _ in tokens["qwen3_4b"][0]]
    assert ids and max(ids) < SMALL.vocab_size and {_TOKENS.index("Ġthe"), _TOKENS.index("Ġcat")} <= set(ids)
    cond = clip.encode_from_tokens_scheduled(tokens)[0][0]
    assert cond.shape == (1, len(ids), SMALL.hidden_size) and torch.isfinite(cond).all()


def test_safetensors_with_a_small_vocabulary_is_refused(warm, tmp_path):
    from zimage_turbo.fixtures.tiny_models import build_qwen3_state_dict
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    path = tmp_path / "qwen3_small_vocab.safetensors"
    save_file(build_qwen3_state_dict(SMALL), str(path))
    _assert_names(_timed_error(load_qwen3_text_encoder, path), path, "model.embed_tokens.weight")


# ------------------------------------------------------------------------------------ NaN / Inf at load
def _patched_copy(src: Path, dst: Path, tensor: str, value: float) -> Path:
    """A copy of a safetensors file whose tensor `tensor` holds `value` in its first element (patched in place)."""
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        entry = json.loads(f.read(n))[tensor]
        dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[entry["dtype"]]
        f.seek(8 + n + entry["data_offsets"][0])
        f.write(torch.tensor([value], dtype=dtype).view(torch.uint8).numpy().tobytes())
    return dst


DIT_NAN_CASES = [("layers.0.attention_norm1.weight", NAN), ("x_pad_token", INF), ("cap_pad_token", NAN),
                 ("x_embedder.bias", -INF), ("layers.1.attention.q_norm.weight", NAN)]


@pytest.mark.parametrize("tensor,value", DIT_NAN_CASES)
def test_non_finite_small_dit_tensors(warm, tiny_paths, tmp_path, tensor, value):
    from zimage_turbo.loaders.dit import load_zimage_dit
    path = _patched_copy(tiny_paths["diffusion_models"], tmp_path / "dit_nan.safetensors", tensor, value)
    error = _timed_error(load_zimage_dit, path)
    _assert_names(error, path, tensor)
    assert ("NaN" if math.isnan(value) else "Inf") in str(error)


def test_non_finite_norm_in_a_dit_gguf(warm, tiny_paths, tmp_path):
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.quant.gguf_writer import write_gguf
    sd = load_file(str(tiny_paths["diffusion_models"]))
    sd["layers.0.ffn_norm1.weight"] = sd["layers.0.ffn_norm1.weight"].float().index_fill(0, torch.tensor([3]), NAN)
    tensors = {k: (v.float(), "Q8_0" if v.ndim == 2 and v.shape[1] % 32 == 0 else "F32") for k, v in sd.items()}
    path = tmp_path / "dit_nan.gguf"
    write_gguf(path, tensors, {"general.architecture": "lumina2"})
    _assert_names(_timed_error(load_zimage_dit, path), path, "layers.0.ffn_norm1.weight")


def test_non_finite_text_encoder_tensors(warm, small_tensors, tiny_paths, tmp_path):
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    tensors = dict(small_tensors)
    tensors["blk.0.attn_norm.weight"] = (torch.full((SMALL.hidden_size,), NAN), "F32")
    path, error = _te_error(tmp_path, tensors, TOKENIZER)
    _assert_names(error, path, "blk.0.attn_norm.weight")  # the file's own tensor name
    key = "model.layers.1.post_attention_layernorm.weight"
    path = _patched_copy(tiny_paths["text_encoders"], tmp_path / "qwen3_inf.safetensors", key, INF)
    _assert_names(_timed_error(load_qwen3_text_encoder, path), path, key)


@pytest.mark.parametrize("tensor,value", [("decoder.norm_out.weight", NAN), ("decoder.conv_in.bias", INF)])
def test_non_finite_vae_tensors(warm, tiny_paths, tmp_path, tensor, value):
    from zimage_turbo.loaders.vae import load_flux_vae
    path = _patched_copy(tiny_paths["vae"], tmp_path / "ae_nan.safetensors", tensor, value)
    _assert_names(_timed_error(load_flux_vae, path), path, tensor)


# ------------------------------------------------------------------------------------ fp8 scales, quant metadata
LAYER = "layers.0.attention.qkv"


@pytest.fixture(scope="module")
def scaled_fp8(comfy_host, tiny_paths):
    """The tiny DiT in the quantize command's scaled-fp8 form (per-tensor `scale_weight` + `scaled_fp8` marker)."""
    from zimage_turbo.quant.convert import scaled_fp8_state_dict
    sd, _ = scaled_fp8_state_dict(load_file(str(tiny_paths["diffusion_models"])))
    assert sd[LAYER + ".weight"].dtype == torch.float8_e4m3fn and sd[LAYER + ".scale_weight"].numel() == 1
    return sd


def _comfy_quant(sd: dict, entry: bytes | None = None) -> dict:
    """The scaled-fp8 state dict as per-layer `.comfy_quant` fp8 (ComfyUI 0.4+ format); `entry`: the raw bytes of
    the first layer's entry."""
    out = {}
    for key, value in sd.items():
        if key == "scaled_fp8":
            continue
        if key.endswith(".scale_weight"):
            layer = key[: -len(".scale_weight")]
            out[layer + ".weight_scale"] = value
            raw = entry if entry is not None and layer == LAYER else json.dumps({"format": "float8_e4m3fn"}).encode()
            out[layer + ".comfy_quant"] = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else \
                torch.zeros(0, dtype=torch.uint8)
        else:
            out[key] = value
    return out


def _dit_error(tmp_path: Path, sd: dict, metadata: dict | None = None) -> tuple[Path, ModelFileError]:
    from zimage_turbo.loaders.dit import load_zimage_dit
    path = tmp_path / "dit_fp8.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path, _timed_error(load_zimage_dit, path)


def test_missing_scale_is_refused(warm, scaled_fp8, tmp_path):
    """It used to load, and that layer ran unscaled."""
    sd = {k: v for k, v in scaled_fp8.items() if k != LAYER + ".scale_weight"}
    path, error = _dit_error(tmp_path, sd)
    _assert_names(error, path, LAYER + ".scale_weight")
    assert "unscaled" in str(error)


def test_scale_of_the_wrong_shape_names_that_scale(warm, scaled_fp8, tmp_path):
    sd = dict(scaled_fp8)
    sd[LAYER + ".scale_weight"] = sd[LAYER + ".scale_weight"].reshape(1).repeat(3)
    path, error = _dit_error(tmp_path, sd)
    _assert_names(error, path, LAYER + ".scale_weight")
    assert "[3]" in str(error)


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_non_finite_scale_is_refused(warm, scaled_fp8, tmp_path, value):
    sd = dict(scaled_fp8)
    sd[LAYER + ".scale_weight"] = torch.tensor(value)
    _assert_names(_dit_error(tmp_path, sd)[1], tmp_path / "dit_fp8.safetensors", LAYER + ".scale_weight")


def test_wrong_marker_dtype(warm, scaled_fp8, tmp_path):
    sd = {**scaled_fp8, "scaled_fp8": torch.zeros(2, dtype=torch.float16)}
    _assert_names(_dit_error(tmp_path, sd)[1], tmp_path / "dit_fp8.safetensors", "scaled_fp8")


COMFY_QUANT_ENTRIES = [b"not json", b"[1, 2]", b'{"format": "int3_magic"}', b"\xff\xfe{}", b'{"format": 5}', b"{}",
                       b"", b'"float8_e4m3fn"']


@pytest.mark.parametrize("entry", COMFY_QUANT_ENTRIES)
def test_bad_comfy_quant_entries(warm, scaled_fp8, tmp_path, entry):
    path, error = _dit_error(tmp_path, _comfy_quant(scaled_fp8, entry))
    _assert_names(error, path, LAYER + ".comfy_quant")


def test_comfy_quant_layer_without_its_scale(warm, scaled_fp8, tmp_path):
    sd = {k: v for k, v in _comfy_quant(scaled_fp8).items() if k != LAYER + ".weight_scale"}
    path, error = _dit_error(tmp_path, sd)
    _assert_names(error, path, LAYER + ".weight_scale")


def test_comfy_quant_scale_of_the_wrong_shape(warm, scaled_fp8, tmp_path):
    sd = _comfy_quant(scaled_fp8)
    sd[LAYER + ".weight_scale"] = torch.ones(5)
    path, error = _dit_error(tmp_path, sd)
    _assert_names(error, path, LAYER + ".weight_scale")


QUANT_METADATA = ["not json", "[1, 2]", '{"layers": [1]}', '{"format_version": "1.0"}', "",
                  json.dumps({"layers": {LAYER: {"format": "int3_magic"}}}), json.dumps({"layers": {LAYER: [1]}}),
                  '{"layers": {"a": {"format": "float8_e4m3fn"}}' + "]" * 3]


def _with_quantization_metadata(path: Path, sd: dict, text: str) -> Path:
    """A safetensors file whose `_quantization_metadata` is `text` (header written by hand: the safetensors
    library would refuse a lone surrogate)."""
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"_quantization_metadata": "x"})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["_quantization_metadata"] = text
    raw = json.dumps(header).encode()  # ASCII: a surrogate is written as its \u escape
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return path


@pytest.mark.parametrize("text", QUANT_METADATA)
def test_bad_quantization_metadata(warm, scaled_fp8, tmp_path, text):
    """`_quantization_metadata` (safetensors file metadata) that is not JSON, a list, without layers, or names an
    unknown format."""
    from zimage_turbo.loaders.dit import load_zimage_dit
    path = _with_quantization_metadata(tmp_path / "dit_fp8.safetensors", scaled_fp8, text)
    _assert_names(_timed_error(load_zimage_dit, path), path, "_quantization_metadata")


def test_quantization_metadata_that_is_not_utf8(warm, scaled_fp8, tmp_path):
    """A lone surrogate: refused with the file named (the safetensors library refuses such a header), and by the
    metadata accessor itself for callers that pass such a string."""
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.metadata import BadMetadata, parse_json_object
    path = _with_quantization_metadata(tmp_path / "dit_fp8.safetensors", scaled_fp8, '{"layers": "\ud800"}')
    assert str(_timed_error(load_zimage_dit, path)).startswith(f"{path.name}: expected ")
    with pytest.raises(BadMetadata, match="unpaired surrogate"):
        parse_json_object("_quantization_metadata", '{"layers": "\ud800"}')


# ------------------------------------------------------------------------------------ the accessors themselves
class _LazyStrings:
    """A read-only sequence (len, indexing, iteration) like the GGUF reader's lazily decoded string arrays."""

    def __init__(self, items):
        self._items = list(items)

    def __len__(self):
        return len(self._items)

    def __getitem__(self, index):
        return self._items[index]


def test_accessors_take_any_sequence():
    import numpy as np
    from zimage_turbo.loaders.metadata import (BadMetadata, describe_value, read_int, read_int_array,
                                               read_string_array)
    meta = {"s": _LazyStrings(["a", "b"]), "i": _LazyStrings([1, 2]), "n": np.array([1, 2], dtype=np.uint32)}
    assert list(read_string_array(meta, "s", max_length=2)) == ["a", "b"]
    assert read_int_array(meta, "n", 2).tolist() == [1, 2] and read_int_array(meta, "i", 2).tolist() == [1, 2]
    assert describe_value(meta["i"]) == "an array of 2 integers" and describe_value(meta["s"]) == "an array of 2 strings"
    for call in (lambda: read_string_array(meta, "i", max_length=2), lambda: read_string_array(meta, "s", max_length=1),
                 lambda: read_int_array(meta, "s", 2), lambda: read_int(meta, "n", 0, 9)):
        with pytest.raises(BadMetadata):
            call()
    assert read_int(meta, "absent", 0, 9, default=None) is None


def test_tokenizer_library_errors_are_a_backstop(monkeypatch):
    """Should data that passed the checks still make the library fail (a Rust panic is a BaseException), the
    check reports an unsupported tokenizer and the builder raises the pack's error, never the library's."""
    from zimage_turbo.loaders import gguf_tokenizer

    class PanicException(BaseException):
        pass

    def panic(data):
        raise PanicException("range end index 2 out of range for slice of length 1")

    import numpy as np
    # the metadata as the reader returns it (the writer's ("type", value) pairs unwrapped)
    metadata = {k: (np.array(v[1]) if isinstance(v[1], list) else v[1]) if isinstance(v, tuple) else v
                for k, v in TOKENIZER.items()}
    assert gguf_tokenizer.read_tokenizer_metadata(metadata, SMALL.vocab_size).eos_id == _TOKENS.index("<|im_end|>")
    monkeypatch.setattr(gguf_tokenizer, "_build", panic)
    check = gguf_tokenizer.check_gguf_tokenizer(metadata, rows=SMALL.vocab_size)
    assert check.status == "unsupported" and "tokenizers library refuses (range end index 2" in check.detail
    with pytest.raises(gguf_tokenizer.GGUFTokenizerUnsupported):
        gguf_tokenizer.build_gguf_tokenizer(metadata)
    monkeypatch.setattr(gguf_tokenizer, "_build", lambda data: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        gguf_tokenizer.check_gguf_tokenizer(metadata)


@pytest.mark.parametrize("case", ["missing", "nan", "separate_qkv_scales"])
def test_scaled_fp8_control_patch_scales(warm, tiny_paths, tmp_path, case):
    """The ControlNet loader applies the same checks to a scaled-fp8 patch (hosts with the Z-Image ControlNet);
    per-tensor scales of separate q/k/v (published layout) cannot be joined into one qkv: refused, not a crash."""
    from zimage_turbo.loaders.controlnet import ControlNetHostError, controlnet_class, load_zimage_controlnet
    from zimage_turbo.loaders.controlnet_layout import controlnet_to_comfy
    from zimage_turbo.quant.convert import scaled_fp8_state_dict
    try:
        controlnet_class()
    except ControlNetHostError as exc:
        pytest.skip(f"this ComfyUI has no Z-Image Fun ControlNet: {exc}")
    published = load_file(str(tiny_paths["model_patches"]))
    if case == "separate_qkv_scales":
        path = tmp_path / "patch_fp8.safetensors"
        save_file(scaled_fp8_state_dict(published)[0], str(path))
        assert str(_timed_error(load_zimage_controlnet, path)).startswith(f"{path.name}: expected ")
        return
    # as the quantize command writes a patch: ComfyUI layout (one qkv), then scaled fp8
    sd, _ = scaled_fp8_state_dict(controlnet_to_comfy(published))
    scale = next(k for k in sd if k.endswith(".scale_weight"))
    if case == "missing":
        del sd[scale]
    else:
        sd[scale] = torch.tensor(NAN)
    path = tmp_path / "patch_fp8.safetensors"
    save_file(sd, str(path))
    _assert_names(_timed_error(load_zimage_controlnet, path), path, scale)
