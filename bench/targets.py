#!/usr/bin/env python3
"""Issues 8 and 10's GPU targets, checked on the outputs a GPU session saved (bench/gpu_session.sh).

    python bench/targets.py OUT_DIR        # reads OUT_DIR/dit.txt, dit6.txt, lowvram.txt

Prints one line per target: the measured ratio or peak, and met / MISSED by how much / not measured. Also
what each fast path brings (the `-notriton` and `-noprefetch` runs against the default). Always exits 0: a
missed target is a finding to report, not a failed session.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

# (what, table, format, reference table, reference format, highest ratio of steady times)
TIME_TARGETS = (
    ("full VRAM: Q8_0 ≤ 1.10× core bf16", "dit", "Q8_0", "dit", "core_bf16", 1.10),
    ("full VRAM: Q4_K ≤ 1.20× core bf16", "dit", "Q4_K", "dit", "core_bf16", 1.20),
    ("full VRAM: fp8_fast ≤ 1.00× core fp8_fast", "dit", "fp8_fast", "dit", "core_fp8_fast", 1.00),
    ("6 GiB: Q8_0 (streams) ≤ 0.80× core bf16 at 6 GiB", "dit6", "Q8_0", "dit6", "core_bf16", 0.80),
    ("6 GiB: Q4_K (fits) ≤ 1.25× core bf16 at full VRAM", "dit6", "Q4_K", "dit", "core_bf16", 1.25),
)
# (what, table, format with a fast path off, the default format)
FAST_PATHS = (("Triton dequantization (full VRAM)", "dit", "Q8_0-notriton", "Q8_0"),
              ("side-stream prefetch (6 GiB)", "dit6", "Q8_0-noprefetch", "Q8_0"))
PEAK_LIMIT_GIB = 5.5
PLANNER_TOLERANCE = 0.15


def read_runs(text: str) -> dict[str, dict[str, float]]:
    """{format: {"first s", "steady s", "peak GiB"}} from the line zimage_dit.py prints as each format finishes
    (so a step cut off by its time limit still counts what it measured)."""
    runs = {}
    for m in re.finditer(r"^  (\S+): first ([\d.]+) s, steady ([\d.]+) s, peak ([\d.]+|nan) GiB", text, re.M):
        runs[m.group(1)] = {"first s": float(m.group(2)), "steady s": float(m.group(3)), "peak GiB": float(m.group(4))}
    return runs


def read_whole_graph(text: str) -> list[tuple[str, float, float]]:
    """(size, measured GiB, planned GiB) for each 'whole graph' line lowvram.py prints."""
    found, size = [], "?"
    for line in text.splitlines():
        m = re.match(r"^(\d+x\d+), cap", line)
        if m:
            size = m.group(1) + (" with ControlNet" if "with ControlNet" in line else "")
        m = re.search(r"whole graph: measured peak ([\d.]+) GiB, planner ([\d.]+) GiB", line)
        if m:
            found.append((size, float(m.group(1)), float(m.group(2))))
    return found


def verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else f"MISSED by {100 * (value / limit - 1):.0f} %"


def report(out_dir: Path) -> list[str]:
    """The report lines for the outputs in `out_dir`."""
    text = {name: (out_dir / f"{name}.txt").read_text() if (out_dir / f"{name}.txt").exists() else ""
            for name in ("dit", "dit6", "lowvram")}
    tables = {name: read_runs(text[name]) for name in ("dit", "dit6")}
    lines = []
    for what, table, fmt, ref_table, ref_fmt, limit in TIME_TARGETS:
        a, b = tables[table].get(fmt, {}).get("steady s"), tables[ref_table].get(ref_fmt, {}).get("steady s")
        if a is None or b is None or b == 0:
            lines.append(f"target {what}: not measured")
        else:
            lines.append(f"target {what}: {a:.2f} s / {b:.2f} s = {a / b:.2f}× — {verdict(a / b, limit)}")
    for what, table, off, on in FAST_PATHS:
        a, b = tables[table].get(off, {}).get("steady s"), tables[table].get(on, {}).get("steady s")
        if a is not None and b:
            lines.append(f"fast path {what}: {a:.2f} s without, {b:.2f} s with ({a / b:.2f}× faster with it)")
    graphs = read_whole_graph(text["lowvram"])
    if not graphs:
        lines.append("target whole graph at 6 GiB: not measured")
    for size, measured, planned in graphs:
        if measured == 0:
            lines.append(f"target whole graph {size}: not measured (no GPU)")
            continue
        off = measured / planned - 1 if planned else float("inf")
        plan_verdict = "within" if abs(off) <= PLANNER_TOLERANCE else "OUTSIDE"
        lines.append(f"target whole graph {size} at 6 GiB: peak {measured:.2f} GiB ≤ {PEAK_LIMIT_GIB} — "
                     f"{verdict(measured, PEAK_LIMIT_GIB)}; planner {planned:.2f} GiB ({off:+.0%}, {plan_verdict} "
                     f"±{PLANNER_TOLERANCE:.0%})")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    print("\n".join(report(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
