"""Dequantizers for plain float/int types and the 32-element "legacy" blocks.

Each function maps uint8 blocks ``[n, type_size]`` to ``[n, block_size]`` in ``dtype``; arithmetic is
float32 in the same operation order as ggml's reference (and gguf-py), rounded once to ``dtype``.
Block layouts (little-endian; ``d``/``m`` are fp16):

* Q4_0 ``d, qs[16]``: x = d * (q - 8), low nibbles are elements 0..15, high nibbles 16..31
* Q4_1 ``d, m, qs[16]``: x = d * q + m
* Q5_0 ``d, qh:u32, qs[16]``: q = nibble | bit_i(qh) << 4, x = d * (q - 16)
* Q5_1 ``d, m, qh:u32, qs[16]``: x = d * q + m
* Q8_0 ``d, qs:i8[32]``: x = d * q
* MXFP4 ``e:e8m0, qs[16]``: x = 2^(e-128) * kvalues[nibble] (kvalues are doubled e2m1)
* NVFP4 ``d:ue4m3[4], qs[32]``: four 16-element groups, x = ue4m3(d)/2 * kvalues[nibble]
"""
from __future__ import annotations

import torch

from ._bits import add_out, device_cache, f16, mul_out, nibbles, u32


def _plain(view_dtype: torch.dtype):
    def deq(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return blocks.contiguous().view(view_dtype).to(dtype)
    deq.__name__ = f"dequant_{str(view_dtype).removeprefix('torch.')}"
    return deq


dequant_f32 = _plain(torch.float32)
dequant_f16 = _plain(torch.float16)
dequant_bf16 = _plain(torch.bfloat16)
dequant_f64 = _plain(torch.float64)
dequant_i8 = _plain(torch.int8)
dequant_i16 = _plain(torch.int16)
dequant_i32 = _plain(torch.int32)
dequant_i64 = _plain(torch.int64)


def _q4(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """32 4-bit codes from 16 bytes at ``start`` -> uint8 ``[n, 32]``."""
    return nibbles(blocks[:, start:start + 16]).reshape(-1, 32)


def _q5(blocks: torch.Tensor, qh_at: int, qs_at: int) -> torch.Tensor:
    """32 5-bit codes (nibbles + one high bit each from a u32) -> int32 ``[n, 32]``."""
    qh = u32(blocks[:, qh_at:qh_at + 4])  # [n, 1]
    sh = torch.arange(32, device=blocks.device, dtype=torch.int64)
    hi = ((qh >> sh) & 1).to(torch.int32) << 4
    return _q4(blocks, qs_at).to(torch.int32) | hi


def dequant_q4_0(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    q = _q4(blocks, 2).view(torch.int8) - 8
    return mul_out(f16(blocks, 0), q, dtype)


def dequant_q4_1(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return add_out(f16(blocks, 0) * _q4(blocks, 4), f16(blocks, 2), dtype)


def dequant_q5_0(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return mul_out(f16(blocks, 0), _q5(blocks, 2, 6) - 16, dtype)


def dequant_q5_1(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return add_out(f16(blocks, 0) * _q5(blocks, 4, 8), f16(blocks, 2), dtype)


def dequant_q8_0(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return mul_out(blocks[:, 2:].view(torch.int8), f16(blocks, 0), dtype)


# e2m1 code -> value * 2 (ggml's kvalues_mxfp4)
_E2M1_X2 = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


@device_cache
def _kvalues_fp4() -> torch.Tensor:
    return torch.tensor(_E2M1_X2, dtype=torch.float32)


@device_cache
def _e8m0_half() -> torch.Tensor:
    """e8m0 byte -> 2^(e-128) as float32 (ggml_e8m0_to_fp32_half), 256 entries."""
    e = torch.arange(256, dtype=torch.int64)
    bits = torch.where(e < 2, torch.tensor(0x00200000, dtype=torch.int64) << e, (e - 1) << 23)
    return bits.to(torch.int32).view(torch.float32)


@device_cache
def _ue4m3_half() -> torch.Tensor:
    """ue4m3 byte -> value / 2 as float32 (NVFP4 scale), 256 entries; 0 and 0x7F decode to 0."""
    vals = []
    for x in range(256):
        exp, man = (x >> 3) & 0xF, x & 7
        v = man * 2.0 ** -9 if exp == 0 else (1.0 + man / 8.0) * 2.0 ** (exp - 7)
        vals.append(0.0 if x in (0, 0x7F) else v * 0.5)
    return torch.tensor(vals, dtype=torch.float32)


def dequant_mxfp4(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    d = _e8m0_half(dev)[blocks[:, 0].long()].unsqueeze(1)
    v = _kvalues_fp4(dev)[_q4(blocks, 1).long()]
    return mul_out(d, v, dtype)


def dequant_nvfp4(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    dev = blocks.device
    d = _ue4m3_half(dev)[blocks[:, 0:4].long()].unsqueeze(-1)  # [n, 4, 1]
    qs = blocks[:, 4:36].reshape(-1, 4, 8)
    v = _kvalues_fp4(dev)[nibbles(qs).reshape(-1, 4, 16).long()]
    return mul_out(d, v, dtype).reshape(-1, 64)
