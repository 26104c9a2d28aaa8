"""Dequantizers for the i-quants (IQ1_S..IQ4_XS): code-book lookups plus sign and scale bits.

Code books (llama.cpp's fixed grids) come from :mod:`_iq_tables` and are cached once per device.
Layouts (byte offsets within a 256-element block unless noted):

* IQ2_XXS: d@0, qs[64]@2 as 8 x (4 grid bytes, u32 with 4x7 sign indices + 4-bit scale)
* IQ2_XS: d@0, qs:u16[32]@2 (9-bit grid index, 7-bit sign index), scales[8]@66 (4-bit)
* IQ2_S: d@0, qs[32]@2, signs[32]@34, qh[8]@66 (2 high index bits each), scales[8]@74
* IQ3_XXS: d@0, qs[64]@2 (grid bytes), scales:u32[8]@66 (4x7 sign indices + 4-bit scale)
* IQ3_S: d@0, qs[64]@2, qh[8]@66, signs[32]@74, scales[4]@106
* IQ1_S: d@0, qs[32]@2, qh:u16[8]@34 (4x3 high index bits, 3-bit scale, delta sign)
* IQ1_M: qs[32]@0, qh[16]@32, scales:u16[4]@48 (3-bit scales + fp16 d spread over top nibbles)
* IQ4_NL (32 elements): d@0, qs[16]@2 -> kvalues_iq4nl
* IQ4_XS: d@0, scales_h:u16@2, scales_l[4]@4, qs[128]@8
"""
from __future__ import annotations

import base64
import zlib

import numpy as np
import torch

from ._bits import bit_planes, device_cache, f16, mul_out, nibbles, u16, u32
from ._iq_tables import TABLES


def _table(name: str) -> torch.Tensor:
    dtype, rows, cols, chunks = TABLES[name]
    raw = zlib.decompress(base64.b64decode("".join(chunks)))
    arr = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(rows, cols)
    return torch.from_numpy(arr.astype(np.float32))


_grid = {name: device_cache(lambda name=name: _table(name))
         for name in ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S")}


@device_cache
def _ksign_bits() -> torch.Tensor:
    """7-bit sign index -> 8 signs (+1/-1) as float32 ``[128, 8]`` (ggml's ksigns_iq2xs)."""
    k = _table("KSIGNS").to(torch.int64).reshape(128, 1)
    b = (k >> torch.arange(8)) & 1
    return torch.where(b == 0, 1.0, -1.0).to(torch.float32)


_IQ4NL_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


@device_cache
def _kvalues_iq4nl() -> torch.Tensor:
    return torch.tensor(_IQ4NL_VALUES, dtype=torch.float32)


def _lookup(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table[idx]`` for integer indices of any int dtype (uint8 would mean a mask)."""
    return table[idx.long()]


def _signs_from_bytes(b: torch.Tensor) -> torch.Tensor:
    """Explicit sign bytes ``[..., k]`` -> +1/-1 float32 ``[..., k, 8]``."""
    return 1.0 - 2.0 * bit_planes(b).to(torch.float32)


def _half_scale(d: torch.Tensor, s: torch.Tensor, f: float) -> torch.Tensor:
    """ggml's ``d * (0.5 + s) * f`` in float32."""
    return d * (0.5 + s.to(torch.float32)) * f


def dequant_iq2_xxs(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    qs = blocks[:, 2:66].reshape(-1, 8, 8)
    aux = u32(qs[:, :, 4:8]).squeeze(-1)  # [n, 8]
    db = _half_scale(f16(blocks, 0), aux >> 28, 0.25).reshape(-1, 8, 1, 1)
    sidx = (aux.unsqueeze(-1) >> torch.tensor([0, 7, 14, 21], device=dev)) & 0x7F  # [n, 8, 4]
    signs = _lookup(_ksign_bits(dev), sidx)  # [n, 8, 4, 8]
    grid = _lookup(_grid["IQ2_XXS"](dev), qs[:, :, 0:4])  # [n, 8, 4, 8]
    return mul_out(db * grid, signs, dtype).reshape(-1, 256)


def dequant_iq2_xs(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    qs = u16(blocks[:, 2:66])  # [n, 32]
    sc = nibbles(blocks[:, 66:74]).transpose(1, 2).reshape(-1, 16)
    db = _half_scale(f16(blocks, 0), sc, 0.25).reshape(-1, 16, 1, 1)
    signs = _lookup(_ksign_bits(dev), qs >> 9).reshape(-1, 16, 2, 8)
    grid = _lookup(_grid["IQ2_XS"](dev), qs & 511).reshape(-1, 16, 2, 8)
    return mul_out(db * grid, signs, dtype).reshape(-1, 256)


def dequant_iq2_s(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    sc = nibbles(blocks[:, 74:82]).transpose(1, 2).reshape(-1, 16)
    db = _half_scale(f16(blocks, 0), sc, 0.25).reshape(-1, 16, 1, 1)
    signs = _signs_from_bytes(blocks[:, 34:66]).reshape(-1, 16, 2, 8)
    qh = blocks[:, 66:74].to(torch.int32).unsqueeze(-1) >> torch.tensor([0, 2, 4, 6], device=dev, dtype=torch.int32)
    idx = blocks[:, 2:34].to(torch.int32) | ((qh & 3).reshape(-1, 32) << 8)
    grid = _lookup(_grid["IQ2_S"](dev), idx).reshape(-1, 16, 2, 8)
    return mul_out(db * grid, signs, dtype).reshape(-1, 256)


def dequant_iq3_xxs(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    aux = u32(blocks[:, 66:98])  # [n, 8]
    db = _half_scale(f16(blocks, 0), aux >> 28, 0.5).reshape(-1, 8, 1, 1)
    sidx = (aux.unsqueeze(-1) >> torch.tensor([0, 7, 14, 21], device=dev)) & 0x7F
    signs = _lookup(_ksign_bits(dev), sidx)  # [n, 8, 4, 8]
    grid = _lookup(_grid["IQ3_XXS"](dev), blocks[:, 2:66]).reshape(-1, 8, 4, 8)
    return mul_out(db * grid, signs, dtype).reshape(-1, 256)


def dequant_iq3_s(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    sc = nibbles(blocks[:, 106:110]).transpose(1, 2).reshape(-1, 8).to(torch.int32)
    db = (f16(blocks, 0) * (1 + 2 * sc)).reshape(-1, 8, 1, 1)
    signs = _signs_from_bytes(blocks[:, 74:106]).reshape(-1, 8, 4, 8)
    qh = bit_planes(blocks[:, 66:74]).reshape(-1, 64).to(torch.int32)
    idx = blocks[:, 2:66].to(torch.int32) | (qh << 8)
    grid = _lookup(_grid["IQ3_S"](dev), idx).reshape(-1, 8, 4, 8)
    return mul_out(db * grid, signs, dtype).reshape(-1, 256)


_DELTA = 0.125


def _iq1_values(qs: torch.Tensor, idx_hi: torch.Tensor, delta_neg: torch.Tensor,
                dev: torch.device) -> torch.Tensor:
    """Grid rows for 11-bit indices plus +-delta -> float32 ``[..., 8]``."""
    grid = _lookup(_grid["IQ1_S"](dev), qs.to(torch.int32) | (idx_hi << 8))
    delta = torch.where(delta_neg, -_DELTA, _DELTA).to(torch.float32)
    return grid + delta.unsqueeze(-1)


def dequant_iq1_s(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    qh = u16(blocks[:, 34:50])  # [n, 8]
    dl = (f16(blocks, 0) * (2 * ((qh >> 12) & 7) + 1)).reshape(-1, 8, 1, 1)
    hi = (qh.unsqueeze(-1) >> torch.tensor([0, 3, 6, 9], device=dev, dtype=torch.int32)) & 7  # [n, 8, 4]
    neg = ((qh & 0x8000) != 0).unsqueeze(-1).expand(-1, -1, 4)
    vals = _iq1_values(blocks[:, 2:34].reshape(-1, 8, 4), hi, neg, dev)  # [n, 8, 4, 8]
    return mul_out(dl, vals, dtype).reshape(-1, 256)


def dequant_iq1_m(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    sc = u16(blocks[:, 48:56])  # [n, 4]
    dbits = ((sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000))
    dbits = torch.where(dbits >= 0x8000, dbits - 0x10000, dbits)
    d = dbits.to(torch.int16).view(torch.float16).to(torch.float32).reshape(-1, 1)
    s3 = (sc.unsqueeze(-1) >> torch.tensor([0, 3, 6, 9], device=dev, dtype=torch.int32)) & 7  # [n, 4, 4]
    dl = (d * (2 * s3.reshape(-1, 16) + 1)).reshape(-1, 8, 2, 1, 1)
    qh = nibbles(blocks[:, 32:48]).transpose(1, 2).reshape(-1, 32).to(torch.int32)  # lo, hi per byte
    vals = _iq1_values(blocks[:, 0:32], qh & 7, (qh & 8) != 0, dev)  # [n, 32, 8]
    return mul_out(dl, vals.reshape(-1, 8, 2, 2, 8), dtype).reshape(-1, 256)


def dequant_iq4_nl(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    v = _lookup(_kvalues_iq4nl(blocks.device), nibbles(blocks[:, 2:18]).reshape(-1, 32))
    return mul_out(f16(blocks, 0), v, dtype)


def dequant_iq4_xs(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    sh = u16(blocks[:, 2:4])  # [n, 1]
    lo = nibbles(blocks[:, 4:8]).transpose(1, 2).reshape(-1, 8).to(torch.int32)
    hi = (sh >> torch.arange(0, 16, 2, device=dev, dtype=torch.int32)) & 3  # [n, 8]
    ls = (lo | (hi << 4)) - 32
    dl = (f16(blocks, 0) * ls).unsqueeze(-1)  # [n, 8, 1]
    q = nibbles(blocks[:, 8:136].reshape(-1, 8, 16)).reshape(-1, 8, 32)
    v = _lookup(_kvalues_iq4nl(dev), q)
    return mul_out(dl, v, dtype).reshape(-1, 256)
