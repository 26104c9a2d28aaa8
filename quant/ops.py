"""ComfyUI custom operations for quantized weights (the only module of quant/ that imports comfy).

`QuantOps` plugs into a model like `comfy.ops.manual_cast` does (it *is* a manual_cast subclass): Linear and
Embedding layers accept `QuantizedTensor` weights from the state dict as they are (no dense copy is ever
made at load time) and dequantize per use, on the device and in the dtype of the input. Everything ComfyUI
does to a layer keeps working:

- moving and measuring: the weight is a uint8 tensor of raw blocks, `.to(device)` moves the blocks and
  `nelement() * element_size()` is the real size, so low-VRAM partial loading budgets correctly;
- `weight_function` / `bias_function` (ComfyUI's LowVramPatch and other patches) are applied to the
  dequantized weight, as core's cast does;
- LoRA on a quantized weight is a low-rank side computation (`lora_side`, filled by `QuantModelPatcher`):
  out += scale · (x · Aᵀ) · Bᵀ, never a dense delta added to a dequantized weight;
- interruption: ComfyUI's per-op interrupt check runs first (`forward` is core's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import comfy.model_management
import comfy.ops

from .dequant_ops import dequantize_rows
from .prefetch import prefetcher_for
from .tensor import QuantizedTensor


def is_quantized(t) -> bool:
    return isinstance(t, QuantizedTensor)


def cast_weight(layer: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The layer's weight, dense, in `dtype` on `device`, with its weight functions applied."""
    weight = layer.weight
    non_blocking = comfy.model_management.device_supports_non_blocking(device)
    if is_quantized(weight):
        prefetcher = prefetcher_for(device) if weight.device != device else None
        moved = prefetcher.fetch(layer) if prefetcher else weight.to(device, non_blocking=non_blocking)
        weight = moved.dequantize(dtype)
    else:
        weight = comfy.model_management.cast_to(weight, dtype, device, non_blocking=non_blocking,
                                                copy=len(layer.weight_function) > 0)
    for fn in layer.weight_function:
        weight = fn(weight)
    return weight


def cast_bias(layer: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    bias = layer.bias
    if bias is None:
        return None
    if is_quantized(bias):
        bias = bias.to(device).dequantize(dtype)
    else:
        bias = comfy.model_management.cast_to(bias, dtype, device, copy=len(layer.bias_function) > 0)
    for fn in layer.bias_function:
        bias = fn(bias)
    return bias


class LoRASide:
    """One low-rank patch applied beside the layer: out += scale · up(down(x)).

    `rows` = (start, length) limits it to a row slice of the weight (output features), e.g. a to_q LoRA on
    the fused qkv: only out[..., start:start + length] changes. `cache`: keep the factors cast to the compute
    device between calls (for sides that live only while the model is loaded, as QuantModelPatcher's do).
    """

    __slots__ = ("down", "up", "scale", "rows", "cache", "_cast")

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scale: float,
                 rows: tuple[int, int] | None = None, cache: bool = True) -> None:
        self.down, self.up, self.scale, self.rows, self.cache = down, up, scale, rows, cache
        self._cast: tuple = ()

    def _factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """down and up on x's device and dtype, the scale folded into up (cast once when cached)."""
        if self._cast and self._cast[0] == (x.device, x.dtype):
            return self._cast[1], self._cast[2]
        down = self.down.to(device=x.device, dtype=x.dtype)
        up = (self.up.to(device=x.device, dtype=torch.float32) * self.scale).to(x.dtype)
        if self.cache:
            self._cast = ((x.device, x.dtype), down, up)
        return down, up

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        down, up = self._factors(x)
        return F.linear(F.linear(x, down), up)

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out + this patch's contribution (on its row slice only, when it has one)."""
        if self.rows is None:
            return out + self(x)
        start, length = self.rows
        out.narrow(-1, start, length).add_(self(x))  # `out` is the layer's own fresh output
        return out


class QuantLayer:
    """What every quantized op shares: state-dict loading that keeps the blocks, and LoRA side patches."""

    comfy_cast_weights = True
    lora_side: list = []

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("weight", "bias"):
            key = prefix + name
            if key in state_dict:
                value = state_dict[key]
                expected = self.expected_shape(name)
                shape = tuple(value.logical_shape if is_quantized(value) else value.shape)
                if expected is not None and shape != expected:
                    error_msgs.append(f"size mismatch for {key}: file has {shape}, the model expects {expected}")
                    continue
                setattr(self, name, torch.nn.Parameter(value, requires_grad=False))
            elif name == "weight" or getattr(self, "has_bias", False):
                missing_keys.append(key)

    def expected_shape(self, name: str) -> tuple[int, ...] | None:
        return None


class QuantOps(comfy.ops.manual_cast):
    """Operations for models whose weights may be `QuantizedTensor`s (GGUF)."""

    class Linear(QuantLayer, comfy.ops.manual_cast.Linear):
        def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
            torch.nn.Module.__init__(self)  # no dense allocation: the state dict brings the weights
            self.in_features, self.out_features = in_features, out_features
            self.weight = None
            self.bias = None
            self.has_bias = bias
            self.lora_side = []

        def expected_shape(self, name):
            return (self.out_features, self.in_features) if name == "weight" else (self.out_features,)

        def reset_parameters(self):
            return None

        def forward_comfy_cast_weights(self, input):
            weight = cast_weight(self, input.dtype, input.device)
            out = F.linear(input, weight, cast_bias(self, input.dtype, input.device))
            for side in self.lora_side:
                out = side.add_to(out, input)
            return out

    class Embedding(QuantLayer, comfy.ops.manual_cast.Embedding):
        def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None,
                     norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False,
                     device=None, dtype=None) -> None:
            torch.nn.Module.__init__(self)
            self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
            self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = max_norm, norm_type, False, False
            self.compute_dtype = dtype if dtype is not None and dtype.is_floating_point else torch.float32
            self.weight = None
            self.bias = None
            self.lora_side = []

        def expected_shape(self, name):
            return (self.num_embeddings, self.embedding_dim) if name == "weight" else None

        def reset_parameters(self):
            return None

        def forward_comfy_cast_weights(self, input, out_dtype=None):
            dtype = out_dtype or self.compute_dtype
            if is_quantized(self.weight) and not self.weight_function:
                # Only the rows of the tokens asked for are dequantized (the table stays quantized).
                ids, inverse = torch.unique(input.to(self.weight.device), return_inverse=True)
                rows = dequantize_rows(self.weight, ids, dtype).to(input.device)
                return rows[inverse.to(input.device)]
            weight = cast_weight(self, dtype, input.device)
            return F.embedding(input, weight, self.padding_idx, self.max_norm, self.norm_type)
