"""Low-VRAM weight streaming for quantized layers: copy the next offloaded layer's blocks while this one computes.

When ComfyUI's partial loading leaves layers on the CPU, each forward must bring their raw blocks to the GPU.
`Prefetcher` overlaps that copy with compute: the order in which offloaded layers run is recorded on the
first pass; from then on, when offloaded layer i starts, layer i+1's blocks are copied on a side CUDA stream
(from pinned memory, pinned once per layer) and layer i+1 waits only for that event. ComfyUI still decides
which layers live where (its partial loading is untouched); only the copy of the ones it left behind moves
off the critical path. CUDA only; `ZIT_PREFETCH=0` turns it off.
"""
from __future__ import annotations

import os
import weakref

import torch

ENABLED = os.environ.get("ZIT_PREFETCH", "1") != "0"


class Prefetcher:
    """Per-device stream, the recorded order of offloaded layers and the blocks copied ahead."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.order: list[weakref.ref] = []
        self.position: dict[int, int] = {}
        self.ready: dict[int, tuple[torch.Tensor, torch.cuda.Event]] = {}

    def _record(self, layer) -> None:
        if id(layer) not in self.position:
            self.position[id(layer)] = len(self.order)
            self.order.append(weakref.ref(layer))

    def _copy(self, layer) -> tuple[torch.Tensor, torch.cuda.Event] | None:
        weight = layer.weight
        if weight is None or weight.device.type != "cpu":
            return None
        if not weight.is_pinned():
            layer.weight.data = weight.data.pin_memory()  # once: later copies are truly asynchronous
            weight = layer.weight
        with torch.cuda.stream(self.stream):
            moved = weight.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        return moved, event

    def fetch(self, layer):
        """The layer's weight (still quantized) on the device; starts copying the next offloaded layer."""
        self._record(layer)
        ahead = self.ready.pop(id(layer), None)
        if ahead is not None:
            moved, event = ahead
            torch.cuda.current_stream(self.device).wait_event(event)
            moved.record_stream(torch.cuda.current_stream(self.device))
        else:
            moved = layer.weight.to(self.device, non_blocking=True)
        nxt = self.position[id(layer)] + 1
        if nxt < len(self.order):
            upcoming = self.order[nxt]()
            if upcoming is not None and id(upcoming) not in self.ready:
                copied = self._copy(upcoming)
                if copied is not None:
                    self.ready[id(upcoming)] = copied
        return moved


_prefetchers: dict[torch.device, Prefetcher] = {}


def prefetcher_for(device: torch.device) -> Prefetcher | None:
    """The device's prefetcher, or None where streaming does not apply (CPU, disabled)."""
    if not ENABLED or device.type != "cuda":
        return None
    if device not in _prefetchers:
        _prefetchers[device] = Prefetcher(device)
    return _prefetchers[device]
