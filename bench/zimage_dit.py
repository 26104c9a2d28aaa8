#!/usr/bin/env python3
"""Z-Image DiT sampling speed and peak VRAM: the pack's formats against ComfyUI core, on random weights.

Builds a full-size random Z-Image DiT (fixtures/shapes.py: 6.15B) and samples 1024² for 8 steps (euler,
simple, cfg 1) through ComfyUI's real sampling path, in-process:
  core_bf16 / core_fp8 / core_fp8_fast / core_scaled_fp8   comfy.sd.load_diffusion_model_state_dict (ComfyUI's own)
  bf16 / fp8 / fp8_fast / scaled_fp8 / Q8_0 / Q6_K / Q5_K / Q4_K   the pack's loader (scaled_fp8: what the
      quantize command writes; GGUF types: our quantizer, weights stay quantized)
For each: first run (includes moving weights and compiling kernels) and steady state, s/step, peak VRAM,
ratio to core_bf16 and core_fp8 of the same run. `--cap-gib N` emulates an N GiB card (ComfyUI's
reserve-VRAM setting + torch's per-process memory fraction).

    python bench/zimage_dit.py --comfyui /path/to/ComfyUI [--formats core_bf16,Q8_0] [--cap-gib 6] [--quick]

A format may carry switches of the pack's fast paths, to show what each one brings in the same run:
`Q8_0-noprefetch` (no side-stream prefetch of offloaded layers), `Q8_0-notriton` (torch.compile'd dequantization
instead of the Triton kernels). `--profile Q8_0,...` profiles one more run of those formats and prints where the
time goes (dequantization, matmul, attention, copies). bench/targets.py checks issue 8's targets.

`--quick` uses the tiny test model and 64² on CPU (checks the script runs, times mean nothing).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import sys
import time
from pathlib import Path

from bench_host import setup_host
from profile_time import where_time_goes
from random_files import quantized_dit, random_weights

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FORMATS = "core_bf16,core_fp8,core_fp8_fast,bf16,Q8_0,Q4_K"


# format switch -> (module, attribute, value while the switch is on)
SWITCHES = {"noprefetch": ("zimage_turbo.quant.prefetch", "ENABLED", False),
            "notriton": ("zimage_turbo.quant.dequant", "USE_TRITON", False)}

@contextlib.contextmanager
def switches(fmt: str):
    """Apply the `-switch` suffixes of a format name for the duration of its runs."""
    import importlib
    saved = []
    for name in fmt.split("-")[1:]:
        if name not in SWITCHES:
            raise SystemExit(f"unknown switch -{name} in {fmt} (known: {', '.join(SWITCHES)})")
        module, attr, value = SWITCHES[name]
        mod = importlib.import_module(module)
        saved.append((mod, attr, getattr(mod, attr)))
        setattr(mod, attr, value)
    try:
        yield fmt.split("-")[0]
    finally:
        for mod, attr, value in reversed(saved):
            setattr(mod, attr, value)


def print_tuned_configs() -> None:
    """The Triton launch configs the tuner chose in this run, with each candidate's time."""
    kernels = sys.modules.get("zimage_turbo.quant.kernels.triton_dequant")
    for name, tuner in (kernels.TUNERS.items() if kernels else ()):
        for key, chosen in tuner.chosen.items():
            times = ", ".join(f"{c.rows}x{c.num_warps} {t * 1e3:.0f} µs" for c, t in tuner.timings.get(key, {}).items())
            print(f"Triton {name} → {key}: {chosen.rows} blocks/program, {chosen.num_warps} warps ({times or 'default'})")


def state_dict_for(kind: str, base: dict, converted: dict, device) -> dict:
    """What format `kind` loads: the bf16 weights, or their GGUF / scaled-fp8 form (converted once, kept in CPU
    RAM for the format's other variants)."""
    from zimage_turbo.quant.convert import scaled_fp8_state_dict
    form = kind if kind.startswith("Q") else "scaled_fp8" if kind.endswith("scaled_fp8") else None
    if form is None:
        return base
    if form not in converted:
        converted[form] = quantized_dit(base, form, device) if form.startswith("Q") else scaled_fp8_state_dict(base)[0]
    return converted[form]


def load(fmt: str, sd):
    import torch
    import comfy.sd
    from zimage_turbo.loaders.dit import build_zimage_model
    core = {"core_bf16": {}, "core_fp8": {"dtype": torch.float8_e4m3fn},
            "core_fp8_fast": {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True}, "core_scaled_fp8": {}}
    ours = {"bf16": "default", "fp8": "fp8_e4m3fn", "fp8_fast": "fp8_e4m3fn_fast", "scaled_fp8": "default"}
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
    parser.add_argument("--profile", default="", help="formats to profile (one extra run each)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import torch
    cuda = torch.cuda.is_available() and not args.quick
    setup_host(args.comfyui, cpu=not cuda)
    import comfy.model_management as mm
    from zimage_turbo.fixtures.shapes import TINY_DIT, ZIMAGE_TURBO, dit_state_dict_shapes

    device = torch.device("cuda" if cuda else "cpu")
    spec, size = (TINY_DIT, 64) if args.quick else (ZIMAGE_TURBO, args.size)
    t0 = time.perf_counter()
    base = random_weights(dit_state_dict_shapes(spec), seed=0, device=device)
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
    rows, profiles, converted = [], args.profile.split(",") if args.profile else [], {}
    for fmt in formats:
        with switches(fmt) as kind:
            t0 = time.perf_counter()
            sd = state_dict_for(kind, base, converted, device)
            prep = time.perf_counter() - t0
            model = load(kind, sd)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            run = functools.partial(sample_once, model, size, args.steps, spec.cap_feat_dim, device)
            first = run()
            steady = min(run() for _ in range(2))
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            rows.append((fmt, prep, first, steady, peak, model.model_size() / 2**30))
            print(f"  {fmt}: first {first:.2f} s, steady {steady:.2f} s, peak {peak:.2f} GiB", flush=True)
            if fmt in profiles:
                try:
                    print(f"  {fmt}, " + where_time_goes(run, cuda), flush=True)
                except Exception as e:  # the profiler is an extra: never lose the table to it
                    print(f"  {fmt}: profiling failed ({type(e).__name__}: {e})", flush=True)
        del model, sd, run
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
    print_tuned_configs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
