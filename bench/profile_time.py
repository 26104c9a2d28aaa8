"""Where the time of one call goes: torch.profiler's kernels summed into categories, and the top kernels.

On CUDA the device kernels (and host↔device copies) are counted; on the CPU the aten ops' self time.
Used by zimage_dit.py `--profile FMT` so that a missed target comes with its explanation from the same run.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

# category -> pattern over kernel / op names (first match wins, in this order)
CATEGORIES = (
    ("dequantize", re.compile(r"dequant|_q\d|q\d_k|iq\d|triton_(poi|red)", re.I)),
    ("copies and casts", re.compile(r"memcpy|memset|copy_|_to_copy", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|softmax", re.I)),
    ("matmul", re.compile(r"gemm|matmul|\bmm\b|addmm|bmm|linear|cutlass|xmma|nvjet|wgmma|sm\d\d_", re.I)),
)


def _category(name: str) -> str:
    return next((label for label, pattern in CATEGORIES if pattern.search(name)), "other")


def where_time_goes(fn: Callable[[], object], cuda: bool, top: int = 12) -> str:
    """Run `fn` once under the profiler; a text report of time per category and the `top` kernels."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    if cuda:
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    else:
        kernels = [e for e in events if e.key.startswith("aten::")]
        attr = "self_cpu_time_total"
    times = [(e.key, getattr(e, attr), e.count) for e in kernels]
    total = sum(t for _, t, _ in times) or 1.0
    per_cat: dict[str, float] = {}
    for name, t, _ in times:
        per_cat[_category(name)] = per_cat.get(_category(name), 0.0) + t
    lines = [f"where the time goes ({'GPU kernels' if cuda else 'CPU aten ops'}, {total / 1e3:.1f} ms in all):"]
    lines += [f"  {label:20s} {t / 1e3:9.1f} ms  {100 * t / total:5.1f} %"
              for label, t in sorted(per_cat.items(), key=lambda kv: -kv[1])]
    lines.append(f"  top {top}:")
    for name, t, count in sorted(times, key=lambda x: -x[1])[:top]:
        lines.append(f"    {t / 1e3:9.1f} ms {100 * t / total:5.1f} %  ×{count:<5d} [{_category(name)}] {name[:90]}")
    return "\n".join(lines)
