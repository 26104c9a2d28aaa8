"""`python -m zimage_turbo plan --vram 6 --width 1024 --height 1024 [--batch 1] [--models-dir DIR]`."""
from __future__ import annotations

import argparse

from .catalog import published_files
from .estimate import GiB, HostProfile, choose
from .files import scan_models_dir


def run(args: argparse.Namespace) -> int:
    files = scan_models_dir(args.models_dir) if args.models_dir else published_files()
    host = HostProfile(memory_usage_factor=args.memory_usage_factor, extra_reserved=int(args.reserve_mb * 2 ** 20))
    choice = choose(files, int(args.vram * GiB), args.width, args.height, args.batch, host,
                    prompt_tokens=args.prompt_tokens)
    source = f"files in {args.models_dir}" if args.models_dir else "the published files (no --models-dir given)"
    print(f"Planning over {source}.")
    print(choice.report())
    return 0 if choice.best is not None and choice.best.fits else 1


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
    p.set_defaults(func=run)
