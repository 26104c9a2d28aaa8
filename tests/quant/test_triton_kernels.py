"""The Triton dequant kernels against the torch reference, on the CPU through Triton's interpreter.

Runs in a subprocess with TRITON_INTERPRET=1 (it must be set before Triton is imported). Where Triton is
not installed the test is skipped and says so; on a GPU bench/gpu_dequant_check.py checks the compiled kernels.
The blocks end exactly where an unreadable (PROT_NONE) page begins, and their count is no multiple of any
kernel's rows per program: a kernel that reads a byte past the tensor (an illegal access on a GPU) segfaults.
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
    import ctypes, math, mmap
    import numpy as np, torch
    from zimage_turbo.quant.kernels.triton_dequant import KERNELS, SPECS, launch
    from zimage_turbo.quant.types import get_quant_type
    PAGE = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    buffers = []
    def guarded(raw):
        pages = math.ceil(raw.nbytes / PAGE)
        mm = mmap.mmap(-1, (pages + 1) * PAGE)
        buffers.append(mm)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        assert libc.mprotect(addr + pages * PAGE, PAGE, 0) == 0  # PROT_NONE right after the last block
        t = torch.frombuffer(mm, dtype=torch.uint8, count=raw.nbytes, offset=pages * PAGE - raw.nbytes)
        t.copy_(torch.from_numpy(raw.reshape(-1)))
        return t.view(raw.shape)
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
        blocks = guarded(raw)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            ref = qt.dequant(blocks, dtype).reshape(37, qt.block_size).float()
            out = kernel(blocks, dtype).float()
            if dtype == torch.bfloat16:  # the interpreter rounds f32->bf16 differently: 1 ulp allowed
                ok = bool(((out - ref).abs() <= ref.abs() * 2 ** -7 + 1e-30).all())
            else:
                ok = torch.equal(out, ref)
            assert ok, (name, dtype, (out - ref).abs().max().item())
            print(name, dtype, "ok")
        ref = qt.dequant(blocks, torch.float32).reshape(37, qt.block_size)
        for config in SPECS[name].candidates:  # every launch config the tuner may pick
            out = launch(name, blocks, torch.empty_like(ref), config)
            assert torch.equal(out, ref), (name, config)
            print(name, config, "ok")
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="Triton is not installed here (CPU-only torch); bench/gpu_dequant_check.py covers GPUs")
def test_triton_kernels_match_torch_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600,
                          cwd="/")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # 4 kernels × 3 dtypes through the tuned runner, then each kernel's 5 candidate launch configs
    assert proc.stdout.count(" ok") == 4 * 3 + 4 * 5, proc.stdout
