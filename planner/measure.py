"""Peak-memory accounting for tensor code on any device (CPU included), without a GPU allocator.

`PeakTracker` is a TorchDispatchMode: every tensor an op *allocates* (an output that does not alias an
input) is counted until the last tensor object referring to its storage is garbage collected. This is how
the planner's activation formulas are checked on CPU against real ComfyUI forward passes: it counts bytes
the way a caching allocator would have to provide them (no fragmentation, no allocator rounding).
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTracker(TorchDispatchMode):
    """`with PeakTracker() as t: ...` then `t.peak` = most bytes held at once by tensors made inside."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage data_ptr -> [bytes, tensor refs]

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.live -= entry[0]
            del self._storages[key]

    def _track(self, t: torch.Tensor, aliases: bool) -> None:
        if t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        entry = self._storages.get(key)
        if entry is None:
            if aliases:
                return  # a view of something made outside (a weight, an input): no new memory
            entry = self._storages[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        flat, _ = tree_flatten(out)
        for i, t in enumerate(flat):
            if isinstance(t, torch.Tensor):
                alias = i < len(returns) and returns[i].alias_info is not None
                self._track(t, alias)
        return out
