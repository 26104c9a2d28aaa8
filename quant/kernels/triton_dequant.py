"""Triton dequantization kernels for the types the DiT and the text encoder use most (Q8_0, Q4_K, Q5_K, Q6_K).

One program dequantizes `ROWS` blocks into a [ROWS, block_size] tile; arithmetic is float32 in ggml's order,
so results equal the torch reference (quant/dequant_legacy.py, dequant_k.py) bit for bit. The last program's
rows past the end read the last block again (never a byte past the tensor) and are not stored. Blocks per
program and warps are chosen per type and output dtype by timing a few candidates on the first large input
(quant/kernels/tuning.py). Used on CUDA when
Triton is importable (`ZIT_TRITON=0` disables it); under `TRITON_INTERPRET=1` the same kernels run on the CPU,
which is how the tests check them without a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import triton
import triton.language as tl

from .tuning import LaunchConfig, Tuner

_OUT = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


@triton.jit
def _rows(n_blocks, ROWS: tl.constexpr):
    """This program's block indices, whether each is real, and indices safe to read (clamped to the last)."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    return rows, rows < n_blocks, tl.minimum(rows, n_blocks - 1).to(tl.int64)


@triton.jit
def _f16_at(base, off):
    lo = tl.load(base + off).to(tl.uint16)
    hi = tl.load(base + off + 1).to(tl.uint16)
    return (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _q8_0_kernel(src, dst, n_blocks, ROWS: tl.constexpr, OUT: tl.constexpr):
    rows, mask, safe = _rows(n_blocks, ROWS)
    base = src + safe * 34
    d = _f16_at(base, 0)
    cols = tl.arange(0, 32)
    q = tl.load(base[:, None] + 2 + cols[None, :], mask=mask[:, None], other=0).to(tl.int8, bitcast=True)
    y = q.to(tl.float32) * d[:, None]
    tl.store(dst + rows.to(tl.int64)[:, None] * 32 + cols[None, :], y.to(OUT), mask=mask[:, None])


@triton.jit
def _scale_min_k4(base, j):
    """6-bit (scale, min) of sub-block j (0..7) from the 12 scale bytes at offset 4."""
    s_j = tl.load(base + 4 + j).to(tl.int32)
    s_j4 = tl.load(base + 4 + tl.minimum(j + 4, 11)).to(tl.int32)
    s_jm4 = tl.load(base + 4 + tl.maximum(j - 4, 0)).to(tl.int32)
    low = j < 4
    sc = tl.where(low, s_j & 63, (s_j4 & 15) | ((s_jm4 >> 6) << 4))
    mn = tl.where(low, s_j4 & 63, (s_j4 >> 4) | ((s_j >> 6) << 4))
    return sc, mn


@triton.jit
def _k4_family_kernel(src, dst, n_blocks, ROWS: tl.constexpr, OUT: tl.constexpr, HIGH_BIT: tl.constexpr):
    """Q4_K (HIGH_BIT=0: 144-byte blocks, qs at 16) and Q5_K (HIGH_BIT=1: 176-byte blocks, qh at 16, qs at 48)."""
    BLOCK_BYTES: tl.constexpr = 176 if HIGH_BIT else 144
    QS: tl.constexpr = 48 if HIGH_BIT else 16
    rows, mask, safe = _rows(n_blocks, ROWS)
    base = src + safe * BLOCK_BYTES
    e = tl.arange(0, 256)
    j = e // 32
    lane = e % 32
    d = _f16_at(base, 0)
    dmin = _f16_at(base, 2)
    bptr = base[:, None]
    sc, mn = _scale_min_k4(bptr, j[None, :])
    byte = tl.load(bptr + QS + 32 * (j // 2)[None, :] + lane[None, :], mask=mask[:, None], other=0).to(tl.int32)
    q = (byte >> (4 * (j % 2))[None, :]) & 15
    if HIGH_BIT:
        qh = tl.load(bptr + 16 + lane[None, :], mask=mask[:, None], other=0).to(tl.int32)
        q = q | (((qh >> j[None, :]) & 1) << 4)
    y = (d[:, None] * sc.to(tl.float32)) * q.to(tl.float32) - dmin[:, None] * mn.to(tl.float32)
    tl.store(dst + rows.to(tl.int64)[:, None] * 256 + e[None, :], y.to(OUT), mask=mask[:, None])


@triton.jit
def _q6_k_kernel(src, dst, n_blocks, ROWS: tl.constexpr, OUT: tl.constexpr):
    rows, mask, safe = _rows(n_blocks, ROWS)
    base = src + safe * 210
    e = tl.arange(0, 256)
    half = e // 128
    g = (e % 128) // 32
    lane = e % 32
    bptr = base[:, None]
    d = _f16_at(base, 208)
    ql = tl.load(bptr + (64 * half + 32 * (g % 2) + lane)[None, :], mask=mask[:, None], other=0).to(tl.int32)
    ql = (ql >> (4 * (g // 2))[None, :]) & 15
    qh = tl.load(bptr + (128 + 32 * half + lane)[None, :], mask=mask[:, None], other=0).to(tl.int32)
    qh = (qh >> (2 * g)[None, :]) & 3
    sc = tl.load(bptr + (192 + e // 16)[None, :], mask=mask[:, None], other=0).to(tl.int8, bitcast=True)
    q = (ql | (qh << 4)) - 32
    y = (d[:, None] * sc.to(tl.float32)) * q.to(tl.float32)
    tl.store(dst + rows.to(tl.int64)[:, None] * 256 + e[None, :], y.to(OUT), mask=mask[:, None])


@dataclass(frozen=True)
class KernelSpec:
    kernel: Any
    block_size: int
    default: LaunchConfig
    candidates: tuple[LaunchConfig, ...]
    constexprs: dict = field(default_factory=dict)


_Q8_CANDIDATES = tuple(LaunchConfig(r, w) for r, w in ((32, 2), (64, 4), (128, 4), (128, 8), (256, 8)))
_K_CANDIDATES = tuple(LaunchConfig(r, w) for r, w in ((4, 4), (8, 4), (16, 4), (16, 8), (32, 8)))
SPECS: dict[str, KernelSpec] = {
    "Q8_0": KernelSpec(_q8_0_kernel, 32, LaunchConfig(64, 4), _Q8_CANDIDATES),
    "Q4_K": KernelSpec(_k4_family_kernel, 256, LaunchConfig(8, 4), _K_CANDIDATES, {"HIGH_BIT": 0}),
    "Q5_K": KernelSpec(_k4_family_kernel, 256, LaunchConfig(8, 4), _K_CANDIDATES, {"HIGH_BIT": 1}),
    "Q6_K": KernelSpec(_q6_k_kernel, 256, LaunchConfig(8, 4), _K_CANDIDATES),
}
TUNERS: dict[str, Tuner] = {name: Tuner(spec.default, spec.candidates) for name, spec in SPECS.items()}


def launch(name: str, blocks: torch.Tensor, out: torch.Tensor, config: LaunchConfig) -> torch.Tensor:
    """Dequantize contiguous `blocks` [n, type_size] into `out` [n, block_size] with one launch config."""
    spec, n = SPECS[name], blocks.shape[0]
    if n:
        spec.kernel[(triton.cdiv(n, config.rows),)](blocks, out, n, ROWS=config.rows, OUT=_OUT[out.dtype],
                                                      num_warps=config.num_warps, **spec.constexprs)
    return out


def _runner(name: str) -> Callable[[torch.Tensor, torch.dtype], torch.Tensor]:
    def run(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        blocks = blocks.contiguous()
        out = torch.empty((blocks.shape[0], SPECS[name].block_size), dtype=dtype, device=blocks.device)
        config = TUNERS[name].config(dtype, blocks.shape[0], blocks.is_cuda, lambda c: launch(name, blocks, out, c))
        return launch(name, blocks, out, config)
    return run


def tuned_configs() -> dict[str, dict]:
    """{type: {dtype: chosen config}} of the kernels tuned so far in this process (for benchmarks to print)."""
    return {name: dict(t.chosen) for name, t in TUNERS.items() if t.chosen}


# GGML type name → blocks [n, type_size] uint8 → [n, block_size] in dtype
KERNELS: dict[str, Callable[[torch.Tensor, torch.dtype], torch.Tensor]] = {name: _runner(name) for name in SPECS}
