"""Random full-size models for the benchmarks, in memory or written as the files users have.

Weights are random (fixtures/tiny_models.py's scaling) at the shapes of fixtures/shapes.py. Built on the GPU
when there is one (seconds for 10B values), then kept on the CPU like a loaded file. GGUF files are quantized
by this pack's quantizer (on `device`) with the same precision policy as `python -m zimage_turbo quantize`.
Needs `bench_host.setup_host` first (the pack is imported as `zimage_turbo`).
"""
from __future__ import annotations

from pathlib import Path

import torch

FLOAT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int, device: torch.device,
                   dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """A seeded random state dict built on `device`, returned on the CPU (the GPU cache is emptied)."""
    from zimage_turbo.fixtures.tiny_models import random_state_dict
    built = random_state_dict(shapes, seed=seed, dtype=dtype, device=device)
    out = {k: v.cpu() for k, v in built.items()}
    del built
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def quantized_dit(sd: dict[str, torch.Tensor], target: str, device: torch.device) -> dict[str, torch.Tensor]:
    """The quantize command's result in memory: QuantizedTensors where the policy says so, 16/32-bit tensors
    as plain tensors (as the GGUF loader returns them)."""
    from zimage_turbo.quant.convert import quantize_dit_tensor, tensor_type
    plain = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    out = {}
    for key, value in sd.items():
        qtype = tensor_type(key, tuple(value.shape), target)
        out[key] = value.to(plain[qtype]) if qtype in plain else quantize_dit_tensor(key, value, target, device=device)
    return out


def write_dit(sd: dict[str, torch.Tensor], fmt: str, folder: Path, device: torch.device) -> Path:
    """The DiT as `bf16`/`fp16` safetensors or a GGUF of type `fmt` (Q8_0, Q4_K, …)."""
    from zimage_turbo.fixtures.tiny_models import save_safetensors_atomic
    from zimage_turbo.quant.convert import dit_gguf_metadata, quantize_dit_tensor
    from zimage_turbo.quant.gguf_writer import write_gguf
    if fmt in FLOAT_DTYPES:
        return save_safetensors_atomic({k: v.to(FLOAT_DTYPES[fmt]) for k, v in sd.items()},
                                       folder / f"z_image_turbo_random_{fmt}.safetensors")
    path = folder / f"z_image_turbo_random-{fmt}.gguf"
    tensors = {k: quantize_dit_tensor(k, v, fmt, device=device) for k, v in sd.items()}
    write_gguf(path, tensors, dit_gguf_metadata("Z-Image-Turbo random (bench)", fmt))
    return path


def write_text_encoder(sd: dict[str, torch.Tensor], spec, fmt: str, folder: Path, device: torch.device,
                       random_embedding: bool = False) -> Path:
    """Qwen3 as bf16 safetensors (qwen_3_4b.safetensors' layout) or a llama.cpp-style GGUF of type `fmt`
    with the Qwen2 BPE tokenizer of ComfyUI's bundled files in its metadata, as real GGUFs have.

    `random_embedding`: the embedding gets random valid blocks instead of quantized ones (the quantizer is
    slow on a CPU for a 151936-row table; the result loads and encodes the same way).
    """
    from zimage_turbo.fixtures.tiny_models import random_quant_blocks, save_safetensors_atomic, write_qwen3_gguf
    from zimage_turbo.loaders.gguf_tokenizer import bundled_tokenizer_dir
    from zimage_turbo.loaders.keymaps import hf_to_llama_cpp
    from zimage_turbo.quant.quantize import quantize
    from zimage_turbo.quant.tensor import QuantizedTensor
    if fmt in FLOAT_DTYPES:
        return save_safetensors_atomic({k: v.to(FLOAT_DTYPES[fmt]) for k, v in sd.items()},
                                       folder / f"qwen_3_4b_random_{fmt}.safetensors")
    tensors = {}
    for i, (key, value) in enumerate(sd.items()):
        name = hf_to_llama_cpp(key)
        if value.ndim == 1:
            tensors[name] = (value.float(), "F32")
        elif random_embedding and key == "model.embed_tokens.weight":
            tensors[name] = random_quant_blocks(tuple(value.shape), fmt, seed=i, std=spec.hidden_size ** -0.5)
        else:
            tensors[name] = QuantizedTensor(quantize(value, fmt, device=device), fmt, tuple(value.shape), name)
    return write_qwen3_gguf(folder / f"Qwen3-4B-random-{fmt}.gguf", spec, fmt, tokenizer_dir=bundled_tokenizer_dir(),
                            tensors=tensors, metadata={"general.name": f"Qwen3 random ({fmt}, bench)"})


def write_vae(sd: dict[str, torch.Tensor], folder: Path) -> Path:
    """The Flux VAE as ae.safetensors."""
    from zimage_turbo.fixtures.tiny_models import save_safetensors_atomic
    return save_safetensors_atomic(sd, folder / "ae_random.safetensors")
