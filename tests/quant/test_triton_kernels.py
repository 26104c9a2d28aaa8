"""The Triton dequant kernels against the torch reference, on the CPU through Triton's interpreter.

Runs in a subprocess with TRITON_INTERPRET=1 (it must be set before Triton is imported). Where Triton is
not installed the test is skipped and says so; on a GPU bench/gpu_dequant_check.py checks the compiled kernels.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import numpy as np, torch
    from zimage_turbo.quant.kernels.triton_dequant import KERNELS
    from zimage_turbo.quant.types import get_quant_type
    F16_AT = {"Q8_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
    rng = np.random.default_rng(0)
    for name, kernel in KERNELS.items():
        qt = get_quant_type(name)
        raw = rng.integers(0, 256, size=(37, qt.type_size), dtype=np.uint8)
        raw[0] = 0; raw[1] = 255  # all-zero and all-ones codes
        for off in F16_AT[name]:  # finite scales, including zero, subnormal and negative ones
            scales = rng.integers(0x0001, 0x3C00, size=37, dtype=np.uint16)
            scales[2] = 0
            scales[3:9] |= 0x8000  # negative scales (llama.cpp writes them, e.g. Q6_K's d)
            raw[:, off:off + 2] = scales.astype("<u2").view(np.uint8).reshape(37, 2)
        blocks = torch.from_numpy(raw)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            ref = qt.dequant(blocks, dtype).reshape(37, qt.block_size).float()
            out = kernel(blocks, dtype).float()
            if dtype == torch.bfloat16:  # the interpreter rounds f32->bf16 differently: 1 ulp allowed
                ok = bool(((out - ref).abs() <= ref.abs() * 2 ** -7 + 1e-30).all())
            else:
                ok = torch.equal(out, ref)
            assert ok, (name, dtype, (out - ref).abs().max().item())
            print(name, dtype, "ok")
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="Triton is not installed here (CPU-only torch); bench/gpu_dequant_check.py covers GPUs")
def test_triton_kernels_match_torch_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600,
                          cwd="/")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count(" ok") == 12
