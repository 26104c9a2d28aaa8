"""`python -m zimage_turbo download TIER|FILE… [--models-dir DIR] [--list] [--dry-run]`.

TIER is a shipped workflow's id (`6gb`, `8gb`, `12gb`, `24gb`, `basic`, `img2img`, …; `--list` shows them) or
its file name: the files its `properties.models` entries name. FILE is a file name from the catalog (`--list`).
Files already present are left untouched; the rest are downloaded from Hugging Face (HF_ENDPOINT and HF_TOKEN as
the Hub tooling reads them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .catalog import CATALOG
from .fetch import DownloadError, check_disk_space, download, remote_info, target_path
from .tiers import UnknownFileError, resolve, shipped_workflows, workflow_files


def default_models_dir() -> Path:
    """The host's models/ folder (the ComfyUI tree this pack is installed in)."""
    from ..headless.server import find_comfyui_dir
    return find_comfyui_dir() / "models"


def list_files() -> None:
    print("Tiers (shipped workflows):")
    workflows = shipped_workflows()
    width = max(map(len, workflows), default=0)
    for name, path in workflows.items():
        try:
            files = ", ".join(f.name for f in workflow_files(path))
        except UnknownFileError as exc:
            files = f"(cannot be downloaded: {exc})"
        print(f"  {name:<{width}}  {files}")
    print("Files:")
    for f in CATALOG:
        print(f"  {f.directory + '/' + f.name:<62} {f.size or '?':>8}  {f.source}")


def run(args: argparse.Namespace) -> int:
    if args.list:
        list_files()
        return 0
    if not args.names:
        raise SystemExit("download: name a tier (e.g. 6gb) or a file; --list shows them")
    try:
        files = resolve(args.names)
    except UnknownFileError as exc:
        raise SystemExit(f"download: {exc}") from None
    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir()
    present = [f for f in files if target_path(models_dir, f).exists()]
    for f in present:
        print(f"have   {f.directory}/{f.name} (left untouched)")
    todo = [f for f in files if f not in present]
    failures: list[str] = []
    remotes = []
    for f in todo:
        try:
            remotes.append(remote_info(f))
        except DownloadError as exc:
            failures.append(str(exc))
    try:
        check_disk_space(models_dir, remotes)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for r in remotes:
        where = f"{r.file.directory}/{r.file.name}"
        if args.dry_run:
            print(f"would  {where} ({r.size} bytes) from {r.url}")
            continue
        print(f"get    {where} ({r.size} bytes) from {r.file.url}")
        try:
            path = download(models_dir, r)
        except DownloadError as exc:
            failures.append(str(exc))
            continue
        print(f"done   {path}")
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    if failures:
        raise SystemExit(1)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="fetch a tier's model files (or named files) into ComfyUI's models/ folders")
    p.add_argument("names", nargs="*", metavar="TIER|FILE", help="a tier (6gb, 8gb, 12gb, 24gb, basic, img2img) or "
                   "a catalog file name")
    p.add_argument("--models-dir", help="the ComfyUI models/ folder (default: the host's models/)")
    p.add_argument("--list", action="store_true", help="list the tiers and catalog files, download nothing")
    p.add_argument("--dry-run", action="store_true",
                   help="ask the server for sizes, check disk space, download nothing")
    p.set_defaults(func=run)
