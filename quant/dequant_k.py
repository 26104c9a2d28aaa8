"""Dequantizers for the 256-element k-quants (Q2_K..Q6_K) and the ternary TQ1_0/TQ2_0.

Same contract as :mod:`dequant_legacy`: uint8 ``[n, type_size]`` -> ``[n, 256]`` in ``dtype``, float32
arithmetic in ggml's order. Layouts (byte offsets within a block):

* Q2_K: scales[16]@0 (lo nibble scale, hi nibble min), qs[64]@16 (2-bit), d@80, dmin@82
* Q3_K: hmask[32]@0, qs[64]@32, scales[12]@96 (6-bit, offset 32), d@108
* Q4_K: d@0, dmin@2, scales[12]@4 (8 x 6-bit scale/min), qs[128]@16
* Q5_K: as Q4_K plus qh[32]@16, qs[128]@48
* Q6_K: ql[128]@0, qh[64]@128, scales:i8[16]@192, d@208
* TQ1_0: qs[48]@0 (5 trits per byte), qh[4]@48 (4 trits per byte), d@52
* TQ2_0: qs[64]@0 (2 bits per value, 0..2 -> -1..1), d@64
"""
from __future__ import annotations

import torch

from ._bits import add_out, bits, f16, mul_out, nibbles

_S2 = [0, 2, 4, 6]
_S8 = list(range(8))


def scale_min_k4(sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack Q4_K/Q5_K's 12 scale bytes ``[n, 12]`` into 6-bit (scale, min), each int32 ``[n, 8]``."""
    sc = sc.to(torch.int32)
    d, m, md = sc[:, 0:4], sc[:, 4:8], sc[:, 8:12]
    scale = torch.cat((d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)), dim=1)
    mins = torch.cat((m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)), dim=1)
    return scale, mins


def dequant_q2_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    sc = blocks[:, 0:16]
    d, dmin = f16(blocks, 80), f16(blocks, 82)
    dl = (d * (sc & 0xF)).unsqueeze(-1)  # [n, 16, 1]
    ml = (dmin * (sc >> 4)).unsqueeze(-1)
    q = bits(blocks[:, 16:80].reshape(-1, 2, 32), _S2, 3).reshape(-1, 16, 16)
    return add_out(dl * q, ml, dtype, alpha=-1).reshape(-1, 256)


def dequant_q3_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    sc = blocks[:, 96:108]
    lo = nibbles(sc[:, 0:8]).reshape(-1, 16)
    hi = bits(sc[:, 8:12], _S2, 3).reshape(-1, 16)
    scales = (lo | (hi << 4)).to(torch.int32) - 32
    dl = (f16(blocks, 108) * scales).unsqueeze(-1)  # [n, 16, 1]
    ql = bits(blocks[:, 32:96].reshape(-1, 2, 32), _S2, 3).reshape(-1, 16, 16)
    qh = bits(blocks[:, 0:32].reshape(-1, 1, 32), _S8, 1).reshape(-1, 16, 16)
    q = ql.to(torch.int8) - ((qh ^ 1) << 2).to(torch.int8)
    return mul_out(dl, q, dtype).reshape(-1, 256)


def _k4_scales(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sc, mn = scale_min_k4(blocks[:, 4:16])
    d = (f16(blocks, 0) * sc).unsqueeze(-1)  # [n, 8, 1]
    dm = (f16(blocks, 2) * mn).unsqueeze(-1)
    return d, dm


def dequant_q4_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    d, dm = _k4_scales(blocks)
    q = nibbles(blocks[:, 16:144].reshape(-1, 4, 32)).reshape(-1, 8, 32)
    return add_out(d * q, dm, dtype, alpha=-1).reshape(-1, 256)


def dequant_q5_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    d, dm = _k4_scales(blocks)
    ql = nibbles(blocks[:, 48:176].reshape(-1, 4, 32)).reshape(-1, 8, 32)
    qh = bits(blocks[:, 16:48].reshape(-1, 1, 32), _S8, 1).reshape(-1, 8, 32)
    return add_out(d * (ql | (qh << 4)), dm, dtype, alpha=-1).reshape(-1, 256)


def dequant_q6_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    sc = blocks[:, 192:208].view(torch.int8)
    d = (f16(blocks, 208) * sc).unsqueeze(-1)  # [n, 16, 1]
    ql = nibbles(blocks[:, 0:128].reshape(-1, 2, 64)).reshape(-1, 8, 32)
    qh = bits(blocks[:, 128:192].reshape(-1, 2, 32), _S2, 3).reshape(-1, 8, 32)
    q = (ql | (qh << 4)).view(torch.int8) - 32
    return mul_out(d, q.reshape(-1, 16, 16), dtype).reshape(-1, 256)


_POW3 = (1, 3, 9, 27, 81)


def dequant_tq1_0(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    p = torch.tensor(_POW3, dtype=torch.int32, device=blocks.device)
    qs = blocks[:, 0:48].to(torch.int32)
    q0 = (qs[:, 0:32].unsqueeze(1) * p.view(1, 5, 1)).reshape(-1, 160)
    q1 = (qs[:, 32:48].unsqueeze(1) * p.view(1, 5, 1)).reshape(-1, 80)
    qh = (blocks[:, 48:52].to(torch.int32).unsqueeze(1) * p[:4].view(1, 4, 1)).reshape(-1, 16)
    q = torch.cat((q0, q1, qh), dim=1) & 0xFF  # uint8 wrap-around is part of the format
    q = (((q * 3) >> 8) - 1).to(torch.int8)
    return mul_out(f16(blocks, 52), q, dtype)


def dequant_tq2_0(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    q = bits(blocks[:, 0:64].reshape(-1, 2, 32), _S2, 3).reshape(-1, 256).view(torch.int8) - 1
    return mul_out(f16(blocks, 64), q, dtype)
