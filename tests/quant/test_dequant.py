"""Every GGML type's torch dequantizer vs gguf-py's numpy reference, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _quant_helpers import edge_blocks, same_bits
from gguf import quants as gq
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from zimage_turbo.quant import dequant as dq
from zimage_turbo.quant.dequant import dequantize, dequantize_blocks
from zimage_turbo.quant.types import QUANT_TYPES, UnsupportedQuantType, get_quant_type

DEQUANT_TYPES = [qt.name for qt in QUANT_TYPES.values() if qt.dequant is not None]
REFERENCE_TYPES = [n for n in DEQUANT_TYPES
                   if n in ("F32", "F16") or GGMLQuantizationType[n] in gq._type_traits]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def test_table_matches_gguf_sizes():
    for qt in QUANT_TYPES.values():
        assert GGML_QUANT_SIZES[GGMLQuantizationType(qt.type_id)] == (qt.block_size, qt.type_size), qt.name
        assert GGMLQuantizationType(qt.type_id).name == qt.name
    required = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
                "TQ1_0", "TQ2_0", "MXFP4"]
    assert set(required) <= set(REFERENCE_TYPES)


@pytest.mark.parametrize("name", REFERENCE_TYPES)
def test_bit_exact_vs_gguf(name):
    qt = get_quant_type(name)
    if qt.is_float:
        rng = np.random.default_rng(qt.type_id)
        raw = rng.integers(0, 256, size=(300, qt.type_size), dtype=np.uint8)
    else:
        raw = edge_blocks(name, qt.type_size, seed=qt.type_id)
    with np.errstate(all="ignore"):
        ref = gq.dequantize(raw.reshape(-1), GGMLQuantizationType(qt.type_id)).reshape(-1).astype(np.float32)
    ref_t = torch.from_numpy(ref.copy())
    n_el = raw.shape[0] * qt.block_size
    for dtype in DTYPES:
        out = dequantize(torch.from_numpy(raw), name, (n_el,), dtype=dtype)
        assert out.dtype == dtype and out.shape == (n_el,)
        assert same_bits(out, ref_t.to(dtype)), f"{name} -> {dtype}"


@pytest.mark.parametrize("name", ["Q4_K", "IQ2_XS", "Q8_0"])
def test_chunked_equals_unchunked(name, monkeypatch):
    qt = get_quant_type(name)
    raw = torch.from_numpy(edge_blocks(name, qt.type_size, n_random=40))
    full = dequantize_blocks(raw.reshape(-1, qt.type_size), qt, torch.float32)
    monkeypatch.setattr(dq, "CPU_CHUNK_ELEMENTS", qt.block_size * 7)
    chunked = dequantize_blocks(raw.reshape(-1, qt.type_size), qt, torch.float32)
    assert same_bits(full, chunked)


def test_integer_and_f64_types():
    v = np.arange(-8, 8, dtype=np.int16)
    out = dequantize(torch.from_numpy(v.view(np.uint8)), "I16", (4, 4), dtype=torch.float32)
    assert torch.equal(out, torch.from_numpy(v.astype(np.float32)).reshape(4, 4))
    f = np.linspace(-1, 1, 8)
    out = dequantize(torch.from_numpy(f.view(np.uint8)), 28, (8,), dtype=torch.float32)
    assert torch.equal(out, torch.from_numpy(f.astype(np.float32)))


def test_unknown_and_undequantizable_types_name_id_and_tensor():
    with pytest.raises(UnsupportedQuantType, match=r"99.*'blk\.0\.w'"):
        dequantize(torch.zeros(4, dtype=torch.uint8), 99, (4,), tensor_name="blk.0.w")
    with pytest.raises(UnsupportedQuantType, match=r"Q8_K \(id 15\).*'emb'"):
        dequantize(torch.zeros(292, dtype=torch.uint8), 15, (256,), tensor_name="emb")
    with pytest.raises(ValueError, match="bytes"):
        dequantize(torch.zeros(10, dtype=torch.uint8), "Q8_0", (32,))
    assert issubclass(UnsupportedQuantType, ValueError)


def test_iq_tables_match_gguf():
    from zimage_turbo.quant import _gen_iq_tables, dequant_iq
    for name, arr in _gen_iq_tables.decoded_grids().items():
        assert np.array_equal(dequant_iq._table(name).numpy(), arr.astype(np.float32)), name


def test_shape_and_device_argument():
    qt = get_quant_type("Q4_0")
    raw = torch.from_numpy(edge_blocks("Q4_0", qt.type_size, n_random=8)[:8])
    out = dequantize(raw, qt, (2, 128), dtype=torch.bfloat16, device="cpu")
    assert out.shape == (2, 128) and out.dtype == torch.bfloat16
