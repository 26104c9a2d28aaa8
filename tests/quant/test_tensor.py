"""QuantizedTensor: metadata survives moves/copies, byte accounting, dequantize rows / block ranges."""
from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from zimage_turbo.quant.dequant_ops import dequantize_block_range, dequantize_rows, dequantize_tensor
from zimage_turbo.quant.gguf_reader import GGUFFile
from zimage_turbo.quant.gguf_writer import write_gguf
from zimage_turbo.quant.quantize import quantize
from zimage_turbo.quant.tensor import QuantizedTensor


def _qt(name: str = "Q4_K", shape=(6, 512)) -> tuple[QuantizedTensor, torch.Tensor]:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    return QuantizedTensor(quantize(x, name), name, shape, tensor_name="w"), x


def test_metadata_survives_moves_and_copies():
    t, _ = _qt()
    ref = t.dequantize(torch.float32)
    for out in (t.to("cpu"), t.cpu(), t.clone(), t.detach(), t.contiguous(), t.data, torch.clone(t),
                t.to(torch.float16), t.to("cpu", torch.bfloat16, copy=True), copy.deepcopy(t),
                t.requires_grad_(False)):
        assert isinstance(out, QuantizedTensor)
        assert out.quant_type.name == "Q4_K" and out.logical_shape == (6, 512) and out.dtype == torch.uint8
        assert torch.equal(out.dequantize(torch.float32), ref)
    p = torch.nn.Parameter(t, requires_grad=False)
    assert isinstance(p, QuantizedTensor) and p.logical_shape == (6, 512)


def test_byte_accounting_and_plain_ops():
    t, _ = _qt()
    n = 6 * 512 // 256 * 144
    assert t.nelement() * t.element_size() == n == t.nbytes == t.numel()
    assert t.shape == (6, 512 // 256 * 144) and t.n_blocks == 12
    s = t.sum()  # any other op sees plain bytes
    assert type(s) is torch.Tensor
    assert "Q4_K" in repr(t) and "(6, 512)" in repr(t)
    buf = io.BytesIO()
    torch.save(t, buf)
    buf.seek(0)
    u = torch.load(buf, weights_only=False)
    assert isinstance(u, QuantizedTensor) and torch.equal(u.raw_bytes(), t.raw_bytes())


@pytest.mark.parametrize("name", ["Q8_0", "Q4_K", "F16", "BF16", "Q5_1"])
def test_rows_and_block_ranges(name):
    t, x = _qt(name, (10, 256))
    full = dequantize_tensor(t, torch.float32)
    assert full.shape == (10, 256)
    assert torch.equal(dequantize_rows(t, (3, 7), torch.float32), full[3:7])
    idx = torch.tensor([[9, 0], [4, 4]])
    assert torch.equal(dequantize_rows(t, idx, torch.float32), full[idx])
    assert torch.equal(dequantize_rows(t, [-1], torch.float32), full[-1:])
    bs = t.quant_type.block_size
    nb = t.n_blocks
    assert torch.equal(dequantize_block_range(t, 1, nb - 1, torch.float32), full.reshape(-1)[bs:(nb - 1) * bs])
    assert dequantize_rows(t, (2, 2), torch.float16).shape == (0, 256)
    with pytest.raises(IndexError):
        dequantize_rows(t, (5, 11))
    with pytest.raises(IndexError):
        dequantize_rows(t, [10])
    with pytest.raises(IndexError):
        dequantize_block_range(t, 0, nb + 1)


def test_from_reader_and_errors(tmp_path):
    p = str(tmp_path / "m.gguf")
    x = torch.randn(4, 3, 64)
    write_gguf(p, {"blk.0.w": (x, "Q8_0")}, {})
    with GGUFFile(p) as g:
        t = g.load("blk.0.w")
        assert isinstance(t, QuantizedTensor) and t.logical_shape == (4, 3, 64) and t.tensor_name == "blk.0.w"
        y = t.dequantize(torch.float32)
        assert y.shape == (4, 3, 64) and (y - x).abs().max() < 0.05
        assert torch.equal(dequantize_rows(t, (0, 12), torch.float32), y.reshape(12, 64))
    with pytest.raises(ValueError, match="block size"):
        QuantizedTensor(torch.zeros(34, dtype=torch.uint8), "Q8_0", (16,))
    with pytest.raises(ValueError, match="needs 34 bytes"):
        QuantizedTensor(torch.zeros(33, dtype=torch.uint8), "Q8_0", (32,))
    with pytest.raises(ValueError, match="unknown GGML type id 77"):
        QuantizedTensor(torch.zeros(4, dtype=torch.uint8), 77, (4,), tensor_name="z")


def test_numpy_input_and_quantize_entry():
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    q = quantize(x, "Q8_0")
    assert q.shape == (2, 68) and q.dtype == torch.uint8
    with pytest.raises(ValueError, match="block size"):
        quantize(x[:, :40], "Q8_0")
    with pytest.raises(NotImplementedError):
        quantize(x, "IQ2_XS")
