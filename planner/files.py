"""What a model file holds, from its header only: role (DiT / text encoder / VAE), tensors, bytes per type.

Safetensors: the JSON header (dtype and shape per tensor). GGUF: the tensor infos (GGML type and shape).
No tensor data is read, so a 12 GB file is inspected in milliseconds. `synthetic_*` build the same record
from the shape tables in `fixtures/shapes.py` for the published files (bf16, fp8, GGUF quants): the planner
can answer without any file present, and tests have figures to check against.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..fixtures.shapes import (FLUX_VAE, QWEN3_4B, ZIMAGE_TURBO, DiTSpec, FluxVAESpec, Qwen3Spec,
                               dit_state_dict_shapes, qwen3_state_dict_shapes, vae_state_dict_shapes)
from ..loaders.detect import classify, strip_known_prefix

ROLES = ("te", "dit", "vae")
# safetensors dtype -> bytes per element
ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E8M0": 1}
FLOAT_TYPES = {"F64", "F32", "F16", "BF16"}
FP8_TYPES = {"F8_E4M3", "F8_E5M2"}
# Quality order of weight formats (higher is closer to the bf16 original), for choosing among files.
QUALITY = {"F32": 100, "BF16": 100, "F16": 99, "Q8_0": 90, "I8": 89, "F8_E4M3": 88, "F8_E5M2": 85, "Q6_K": 80,
           "Q5_K": 70, "Q5_1": 69, "Q5_0": 68, "Q4_K": 60, "IQ4_XS": 58, "IQ4_NL": 57, "Q4_1": 56, "Q4_0": 55,
           "Q3_K": 45, "IQ3_S": 44, "IQ3_XXS": 42, "Q2_K": 30, "IQ2_S": 28, "IQ2_XS": 26, "IQ2_XXS": 25, "IQ1_M": 15,
           "IQ1_S": 10, "TQ2_0": 10, "TQ1_0": 8, "MXFP4": 55, "NVFP4": 58}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name (BF16, F8_E4M3 …) or GGML type name (Q4_K, F32 …)
    n_bytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelFile:
    """A model file as the planner sees it."""
    name: str
    role: str  # "te" | "dit" | "vae" | "control_patch"
    fmt: str  # "safetensors" | "gguf"
    tensors: tuple[Tensor, ...] = field(repr=False)
    path: str | None = None
    file_bytes: int | None = None

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def weight_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    def bytes_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.dtype] = out.get(t.dtype, 0) + t.n_bytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    @property
    def main_type(self) -> str:
        """The type holding most of the 2-D weights (what the file is 'called')."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            if len(t.shape) >= 2:
                counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        return max(counts, key=counts.get) if counts else "?"

    @property
    def quality(self) -> int:
        return QUALITY.get(self.main_type, 50)

    @property
    def label(self) -> str:
        return f"{self.name} [{self.main_type}, {self.weight_bytes / 1e9:.2f} GB]"


def _gguf_tensors(path: str) -> tuple[str | None, list[Tensor]]:
    from ..quant.gguf_reader import GGUFFile
    from ..quant.types import QUANT_TYPES
    with GGUFFile(path) as g:  # only regular files; the reader refuses unknown type ids
        arch = g.metadata.get("general.architecture")
        tensors = [Tensor(i.name, i.shape, QUANT_TYPES[i.type_id].name, i.n_bytes) for i in g]
    return (arch if isinstance(arch, str) else None), tensors


GGUF_TE_ARCHS = ("qwen3",)


def _role(shapes: dict[str, tuple[int, ...]], arch: str | None) -> str | None:
    if arch in GGUF_TE_ARCHS or "blk.0.attn_q_norm.weight" in shapes:
        return "te"
    _, inner = strip_known_prefix(shapes)
    kind = classify(inner)
    if kind is None:
        return None
    return {"zimage_dit": "dit", "zimage_dit_diffusers": "dit", "qwen3_te": "te", "flux_vae": "vae",
            "zimage_controlnet": "control_patch"}.get(kind.name)


def inspect_file(path: str | os.PathLike) -> ModelFile | None:
    """The file's record, or None when it is no Z-Image DiT, Qwen3 encoder or Flux VAE (or unreadable)."""
    from ..loaders.dit_quant_formats import header_model_shapes
    from ..loaders.errors import ModelFileError
    from ..loaders.gguf_io import is_gguf
    from ..loaders.safetensors_file import read_header
    from ..quant.gguf_reader import GGUFError
    path = os.fspath(path)
    try:
        if is_gguf(path):
            arch, tensors = _gguf_tensors(path)
            fmt = "gguf"
            shapes = {t.name: t.shape for t in tensors}
        else:
            header = read_header(path)
            arch, fmt = None, "safetensors"
            tensors = [Tensor(k, v.shape, v.dtype, math.prod(v.shape) * ST_BYTES[v.dtype])
                       for k, v in header.tensors.items()]
            shapes = header_model_shapes([header])  # nvfp4 weights as wide as the model's layers
    except (ModelFileError, GGUFError, OSError, ValueError):
        return None
    role = _role(shapes, arch)
    if role is None:
        return None
    return ModelFile(Path(path).name, role, fmt, tuple(tensors), path, os.path.getsize(path))


# ComfyUI models/ sub-folders where each role's files live.
ROLE_FOLDERS = {"dit": ("diffusion_models", "unet"), "te": ("text_encoders", "clip"), "vae": ("vae",),
                "control_patch": ("model_patches",)}
EXTENSIONS = (".safetensors", ".sft", ".gguf")


def scan_models_dir(models_dir: str | os.PathLike) -> list[ModelFile]:
    """Every recognised file under a ComfyUI `models/` folder (by content: a mis-filed file is still found)."""
    found: list[ModelFile] = []
    seen: set[str] = set()
    for folders in ROLE_FOLDERS.values():
        for folder in folders:
            base = Path(models_dir) / folder
            if not base.is_dir():
                continue
            for p in sorted(base.rglob("*")):
                if p.suffix.lower() in EXTENSIONS and p.is_file() and str(p.resolve()) not in seen:
                    seen.add(str(p.resolve()))
                    mf = inspect_file(p)
                    if mf is not None:
                        found.append(mf)
    return found


# ------------------------------------------------------------------------------------------ synthetic files
def _typed(shapes: dict[str, tuple[int, ...]], pick) -> tuple[Tensor, ...]:
    from ..quant.types import get_quant_type
    out = []
    for name, shape in shapes.items():
        dtype = pick(name, shape)
        n = math.prod(shape)
        if dtype in ST_BYTES:
            nb = n * ST_BYTES[dtype]
        else:
            qt = get_quant_type(dtype)
            nb = n // qt.block_size * qt.type_size
        out.append(Tensor(name, tuple(shape), dtype, nb))
    return tuple(out)


# Parts of the DiT that city96-style GGUFs keep in 16 bit (FACTS §4.4): embedders, final layer, refiners.
DIT_KEEP_HIGH = ("t_embedder.", "x_embedder.", "final_layer.", "cap_embedder.", "context_refiner.", "noise_refiner.")


def synthetic_dit(weight: str = "BF16", spec: DiTSpec = ZIMAGE_TURBO, name: str | None = None) -> ModelFile:
    """A Z-Image DiT file record: BF16/F16/F32/F8_E4M3/F8_E5M2 safetensors, or a GGUF of a GGML type.

    GGUF layout as published (city96 style): 2-D `layers.*` weights in the type, 1-D tensors F32,
    embedders/refiners/final layer BF16. fp8 safetensors: 2-D weights fp8, the rest BF16. I8 (Comfy-Org's INT8
    ConvRot file): 2-D weights int8, the rest F32 (its tensors are I8, F32 and the U8 `.comfy_quant` entries).
    """
    gguf = weight not in ST_BYTES

    def pick(key, shape):
        if weight == "I8":
            return "I8" if len(shape) >= 2 and math.prod(shape) > 1024 and not key.endswith("pad_token") else "F32"
        if gguf:
            if len(shape) == 1 or math.prod(shape) <= 1024:
                return "F32"
            if key.startswith(DIT_KEEP_HIGH) or key.endswith("pad_token"):
                return "BF16"
            return weight
        if weight in FP8_TYPES:
            return weight if len(shape) >= 2 and not key.endswith("pad_token") else "BF16"
        return weight
    name = name or (f"z_image_turbo-{weight}.gguf" if gguf else f"z_image_turbo_{weight.lower()}.safetensors")
    return ModelFile(name, "dit", "gguf" if gguf else "safetensors", _typed(dit_state_dict_shapes(spec), pick))


def synthetic_control_patch(weight: str = "BF16", version: str = "2.1", spec: DiTSpec = ZIMAGE_TURBO,
                            name: str | None = None) -> ModelFile:
    """A Fun ControlNet patch record (`fixtures/tiny_controlnet.py` layouts at the DiT's width): BF16 as
    published, or a GGUF of the pack's quantize command (1-D and small tensors F32, the embedder BF16)."""
    from ..fixtures.tiny_controlnet import CONTROL_VERSIONS, controlnet_shapes_comfy
    gguf = weight not in ST_BYTES

    def pick(key, shape):
        if gguf and (len(shape) == 1 or math.prod(shape) <= 4096):
            return "F32"
        if gguf and key.startswith("control_all_x_embedder."):
            return "BF16"
        return weight if len(shape) >= 2 or gguf else "BF16"
    shapes = controlnet_shapes_comfy(CONTROL_VERSIONS[version], spec)
    name = name or f"Z-Image-Turbo-Fun-Controlnet-Union-{version}" + (f"-{weight}.gguf" if gguf else ".safetensors")
    return ModelFile(name, "control_patch", "gguf" if gguf else "safetensors", _typed(shapes, pick))


def synthetic_te(weight: str = "BF16", spec: Qwen3Spec = QWEN3_4B, name: str | None = None) -> ModelFile:
    """A Qwen3-4B file record: safetensors (HF names) or a llama.cpp GGUF (2-D weights in the type, 1-D F32)."""
    gguf = weight not in ST_BYTES
    shapes = qwen3_state_dict_shapes(spec)
    if gguf:  # llama.cpp names; the converter keeps all 36 layers (the file is an LLM file)
        shapes = {_gguf_te_name(k): v for k, v in shapes.items()}

    def pick(key, shape):
        if gguf:
            return "F32" if len(shape) == 1 else weight
        if weight in FP8_TYPES:  # mixed fp8: the layers' matrices fp8, the embedding and norms bf16
            return weight if len(shape) >= 2 and "embed_tokens" not in key else "BF16"
        return weight
    name = name or (f"Qwen3-4B-{weight}.gguf" if gguf else f"qwen_3_4b_{weight.lower()}.safetensors")
    return ModelFile(name, "te", "gguf" if gguf else "safetensors", _typed(shapes, pick))


_TE_GGUF_NAMES = (("model.embed_tokens.", "token_embd."), ("model.norm.", "output_norm."), ("model.layers.", "blk."),
                  ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
                  ("self_attn.q_norm", "attn_q_norm"), ("self_attn.k_norm", "attn_k_norm"),
                  ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                  ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                  ("mlp.down_proj", "ffn_down"))


def _gguf_te_name(key: str) -> str:
    for a, b in _TE_GGUF_NAMES:
        key = key.replace(a, b)
    return key


def synthetic_vae(weight: str = "F32", spec: FluxVAESpec = FLUX_VAE, name: str = "ae.safetensors") -> ModelFile:
    """The Flux VAE file record (ae.safetensors is F32, 335 MB)."""
    return ModelFile(name, "vae", "safetensors", _typed(vae_state_dict_shapes(spec), lambda k, s: weight))


def record_from_state_dict(name: str, role: str, sd: dict) -> ModelFile:
    """A record for an in-memory state dict (benchmarks build random full-size models without files)."""
    names = {"torch.bfloat16": "BF16", "torch.float16": "F16", "torch.float32": "F32",
             "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2"}
    tensors = tuple(Tensor(k, tuple(v.shape), names.get(str(v.dtype), "F32"), v.numel() * v.element_size())
                    for k, v in sd.items())
    return ModelFile(name, role, "safetensors", tensors)
