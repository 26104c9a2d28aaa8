"""Helpers shared by the quant tests (imported by name; conftest.py puts this folder on sys.path)."""
from __future__ import annotations

import numpy as np
import torch

# fp16 scale field offsets per type, for planting edge values
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82], "Q3_K": [108],
    "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ2_XXS": [0], "IQ2_XS": [0], "IQ2_S": [0],
    "IQ3_XXS": [0], "IQ3_S": [0], "IQ1_S": [0], "IQ4_NL": [0], "IQ4_XS": [0], "TQ1_0": [52], "TQ2_0": [64],
}
# zero, +-max finite, smallest subnormal, one, -one, smallest normal
F16_EDGES = [0x0000, 0x7BFF, 0xFBFF, 0x0001, 0x3C00, 0xBC00, 0x0400, 0x8000]


def edge_blocks(name: str, type_size: int, n_random: int = 192, seed: int = 0) -> np.ndarray:
    """Random blocks plus all-0x00 / all-0xFF codes and extreme (finite) scales."""
    rng = np.random.default_rng(seed)
    blocks = [rng.integers(0, 256, size=(n_random, type_size), dtype=np.uint8),
              np.zeros((1, type_size), np.uint8), np.full((1, type_size), 0xFF, np.uint8)]
    edge = rng.integers(0, 256, size=(len(F16_EDGES) * 3, type_size), dtype=np.uint8)
    edge[len(F16_EDGES):2 * len(F16_EDGES)] = 0xFF
    edge[2 * len(F16_EDGES):] = 0
    for off in F16_FIELDS.get(name, []):
        v = np.array(F16_EDGES * 3, dtype="<u2").view(np.uint8).reshape(-1, 2)
        edge[:, off:off + 2] = v
    blocks.append(edge)
    out = np.concatenate(blocks)
    if name in ("MXFP4",):
        out[:4, 0] = [0, 1, 254, 255]
    return out


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical floats, except that any NaN equals any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    na, nb = torch.isnan(a), torch.isnan(b)
    if not torch.equal(na, nb):
        return False
    ia = a.masked_fill(na, 0).view({torch.float32: torch.int32, torch.float16: torch.int16,
                                    torch.bfloat16: torch.int16}[a.dtype])
    ib = b.masked_fill(nb, 0).view(ia.dtype)
    return torch.equal(ia, ib)
