"""Dequantize whole tensors, row ranges (embeddings) or block ranges of a :class:`QuantizedTensor`."""
from __future__ import annotations

from typing import Sequence, Union

import torch

from .dequant import dequantize_blocks
from .tensor import QuantizedTensor

Rows = Union[tuple, Sequence[int], torch.Tensor]


def dequantize_tensor(t: QuantizedTensor, dtype: torch.dtype = torch.float16,
                      device: "torch.device | str | None" = None) -> torch.Tensor:
    """The whole tensor, shape ``t.logical_shape``."""
    return t.dequantize(dtype, device)


def dequantize_rows(t: QuantizedTensor, rows: Rows, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Rows of the tensor viewed as ``[-1, row_len]`` (e.g. an embedding lookup), touching only their blocks.

    ``rows`` is ``(start, stop)`` -> ``[stop - start, row_len]``, or integer indices of any shape ``S``
    (list or tensor) -> ``[*S, row_len]``. Result is on ``t``'s device.
    """
    qt = t.quant_type
    row_len = t.logical_shape[-1] if len(t.logical_shape) else 1
    if row_len % qt.block_size:
        raise ValueError(f"row length {row_len} is not a multiple of {qt.name} block size {qt.block_size}")
    raw = t.raw_bytes().reshape(-1, qt.n_bytes(row_len))
    n_rows = raw.shape[0]
    if isinstance(rows, tuple) and len(rows) == 2 and all(isinstance(r, int) for r in rows):
        start, stop = rows
        if not 0 <= start <= stop <= n_rows:
            raise IndexError(f"row range [{start}, {stop}) outside [0, {n_rows})")
        sel, out_shape = raw[start:stop], (stop - start, row_len)
    else:
        idx = torch.as_tensor(rows, device=raw.device)
        if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"row indices must be integers, got {idx.dtype}")
        out_shape = (*idx.shape, row_len)
        idx = idx.reshape(-1).long()
        if idx.numel() and (bool((idx < -n_rows).any()) or bool((idx >= n_rows).any())):
            raise IndexError(f"row index out of range for {n_rows} rows")
        sel = raw.index_select(0, idx % max(n_rows, 1))
    blocks = sel.reshape(-1, qt.type_size)
    return dequantize_blocks(blocks, qt, dtype, t.tensor_name).reshape(out_shape)


def dequantize_block_range(t: QuantizedTensor, start_block: int, stop_block: int,
                           dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Blocks ``[start_block, stop_block)`` of the flattened tensor -> 1-D ``(stop-start) * block_size``."""
    n = t.n_blocks
    if not 0 <= start_block <= stop_block <= n:
        raise IndexError(f"block range [{start_block}, {stop_block}) outside [0, {n})")
    blocks = t.blocks()[start_block:stop_block]
    return dequantize_blocks(blocks, t.quant_type, dtype, t.tensor_name).reshape(-1)
