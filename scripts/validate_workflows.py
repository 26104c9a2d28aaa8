#!/usr/bin/env python3
"""Validate workflows against a running ComfyUI server's /object_info.

    .venv/bin/python scripts/validate_workflows.py --server http://127.0.0.1:8188 [PATH ...]

PATH is a UI-format workflow JSON or a folder of them (default: this pack's workflows/). For `DIR/NAME.json` the
API-format twin `DIR/api/NAME.json` must exist and equal the UI graph's conversion; a card `DIR/NAME.png`, when
present, must carry exactly both graphs in its `workflow` and `prompt` chunks. Every check is listed in
headless/validate.py. Prints each problem; exits 1 when there is any, 2 when the server cannot be reached.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _import_validate():
    try:
        from zimage_turbo.headless import validate
    except ImportError:  # run from a checkout that is not installed as `zimage_turbo`
        sys.path.insert(0, str(REPO))
        import importlib
        validate = importlib.import_module("headless.validate")
    return validate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI URL (default %(default)s)")
    parser.add_argument("paths", nargs="*", type=Path, help="workflow JSON files or folders (default: workflows/)")
    args = parser.parse_args(argv)
    validate = _import_validate()
    try:
        with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=120) as resp:
            object_info = json.loads(resp.read())
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        print(f"cannot read {args.server}/object_info: {exc}", file=sys.stderr)
        return 2
    files = validate.workflow_files(args.paths or [REPO / "workflows"])
    if not files:
        print("no workflow files found", file=sys.stderr)
        return 1
    total, skipped = 0, 0
    for path in files:
        try:
            lacks = validate.host_lacks(json.loads(Path(path).read_text()), object_info)
        except (OSError, ValueError, AttributeError):
            lacks = {}
        if lacks:
            skipped += 1
            print(f"skip {path}: this ComfyUI has no {', '.join(f'{t} ({why})' for t, why in lacks.items())}")
            continue
        problems = validate.validate_workflow_file(path, object_info)
        total += len(problems)
        print(f"{'FAIL' if problems else 'ok  '} {path}")
        for problem in problems:
            print(f"     - {problem}")
    print(f"{len(files)} workflows, {total} problems" + (f" ({skipped} skipped: need a newer ComfyUI)" if skipped else ""))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
