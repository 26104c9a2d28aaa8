"""`python -m zimage_turbo plan --vram 6 --width 1024 --height 1024 [--batch 1] [--models-dir DIR]`."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from .catalog import published_files
from .estimate import MODEL_CFG, GiB, HostProfile, choose
from .files import inspect_file, scan_models_dir, synthetic_control_patch


# argument → (accepted, what it must be): refused in one line before any planning
ARGUMENT_CHECKS = {
    "vram": (lambda v: 0 < v < math.inf, "a positive number of GiB"),
    "width": (lambda v: 0 < v <= 16384, "a picture width from 1 to 16384"),
    "height": (lambda v: 0 < v <= 16384, "a picture height from 1 to 16384"),
    "batch": (lambda v: 1 <= v <= 64, "a batch size from 1 to 64"),
    "prompt_tokens": (lambda v: 1 <= v <= 512, "a prompt length from 1 to 512 tokens"),
    "memory_usage_factor": (lambda v: 0 < v < math.inf, "a positive number"),
    "reserve_mb": (lambda v: 0 <= v < math.inf, "a number of MiB, 0 or more"),
    "cfg": (lambda v: v is None or 0 <= v < math.inf, "a guidance of 0 or more"),
}


def check_arguments(args: argparse.Namespace) -> None:
    for name, (accepted, meaning) in ARGUMENT_CHECKS.items():
        value = getattr(args, name)
        if not accepted(value):
            raise SystemExit(f"error: --{name.replace('_', '-')} {value}: must be {meaning}")
    if args.models_dir and not Path(args.models_dir).is_dir():
        raise SystemExit(f"error: --models-dir {args.models_dir}: not a folder")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    files = scan_models_dir(args.models_dir) if args.models_dir else published_files(args.model)
    cfg = args.cfg if args.cfg is not None else MODEL_CFG[args.model]
    host = HostProfile(memory_usage_factor=args.memory_usage_factor, extra_reserved=int(args.reserve_mb * 2 ** 20))
    patch = control_patch_record(args.control_patch) if args.control_patch else None
    choice = choose(files, int(args.vram * GiB), args.width, args.height, args.batch, host,
                    prompt_tokens=args.prompt_tokens, control_patch=patch, patch_dtype=args.control_patch_dtype,
                    cfg=cfg, model=args.model)
    source = f"files in {args.models_dir}" if args.models_dir else "the published files (no --models-dir given)"
    print(f"Planning over {source}.")
    print(choice.report())
    return 0 if choice.best is not None and choice.best.fits else 1


PATCH_VERSIONS = ("1.0", "2.0", "2.1", "2.1-lite")


def control_patch_record(spec: str):
    """A patch file's record (a path), or a published version's (`2.1`, `2.1-lite`, optionally `:Q8_0` etc.)."""
    version, _, weight = spec.partition(":")
    if version in PATCH_VERSIONS:
        return synthetic_control_patch(weight or "BF16", version)
    record = inspect_file(spec)
    if record is None or record.role != "control_patch":
        raise SystemExit(f"--control-patch {spec}: not a Z-Image Fun ControlNet patch file nor one of "
                         f"{', '.join(PATCH_VERSIONS)} (optionally :Q8_0, :Q4_K …)")
    return record


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="what fits a card: peak VRAM per stage, offloading, tier workflow")
    p.add_argument("--vram", type=float, required=True, help="the card's VRAM in GiB, e.g. 6")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--models-dir", help="a ComfyUI models/ folder to plan over (default: the published files)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length in tokens (≤ 512)")
    p.add_argument("--memory-usage-factor", type=float, default=2.8,
                   help="ComfyUI's ZImage.memory_usage_factor (2.8; 1.7 on ComfyUI 0.3.75)")
    p.add_argument("--reserve-mb", type=float, default=400, help="ComfyUI's reserved VRAM (400 MiB, 600 on Windows)")
    p.add_argument("--control-patch", help="sample with a Fun ControlNet patch: its file, or a published version "
                                           "(1.0, 2.1, 2.1-lite; :Q8_0 / :Q4_K for a GGUF made by `quantize`)")
    p.add_argument("--control-patch-dtype", default="default", help="the patch loader's weight_dtype (e.g. fp8_e4m3fn)")
    p.add_argument("--model", choices=sorted(MODEL_CFG), default="turbo",
                   help="turbo (cfg 1) or base (Z-Image Base: cfg 4, the negative runs every step)")
    p.add_argument("--cfg", type=float, help="guidance; above 1 each step also runs the negative (default: the "
                                             "model's, 1 for turbo, 4 for base)")
    p.set_defaults(func=run)
