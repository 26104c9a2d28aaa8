#!/usr/bin/env bash
# One command for a GPU session: the GPU measurements the issues ask for, each under its own time limit,
# each step's output saved to OUT_DIR/<step>.txt.
#
#   bash bench/gpu_session.sh [STEP ...]       STEP: kernels dit dit6 lowvram (default: all)
#   The step limits add up to 10 min: on the device tool run it as two calls, `kernels dit` and `dit6 lowvram`.
#   env: OUT (output folder, default bench/results), COMFYUI (default .gpu/ComfyUI)
#
# kernels  every GGML type's GPU dequantization (Triton kernels where they exist) bit for bit against gguf-py
# dit      full VRAM 1024², 8 steps: core bf16 / fp8 / fp8_fast against the pack's fp8_fast, Q8_0, Q4_K
# dit6     6 GiB card: core bf16 and Q8_0 with the side-stream prefetch, then Q8_0 without it (ZIT_PREFETCH=0)
# lowvram  whole graph (encode, sample, decode) at 6 GiB for 1024² and 1536², measured peaks beside the planner's
#
# Needs CUDA PyTorch; ComfyUI and the wheels it lacks come from scripts/prepare_device.sh (carry .gpu and .whl).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-bench/results}
COMFYUI=${COMFYUI:-.gpu/ComfyUI}
SITE=${TMPDIR:-/tmp}/zit_bench_site
mkdir -p "$OUT"
if [[ -d .whl ]] && ! python3 -c "import gguf, torchsde" 2>/dev/null; then
  python3 -m pip install -q --no-deps --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T), limit ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 30 "$OUT/$name.txt"
  [[ $rc != 0 ]] && { echo "=== $name: exit $rc"; status=1; }
}
STEPS=${*:-kernels dit dit6 lowvram}
for s in $STEPS; do
  case $s in
    kernels) step kernels 90 python3 bench/gpu_dequant_check.py ;;
    dit) step dit 200 python3 bench/zimage_dit.py --comfyui "$COMFYUI" \
           --formats core_bf16,core_fp8,core_fp8_fast,fp8_fast,Q8_0,Q4_K ;;
    dit6) step dit6_prefetch 120 env ZIT_PREFETCH=1 python3 bench/zimage_dit.py --comfyui "$COMFYUI" --cap-gib 6 \
            --formats core_bf16,Q8_0,Q4_K
          step dit6_no_prefetch 90 env ZIT_PREFETCH=0 python3 bench/zimage_dit.py --comfyui "$COMFYUI" --cap-gib 6 \
            --formats Q8_0 ;;
    lowvram) step lowvram 120 python3 bench/lowvram.py --comfyui "$COMFYUI" --cap-gib 6 --sizes 1024 1536 ;;
    *) echo "unknown step $s (kernels dit dit6 lowvram)" >&2; exit 2 ;;
  esac
done
exit $status
