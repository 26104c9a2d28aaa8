#!/usr/bin/env python3
"""LoRA cost on GGUF DiTs: step time of Q8_0 and Q4_K with 0, 1 and 3 rank-32 LoRAs, ratio to no LoRA.

Builds a full-size random Z-Image DiT (fixtures/shapes.py), quantizes it with the pack's quantizer, and
samples 1024² (8 steps, euler/simple, cfg 1) through ComfyUI's sampler, in-process. Each LoRA is random,
rank 32, on every attention and feed-forward layer of the main blocks (qkv, out, w1, w2, w3) and adaLN:
  - `comfy` rows: LoRAs in ComfyUI's layout (fused qkv), applied through ZImageLoraLoader's function;
  - `musubi` rows: the same size in musubi-tuner's layout (separate to_q/to_k/to_v on row slices of qkv);
  - `peer` rows (`--peer DIR`, an unpacked ComfyUI-GGUF 795e451): the same GGUF file loaded by ComfyUI-GGUF's
    UnetLoaderGGUF and the ComfyUI-layout LoRAs applied by core's LoRA loader, as its users do.
Every row prints s/step and its ratio to the same loader's no-LoRA run of this process. GPU targets: one LoRA
≤ 1.05×, three ≤ 1.15×.

    python bench/lora.py [--comfyui DIR] [--types Q8_0,Q4_K] [--size 1024] [--steps 8] [--peer DIR] [--quick]

`--quick`: the tiny test model at 64² on the CPU, rank 4 (checks the script runs; times mean nothing; no peer,
whose loader, core's, detects Z-Image only at the real width).
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

from bench_host import setup_host
from random_files import quantized_dit, random_weights, write_dit

LORA_COUNTS = (0, 1, 3)
# ComfyUI module → musubi-tuner modules (rows of the ComfyUI weight each one covers, in thirds)
BLOCK_MODULES = {"attention.qkv": ("attention_to_q", "attention_to_k", "attention_to_v"),
                 "attention.out": ("attention_to_out_0",), "feed_forward.w1": ("feed_forward_w1",),
                 "feed_forward.w2": ("feed_forward_w2",), "feed_forward.w3": ("feed_forward_w3",),
                 "adaLN_modulation.0": ("adaLN_modulation_0",)}


def random_lora(shapes: dict, n_layers: int, rank: int, seed: int, layout: str) -> dict:
    """A random LoRA on every main block's linear layers, in ComfyUI's or musubi-tuner's layout."""
    import torch
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(n_layers):
        for module, musubi in BLOCK_MODULES.items():
            out_f, in_f = shapes[f"layers.{i}.{module}.weight"]
            names = ([f"diffusion_model.layers.{i}.{module}"] if layout == "comfy"
                     else [f"lora_unet_layers_{i}_{m}" for m in musubi])
            for name in names:
                rows = out_f // len(names)
                down, up = ((torch.randn(rank, in_f, generator=g) * 0.01).to(torch.bfloat16),
                            (torch.randn(rows, rank, generator=g) * 0.01).to(torch.bfloat16))
                sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"] = down, up
                sd[f"{name}.alpha"] = torch.tensor(float(rank))
    return sd


def sample_seconds(model, size: int, steps: int, cap_feat: int, cuda: bool) -> float:
    import torch
    import comfy.sample
    latent = torch.zeros(1, 16, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    cond = [[torch.randn(1, 64, cap_feat, generator=torch.Generator().manual_seed(1)), {}]]
    neg = [[torch.zeros_like(cond[0][0]), {}]]
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, neg, latent, disable_pbar=True,
                              seed=0)
    if cuda:
        torch.cuda.synchronize()
    assert torch.isfinite(out).all(), "non-finite output"
    return time.perf_counter() - start


def steady(model, args, cap_feat: int, cuda: bool) -> float:
    import comfy.model_management as mm
    sample_seconds(model, args.size, args.steps, cap_feat, cuda)  # first run: moves weights, compiles kernels
    seconds = min(sample_seconds(model, args.size, args.steps, cap_feat, cuda) for _ in range(args.repeat))
    mm.unload_all_models()
    return seconds / args.steps


def peer_loader(peer_dir: str):
    """ComfyUI-GGUF's UnetLoaderGGUF from an unpacked copy (imported as a package, never copied)."""
    spec = importlib.util.spec_from_file_location("comfyui_gguf_peer", Path(peer_dir) / "__init__.py",
                                                  submodule_search_locations=[str(peer_dir)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_gguf_peer"] = module
    spec.loader.exec_module(module)
    return module.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", help="ComfyUI folder (default: the one on sys.path)")
    parser.add_argument("--types", default="Q8_0,Q4_K")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--peer", help="an unpacked ComfyUI-GGUF (../shared/peers/) to compare with")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import torch
    cuda = torch.cuda.is_available() and not args.quick
    setup_host(args.comfyui, cpu=not cuda)
    import comfy.sd
    from zimage_turbo.fixtures.shapes import TINY_DIT, ZIMAGE_TURBO, dit_state_dict_shapes
    from zimage_turbo.loaders.dit import build_zimage_model
    from zimage_turbo.loaders.lora import apply_zimage_lora

    device = torch.device("cuda" if cuda else "cpu")
    spec = TINY_DIT if args.quick else ZIMAGE_TURBO
    if args.quick:
        args.size, args.steps, args.rank, args.repeat = 64, 2, 4, 1
    shapes = dit_state_dict_shapes(spec)
    base = random_weights(shapes, seed=0, device=device)
    loras = {layout: [random_lora(shapes, spec.n_layers, args.rank, seed, layout) for seed in range(max(LORA_COUNTS))]
             for layout in ("comfy", "musubi")}
    print(f"# device {torch.cuda.get_device_name(0) if cuda else 'cpu'}, torch {torch.__version__}, "
          f"{args.size}², {args.steps} steps, rank {args.rank}", flush=True)
    peer = peer_loader(args.peer) if args.peer and not args.quick else None
    if args.peer and args.quick:
        print("  peer: skipped in --quick (core's loader detects Z-Image only at the real width)")
    rows = []
    for qtype in args.types.split(","):
        sd = quantized_dit(base, qtype, device)
        model = build_zimage_model(dict(sd), quantized=True)
        for layout in ("comfy", "musubi"):
            for count in LORA_COUNTS:
                if layout == "musubi" and count == 0:
                    continue
                patched = model
                for lora in loras[layout][:count]:
                    patched, _, _ = apply_zimage_lora(patched, None, lora, 1.0)
                rows.append((qtype, "pack", layout, count, steady(patched, args, spec.cap_feat_dim, cuda)))
                print(f"  {qtype} pack {layout} {count} LoRA: {rows[-1][-1]:.4f} s/step", flush=True)
        del model, sd
        if peer is not None:
            import folder_paths
            with tempfile.TemporaryDirectory() as folder:
                path = write_dit(base, qtype, Path(folder), device)
                folder_paths.add_model_folder_path("diffusion_models", folder)
                peer_model = peer.load_unet(path.name)[0]
                for count in LORA_COUNTS:
                    patched = peer_model
                    for lora in loras["comfy"][:count]:
                        patched, _ = comfy.sd.load_lora_for_models(patched, None, lora, 1.0, 0)
                    rows.append((qtype, "peer", "comfy", count, steady(patched, args, spec.cap_feat_dim, cuda)))
                    print(f"  {qtype} peer comfy {count} LoRA: {rows[-1][-1]:.4f} s/step", flush=True)
                del peer_model, patched
        gc.collect()
    baseline = {(q, who): s for q, who, _, n, s in rows if n == 0}
    print("\n| type | loader | LoRA layout | LoRAs | s/step | vs no LoRA | vs pack, same LoRAs |")
    print("|---|---|---|---|---|---|---|")
    pack = {(q, layout, n): s for q, who, layout, n, s in rows if who == "pack"}
    for qtype, who, layout, count, seconds in rows:
        vs_pack = f"{seconds / pack[(qtype, layout, count)]:.2f}×" if who == "peer" else "–"
        print(f"| {qtype} | {who} | {layout} | {count} | {seconds:.4f} | {seconds / baseline[(qtype, who)]:.3f}× "
              f"| {vs_pack} |")
    print("targets (GPU): 1 LoRA ≤ 1.05×, 3 LoRAs ≤ 1.15× the same loader's no-LoRA step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
