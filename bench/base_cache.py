#!/usr/bin/env python3
"""Z-Image Base sampling (28 steps, cfg 4 with a negative) with and without core's step caches, in one run.

Builds a random full-size DiT (Base has Turbo's shapes, fixtures/shapes.py ZIMAGE_TURBO), loads it through the
pack's loader in each format, and samples through the pack's sampler (`turbo_sample`, euler/simple, shift 3) with
no cache, core EasyCache and core LazyCache (reuse threshold `--threshold`, core's default window 0.15-0.95).
Prints, per format and cache: network evaluations (batch rows reaching the DiT; positive and negative count one
each), seconds, the speed-up over no cache in the same run, and the latent's relative difference from the
uncached one. Random weights make the skip pattern a mechanism check only: how many steps real Base weights let
the caches skip (and what that does to the picture) needs the real file.

    python bench/base_cache.py [--comfyui DIR] [--formats bf16,Q8_0] [--size 1024] [--steps 28] [--cfg 4]
                               [--threshold 0.2] [--quick]

`--quick`: the tiny test DiT at 32² and 6 steps on the CPU (checks the script runs; times mean nothing).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

from bench_host import setup_host
from random_files import quantized_dit, random_weights

CACHES = ("none", "EasyCache", "LazyCache")
DEFAULT_FORMATS = "bf16,fp8,Q8_0,Q4_K"


def load(fmt: str, sd: dict, device):
    """The DiT through the pack's loader: bf16, fp8 (weight_dtype fp8_e4m3fn) or a GGUF type (stays quantized)."""
    from zimage_turbo.loaders.dit import build_zimage_model
    if fmt in ("bf16", "fp8"):
        return build_zimage_model(dict(sd), weight_dtype={"bf16": "default", "fp8": "fp8_e4m3fn"}[fmt])
    return build_zimage_model(quantized_dit(sd, fmt, device), quantized=True)


def with_cache(model, cache: str, threshold: float):
    """The model through core's EasyCache / LazyCache node (what a workflow's cache node does)."""
    if cache == "none":
        return model
    from comfy_extras import nodes_easycache
    node = {"EasyCache": nodes_easycache.EasyCacheNode, "LazyCache": nodes_easycache.LazyCacheNode}[cache]
    out = node.execute(model, threshold, 0.15, 0.95, False)
    return out.result[0] if hasattr(out, "result") else out[0]


def sample(model, size: int, steps: int, cfg: float, cap_feat: int, device) -> tuple:
    """(latent, seconds, network evaluations) of one Base-style run through the pack's sampler."""
    import torch
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    gen = torch.Generator().manual_seed(1)
    positive = [[torch.randn(1, 64, cap_feat, generator=gen), {}]]
    negative = [[torch.randn(1, 64, cap_feat, generator=gen), {}]]
    rows: list[int] = []
    hook = model.model.diffusion_model.x_embedder.register_forward_hook(
        lambda module, args, out: rows.append(int(args[0].shape[0])))
    try:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = turbo_sample(model, positive, empty_latent(size, size), seed=0, steps=steps, cfg=cfg,
                           negative=negative)["samples"]
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        hook.remove()
    assert torch.isfinite(out).all(), "non-finite output"
    return out.float().cpu(), seconds, sum(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", help="ComfyUI folder (default: the one on sys.path)")
    parser.add_argument("--formats", default=DEFAULT_FORMATS)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--threshold", type=float, default=0.2, help="the caches' reuse_threshold")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import torch
    cuda = torch.cuda.is_available() and not args.quick
    setup_host(args.comfyui, cpu=not cuda)
    import comfy.model_management as mm
    from zimage_turbo.fixtures.shapes import TINY_DIT, ZIMAGE_TURBO, dit_state_dict_shapes

    device = torch.device("cuda" if cuda else "cpu")
    spec, size, steps = (TINY_DIT, 32, 6) if args.quick else (ZIMAGE_TURBO, args.size, args.steps)
    formats = args.formats.split(",") if not args.quick else ["bf16", "Q8_0"]
    t0 = time.perf_counter()
    base = random_weights(dit_state_dict_shapes(spec), seed=0, device=device)
    print(f"# device {torch.cuda.get_device_name(0) if cuda else 'cpu'}, torch {torch.__version__}, "
          f"{sum(v.numel() for v in base.values()) / 1e9:.2f}B params, {size}², {steps} steps, cfg {args.cfg:g}, "
          f"threshold {args.threshold:g}; weights built in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for fmt in formats:
        model = load(fmt, base, device)
        sample(model, size, 2, args.cfg, spec.cap_feat_dim, device)  # warm-up: load, kernels, autotune
        ref = None
        for cache in CACHES:
            latent, seconds, evals = sample(with_cache(model, cache, args.threshold), size, steps, args.cfg,
                                            spec.cap_feat_dim, device)
            if ref is None:
                ref = (latent, seconds, evals)
            rel = float((latent - ref[0]).norm() / ref[0].norm())
            rows.append((fmt, cache, evals, seconds, ref[1] / seconds, rel))
            print(f"  {fmt} {cache}: {evals} evaluations, {seconds:.2f} s", flush=True)
        del model
        mm.unload_all_models()
        mm.soft_empty_cache()
        gc.collect()
    print(f"\n| format | cache | DiT evaluations | s | speed-up vs none | latent rel. diff vs none |")
    print("|---|---|---|---|---|---|")
    for fmt, cache, evals, seconds, speedup, rel in rows:
        print(f"| {fmt} | {cache} | {evals} | {seconds:.2f} | {speedup:.2f}× | {rel:.4f} |")
    for cache in CACHES[1:]:
        ratios = [r[4] for r in rows if r[1] == cache]
        print(f"{cache} / none over {len(ratios)} formats: mean speed-up {sum(ratios) / len(ratios):.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
