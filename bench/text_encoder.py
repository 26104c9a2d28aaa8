#!/usr/bin/env python3
"""Qwen3-4B text encoder: a Q6_K GGUF against the bf16 safetensors, load time, encode time, peak RAM/VRAM.

Builds a full-size random Qwen3-4B (fixtures/shapes.py QWEN3_4B), writes it as bf16 safetensors (the layout of
qwen_3_4b.safetensors) and as a llama.cpp-style GGUF quantized by this pack's quantizer (default Q6_K, with the
Qwen2 BPE tokenizer metadata of ComfyUI's bundled files, as real GGUFs have), then loads and encodes a
128-token prompt (Z-Image template included) with each, every file in a fresh process so peaks are its own:

    python bench/text_encoder.py [--comfyui DIR] [--device auto|cpu|cuda] [--type Q6_K] [--layers N] [--quick]

`--quick`: a reduced model (hidden 512, 4 layers, random-block embedding) on the CPU; checks that the script
runs, the times mean little. `--layers N` keeps the real width with fewer layers (faster to build).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench_host import setup_host
from random_files import random_weights, write_text_encoder

REPO = Path(__file__).resolve().parents[1]
PROMPT_TOKENS = 128


def rss_gib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_rss_gib() -> float:
    """Peak resident set size of this process image (VmHWM: unlike ru_maxrss, not carried over from the
    parent across fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------------------------------- building
def build_files(spec, qtype: str, device, workdir: Path, quick: bool) -> tuple[Path, Path, float, float]:
    """Write the safetensors and GGUF files; returns their paths and build/quantize seconds."""
    from zimage_turbo.fixtures.shapes import qwen3_state_dict_shapes
    t0 = time.perf_counter()
    sd = random_weights(qwen3_state_dict_shapes(spec), seed=0, device=device)
    st_path = write_text_encoder(sd, spec, "bf16", workdir, device)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    gguf_path = write_text_encoder(sd, spec, qtype, workdir, device, random_embedding=quick)
    return st_path, gguf_path, built, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- worker
def prompt_of(clip, n_tokens: int) -> str:
    """A prompt whose tokens, Z-Image template included, number exactly `n_tokens`."""
    count = lambda text: len(clip.tokenize(text)["qwen3_4b"][0])  # noqa: E731
    words = n_tokens - count("")
    text = "a" + " cat" * max(words - 1, 0)
    while count(text) > n_tokens:
        text = text[: text.rfind(" ")]
    assert count(text) == n_tokens, (count(text), n_tokens)
    return text


def worker(path: str, cuda: bool) -> dict:
    """Load one file and encode the prompt; runs in its own process."""
    import torch
    import comfy.model_management as mm
    import comfy.sd  # noqa: F401  (imports are not part of the load time)
    import comfy.text_encoders.z_image  # noqa: F401
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder

    base_rss = rss_gib()
    t0 = time.perf_counter()
    with torch.inference_mode():
        clip = load_qwen3_text_encoder(path)
        load_s = time.perf_counter() - t0
        prompt = prompt_of(clip, PROMPT_TOKENS)
        tokens = clip.tokenize(prompt)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        def encode() -> float:
            start = time.perf_counter()
            cond = clip.encode_from_tokens_scheduled(tokens)[0][0]
            if cuda:
                torch.cuda.synchronize()
            assert torch.isfinite(cond).all() and cond.shape[1] == PROMPT_TOKENS, cond.shape
            return time.perf_counter() - start

        first = encode()
        steady = min(encode() for _ in range(3))
    return {"load_s": load_s, "first_s": first, "encode_s": steady,
            "peak_vram_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
            "resident_gib": mm.module_size(clip.cond_stage_model) / 2**30,
            "rss_before_gib": base_rss, "peak_rss_gib": peak_rss_gib(), "file_gib": os.path.getsize(path) / 2**30}


def run_worker(path: Path, args, cuda: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(path), "--device", "cuda" if cuda else "cpu"]
    if args.comfyui:
        cmd += ["--comfyui", args.comfyui]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit(f"worker for {path.name} failed ({out.returncode})")
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", help="ComfyUI folder (default: the one on sys.path)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--type", default="Q6_K", help="GGUF quantization (one the pack's quantizer writes)")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than Qwen3-4B's 36")
    parser.add_argument("--quick", action="store_true", help="reduced model on the CPU (checks the script runs)")
    parser.add_argument("--workdir", help="where the files are written (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available() and not args.quick)
    if cuda and not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    setup_host(args.comfyui, cpu=not cuda)
    if args.worker:
        print(json.dumps(worker(args.worker, cuda)), flush=True)
        return 0

    from zimage_turbo.fixtures.shapes import QWEN3_4B, qwen3_state_dict_shapes
    spec = QWEN3_4B
    if args.quick:
        spec = replace(spec, hidden_size=512, intermediate_size=1536, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=4)
    if args.layers:
        spec = replace(spec, num_hidden_layers=args.layers)
    device = torch.device("cuda" if cuda else "cpu")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="zit_te_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    params = sum(math.prod(s) for s in qwen3_state_dict_shapes(spec).values())
    print(f"# device {torch.cuda.get_device_name(0) if cuda else 'cpu'}, torch {torch.__version__}, Qwen3 "
          f"{params / 1e9:.2f}B params ({spec.num_hidden_layers} layers, hidden {spec.hidden_size}), "
          f"{args.type}, {PROMPT_TOKENS}-token prompt", flush=True)
    try:
        st_path, gguf_path, built, quantized = build_files(spec, args.type, device, workdir, args.quick)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        print(f"# built bf16 safetensors in {built:.1f} s, quantized + wrote GGUF in {quantized:.1f} s", flush=True)
        rows = [("safetensors bf16", run_worker(st_path, args, cuda)),
                (f"GGUF {args.type}", run_worker(gguf_path, args, cuda))]
    finally:
        if not args.keep:
            for p in workdir.glob("*"):
                p.unlink()
            if not args.workdir:
                workdir.rmdir()
    ref = rows[0][1]
    print(f"\n| file | file GiB | resident GiB | load s | first encode s | encode s | peak RAM GiB (+load) "
          f"| peak VRAM GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        vram = f"{r['peak_vram_gib']:.2f}" if cuda else "–"
        print(f"| {name} | {r['file_gib']:.2f} | {r['resident_gib']:.2f} | {r['load_s']:.2f} | {r['first_s']:.3f} | "
              f"{r['encode_s']:.3f} | {r['peak_rss_gib']:.2f} (+{r['peak_rss_gib'] - r['rss_before_gib']:.2f}) | "
              f"{vram} |")
    g = rows[1][1]
    ratio = lambda k: g[k] / ref[k] if ref[k] else float("nan")  # noqa: E731
    print(f"\nGGUF / safetensors: resident {ratio('resident_gib'):.2f}×, load {ratio('load_s'):.2f}×, "
          f"encode {ratio('encode_s'):.2f}×, peak RAM {ratio('peak_rss_gib'):.2f}×"
          + (f", peak VRAM {ratio('peak_vram_gib'):.2f}×" if cuda else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
