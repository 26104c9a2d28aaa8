#!/usr/bin/env python3
"""Dequantization throughput per GGML type, and the cost of dequant+matmul vs a plain bf16 matmul.

For each type: GB/s of dequantization (raw bytes read + bf16 bytes written, per second) and the ratio
``time(dequantize -> bf16 -> F.linear) / time(F.linear with a bf16 weight)`` for the Z-Image DiT weight
shapes (out x in: 3840x3840, 3840x10240, 10240x3840) at 4096 tokens. GPU targets: Q8_0 <= 1.25x,
Q4_K <= 1.4x.

    python bench/dequant.py [--device auto|cpu|cuda] [--quick] [--types Q8_0,Q4_K] [--tokens 4096]

``--quick`` (meant for CPU): only 3840x3840 and 256 tokens, one timed repeat.
Needs only torch/numpy; imports the pack's ``quant/`` folder directly (no ComfyUI).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from quant.dequant import dequantize_blocks  # noqa: E402
from quant.types import QUANT_TYPES, get_quant_type  # noqa: E402

SHAPES = [(3840, 3840), (3840, 10240), (10240, 3840)]
# fp16 scale fields per type (byte offsets), set to a sane value so the data looks like real weights
F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
              "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ2_XXS": [0], "IQ2_XS": [0],
              "IQ2_S": [0], "IQ3_XXS": [0], "IQ3_S": [0], "IQ1_S": [0], "IQ4_NL": [0], "IQ4_XS": [0],
              "TQ1_0": [52], "TQ2_0": [64]}


def make_raw(name: str, n_el: int, device: torch.device) -> torch.Tensor:
    qt = get_quant_type(name)
    n_blocks = n_el // qt.block_size
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(n_blocks, qt.type_size), dtype=np.uint8)
    if qt.is_float:  # plain floats: real values
        raw = torch.randn(n_el).to({"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[name])
        return raw.view(torch.uint8).reshape(-1, qt.type_size).to(device)
    for off in F16_FIELDS.get(name, []):
        raw[:, off:off + 2] = np.array([0x1400], dtype="<u2").view(np.uint8)
    if name == "MXFP4":
        raw[:, 0] = 120
    return torch.from_numpy(raw).to(device)


def timeit(fn, device: torch.device, repeat: int, warmup: int = 2) -> float:
    """Seconds per call. On CUDA: ``repeat`` calls queued back to back between two events (steady state,
    as inside a model's forward pass where the CPU runs ahead); on CPU: the median of ``repeat`` calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000 / repeat
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def profile(name: str, device: torch.device, shape: tuple[int, int]) -> None:
    """Print the GPU kernels one dequantization launches (torch.profiler)."""
    qt = get_quant_type(name)
    raw = make_raw(name, shape[0] * shape[1], device)
    for _ in range(3):
        dequantize_blocks(raw, qt, torch.bfloat16)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            dequantize_blocks(raw, qt, torch.bfloat16)
        torch.cuda.synchronize()
    print(f"--- profile {name} {shape} (10 calls)")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=60))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="one shape, 256 tokens, one repeat (CPU smoke run)")
    ap.add_argument("--types", default="", help="comma-separated type names (default: all dequantizable)")
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernels of each type's dequant")
    ap.add_argument("--eager", action="store_true", help="no torch.compile on CUDA (ZIT_DEQUANT_COMPILE=0)")
    args = ap.parse_args(argv)
    if args.eager:
        import quant.dequant as qd
        qd.COMPILE_ON_CUDA = False

    dev_name = args.device
    if dev_name == "auto":
        dev_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev_name)
    shapes = SHAPES[:1] if args.quick else SHAPES
    tokens = args.tokens or (256 if args.quick else 4096)
    repeat = args.repeat or (1 if args.quick else (20 if device.type == "cuda" else 3))
    names = [n.strip().upper() for n in args.types.split(",") if n.strip()] or \
        [qt.name for qt in QUANT_TYPES.values() if qt.dequant is not None and qt.name not in
         ("I8", "I16", "I32", "I64", "F64")]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    import quant.dequant as qd
    compiled = device.type == "cuda" and qd.COMPILE_ON_CUDA
    print(f"device={device} ({gpu}) torch={torch.__version__} tokens={tokens} repeat={repeat} out=bf16 "
          f"compiled={compiled}")
    print(f"{'type':8} {'shape':>12} {'dequant ms':>10} {'GB/s':>8} {'Gel/s':>7} {'mm ms':>8} "
          f"{'dq+mm ms':>9} {'ratio':>6}")
    if args.profile and device.type == "cuda":
        for name in names:
            profile(name, device, shapes[0])
    for (out_f, in_f) in shapes:
        x = torch.randn(tokens, in_f, device=device, dtype=torch.bfloat16)
        w = torch.randn(out_f, in_f, device=device, dtype=torch.bfloat16)
        t_mm = timeit(lambda: F.linear(x, w), device, repeat)
        for name in names:
            qt = get_quant_type(name)
            n_el = out_f * in_f
            raw = make_raw(name, n_el, device)

            def deq():
                return dequantize_blocks(raw, qt, torch.bfloat16).reshape(out_f, in_f)

            t_dq = timeit(deq, device, repeat, warmup=3)
            t_both = timeit(lambda: F.linear(x, deq()), device, repeat)
            gbs = (raw.numel() + 2 * n_el) / t_dq / 1e9
            print(f"{name:8} {f'{out_f}x{in_f}':>12} {t_dq * 1e3:10.2f} {gbs:8.1f} {n_el / t_dq / 1e9:7.2f} "
                  f"{t_mm * 1e3:8.2f} {t_both * 1e3:9.2f} {t_both / t_mm:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
