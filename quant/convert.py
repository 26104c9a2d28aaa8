"""The quantize command: a Z-Image DiT (or Fun ControlNet patch) safetensors file → GGUF (Q8_0, Q6_K, Q5_K, Q4_K,
Q4_0, …) or scaled fp8.

    python -m zimage_turbo quantize z_image_turbo_bf16.safetensors z_image_turbo-Q4_K.gguf --type Q4_K
    python -m zimage_turbo quantize z_image_turbo_bf16.safetensors z_image_turbo_fp8_scaled.safetensors --type scaled_fp8

Input: ComfyUI or diffusers layout (diffusers is renamed to ComfyUI's), or a Z-Image Fun ControlNet patch
(models/model_patches; its q/k/v are fused as ComfyUI's `ZImage_Control` holds them, GGUF architecture
`zimage_control`). The output never replaces an existing file, is written under a temporary name and renamed
when complete.

Before any work the command checks, in this order: the --type (one of TARGET_TYPES); the output (not there, not
a link, in an existing folder that takes a new file); the input, from its header only (a regular safetensors
file holding a Z-Image DiT or patch by content, not a VAE, encoder, GGUF, pickle, damaged or already quantized
file); the free space against the output's size computed from the input's shapes. Every failure is one line on
stderr and a non-zero exit; SIGINT, SIGTERM and SIGHUP remove the temporary (once the output is published, a
signal no longer fails the command).

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
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
import tempfile
from typing import TYPE_CHECKING, Callable

import torch
from safetensors.torch import save_file

from . import output_file
from .final_name import move_into_place
from .gguf_writer import write_gguf
from .quantize import quantize
from .signal_guard import Interrupted, SignalGuard
from .tensor import QuantizedTensor
from .types import QUANT_TYPES, get_quant_type

if TYPE_CHECKING:
    from ..loaders.safetensors_file import SafetensorsHeader

KEEP_F32_MAX_ELEMENTS = 4096
HIGH_PRECISION_PREFIXES = ("t_embedder.", "x_embedder.", "cap_embedder.", "final_layer.", "control_all_x_embedder.")
REFINER_PREFIXES = ("noise_refiner.", "context_refiner.", "control_noise_refiner.")
PAD_TOKENS = ("x_pad_token", "cap_pad_token")
FALLBACK_TYPES = ("Q8_0", "F16")
FP8_MAX = 448.0
SCALED_FP8 = "scaled_fp8"
GGUF_ARCHITECTURE = "lumina2"  # what city96's ComfyUI-GGUF writes for Z-Image / Lumina 2 DiTs
CONTROLNET_GGUF_ARCHITECTURE = "zimage_control"  # this pack's name for a Fun ControlNet patch GGUF
# --type values: every GGML type this pack can quantize to, and scaled fp8
TARGET_TYPES = tuple(qt.name for qt in QUANT_TYPES.values() if qt.quantize is not None) + (SCALED_FP8,)
EXPECTED = "a Z-Image DiT or a Z-Image Fun ControlNet patch (.safetensors)"
SOURCE_EXAMPLE = "z_image_turbo_bf16.safetensors"
# what read_header found → what to do instead (its own hint speaks of loaders)
FOUND_HINTS = {"a GGUF file": f"A GGUF is already quantized: quantize the .safetensors release (e.g. {SOURCE_EXAMPLE})."}
QUANTIZED_KEY_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale")
ALIGNMENT = 32
GGUF_FIXED_BYTES = 4096  # file header and metadata, generously
GGUF_INFO_BYTES = 8 + 4 + 4 + 8  # per tensor: name length, dimension count, type, offset (+ name, dimensions)
SAFETENSORS_ENTRY_BYTES = 96  # per tensor in the JSON header (+ name)
Publish = Callable[..., None]  # (finished temporary, final name) → the file under its final name


class QuantizeError(ValueError):
    """A quantize request refused before any work (an unsupported type, say); the message is one clear line."""


def tensor_type(key: str, shape: tuple[int, ...], target: str, keep_refiners: bool = False) -> str:
    """The GGML type a tensor gets under the precision policy (see the module docstring)."""
    numel = math.prod(shape)
    if len(shape) < 2 or key in PAD_TOKENS or numel <= KEEP_F32_MAX_ELEMENTS:
        return "F32"
    if key.startswith(HIGH_PRECISION_PREFIXES) or (keep_refiners and key.startswith(REFINER_PREFIXES)):
        return "BF16"
    for candidate in (target, *FALLBACK_TYPES):
        if shape[-1] % get_quant_type(candidate).block_size == 0:
            return candidate
    return "F32"


def is_fp8_weight(key: str, shape: tuple[int, ...], keep_refiners: bool = False) -> bool:
    """Whether the scaled-fp8 form stores this tensor as fp8 with a scale (the 2-D weights of rules 3-4)."""
    return key.endswith(".weight") and len(shape) == 2 and tensor_type(key, shape, "Q8_0", keep_refiners) == "Q8_0"


def check_target(name: str) -> str:
    """The --type as this command names it (case-insensitive), or a QuantizeError listing the supported ones."""
    for target in TARGET_TYPES:
        if name.upper() == target.upper():
            return target
    raise QuantizeError(f"--type {name}: not a type this command writes; supported: {', '.join(TARGET_TYPES)}")


# ------------------------------------------------------------------------------------------------ the source
@dataclass(frozen=True)
class Source:
    """A checked input file: its validated header, the key prefix it carries, whether it is a ControlNet patch,
    and its tensors' shapes in the ComfyUI layout the output will have."""
    header: SafetensorsHeader
    prefix: str
    controlnet: bool
    shapes: dict[str, tuple[int, ...]]


def _join_shapes(parts: list[tuple[int, ...]], name: str) -> tuple[int, ...]:
    """The shape of q/k/v joined along their rows (diffusers → ComfyUI, on shapes only)."""
    return (sum(p[0] for p in parts), *parts[0][1:])


def _refusal(path, shapes: dict, kind):
    """The error for a file that is neither a DiT nor a patch: what it is and what to do with it instead."""
    from ..loaders.detect import KIND_ROLES, PACK_LOADERS, describe, loader_hint
    from ..loaders.errors import ModelFileError
    role = KIND_ROLES.get(kind.name) if kind is not None else None
    if role in ("te", "vae"):
        hint = f"The quantize command converts DiTs and ControlNet patches only; load this file as it is with " \
               f"{PACK_LOADERS[role]}."
    else:
        hint = loader_hint(kind, "dit", f"Give it a Z-Image DiT (e.g. {SOURCE_EXAMPLE}) or a Fun ControlNet patch.")
    return ModelFileError(path, EXPECTED, describe(shapes), hint)


def inspect_source(path: str | os.PathLike) -> Source:
    """Check `path` is a Z-Image DiT or Fun ControlNet patch safetensors file, reading only its header: a special
    file, a GGUF, a pickle, a damaged file or another model is a ModelFileError naming what it is (read_header
    opens regular files only: a folder, link loop or FIFO is named, never waited on)."""
    from ..loaders.controlnet_layout import controlnet_problem, is_controlnet
    from ..loaders.detect import DAMAGED_HINT, classify, describe, strip_known_prefix, zimage_dit_problem
    from ..loaders.dit_layouts import TOP_RENAMES, diffusers_to_comfy, is_diffusers_layout
    from ..loaders.dit_quant_formats import has_scaled_weights, header_model_shapes
    from ..loaders.errors import ModelFileError
    from ..loaders.safetensors_file import read_header
    try:
        header = read_header(path, expected=EXPECTED)
    except ModelFileError as exc:
        if exc.found not in FOUND_HINTS:
            raise
        raise ModelFileError(path, EXPECTED, exc.found, FOUND_HINTS[exc.found]) from None
    prefix, shapes = strip_known_prefix(header_model_shapes([header]))
    kind = classify(shapes)
    controlnet = is_controlnet(shapes)
    if not controlnet and (kind is None or kind.name not in ("zimage_dit", "zimage_dit_diffusers")):
        raise _refusal(path, shapes, kind)
    if has_scaled_weights(header.tensors, header.metadata) or any(k.endswith(QUANTIZED_KEY_SUFFIXES) for k in shapes):
        raise ModelFileError(path, EXPECTED + " in bf16, fp16 or fp32", f"{describe(shapes)}, already quantized "
                             "(scale tensors or quantization metadata)",
                             f"Quantize the bf16 release (e.g. {SOURCE_EXAMPLE}) instead.")
    try:
        if controlnet:
            comfy = diffusers_to_comfy(shapes, top_renames=(), join_rows=_join_shapes)
        else:
            comfy = diffusers_to_comfy(shapes, TOP_RENAMES, _join_shapes) if is_diffusers_layout(shapes) else shapes
        problem = (controlnet_problem if controlnet else zimage_dit_problem)(comfy)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        problem = str(exc.args[0] if exc.args else exc)[:200]
    if problem:
        what = "Z-Image Fun ControlNet patch" if controlnet else "Z-Image DiT"
        raise ModelFileError(path, EXPECTED, f"a damaged {what} ({problem})", DAMAGED_HINT)
    return Source(header, prefix, controlnet, comfy)


def load_source(source: Source) -> dict[str, torch.Tensor]:
    """The tensors of a checked source, without its prefix, in ComfyUI layout (a Fun ControlNet patch in
    `ZImage_Control`'s, its q/k/v fused)."""
    from ..loaders.controlnet_layout import controlnet_to_comfy
    from ..loaders.dit_layouts import diffusers_to_comfy, is_diffusers_layout
    from ..loaders.safetensors_file import load_tensors
    keys = [k for k in source.header.tensors if k.startswith(source.prefix)]
    sd = {k[len(source.prefix):]: v for k, v in load_tensors(source.header, keys).items()}
    if source.controlnet:
        return controlnet_to_comfy(sd)
    return diffusers_to_comfy(sd) if is_diffusers_layout(sd) else sd


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a Z-Image DiT safetensors in ComfyUI layout (a diffusers-layout file is renamed); a Fun
    ControlNet patch comes in ComfyUI's `ZImage_Control` layout. Anything else is a ModelFileError."""
    return load_source(inspect_source(path))


def _aligned(n: int) -> int:
    return n + (-n % ALIGNMENT)


def estimated_gguf_bytes(shapes: dict[str, tuple[int, ...]], target: str, keep_refiners: bool = False) -> int:
    """The size of the GGUF `convert_to_gguf` writes for tensors of these (ComfyUI-layout) shapes."""
    total = GGUF_FIXED_BYTES
    for key, shape in shapes.items():
        qtype = get_quant_type(tensor_type(key, shape, target, keep_refiners))
        total += GGUF_INFO_BYTES + len(key.encode()) + 8 * len(shape) + _aligned(qtype.n_bytes(math.prod(shape)))
    return total


def estimated_scaled_fp8_bytes(shapes: dict[str, tuple[int, ...]], keep_refiners: bool = False) -> int:
    """An upper bound of the scaled-fp8 file's size: fp8 weights and their scales, the rest at 4 bytes an element
    (it keeps the input's dtype, at most fp32 in practice)."""
    total = 8 + SAFETENSORS_ENTRY_BYTES
    for key, shape in shapes.items():
        total += SAFETENSORS_ENTRY_BYTES + len(key.encode())
        if is_fp8_weight(key, shape, keep_refiners):
            total += math.prod(shape) + SAFETENSORS_ENTRY_BYTES + len(key.encode()) + 4
        else:
            total += 4 * math.prod(shape)
    return total


def prepare_output(out: str | os.PathLike) -> Path:
    """Refuse an output that is a link, exists (FileExistsError, as before), or whose folder is missing or takes
    no new file, before any work."""
    out = Path(out)
    output_file.refuse_link(out)
    _refuse_existing(out)
    output_file.check_folder(out)
    return out


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
                    stats: bool = False, publish: Publish = move_into_place) -> dict[str, tuple[str, float | None]]:
    """Quantize a DiT (or Fun ControlNet patch) to GGUF; returns {key: (type, relative RMS error or None)}.

    Everything that could fail is checked first: the type, the output (FileExistsError when it exists), the
    input (ModelFileError unless it is a DiT or patch), the free space (OutputFileError)."""
    target = check_target(target)
    if target == SCALED_FP8:
        raise QuantizeError(f"--type {SCALED_FP8} writes safetensors: use convert_to_scaled_fp8")
    out = prepare_output(out)
    source = inspect_source(src)
    output_file.check_free_space(out, estimated_gguf_bytes(source.shapes, target, keep_refiners))
    sd = load_source(source)
    tensors, report = {}, {}
    for key in _progress(list(sd), f"quantizing to {target}"):
        value = sd[key].float()
        tensors[key] = quantize_dit_tensor(key, value, target, keep_refiners)
        qtype = tensors[key].quant_type.name
        err = relative_rms_error(value, tensors[key].dequantize(torch.float32)) if stats else None
        report[key] = (qtype, err)
    metadata = dit_gguf_metadata(Path(src).stem, target)
    if source.controlnet:
        metadata["general.architecture"] = CONTROLNET_GGUF_ARCHITECTURE
    write_gguf(out, tensors, metadata, publish=publish)
    return report


def scaled_fp8_state_dict(sd: dict[str, torch.Tensor], keep_refiners: bool = False, stats: bool = False
                          ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, float | None]]]:
    """The scaled-fp8 form of a DiT state dict (see the module docstring) and the per-tensor report."""
    result: dict[str, torch.Tensor] = {}
    report = {}
    for key in _progress(list(sd), "converting to scaled fp8"):
        value = sd[key]
        if is_fp8_weight(key, tuple(value.shape), keep_refiners):
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
                          stats: bool = False, publish: Publish = move_into_place) -> dict[str, tuple[str, float | None]]:
    """Scaled fp8 safetensors (per-tensor scale_weight + scaled_fp8 marker); returns the same report. Checks
    first, like `convert_to_gguf`; written under a hidden temporary name, removed on any failure."""
    out = prepare_output(out)
    source = inspect_source(src)
    output_file.check_free_space(out, estimated_scaled_fp8_bytes(source.shapes, keep_refiners))
    result, report = scaled_fp8_state_dict(load_source(source), keep_refiners, stats)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    try:
        os.close(fd)
        try:
            save_file(result, tmp)
        except Exception as exc:  # safetensors reports a full disk as SafetensorError("… os error 28")
            error = output_file.os_error_of(exc)
            if error is None:
                raise
            raise OSError(error.errno, error.strerror, os.fspath(out)) from None
        _refuse_existing(out)
        publish(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    """The command: one clear line on stderr and a non-zero exit for every failure, no traceback."""
    from ..loaders.errors import ModelFileError
    try:
        target = check_target(args.type)
    except QuantizeError as exc:
        return _fail(str(exc), 2)
    out = Path(args.output)
    with SignalGuard() as guard:
        try:
            if target == SCALED_FP8:
                report = convert_to_scaled_fp8(args.input, out, args.keep_refiners, args.stats,
                                               publish=guard.publishing(move_into_place))
            else:
                report = convert_to_gguf(args.input, out, target, args.keep_refiners, args.stats,
                                         publish=guard.publishing(move_into_place))
        except Interrupted as exc:
            return _fail(f"{out}: interrupted by {exc.name}; nothing was written", exc.exit_code)
        except FileExistsError:  # raised, not returned: the existing tests of `run` expect SystemExit here
            raise SystemExit(f"error: {out} already exists: choose another output name (nothing was written or "
                             "replaced)") from None
        except (ModelFileError, QuantizeError, output_file.OutputFileError) as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(f"{out}: could not be written ({output_file.write_failure(exc)}); nothing was left behind")
        print_report(report, args.stats)
        late = f" (a {guard.late} came after it was complete)" if guard.late else ""
        print(f"wrote {out}{late}", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a Z-Image DiT or Fun ControlNet patch to GGUF or scaled fp8")
    p.add_argument("input", help="Z-Image DiT .safetensors (ComfyUI or diffusers layout) or Fun ControlNet patch")
    p.add_argument("output", help="output .gguf (or .safetensors for scaled_fp8); never overwritten; its folder "
                                  "must exist")
    p.add_argument("--type", default="Q8_0", help=", ".join(TARGET_TYPES))
    p.add_argument("--keep-refiners", action="store_true", help="keep the refiner blocks in BF16")
    p.add_argument("--stats", action="store_true", help="print each tensor's type and relative RMS error")
    p.set_defaults(func=run)
