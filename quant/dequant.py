"""Public dequantization entry point: raw GGUF bytes -> dense torch tensor on any device."""
from __future__ import annotations

import math
import os
import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .types import QuantType, UnsupportedQuantType, require_dequant

# Elements per chunk on CPU: bounds the float32 temporaries and keeps them cache friendly.
CPU_CHUNK_ELEMENTS = 1 << 21
# On accelerators one launch per op over the whole tensor is fastest; chunk only very large tensors.
DEVICE_CHUNK_ELEMENTS = 1 << 28

_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# On CUDA the per-type functions are compiled with torch.compile (one fused kernel per type instead of a
# chain of elementwise launches). Set ZIT_DEQUANT_COMPILE=0 to force eager; failures fall back to eager.
COMPILE_ON_CUDA = os.environ.get("ZIT_DEQUANT_COMPILE", "1") != "0"
_compiled: dict[str, Callable] = {}
_compile_failed: set[str] = set()


# Hand-written Triton kernels (quant/kernels/) take precedence on CUDA for the types they cover.
USE_TRITON = os.environ.get("ZIT_TRITON", "1") != "0"
_triton_kernels: Optional[dict] = None


def triton_kernels() -> dict:
    """{type name: kernel} when Triton is importable, else {}."""
    global _triton_kernels
    if _triton_kernels is None:
        try:
            from .kernels.triton_dequant import KERNELS
            _triton_kernels = dict(KERNELS)
        except Exception:  # no Triton on this install (CPU wheels, many Windows setups)
            _triton_kernels = {}
    return _triton_kernels


def _kernel(qt: QuantType, device: torch.device) -> Callable:
    """The dequant function to run for ``qt`` on ``device`` (Triton or compiled on CUDA when possible)."""
    if device.type == "cuda" and USE_TRITON and qt.name in triton_kernels():
        return triton_kernels()[qt.name]
    if device.type != "cuda" or not COMPILE_ON_CUDA or qt.is_float or qt.name in _compile_failed:
        return qt.dequant
    fn = _compiled.get(qt.name)
    if fn is None:
        try:
            fn = torch.compile(qt.dequant, dynamic=True)
        except Exception:  # no inductor/triton on this install
            _compile_failed.add(qt.name)
            return qt.dequant
        _compiled[qt.name] = fn
    return fn


def _run(qt: QuantType, blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    fn = _kernel(qt, blocks.device)
    if fn is qt.dequant:
        return fn(blocks, dtype)
    try:
        return fn(blocks, dtype)
    except Exception as e:  # kernel/compile failure (e.g. missing Triton): fall back for good
        kernels = triton_kernels()
        if kernels.get(qt.name) is fn:
            warnings.warn(f"Triton {qt.name} dequantization failed ({type(e).__name__}: {e}); falling back")
            kernels.pop(qt.name)
            return _run(qt, blocks, dtype)
        warnings.warn(f"torch.compile of {qt.name} dequantization failed ({type(e).__name__}: {e}); using eager")
        _compile_failed.add(qt.name)
        return qt.dequant(blocks, dtype)


def as_uint8(raw: "torch.Tensor | np.ndarray | bytes | memoryview") -> torch.Tensor:
    """Any byte container -> flat uint8 tensor (no copy where possible)."""
    if isinstance(raw, torch.Tensor):
        if raw.dtype != torch.uint8:
            raw = raw.contiguous().view(torch.uint8)
        return raw.reshape(-1)
    if isinstance(raw, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(raw).reshape(-1).view(np.uint8))
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def dequantize_blocks(blocks: torch.Tensor, qtype: "int | str | QuantType",
                      dtype: torch.dtype = torch.float32, tensor_name: Optional[str] = None) -> torch.Tensor:
    """uint8 ``[n_blocks, type_size]`` -> ``[n_blocks, block_size]`` in ``dtype`` on the blocks' device."""
    qt = require_dequant(qtype, tensor_name)
    if dtype not in _OUT_DTYPES:
        raise ValueError(f"unsupported output dtype {dtype}; use one of {_OUT_DTYPES}")
    if blocks.ndim != 2 or blocks.shape[1] != qt.type_size:
        raise ValueError(f"{qt.name} blocks must be [n, {qt.type_size}] uint8, got {tuple(blocks.shape)}")
    n = blocks.shape[0]
    if n == 0:
        return torch.empty((0, qt.block_size), dtype=dtype, device=blocks.device)
    chunk_el = CPU_CHUNK_ELEMENTS if blocks.device.type == "cpu" else DEVICE_CHUNK_ELEMENTS
    step = max(1, chunk_el // qt.block_size)
    if n <= step:
        return _run(qt, blocks, dtype).reshape(n, qt.block_size)
    out = torch.empty((n, qt.block_size), dtype=dtype, device=blocks.device)
    for s in range(0, n, step):
        e = min(n, s + step)
        out[s:e] = _run(qt, blocks[s:e], dtype).reshape(e - s, qt.block_size)
    return out


def dequantize(raw: "torch.Tensor | np.ndarray | bytes", qtype: "int | str | QuantType", shape: Sequence[int],
               dtype: torch.dtype = torch.float16, device: "torch.device | str | None" = None,
               tensor_name: Optional[str] = None) -> torch.Tensor:
    """Dequantize a whole tensor's raw GGUF bytes to ``shape`` (torch order) in ``dtype``.

    ``raw`` must hold exactly the tensor's bytes; ``device`` defaults to ``raw``'s device (the bytes are
    moved first, so dequantization runs on the target device).
    """
    qt = require_dequant(qtype, tensor_name)
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    where = f" for tensor {tensor_name!r}" if tensor_name else ""
    if numel % qt.block_size:
        raise ValueError(f"{numel} elements is not a multiple of {qt.name} block size {qt.block_size}{where}")
    data = as_uint8(raw)
    if data.numel() != qt.n_bytes(numel):
        raise ValueError(f"{qt.name} tensor of shape {shape} needs {qt.n_bytes(numel)} bytes, got {data.numel()}{where}")
    if device is not None:
        data = data.to(device, non_blocking=True)
    blocks = data.reshape(-1, qt.type_size)
    return dequantize_blocks(blocks, qt, dtype, tensor_name).reshape(shape)


__all__ = ["dequantize", "dequantize_blocks", "as_uint8", "UnsupportedQuantType"]
