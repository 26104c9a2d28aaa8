"""GGUF files → state dicts: quantized tensors stay `QuantizedTensor` (raw blocks), float tensors are torch views.

Every kept tensor's type and shape is checked when the file is read; the tensors themselves are mapped (zero
copy) when first used, so a file of 100 000 tiny tensors that a loader refuses from its shapes costs no torch
object at all. Reading and mapping check ComfyUI's interrupt flag between tensors.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..quant.gguf_reader import GGUFError, GGUFFile, GGUFTensorInfo
from ..quant.regular_file import NotARegularFile, open_regular_file
from ..quant.tensor import QuantizedTensor
from ..quant.types import QUANT_TYPES, QuantType
from . import interrupt
from .errors import ModelFileError
from .file_access import not_a_model_file

GGUF_MAGIC = b"GGUF"
# GGML float types that become plain torch tensors (views of the mapped file).
PLAIN_TYPES: dict[str, torch.dtype] = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."  # city96's converter stores shapes it had to change here
INTERRUPT_EVERY = 64  # tensors checked or mapped between two looks at ComfyUI's interrupt flag
READABLE_TYPES = " with tensor types this pack can read"


class MappedTensors(Mapping):
    """name -> tensor for the kept tensors of a GGUF file, in file order; each is mapped on first access."""

    def __init__(self, gguf: GGUFFile, infos: Mapping[str, GGUFTensorInfo], shapes: dict[str, tuple[int, ...]],
                 expected: str) -> None:
        self._gguf, self._infos, self._shapes, self._expected = gguf, infos, shapes, expected
        self._mapped: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self._mapped.get(name)
        if tensor is None:
            if len(self._mapped) % INTERRUPT_EVERY == 0:
                interrupt.check_interrupted()
            tensor = self._mapped[name] = self._map(self._infos[name])
        return tensor

    def shape(self, name: str) -> tuple[int, ...]:
        """The logical shape (city96's original shape where the file stores one), without mapping the tensor."""
        return self._shapes.get(name) or self._infos[name].shape

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every kept tensor's logical shape (no tensor is mapped for this)."""
        shapes = {name: info.shape for name, info in self._infos.items()}
        shapes.update(self._shapes)
        return shapes

    def _map(self, info: GGUFTensorInfo) -> torch.Tensor:
        qtype = QUANT_TYPES[info.type_id]
        raw = self._gguf.tensor_bytes(info.name)
        shape = self.shape(info.name)
        if qtype.name in PLAIN_TYPES:
            if raw.data_ptr() % PLAIN_TYPES[qtype.name].itemsize:
                raw = raw.clone()  # a file with general.alignment 1 may place floats at odd addresses
            return raw.view(PLAIN_TYPES[qtype.name]).reshape(shape)
        try:
            return QuantizedTensor.from_raw(raw, qtype, shape, tensor_name=info.name)
        except ValueError as exc:  # checked when the file was read; the file changed since
            raise ModelFileError(self._gguf.path, self._expected, f"a damaged GGUF file ({exc})",
                                 "Re-download the file.") from None


@dataclass
class GGUFStateDict:
    """A GGUF file's kept tensors (by their names in the file, mapped when used) and metadata."""
    path: str
    architecture: str | None
    metadata: dict[str, Any]
    tensors: MappedTensors
    type_names: dict[str, str]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Logical shapes of the kept tensors (no tensor is mapped for this)."""
        return self.tensors.shapes()


def is_gguf(path: str | os.PathLike) -> bool:
    """True when `path` is a regular file that starts with the GGUF magic (decided by content, not by name).

    False for anything else, directories, pipes and broken links included: the caller's next reader reports those.
    """
    try:
        with open_regular_file(path) as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def logical_shape(t: torch.Tensor) -> tuple[int, ...]:
    """The tensor's shape as the model sees it (for a QuantizedTensor, not the raw byte shape)."""
    return tuple(t.logical_shape) if isinstance(t, QuantizedTensor) else tuple(t.shape)


# Parsed files still in use, by file identity: a loader that reads one file several times (names first, then
# the tensors it needs) parses it once. An entry lives as long as a state dict (or tensor) holds the file.
_PARSED: "weakref.WeakValueDictionary[tuple[int, ...], GGUFFile]" = weakref.WeakValueDictionary()


def _identity(path: str | os.PathLike) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def open_gguf(path: str | os.PathLike, expected: str) -> GGUFFile:
    """The parsed file (shared with other readers of the same unchanged file: never modify its metadata);
    ModelFileError (naming the file, `expected` and the fault) for anything unreadable."""
    identity = _identity(path)
    parsed = _PARSED.get(identity) if identity else None
    if parsed is not None and not parsed.closed:
        return parsed
    try:
        parsed = GGUFFile(path)
        if identity:
            _PARSED[identity] = parsed
        return parsed
    except GGUFError as exc:
        raise ModelFileError(path, expected, f"a damaged GGUF file ({exc.reason} at byte {exc.offset})",
                             "Re-download the file.") from None
    except NotARegularFile as exc:
        raise not_a_model_file(exc, expected) from None
    except OSError as exc:  # e.g. a file system that cannot map files
        raise ModelFileError(path, expected, f"a file that cannot be mapped ({exc.strerror or exc})",
                             "Copy the file to a local disk.") from None


def read_gguf_state_dict(path: str | os.PathLike, expected: str, keep: Callable[[str], bool] | None = None
                         ) -> GGUFStateDict:
    """Read a GGUF file as a state dict whose tensors are zero-copy views of the mapped file.

    `keep(name) -> bool` skips tensors that are not needed (they are never touched). Every kept tensor's type
    and shape is checked here; errors in the file become ModelFileError naming the file, `expected` and what
    was wrong.
    """
    gguf = open_gguf(path, expected)
    metadata = gguf.metadata
    infos: Mapping[str, GGUFTensorInfo] = gguf.tensors if keep is None else {}
    shapes: dict[str, tuple[int, ...]] = {}
    type_names: dict[str, str] = {}
    for i, info in enumerate(gguf):
        if i % INTERRUPT_EVERY == 0:
            interrupt.check_interrupted()
        if keep is not None:
            if not keep(info.name):
                continue
            infos[info.name] = info  # type: ignore[index]
        qtype = QUANT_TYPES[info.type_id]  # the reader refuses unknown type ids
        if qtype.dequant is None and qtype.name not in PLAIN_TYPES:
            raise ModelFileError(path, expected + READABLE_TYPES,
                                 f"tensor '{info.name}' of type {qtype.name}, which has no dequantizer",
                                 "Use another quantization of the model.")
        if ORIG_SHAPE_KEY + info.name in metadata:
            shapes[info.name] = _checked_orig_shape(path, expected, metadata, info, qtype)
        type_names[info.name] = qtype.name
    arch = metadata.get("general.architecture")
    return GGUFStateDict(os.fspath(path), arch if isinstance(arch, str) else None, metadata,
                         MappedTensors(gguf, infos, shapes, expected), type_names)


def _checked_orig_shape(path, expected: str, metadata: dict, info: GGUFTensorInfo, qtype: QuantType
                        ) -> tuple[int, ...]:
    orig = metadata[ORIG_SHAPE_KEY + info.name]
    shape = _orig_shape(orig, info.shape)
    if shape is None or (not qtype.is_float and shape[-1] % qtype.block_size):
        raise ModelFileError(path, expected, f"a damaged GGUF file (the original shape {str(orig)[:80]} "
                             f"stored for tensor '{info.name}' does not fit its shape {list(info.shape)})",
                             "Re-download the file.")
    return shape


def _orig_shape(orig: Any, stored: tuple[int, ...]) -> tuple[int, ...] | None:
    """A city96 `orig_shape` entry as a shape, when it is positive integers with the stored tensor's size."""
    if not isinstance(orig, np.ndarray) or orig.ndim != 1 or orig.dtype.kind not in "iu" or not 0 < orig.size <= 8:
        return None
    shape = tuple(int(x) for x in orig.tolist())
    numel = stored_numel = 1
    for d in shape:
        numel *= d
    for d in stored:
        stored_numel *= d
    if any(d <= 0 for d in shape) or numel != stored_numel:
        return None
    return shape


def densify(t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A dense copy of a quantized tensor (used only for small tensors no quantized op owns)."""
    return t.dequantize(dtype) if isinstance(t, QuantizedTensor) else t


def densify_unowned(model: torch.nn.Module, sd: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Dequantize, in place, the quantized tensors of `sd` whose module is not a quantized op.

    Norm weights, pad tokens and the like are plain parameters: they must arrive dense. Large weights of
    Linear/Embedding layers stay quantized.
    """
    from ..quant.ops import QuantLayer
    owned = set()
    for name, module in model.named_modules():
        if isinstance(module, QuantLayer):
            owned.update({f"{prefix}{name}.weight", f"{prefix}{name}.bias"})
    for key, value in sd.items():
        if isinstance(value, QuantizedTensor) and key not in owned:
            sd[key] = value.dequantize(torch.float32)
