#!/usr/bin/env bash
# Run the Triton kernel tests on the CPU (Triton's interpreter) in a small venv of their own:
# Triton is kept out of the ComfyUI host venvs, where its presence changes what some host libraries pick.
#   bash scripts/test_kernels.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${ZIT_KERNEL_VENV:-$ROOT/.venv-kernels}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$VENV/bin/python" -c "import torch, triton, pytest, safetensors" 2>/dev/null; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --no-input "torch==2.13.0+cpu" triton numpy pytest safetensors 2>&1 \
    | grep -v "^WARNING: Location" || true
fi
SP=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$SP/zimage_turbo_alias" && ln -sfn "$ROOT" "$SP/zimage_turbo_alias/zimage_turbo"
echo "$SP/zimage_turbo_alias" > "$SP/zimage_turbo.pth"
echo "=== Triton kernel tests (interpreter, CPU) ==="
"$VENV/bin/pytest" -q -p no:cacheprovider -p no:randomly tests/quant/test_triton_kernels.py
