"""The quantize command: a Z-Image DiT (or Fun ControlNet patch) safetensors file → GGUF (Q8_0, Q6_K, Q5_K, Q4_K,
Q4_0, …) or scaled fp8.

    python -m zimage_turbo quantize z_image_turbo_bf16.safetensors z_image_turbo-Q4_K.gguf --type Q4_K
    python -m zimage_turbo quantize z_image_turbo_bf16.safetensors z_image_turbo_fp8_scaled.safetensors --type scaled_fp8

Input: ComfyUI or diffusers layout (diffusers is renamed to ComfyUI's), or a Z-Image Fun ControlNet patch
(models/model_patches; its q/k/v are fused as ComfyUI's `ZImage_Control` holds them, GGUF architecture
`zimage_control`). The output never replaces an existing file, is written under a temporary name and renamed
when complete.

Precision policy (which tensors keep more precision than the target type):
1. F32: 1-D tensors (norms, biases), the pad tokens, and any tensor of at most 4096 elements.
2. BF16: the embedders and the final layer (`t_embedder.`, `x_embedder.`, `cap_embedder.`, `final_layer.`):
   small, and the first and last transforms are the most sensitive to rounding.
3. Refiner blocks (`noise_refiner.`, `context_refiner.`) take the target type like the main layers,
   unless `--keep-refiners` keeps them BF16.
4. Every other 2-D weight takes the target type; when its row length is not a multiple of the type's block
   size it falls back to Q8_0 (or F16 if even that does not fit).
Scaled fp8: 2-D weights of rules 3-4 become float8_e4m3fn with a per-tensor `scale_weight` (amax / 448),
plus the `scaled_fp8` marker ComfyUI recognises; everything else stays as in the input.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .final_name import move_into_place
from .gguf_writer import write_gguf
from .quantize import quantize
from .tensor import QuantizedTensor
from .types import get_quant_type

KEEP_F32_MAX_ELEMENTS = 4096
HIGH_PRECISION_PREFIXES = ("t_embedder.", "x_embedder.", "cap_embedder.", "final_layer.", "control_all_x_embedder.")
REFINER_PREFIXES = ("noise_refiner.", "context_refiner.", "control_noise_refiner.")
PAD_TOKENS = ("x_pad_token", "cap_pad_token")
FALLBACK_TYPES = ("Q8_0", "F16")
FP8_MAX = 448.0
SCALED_FP8 = "scaled_fp8"
GGUF_ARCHITECTURE = "lumina2"  # what city96's ComfyUI-GGUF writes for Z-Image / Lumina 2 DiTs
CONTROLNET_GGUF_ARCHITECTURE = "zimage_control"  # this pack's name for a Fun ControlNet patch GGUF


def tensor_type(key: str, shape: tuple[int, ...], target: str, keep_refiners: bool = False) -> str:
    """The GGML type a tensor gets under the precision policy (see the module docstring)."""
    numel = 1
    for d in shape:
        numel *= d
    if len(shape) < 2 or key in PAD_TOKENS or numel <= KEEP_F32_MAX_ELEMENTS:
        return "F32"
    if key.startswith(HIGH_PRECISION_PREFIXES) or (keep_refiners and key.startswith(REFINER_PREFIXES)):
        return "BF16"
    for candidate in (target, *FALLBACK_TYPES):
        if shape[-1] % get_quant_type(candidate).block_size == 0:
            return candidate
    return "F32"


def is_controlnet_state_dict(sd: dict) -> bool:
    from ..loaders.controlnet_layout import is_controlnet
    return is_controlnet(sd)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors DiT in ComfyUI layout (a diffusers-layout file is renamed); a Fun ControlNet
    patch comes in ComfyUI's `ZImage_Control` layout."""
    from ..loaders.controlnet_layout import controlnet_to_comfy
    from ..loaders.dit_layouts import diffusers_to_comfy, is_diffusers_layout
    with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    if is_controlnet_state_dict(sd):
        return controlnet_to_comfy(sd)
    prefix = "model.diffusion_model."
    if sum(k.startswith(prefix) for k in sd) > len(sd) // 2:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return diffusers_to_comfy(sd) if is_diffusers_layout(sd) else sd


def relative_rms_error(original: torch.Tensor, restored: torch.Tensor) -> float:
    o, r = original.float(), restored.float()
    return float((o - r).pow(2).mean().sqrt() / o.pow(2).mean().sqrt().clamp_min(1e-30))


def _progress(items, desc: str):
    try:
        from tqdm import tqdm
        return tqdm(items, desc=desc, unit="tensor", file=sys.stderr)
    except ImportError:
        return items


def _refuse_existing(out: Path) -> None:
    if out.exists():
        raise FileExistsError(f"{out} already exists: choose another output name (nothing was written)")


def dit_gguf_metadata(name: str, target: str) -> dict:
    """The metadata of a DiT GGUF written by this pack (the architecture ComfyUI-GGUF writes, the target type)."""
    return {"general.architecture": GGUF_ARCHITECTURE, "general.quantization_version": ("u32", 2),
            "general.name": name, "zimage_turbo.target_type": target}


def quantize_dit_tensor(key: str, value: torch.Tensor, target: str, keep_refiners: bool = False,
                        device: torch.device | str | None = None) -> QuantizedTensor:
    """One DiT tensor quantized under the precision policy (work on `device`, blocks on the CPU)."""
    qtype = tensor_type(key, tuple(value.shape), target, keep_refiners)
    return QuantizedTensor(quantize(value, qtype, device=device), qtype, tuple(value.shape), key)


def convert_to_gguf(src: str | os.PathLike, out: str | os.PathLike, target: str, keep_refiners: bool = False,
                    stats: bool = False) -> dict[str, tuple[str, float | None]]:
    """Quantize a DiT to GGUF; returns {key: (type, relative RMS error or None)}."""
    out = Path(out)
    _refuse_existing(out)
    get_quant_type(target)
    sd = read_state_dict(src)
    tensors, report = {}, {}
    for key in _progress(list(sd), f"quantizing to {target}"):
        value = sd[key].float()
        tensors[key] = quantize_dit_tensor(key, value, target, keep_refiners)
        qtype = tensors[key].quant_type.name
        err = relative_rms_error(value, tensors[key].dequantize(torch.float32)) if stats else None
        report[key] = (qtype, err)
    metadata = dit_gguf_metadata(Path(src).stem, target)
    if is_controlnet_state_dict(sd):
        metadata["general.architecture"] = CONTROLNET_GGUF_ARCHITECTURE
    write_gguf(out, tensors, metadata)
    return report


def scaled_fp8_state_dict(sd: dict[str, torch.Tensor], keep_refiners: bool = False, stats: bool = False
                          ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, float | None]]]:
    """The scaled-fp8 form of a DiT state dict (see the module docstring) and the per-tensor report."""
    result: dict[str, torch.Tensor] = {}
    report = {}
    for key in _progress(list(sd), "converting to scaled fp8"):
        value = sd[key]
        policy = tensor_type(key, tuple(value.shape), "Q8_0", keep_refiners)
        if key.endswith(".weight") and value.ndim == 2 and policy == "Q8_0":
            scale = (value.float().abs().max() / FP8_MAX).clamp_min(1e-12)
            q = (value.float() / scale).to(torch.float8_e4m3fn)
            result[key] = q
            result[key[: -len("weight")] + "scale_weight"] = scale.reshape(()).float()
            report[key] = ("fp8_e4m3fn", relative_rms_error(value, q.float() * scale) if stats else None)
        else:
            result[key] = value.contiguous()
            report[key] = (str(value.dtype).replace("torch.", ""), None)
    result[SCALED_FP8] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return result, report


def convert_to_scaled_fp8(src: str | os.PathLike, out: str | os.PathLike, keep_refiners: bool = False,
                          stats: bool = False) -> dict[str, tuple[str, float | None]]:
    """Scaled fp8 safetensors (per-tensor scale_weight + scaled_fp8 marker); returns the same report."""
    out = Path(out)
    _refuse_existing(out)
    result, report = scaled_fp8_state_dict(read_state_dict(src), keep_refiners, stats)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        save_file(result, str(tmp))
        _refuse_existing(out)
        move_into_place(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return report


def print_report(report: dict[str, tuple[str, float | None]], stats: bool) -> None:
    counts: dict[str, int] = {}
    for qtype, _ in report.values():
        counts[qtype] = counts.get(qtype, 0) + 1
    print("tensor types: " + ", ".join(f"{t}×{n}" for t, n in sorted(counts.items())), file=sys.stderr)
    if stats:
        print(f"{'tensor':60s} {'type':>10s} {'rel. RMS error':>15s}")
        for key, (qtype, err) in report.items():
            print(f"{key:60s} {qtype:>10s} {'' if err is None else f'{err:15.6f}'}")


def run(args: argparse.Namespace) -> None:
    try:
        if args.type.lower() == SCALED_FP8:
            report = convert_to_scaled_fp8(args.input, args.output, args.keep_refiners, args.stats)
        else:
            report = convert_to_gguf(args.input, args.output, args.type.upper(), args.keep_refiners, args.stats)
    except FileExistsError as exc:
        raise SystemExit(str(exc)) from None
    print_report(report, args.stats)
    print(f"wrote {args.output}", file=sys.stderr)


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a Z-Image DiT or Fun ControlNet patch to GGUF or scaled fp8")
    p.add_argument("input", help="Z-Image DiT .safetensors (ComfyUI or diffusers layout) or Fun ControlNet patch")
    p.add_argument("output", help="output .gguf (or .safetensors for scaled_fp8); never overwritten")
    p.add_argument("--type", default="Q8_0", help="Q8_0, Q6_K, Q5_K, Q4_K, Q5_0, Q5_1, Q4_0, Q4_1, F16, BF16 or scaled_fp8")
    p.add_argument("--keep-refiners", action="store_true", help="keep the refiner blocks in BF16")
    p.add_argument("--stats", action="store_true", help="print each tensor's type and relative RMS error")
    p.set_defaults(func=run)
