"""Command line: `python -m zimage_turbo run WORKFLOW [--prompt ...] [--seed N] [--out out.png]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    # The repo root on sys.path would let the pack's `nodes/` shadow ComfyUI's `nodes` module.
    root = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    from .downloads import cli as download_cmd
    from .headless import run as run_cmd
    from .planner import cli as plan_cmd
    from .quant import convert
    parser = argparse.ArgumentParser(prog="python -m zimage_turbo", description="ComfyUI-ZImage-Turbo tools")
    sub = parser.add_subparsers(required=True)
    run_cmd.add_parser(sub)
    convert.add_parser(sub)
    plan_cmd.add_parser(sub)
    download_cmd.add_parser(sub)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
