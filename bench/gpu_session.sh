#!/usr/bin/env bash
# One command for a GPU session: every GPU measurement issues 8 and 10 ask for, each step under its own time
# limit, each step's output saved to $OUT/<step>.txt as it runs (so a cut-off run still returns what it measured).
#
#   bash bench/gpu_session.sh [--quick] [STEP ...]    STEP: kernels dit dit6 lowvram (default: all, in this order)
#
# Sized for the device tool's budget (15 min per session, a machine's start included): the step limits add up
# to 9 min 30 s, so one call with timeout_s=600 runs everything; expected about 5 min (from the H100 runs of
# 2026-11-23), which leaves time to rerun one step on the still-warm machine. Formats run most important first,
# and each prints its line as it finishes, so a step cut off by its limit keeps what it measured.
#
# kernels  every GGML type's GPU dequantization (Triton kernels where they exist) bit for bit against gguf-py
# dit      full VRAM 1024², 8 steps: core bf16 / fp8 / fp8_fast, the pack's fp8_fast and scaled fp8, Q8_0 (and
#          without Triton), Q4_K; Q8_0 profiled
# dit6     6 GiB card: core bf16, Q8_0 streaming with and without the side-stream prefetch, Q4_K; Q8_0 profiled
# lowvram  the 6 GB workflow's files (Q4_K TE + Q4_K DiT GGUF, Flux VAE) as one graph (encode, sample, decode)
#          at 6 GiB for 1024² and 1536², measured peaks beside the planner's (issue 10); at 1024² again with a
#          Q8_0 Fun ControlNet 2.1 patch (issue 18): its peaks and the sample time against the run without it
#
# --quick  the same steps on the tiny models on the CPU (kernels skipped without CUDA): checks the session runs.
# env: OUT (output folder, default bench/results), COMFYUI (default .gpu/ComfyUI).
# Needs CUDA PyTorch; ComfyUI and the wheels it lacks come from scripts/prepare_device.sh (carry .gpu and .whl).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
QUICK=()
[[ ${1:-} == --quick ]] && { QUICK=(--quick); shift; }
OUT=${OUT:-bench/results}
COMFYUI=${COMFYUI:-.gpu/ComfyUI}
SITE=${TMPDIR:-/tmp}/zit_bench_site
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [[ -d .whl ]] && ! "$PY" -c "import gguf, torchsde" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'EOF'
import torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, " + (f"{torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB" if cuda else "no CUDA"), flush=True)
EOF
status=0
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  # the limits fit the device budget; a CPU smoke run (tiny models, the other bench scripts beside it) is not
  # timed against them
  [[ ${#QUICK[@]} -gt 0 ]] && limit=$((limit * 4))
  echo "=== $name ($(date +%T), limit ${limit} s): $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt" | grep -E --line-buffered \
    '^(\||target|Triton|  [A-Za-z0-9_-]+(: first|, where)|  [a-z /]+ +[0-9.]+ ms|  (encode|sample|decode) |  whole|[A-Z0-9_]+ +f|ALL|#|!!)'
  local rc=${PIPESTATUS[0]}
  if [[ $rc == 2 && ${#QUICK[@]} -gt 0 ]]; then echo "=== $name: skipped (no CUDA)"
  elif [[ $rc != 0 ]]; then echo "=== $name: exit $rc"; tail -n 25 "$OUT/$name.txt"; status=1
  fi
}
DIT=("$PY" bench/zimage_dit.py --comfyui "$COMFYUI" "${QUICK[@]}")
STEPS=${*:-kernels dit dit6 lowvram}
for s in $STEPS; do
  case $s in
    kernels) step kernels 60 "$PY" bench/gpu_dequant_check.py ;;
    dit) step dit 200 "${DIT[@]}" --profile Q8_0 \
           --formats core_bf16,Q8_0,Q4_K,core_fp8_fast,fp8_fast,Q8_0-notriton,core_fp8,scaled_fp8 ;;
    dit6) step dit6 150 "${DIT[@]}" --cap-gib 6 --profile Q8_0 --formats core_bf16,Q8_0,Q4_K,Q8_0-noprefetch ;;
    lowvram) step lowvram 160 "$PY" bench/lowvram.py --comfyui "$COMFYUI" "${QUICK[@]}" --cap-gib 6 --sizes 1024 1536 ;;
    *) echo "unknown step $s (kernels dit dit6 lowvram)" >&2; exit 2 ;;
  esac
done
echo "=== targets"
"$PY" bench/targets.py "$OUT" | tee "$OUT/targets.txt"
echo "=== done $(date +%T), outputs in $OUT"
exit $status
