#!/usr/bin/env python3
"""On CUDA: every type's GPU dequantization vs gguf-py's numpy reference on the CPU.

Random blocks plus edge cases (all-0x00 / all-0xFF codes, zero / extreme / subnormal fp16 scales) are
dequantized on the GPU to float32, float16 and bfloat16 and compared bit for bit with the reference
(cast to the same dtype; NaN matches NaN). Prints the max abs error and mismatch count per type and
exits 1 on any mismatch (2 when no GPU is available).

    python bench/gpu_dequant_check.py [--blocks 4093]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from quant.dequant import dequantize_blocks  # noqa: E402
from quant.types import QUANT_TYPES  # noqa: E402

F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
              "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ2_XXS": [0], "IQ2_XS": [0],
              "IQ2_S": [0], "IQ3_XXS": [0], "IQ3_S": [0], "IQ1_S": [0], "IQ4_NL": [0], "IQ4_XS": [0],
              "TQ1_0": [52], "TQ2_0": [64]}
F16_EDGES = [0x0000, 0x7BFF, 0xFBFF, 0x0001, 0x3C00, 0xBC00, 0x0400, 0x8000]


def blocks_for(name: str, type_size: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    raw[0], raw[1] = 0, 0xFF
    k = len(F16_EDGES)
    for off in F16_FIELDS.get(name, []):
        raw[2:2 + 3 * k, off:off + 2] = np.array(F16_EDGES * 3, dtype="<u2").view(np.uint8).reshape(-1, 2)
    if name == "MXFP4":
        raw[:4, 0] = [0, 1, 254, 255]
    return raw


def same_bits(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, int]:
    na, nb = torch.isnan(a), torch.isnan(b)
    ib = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[a.dtype]
    diff = (a.masked_fill(na, 0).view(ib) != b.masked_fill(nb, 0).view(ib)) | (na != nb)
    n = int(diff.sum())
    return n == 0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=4093, help="no multiple of any kernel's rows per program")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    from gguf import quants as gq
    from gguf.constants import GGMLQuantizationType as T

    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(dev)} torch={torch.__version__}")
    bad = 0
    for qt in QUANT_TYPES.values():
        if qt.dequant is None or qt.name in ("I8", "I16", "I32", "I64", "F64"):
            continue
        if qt.name not in ("F32", "F16") and T[qt.name] not in gq._type_traits:
            continue
        raw = blocks_for(qt.name, qt.type_size, args.blocks, qt.type_id)
        with np.errstate(all="ignore"):
            ref = gq.dequantize(raw.reshape(-1), T(qt.type_id)).reshape(args.blocks, -1).astype(np.float32)
        ref_t = torch.from_numpy(np.ascontiguousarray(ref))
        raw_gpu = torch.from_numpy(raw).to(dev)
        parts = []
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            out = dequantize_blocks(raw_gpu, qt, dtype).cpu()
            exp = ref_t.to(dtype)
            ok, n = same_bits(out, exp)
            fin = torch.isfinite(exp) & torch.isfinite(out)
            err = float((out.float() - exp.float())[fin].abs().max()) if fin.any() else 0.0
            parts.append(f"{str(dtype)[6:]}: {'ok' if ok else f'{n} MISMATCH'} max|err|={err:.3g}")
            bad += 0 if ok else 1
        print(f"{qt.name:8} " + "  ".join(parts), flush=True)
    print("ALL BIT-EXACT" if bad == 0 else f"{bad} type/dtype combinations differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
