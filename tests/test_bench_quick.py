"""The benchmark scripts still run: each one's --quick mode (tiny models, CPU) prints its table.

Their numbers mean nothing on the CPU; what is checked is that a GPU session can run them unchanged (they import
the pack's current API, build the models and print a row per format/stage). The DiT and low-VRAM scripts run
through bench/gpu_session.sh itself (the GPU session's one command, with its switches and profiling). Runs on
one host per suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.environ.get("ZIT_SOAK") == "0", reason="runs on one host per suite (ZIT_SOAK=0)")

PY = sys.executable
# name -> (command, text its output must contain)
EXPECTED = {
    "gpu_session.sh": (["bash", str(REPO / "bench" / "gpu_session.sh"), "--quick", "dit", "dit6", "lowvram"],
                       ["| fp8_fast |", "| scaled_fp8 |", "| Q8_0 |", "| Q8_0-notriton |", "| Q8_0-noprefetch |",
                        "| Q4_K |",
                        "Q8_0, where the time goes", "planner estimate", "whole graph: measured peak", "ControlNet: ", "=== done",
                        # bench/targets.py read the tables the scripts printed (no core_* rows on the tiny model)
                        "fast path Triton dequantization (full VRAM):", "fast path side-stream prefetch (6 GiB):",
                        "target full VRAM: Q8_0 ≤ 1.10× core bf16: not measured"]),
    "text_encoder.py": ([PY, str(REPO / "bench" / "text_encoder.py"), "--quick"],
                        ["| safetensors bf16 |", "| GGUF Q6_K |", "GGUF / safetensors:"]),
    "dequant.py": ([PY, str(REPO / "bench" / "dequant.py"), "--quick", "--types", "Q8_0,Q4_K,Q6_K"],
                   ["Q8_0 ", "Q4_K ", "Q6_K "]),
    "base_cache.py": ([PY, str(REPO / "bench" / "base_cache.py"), "--quick"],
                      ["| bf16 | none |", "| bf16 | EasyCache |", "| Q8_0 | LazyCache |",
                       "EasyCache / none over 2 formats: mean speed-up"]),
    "lora.py": ([PY, str(REPO / "bench" / "lora.py"), "--quick"],
                ["| Q8_0 | pack | comfy | 0 |", "| Q8_0 | pack | comfy | 3 |", "| Q4_K | pack | musubi | 1 |",
                 "| Q4_K | pack | musubi | 3 |", "targets (GPU): 1 LoRA ≤ 1.05×"]),
}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """All scripts started at once (they are mostly single-threaded: the suite's wall time is the slowest one).

    A run's stdout is followed by the step outputs it saved under OUT (what a GPU session brings back)."""
    procs, outs = {}, {}
    for script, (command, _) in EXPECTED.items():
        cwd = tmp_path_factory.mktemp(script.split(".")[0])
        outs[script] = cwd / "results"
        env = {**os.environ, "PYTHON": PY, "OUT": str(outs[script])}
        procs[script] = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
    results = {}
    for script, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        saved = "".join(f.read_text() for f in sorted(outs[script].glob("*.txt")))
        results[script] = subprocess.CompletedProcess(proc.args, proc.returncode, out + saved, err)
    return results


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_bench_script_quick_mode_runs(quick_runs, script):
    proc = quick_runs[script]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for needle in EXPECTED[script][1]:
        assert needle in proc.stdout, f"{script} --quick printed no {needle!r}:\n{proc.stdout[-2000:]}"
