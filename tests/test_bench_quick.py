"""The benchmark scripts still run: each one's --quick mode (tiny models, CPU) prints its table.

Their numbers mean nothing on the CPU; what is checked is that a GPU session can run them unchanged (they import
the pack's current API, build the models and print a row per format/stage). Runs on one host per suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.environ.get("ZIT_SOAK") == "0", reason="runs on one host per suite (ZIT_SOAK=0)")

# script -> (extra arguments, text its --quick output must contain)
EXPECTED = {
    "zimage_dit.py": ([], ["| bf16 |", "| Q8_0 |", "| Q4_K |"]),
    "text_encoder.py": ([], ["| safetensors bf16 |", "| GGUF Q6_K |", "GGUF / safetensors:"]),
    "lowvram.py": ([], ["encode", "sample", "decode", "planner estimate"]),
    "dequant.py": (["--types", "Q8_0,Q4_K,Q6_K"], ["Q8_0 ", "Q4_K ", "Q6_K "]),
}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """All scripts started at once (they are mostly single-threaded: the suite's wall time is the slowest one)."""
    procs = {}
    for script, (extra, _) in EXPECTED.items():
        cwd = tmp_path_factory.mktemp(script.replace(".py", ""))
        procs[script] = subprocess.Popen([sys.executable, str(REPO / "bench" / script), "--quick", *extra], cwd=cwd,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for script, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[script] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_bench_script_quick_mode_runs(quick_runs, script):
    proc = quick_runs[script]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for needle in EXPECTED[script][1]:
        assert needle in proc.stdout, f"{script} --quick printed no {needle!r}:\n{proc.stdout[-2000:]}"
