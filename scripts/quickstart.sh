#!/usr/bin/env bash
# One command from a fresh clone to a picture: install a ComfyUI host with this pack, run the shipped workflow.
#   bash scripts/quickstart.sh [--prompt "..."] [--seed N] [--out out/z_image_turbo.png]
# Uses the real weights when they are in .venv/ComfyUI/models (or --models-dir DIR), else tiny random models.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup_host.sh "${ZIT_HOST:-0.30}"
venv=.venv; [[ ${ZIT_HOST:-0.30} == 0.3.75 ]] && venv=.venv-0.3.75
exec "$venv/bin/python" -m zimage_turbo run basic "$@"  # the shipped workflow "05 Turbo basic (official files)"
