"""``QuantizedTensor``: a uint8 torch.Tensor of raw GGUF blocks that knows its type and logical shape.

The tensor's own storage is the raw bytes, shaped ``[rows, row_bytes]`` (``rows`` = product of the
logical shape without its last dim), so ComfyUI's ``t.nelement() * t.element_size()`` counts the real
memory and ``t.to(device)`` moves the blocks. Ops that only move or copy the bytes (``to``, ``cpu``,
``cuda``, ``clone``, ``detach``, ``contiguous``, ``pin_memory``, ``.data``, ``requires_grad_``,
``share_memory_``) return a ``QuantizedTensor`` with the same metadata; any other op sees plain uint8
bytes. ``.to(dtype=...)`` never reinterprets the bytes: the dtype is ignored (use :meth:`dequantize`).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from .dequant import as_uint8, dequantize_blocks
from .types import QuantType, get_quant_type

_T = torch.Tensor
_KEEP_FUNCS = {_T.to, _T.cpu, _T.cuda, _T.clone, _T.detach, _T.contiguous, _T.pin_memory, torch.clone,
               torch.detach, _T.requires_grad_, _T.share_memory_, _T.detach_}
_KEEP_GETTERS = {_T.data}


def _keeps(func: Any) -> bool:
    if func in _KEEP_FUNCS:
        return True
    return getattr(func, "__name__", None) == "__get__" and getattr(func, "__self__", None) in _KEEP_GETTERS


class QuantizedTensor(torch.Tensor):
    """Raw GGUF blocks plus ``quant_type`` (:class:`QuantType`) and ``logical_shape`` (torch.Size)."""

    quant_type: QuantType
    logical_shape: torch.Size
    tensor_name: Optional[str]

    @staticmethod
    def __new__(cls, raw: torch.Tensor, quant_type: "int | str | QuantType", logical_shape: Sequence[int],
                tensor_name: Optional[str] = None) -> "QuantizedTensor":
        qt = get_quant_type(quant_type, tensor_name)
        shape = torch.Size(int(s) for s in logical_shape)
        data = as_uint8(raw)
        numel = math.prod(shape)
        row_len = shape[-1] if len(shape) else 1
        where = f" (tensor {tensor_name!r})" if tensor_name else ""
        if row_len % qt.block_size:
            raise ValueError(f"row length {row_len} is not a multiple of {qt.name} block size {qt.block_size}{where}")
        if data.numel() != qt.n_bytes(numel):
            raise ValueError(f"{qt.name} {tuple(shape)} needs {qt.n_bytes(numel)} bytes, got {data.numel()}{where}")
        rows = numel // row_len if row_len else 0
        data = data.reshape(rows, qt.n_bytes(row_len)) if row_len else data
        return cls._wrap(data, qt, shape, tensor_name)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # metadata is set in __new__
        pass

    @classmethod
    def from_raw(cls, raw: torch.Tensor, quant_type: "int | str | QuantType", logical_shape: Sequence[int],
                 tensor_name: Optional[str] = None) -> "QuantizedTensor":
        """Wrap raw bytes (e.g. :meth:`GGUFFile.tensor_bytes`) without copying."""
        return cls(raw, quant_type, logical_shape, tensor_name)

    @classmethod
    def _wrap(cls, data: torch.Tensor, qt: QuantType, shape: torch.Size, name: Optional[str]) -> "QuantizedTensor":
        out = data.as_subclass(cls)
        out.quant_type, out.logical_shape, out.tensor_name = qt, shape, name
        return out

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Optional[dict] = None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        src = next((a for a in args if isinstance(a, QuantizedTensor)), None)
        if isinstance(out, QuantizedTensor) or src is None or not isinstance(out, torch.Tensor):
            return out
        if _keeps(func) and out.dtype == torch.uint8 and out.shape == src.shape:
            return cls._wrap(out, src.quant_type, src.logical_shape, src.tensor_name)
        return out.as_subclass(torch.Tensor) if type(out) is not torch.Tensor else out

    # ------------------------------------------------------------------------------------------ API
    def to(self, *args: Any, **kwargs: Any) -> "QuantizedTensor":
        """Move/copy the raw bytes; a requested dtype is ignored (the bytes are never cast)."""
        copy = bool(kwargs.pop("copy", False))
        device, _dtype, non_blocking, _fmt = torch._C._nn._parse_to(*args, **kwargs)
        kw: dict[str, Any] = {"non_blocking": non_blocking, "copy": copy}
        if device is not None:
            kw["device"] = device
        return super().to(**kw)

    def raw_bytes(self) -> torch.Tensor:
        """The blocks as a plain uint8 tensor ``[rows, row_bytes]`` (a view)."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.view(self.shape)

    @property
    def n_blocks(self) -> int:
        return self.numel() // self.quant_type.type_size

    def blocks(self) -> torch.Tensor:
        """Plain uint8 ``[n_blocks, type_size]`` view."""
        return self.raw_bytes().reshape(-1, self.quant_type.type_size)

    def dequantize(self, dtype: torch.dtype = torch.float16, device: "torch.device | str | None" = None) -> torch.Tensor:  # type: ignore[override]
        """Dense tensor of ``logical_shape`` in ``dtype`` (computed on ``device`` or where the bytes are)."""
        blocks = self.blocks()
        if device is not None:
            blocks = blocks.to(device, non_blocking=True)
        return dequantize_blocks(blocks, self.quant_type, dtype, self.tensor_name).reshape(self.logical_shape)

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        name = f"{self.tensor_name!r}, " if self.tensor_name else ""
        return (f"QuantizedTensor({name}{self.quant_type.name}, shape={tuple(self.logical_shape)}, "
                f"device={self.device}, bytes={self.numel()})")

    def __deepcopy__(self, memo: dict) -> "QuantizedTensor":
        out = type(self)._wrap(self.raw_bytes().clone(), self.quant_type, self.logical_shape, self.tensor_name)
        memo[id(self)] = out
        return out

    def __reduce_ex__(self, proto: int) -> Any:
        return (_rebuild, (self.raw_bytes().cpu().clone(), self.quant_type.type_id, tuple(self.logical_shape),
                           self.tensor_name))


def _rebuild(raw: torch.Tensor, type_id: int, shape: tuple, name: Optional[str]) -> QuantizedTensor:
    return QuantizedTensor(raw, type_id, shape, name)
