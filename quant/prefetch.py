"""Low-VRAM weight streaming for quantized layers: copy the next offloaded layer's blocks while this one computes.

When ComfyUI's partial loading leaves layers on the CPU, each forward must bring their raw blocks to the GPU.
`Prefetcher` overlaps that copy with compute: the order in which offloaded layers run is recorded on the
first pass; from then on, when offloaded layer i starts, layer i+1's blocks are copied on a side CUDA stream
(from pinned memory, pinned once per layer) and layer i+1 waits only for that copy. ComfyUI still decides
which layers live where (its partial loading is untouched); only the copy of the ones it left behind moves
off the critical path. One copy is in flight at a time (one layer's blocks of extra VRAM), and a copy is used
only by the layer and weight it was made from. CUDA only; `ZIT_PREFETCH=0` turns it off.
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import torch

ENABLED = os.environ.get("ZIT_PREFETCH", "1") != "0"


class Copier(Protocol):
    """How blocks reach the device: now (on the compute stream) or ahead (asynchronously)."""

    def copy_now(self, weight: torch.Tensor) -> torch.Tensor: ...

    def start_copy(self, layer: torch.nn.Module) -> Any: ...

    def finish_copy(self, handle: Any) -> torch.Tensor: ...


class CudaSideStreamCopier:
    """Copies on a side CUDA stream from pinned memory; the compute stream waits on an event."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def copy_now(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to(self.device, non_blocking=True)

    def start_copy(self, layer: torch.nn.Module):
        if not layer.weight.is_pinned():
            layer.weight.data = layer.weight.data.pin_memory()  # once: later copies are truly asynchronous
        with torch.cuda.stream(self.stream):
            moved = layer.weight.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        return moved, event

    def finish_copy(self, handle) -> torch.Tensor:
        moved, event = handle
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(event)
        moved.record_stream(compute)
        return moved


@dataclass
class _InFlight:
    layer: weakref.ref
    source: torch.Tensor  # alias of the storage copied (kept alive, so a new storage cannot reuse its address)
    handle: Any


class Prefetcher:
    """The recorded order of offloaded layers and the one copy made ahead."""

    def __init__(self, device: torch.device, copier: Copier | None = None) -> None:
        self.device = device
        self.copier = copier if copier is not None else CudaSideStreamCopier(device)
        self.order: list[weakref.ref] = []
        self.position: dict[int, int] = {}
        self.in_flight: _InFlight | None = None

    def _position(self, layer) -> int:
        index = self.position.get(id(layer))
        if index is None or self.order[index]() is not layer:  # new layer, or a dead one's id reused
            self._forget_dead_layers()
            index = len(self.order)
            self.position[id(layer)] = index
            self.order.append(weakref.ref(layer))
        return index

    def _forget_dead_layers(self) -> None:
        """Drop the layers of unloaded models from the order (it would otherwise grow with every model loaded)."""
        if all(ref() is not None for ref in self.order):
            return
        self.order = [ref for ref in self.order if ref() is not None]
        self.position = {id(ref()): i for i, ref in enumerate(self.order)}

    def fetch(self, layer) -> torch.Tensor:
        """The layer's weight (still quantized) on the device; starts copying the next offloaded layer."""
        index = self._position(layer)
        ahead, self.in_flight = self.in_flight, None
        if ahead is not None and ahead.layer() is layer and ahead.source.data_ptr() == layer.weight.data_ptr():
            moved = self.copier.finish_copy(ahead.handle)
        else:
            moved = self.copier.copy_now(layer.weight)
        upcoming = self.order[index + 1]() if index + 1 < len(self.order) else None
        if upcoming is not None and upcoming is not layer and getattr(upcoming, "weight", None) is not None \
                and upcoming.weight.device.type == "cpu":
            handle = self.copier.start_copy(upcoming)
            self.in_flight = _InFlight(weakref.ref(upcoming), upcoming.weight.data, handle)
        return moved


_prefetchers: dict[torch.device, Prefetcher] = {}


def prefetcher_for(device: torch.device) -> Prefetcher | None:
    """The device's prefetcher, or None where streaming does not apply (CPU, disabled)."""
    if not ENABLED or device.type != "cuda":
        return None
    if device not in _prefetchers:
        _prefetchers[device] = Prefetcher(device)
    return _prefetchers[device]
