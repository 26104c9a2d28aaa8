#!/usr/bin/env python3
"""Z-Image DiT sampling speed and peak VRAM: the pack's formats against ComfyUI core, on random weights.

Builds a full-size random Z-Image DiT (fixtures/shapes.py: 6.15B) and samples 1024² for 8 steps (euler,
simple, cfg 1) through ComfyUI's real sampling path, in-process:
  core_bf16 / core_fp8 / core_fp8_fast  comfy.sd.load_diffusion_model_state_dict (ComfyUI's own loader)
  bf16 / Q8_0 / Q6_K / Q5_K / Q4_K      the pack's loader (GGUF types: our quantizer, weights stay quantized)
For each: first run (includes moving weights and compiling kernels) and steady state, s/step, peak VRAM,
ratio to core_bf16 and core_fp8 of the same run. `--cap-gib N` emulates an N GiB card (ComfyUI's
reserve-VRAM setting + torch's per-process memory fraction).

    python bench/zimage_dit.py --comfyui /path/to/ComfyUI [--formats core_bf16,Q8_0] [--cap-gib 6] [--quick]

`--quick` uses the tiny test model and 64² on CPU (checks the script runs, times mean nothing).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

from bench_host import setup_host

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FORMATS = "core_bf16,core_fp8,core_fp8_fast,bf16,Q8_0,Q4_K"


def quantize_sd(sd, target: str, device):
    """The quantize command's policy applied in memory (on `device`), result on the CPU like a loaded file."""
    import torch
    from zimage_turbo.quant.convert import tensor_type
    from zimage_turbo.quant.quantize import quantize
    from zimage_turbo.quant.tensor import QuantizedTensor
    out = {}
    for key, value in sd.items():
        qtype = tensor_type(key, tuple(value.shape), target)
        if qtype in ("F32", "BF16", "F16"):
            out[key] = value.to({"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[qtype]).cpu()
        else:
            raw = quantize(value.to(device), qtype, device=device)
            out[key] = QuantizedTensor(raw.cpu(), qtype, tuple(value.shape), key)
    return out


def load(fmt: str, sd):
    import torch
    import comfy.sd
    from zimage_turbo.loaders.dit import build_zimage_model
    core = {"core_bf16": {}, "core_fp8": {"dtype": torch.float8_e4m3fn},
            "core_fp8_fast": {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True}}
    ours = {"bf16": "default", "fp8": "fp8_e4m3fn", "fp8_fast": "fp8_e4m3fn_fast"}
    if fmt in core:
        return comfy.sd.load_diffusion_model_state_dict(dict(sd), model_options=core[fmt])
    if fmt in ours:
        return build_zimage_model(dict(sd), weight_dtype=ours[fmt])
    return build_zimage_model(dict(sd), quantized=True)


def sample_once(model, size: int, steps: int, cap_feat: int, device) -> float:
    import torch
    import comfy.sample
    latent = torch.zeros(1, 16, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    cond = [[torch.randn(1, 64, cap_feat, generator=torch.Generator().manual_seed(1)), {}]]
    neg = [[torch.zeros_like(cond[0][0]), {}]]
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, neg, latent, disable_pbar=True, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert torch.isfinite(out).all(), "non-finite output"
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", help="ComfyUI folder (default: the one on sys.path)")
    parser.add_argument("--formats", default=DEFAULT_FORMATS)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cap-gib", type=float, default=0.0, help="emulate a card with this much VRAM")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import torch
    cuda = torch.cuda.is_available() and not args.quick
    setup_host(args.comfyui, cpu=not cuda)
    import comfy.model_management as mm
    from zimage_turbo.fixtures.shapes import TINY_DIT, ZIMAGE_TURBO, dit_state_dict_shapes
    from zimage_turbo.fixtures.tiny_models import random_state_dict

    device = torch.device("cuda" if cuda else "cpu")
    spec, size = (TINY_DIT, 64) if args.quick else (ZIMAGE_TURBO, args.size)
    t0 = time.perf_counter()
    sd_gpu = random_state_dict(dit_state_dict_shapes(spec), seed=0, dtype=torch.bfloat16, device=device)
    base = {k: v.cpu() for k, v in sd_gpu.items()}
    del sd_gpu
    if cuda:
        torch.cuda.empty_cache()
    if cuda and args.cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(args.cap_gib * 2**30 / total)
        mm.EXTRA_RESERVED_VRAM = int(total - args.cap_gib * 2**30) + mm.EXTRA_RESERVED_VRAM
    print(f"# device {torch.cuda.get_device_name(0) if cuda else 'cpu'}, torch {torch.__version__}, "
          f"{sum(v.numel() for v in base.values()) / 1e9:.2f}B params, {size}², {args.steps} steps, "
          f"cap {args.cap_gib or 'none'} GiB; weights built in {time.perf_counter() - t0:.1f} s", flush=True)
    formats = args.formats.split(",")
    if args.quick and any(f.startswith("core_") for f in formats):
        print("  core_*: skipped (ComfyUI's own loader detects Z-Image only at the real width, 3840)")
        formats = [f for f in formats if not f.startswith("core_")]
    rows = []
    for fmt in formats:
        t0 = time.perf_counter()
        sd = base if not fmt.startswith("Q") else quantize_sd(base, fmt, device)
        prep = time.perf_counter() - t0
        model = load(fmt, sd)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        first = sample_once(model, size, args.steps, spec.cap_feat_dim, device)
        steady = min(sample_once(model, size, args.steps, spec.cap_feat_dim, device) for _ in range(2))
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        rows.append((fmt, prep, first, steady, peak, model.model_size() / 2**30))
        print(f"  {fmt}: first {first:.2f} s, steady {steady:.2f} s, peak {peak:.2f} GiB", flush=True)
        del model, sd
        mm.unload_all_models()
        mm.soft_empty_cache()
        gc.collect()
    ref = {r[0]: r[3] for r in rows}
    print("\n| format | weights GiB | prep s | first s | steady s | s/step | peak VRAM GiB | vs core_bf16 | vs core_fp8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fmt, prep, first, steady, peak, gib in rows:
        vs = lambda k: f"{steady / ref[k]:.2f}×" if k in ref else "–"
        print(f"| {fmt} | {gib:.2f} | {prep:.1f} | {first:.2f} | {steady:.2f} | {steady / args.steps:.3f} | "
              f"{peak:.2f} | {vs('core_bf16')} | {vs('core_fp8')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
