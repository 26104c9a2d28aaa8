#!/usr/bin/env bash
# Make what a GPU session carries to the device machine (which has CUDA PyTorch but no ComfyUI and no network):
#   .gpu/ComfyUI  the ComfyUI 0.3.75 tree of the host venv (about 25 MB, tests and API nodes left out)
#   .whl/         wheels of what PyTorch images lack (gguf, torchsde, trampoline)
# Both are git-ignored; pass them as carry=[".gpu", ".whl"], then run `bash bench/gpu_session.sh` there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup_host.sh 0.3.75
rm -rf .gpu && mkdir -p .gpu
tar -C .venv-0.3.75 --exclude='ComfyUI/custom_nodes/*' --exclude=ComfyUI/tests --exclude=ComfyUI/tests-unit \
    --exclude=ComfyUI/comfy_api_nodes --exclude='__pycache__' -cf - ComfyUI | tar -C .gpu -xf -
mkdir -p .gpu/ComfyUI/comfy_api_nodes && touch .gpu/ComfyUI/comfy_api_nodes/__init__.py
rm -rf .whl && python3 -m pip download -q --no-deps --only-binary=:all: gguf torchsde trampoline -d .whl 2>&1 \
    | grep -v "^WARNING: Location" || true
du -sh .gpu .whl
