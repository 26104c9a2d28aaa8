"""Low-VRAM benchmark: the whole graph (encode → sample → decode) under an emulated small card, with the
planner's estimate printed beside the measured peak of each stage.

    python bench/lowvram.py                      # full size (6.15B DiT fp8, Qwen3-4B bf16, Flux VAE), 6 GiB cap, 1024² and 1536²
    python bench/lowvram.py --cap-gib 8 --sizes 1024
    python bench/lowvram.py --quick              # tiny models, CPU or GPU, no cap: checks the script runs

Random weights of the real shapes (fixtures/shapes.py): memory, not pictures, is measured. The card is emulated
with torch.cuda.set_per_process_memory_fraction (a hard cap: going over raises OOM) and ComfyUI is told the
card's size (get_free_memory/total memory report the cap), so its partial loading behaves as on that card.
Peaks are torch.cuda.max_memory_allocated per stage (the CUDA context is outside it). Needs a ComfyUI host
importable (scripts/setup_host.sh) and, except with --quick, CUDA.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench_host import setup_host

REPO = Path(__file__).resolve().parents[1]


def _emulate_card(cap: int) -> None:
    import torch
    import comfy.model_management as mm
    device = torch.device("cuda")
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    real_free = mm.get_free_memory

    def get_free_memory(dev=None, torch_free_too=False):
        if dev is not None and getattr(dev, "type", "cuda") != "cuda":
            return real_free(dev, torch_free_too)
        stats = torch.cuda.memory_stats(device)
        reserved, active = stats["reserved_bytes.all.current"], stats["active_bytes.all.current"]
        torch_free = reserved - active
        free = cap - reserved + torch_free
        return (free, torch_free) if torch_free_too else free
    mm.get_free_memory = get_free_memory
    mm.total_vram = cap / (1024 * 1024)
    mm.get_total_memory = lambda dev=None, torch_total_too=False: (cap, cap) if torch_total_too else cap


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", help="ComfyUI folder (default: the one on sys.path)")
    ap.add_argument("--cap-gib", type=float, default=6.0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 1536])
    ap.add_argument("--dit-weight-dtype", default="fp8_e4m3fn", help="weight_dtype of the DiT (default fp8_e4m3fn)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--limit-gib", type=float, default=5.5, help="fail when a stage peaks above this")
    ap.add_argument("--quick", action="store_true", help="tiny models, no cap (CPU is fine)")
    args = ap.parse_args(argv)

    import torch
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("bench/lowvram.py needs CUDA for the full-size run (use --quick for the tiny CPU path).")
        return 2
    setup_host(args.comfyui, cpu=not cuda)
    import comfy.model_management as mm
    import comfy.sd
    from zimage_turbo.fixtures import shapes
    from zimage_turbo.fixtures.tiny_models import build_dit_state_dict, build_qwen3_state_dict, build_vae_state_dict
    from zimage_turbo.loaders.dit import build_zimage_model
    from zimage_turbo.loaders.text_encoder import build_qwen3_clip
    from zimage_turbo.planner import estimate as E
    from zimage_turbo.planner.decode import decode
    from zimage_turbo.planner.files import record_from_state_dict
    from zimage_turbo.planner.host import live_host_profile
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample

    dit_spec, te_spec = (shapes.TINY_DIT, shapes.TINY_QWEN3) if args.quick else (shapes.ZIMAGE_TURBO, shapes.QWEN3_4B)
    cap = int(args.cap_gib * E.GiB)
    if cuda and not args.quick:
        _emulate_card(cap)
    t0 = time.time()
    dit_sd = build_dit_state_dict(dit_spec)
    te_sd = build_qwen3_state_dict(te_spec)
    vae_sd = build_vae_state_dict(shapes.FLUX_VAE)
    records = (record_from_state_dict("te", "te", te_sd), record_from_state_dict("dit", "dit", dit_sd),
               record_from_state_dict("vae", "vae", vae_sd))
    weight_dtype = "default" if args.quick else args.dit_weight_dtype
    with torch.inference_mode():
        clip = build_qwen3_clip(te_sd)
        model = build_zimage_model(dit_sd, "random DiT", weight_dtype)
        vae = comfy.sd.VAE(sd=vae_sd)
    del dit_sd, te_sd, vae_sd
    print(f"built random models in {time.time() - t0:.0f} s; device {mm.get_torch_device()}")
    host = live_host_profile()
    if cuda and not args.quick:  # the emulated card is the allocator cap: the real context lies outside it
        host = E.with_host(host, cuda_context=0)
    vram = cap if cuda and not args.quick else 64 * E.GiB
    failures = 0
    for side in args.sizes if not args.quick else [256]:
        mm.unload_all_models()
        mm.soft_empty_cache()
        p = E.plan(*records, vram, side, side, 1, host, weight_dtype=weight_dtype)
        measured = {}
        with torch.inference_mode():
            for stage in ("encode", "sample", "decode"):
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.time()
                if stage == "encode":
                    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a red fox in a snowy birch forest"))
                elif stage == "sample":
                    latent = turbo_sample(model, cond, empty_latent(side, side, 1), seed=1, steps=args.steps)
                else:
                    images, tiles = decode(vae, latent["samples"])
                if cuda:
                    torch.cuda.synchronize()
                measured[stage] = (torch.cuda.max_memory_allocated() if cuda else 0, time.time() - t)
        print(f"\n{side}x{side}, cap {args.cap_gib} GiB, DiT weight_dtype {weight_dtype}")
        print(p.table())
        print("  stage    measured peak  planner estimate  ratio   time")
        for s in p.stages:
            m, secs = measured[s.name]
            ratio = f"{m / s.peak:5.2f}" if m else "  n/a"
            print(f"  {s.name:7s}  {m / E.GiB:9.2f} GiB  {s.peak / E.GiB:12.2f} GiB  {ratio}  {secs:6.1f} s")
            if cuda and not args.quick and m > args.limit_gib * E.GiB:
                failures += 1
                print(f"  !! {s.name} peaked above {args.limit_gib} GiB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
