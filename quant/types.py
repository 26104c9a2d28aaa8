"""The GGML type table: one :class:`QuantType` row per type, like gguf-py's ``GGML_QUANT_SIZES``.

Each row gives the block size (elements), bytes per block, a torch dequantizer
``(blocks uint8 [n, type_size], dtype) -> [n, block_size]`` and, where we have one, a quantizer
``(float32 [n, block_size]) -> uint8 [n, type_size]``. Type ids are ggml's (gguf-py's
``GGMLQuantizationType``); rows without a dequantizer (Q8_1, Q8_K, Q1_0) are still known for sizes so
files holding them can be read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import dequant_iq as iq
from . import dequant_k as k
from . import dequant_legacy as lg
from . import quantize as qz

DequantFn = Callable[[torch.Tensor, torch.dtype], torch.Tensor]
QuantizeFn = Callable[[torch.Tensor], torch.Tensor]


class UnsupportedQuantType(ValueError):
    """A GGML type id we cannot handle (unknown id, or no dequantizer for it)."""


@dataclass(frozen=True)
class QuantType:
    name: str
    type_id: int
    block_size: int
    type_size: int
    dequant: Optional[DequantFn]
    quantize: Optional[QuantizeFn] = None

    def n_bytes(self, n_elements: int) -> int:
        """Bytes for ``n_elements`` (must be a multiple of ``block_size``)."""
        return n_elements // self.block_size * self.type_size

    @property
    def is_float(self) -> bool:
        """Plain (unquantized) element types."""
        return self.block_size == 1


_ROWS = [
    # name, id, block elements, bytes per block, dequantize, quantize
    ("F32", 0, 1, 4, lg.dequant_f32, qz.quantize_f32),
    ("F16", 1, 1, 2, lg.dequant_f16, qz.quantize_f16),
    ("Q4_0", 2, 32, 18, lg.dequant_q4_0, qz.quantize_q4_0),
    ("Q4_1", 3, 32, 20, lg.dequant_q4_1, qz.quantize_q4_1),
    ("Q5_0", 6, 32, 22, lg.dequant_q5_0, qz.quantize_q5_0),
    ("Q5_1", 7, 32, 24, lg.dequant_q5_1, qz.quantize_q5_1),
    ("Q8_0", 8, 32, 34, lg.dequant_q8_0, qz.quantize_q8_0),
    ("Q8_1", 9, 32, 40, None, None),
    ("Q2_K", 10, 256, 84, k.dequant_q2_k, None),
    ("Q3_K", 11, 256, 110, k.dequant_q3_k, None),
    ("Q4_K", 12, 256, 144, k.dequant_q4_k, qz.quantize_q4_k),
    ("Q5_K", 13, 256, 176, k.dequant_q5_k, qz.quantize_q5_k),
    ("Q6_K", 14, 256, 210, k.dequant_q6_k, qz.quantize_q6_k),
    ("Q8_K", 15, 256, 292, None, None),
    ("IQ2_XXS", 16, 256, 66, iq.dequant_iq2_xxs, None),
    ("IQ2_XS", 17, 256, 74, iq.dequant_iq2_xs, None),
    ("IQ3_XXS", 18, 256, 98, iq.dequant_iq3_xxs, None),
    ("IQ1_S", 19, 256, 50, iq.dequant_iq1_s, None),
    ("IQ4_NL", 20, 32, 18, iq.dequant_iq4_nl, None),
    ("IQ3_S", 21, 256, 110, iq.dequant_iq3_s, None),
    ("IQ2_S", 22, 256, 82, iq.dequant_iq2_s, None),
    ("IQ4_XS", 23, 256, 136, iq.dequant_iq4_xs, None),
    ("I8", 24, 1, 1, lg.dequant_i8, None),
    ("I16", 25, 1, 2, lg.dequant_i16, None),
    ("I32", 26, 1, 4, lg.dequant_i32, None),
    ("I64", 27, 1, 8, lg.dequant_i64, None),
    ("F64", 28, 1, 8, lg.dequant_f64, None),
    ("IQ1_M", 29, 256, 56, iq.dequant_iq1_m, None),
    ("BF16", 30, 1, 2, lg.dequant_bf16, qz.quantize_bf16),
    ("TQ1_0", 34, 256, 54, k.dequant_tq1_0, None),
    ("TQ2_0", 35, 256, 66, k.dequant_tq2_0, None),
    ("MXFP4", 39, 32, 17, lg.dequant_mxfp4, None),
    ("NVFP4", 40, 64, 36, lg.dequant_nvfp4, None),
    ("Q1_0", 41, 128, 18, None, None),
]

QUANT_TYPES: dict[int, QuantType] = {row[1]: QuantType(*row) for row in _ROWS}
QUANT_TYPES_BY_NAME: dict[str, QuantType] = {qt.name: qt for qt in QUANT_TYPES.values()}


def get_quant_type(type_id: "int | str | QuantType", tensor_name: Optional[str] = None) -> QuantType:
    """Row for a GGML type id (or name); :class:`UnsupportedQuantType` if unknown."""
    if isinstance(type_id, QuantType):
        return type_id
    where = f" (tensor {tensor_name!r})" if tensor_name is not None else ""
    if isinstance(type_id, str):
        qt = QUANT_TYPES_BY_NAME.get(type_id.upper())
        if qt is None:
            raise UnsupportedQuantType(f"unknown GGML type name {type_id!r}{where}")
        return qt
    qt = QUANT_TYPES.get(int(type_id))
    if qt is None:
        raise UnsupportedQuantType(f"unknown GGML type id {int(type_id)}{where}")
    return qt


def require_dequant(type_id: "int | str | QuantType", tensor_name: Optional[str] = None) -> QuantType:
    """Like :func:`get_quant_type` but also requires a dequantizer."""
    qt = get_quant_type(type_id, tensor_name)
    if qt.dequant is None:
        where = f" (tensor {tensor_name!r})" if tensor_name is not None else ""
        raise UnsupportedQuantType(f"GGML type {qt.name} (id {qt.type_id}) cannot be dequantized{where}")
    return qt
