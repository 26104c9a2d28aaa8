"""Launch configurations for the Triton kernels, chosen by timing the candidates on the first large input.

Each kernel has a default (blocks per program, warps) and a few candidates. On CUDA, the first call with at
least `MIN_BLOCKS` blocks for a given output dtype times every candidate on that very input (a DiT weight) and
keeps the fastest for the rest of the process; smaller inputs (and the CPU interpreter) use the chosen config or
the default. A candidate that fails to compile or run is skipped. `ZIT_TRITON_TUNE=0` keeps the defaults.
No Triton import here: the choice is plain Python, tested on the CPU with a fake timer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Hashable, Optional

TUNE = os.environ.get("ZIT_TRITON_TUNE", "1") != "0"
MIN_BLOCKS = 1 << 14  # below this a launch takes microseconds: timing it is noise


@dataclass(frozen=True)
class LaunchConfig:
    rows: int  # GGML blocks per program (a power of two)
    num_warps: int


Timer = Callable[[Callable[[], object]], float]


def cuda_timer(fn: Callable[[], object], repeat: int = 10) -> float:
    """Milliseconds per call, by CUDA events around `repeat` calls after one warm-up call (which compiles).

    No cache-flush buffer (Triton's do_bench allocates 256 MB for one): tuning may run on a nearly full card.
    """
    import torch
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeat


class Tuner:
    """The chosen launch config of one kernel, per key (the output dtype)."""

    def __init__(self, default: LaunchConfig, candidates: tuple[LaunchConfig, ...], timer: Optional[Timer] = None):
        self.default, self.candidates = default, candidates
        self.timer = timer or cuda_timer
        self.chosen: dict[Hashable, LaunchConfig] = {}
        self.timings: dict[Hashable, dict[LaunchConfig, float]] = {}

    def config(self, key: Hashable, n_blocks: int, on_gpu: bool,
               run: Callable[[LaunchConfig], object]) -> LaunchConfig:
        """The config to launch with; times the candidates (each through `run`) once per key when worth it."""
        if key in self.chosen:
            return self.chosen[key]
        if not (TUNE and on_gpu and n_blocks >= MIN_BLOCKS):
            return self.default
        times: dict[LaunchConfig, float] = {}
        for candidate in self.candidates:
            try:
                times[candidate] = self.timer(lambda: run(candidate))
            except Exception:  # e.g. too many registers for this GPU: not a candidate here
                continue
        self.timings[key] = times
        self.chosen[key] = min(times, key=times.get) if times else self.default
        return self.chosen[key]
