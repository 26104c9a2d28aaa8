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


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_bench_script_quick_mode_runs(script, tmp_path):
    extra, needles = EXPECTED[script]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--quick", *extra], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stdout, f"{script} --quick printed no {needle!r}:\n{proc.stdout[-2000:]}"
