"""Small bit-unpacking helpers shared by the dequantizers (torch, device-agnostic).

Every helper takes uint8 block tensors ``[n_blocks, type_size]`` (or slices of them) and returns
integer or float32 tensors; nothing here loops over blocks in Python.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch


def f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """Little-endian fp16 at byte ``start`` of every block, as float32 ``[n, 1]``."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).to(torch.float32)


def u16(b: torch.Tensor) -> torch.Tensor:
    """Bytes ``[..., 2k]`` -> little-endian uint16 values as int32 ``[..., k]``."""
    b = b.reshape(*b.shape[:-1], -1, 2).to(torch.int32)
    return b[..., 0] | (b[..., 1] << 8)


def u32(b: torch.Tensor) -> torch.Tensor:
    """Bytes ``[..., 4k]`` -> little-endian uint32 values as int64 ``[..., k]``."""
    b = b.reshape(*b.shape[:-1], -1, 4).to(torch.int64)
    return b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)


def nibbles(qs: torch.Tensor) -> torch.Tensor:
    """``[..., k]`` bytes -> ``[..., 2, k]``: low nibbles then high nibbles."""
    return torch.stack((qs & 0x0F, qs >> 4), dim=-2)


def bits(x: torch.Tensor, shifts: list[int], mask: int) -> torch.Tensor:
    """``[..., k]`` -> ``[..., len(shifts), k]`` with ``(x >> s) & mask`` for each shift."""
    return torch.stack([(x >> s) & mask if s else x & mask for s in shifts], dim=-2)


def bit_planes(x: torch.Tensor) -> torch.Tensor:
    """Bytes ``[..., k]`` -> ``[..., k, 8]`` bits, least significant first."""
    sh = torch.arange(8, device=x.device, dtype=torch.uint8)
    return (x.unsqueeze(-1) >> sh) & 1


def mul_out(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``a * b`` computed in float32 (or wider) and written once in ``dtype``."""
    if dtype == torch.float32:
        return torch.mul(a, b).to(torch.float32)
    if torch.compiler.is_compiling():  # inductor fuses the cast; out= would only get in its way
        return torch.mul(a, b).to(torch.float32).to(dtype)
    out = torch.empty(torch.broadcast_shapes(a.shape, b.shape), dtype=dtype, device=a.device)
    return torch.mul(a, b, out=out)


def add_out(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, alpha: int = 1) -> torch.Tensor:
    """``a + alpha * b`` (alpha = +-1) computed in float32 and written once in ``dtype``."""
    op = torch.add if alpha == 1 else torch.sub
    if dtype == torch.float32:
        return op(a, b)
    if torch.compiler.is_compiling():
        return op(a, b).to(torch.float32).to(dtype)
    out = torch.empty(torch.broadcast_shapes(a.shape, b.shape), dtype=dtype, device=a.device)
    return op(a, b, out=out)


def device_cache(fn: Callable[[], torch.Tensor]) -> Callable[[torch.device], torch.Tensor]:
    """Build a table once on CPU, then keep one copy per device."""
    cache: dict[str, torch.Tensor] = {}
    base = functools.cache(fn)

    def get(device: torch.device) -> torch.Tensor:
        key = str(device)
        t = cache.get(key)
        if t is None:
            t = base().to(device)
            cache[key] = t
        return t

    get.__name__ = fn.__name__
    get.__doc__ = fn.__doc__
    # under torch.compile, fetch the cached table at run time instead of tracing the table builder
    return torch.compiler.disable(get) if hasattr(torch, "compiler") else get
