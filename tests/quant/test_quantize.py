"""Quantizers: bytes vs gguf-py, k-quants vs a literal per-block transcription of ggml's C reference,
and the quantize -> write -> read (gguf-py and ours) round trip."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf import quants as gq
from gguf.constants import GGMLQuantizationType as T

from zimage_turbo.quant.dequant import dequantize
from zimage_turbo.quant.gguf_reader import GGUFFile
from zimage_turbo.quant.gguf_writer import write_gguf
from zimage_turbo.quant.quantize import quantize
from zimage_turbo.quant.types import get_quant_type

f32 = np.float32


def _data(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(f32)
    x[0] = 0
    x[1] = 3.0
    x[2, 5] = 100.0
    x[3] *= f32(1e-6)
    x[4, ::2] = -x[4, 1::2]
    x[5] = np.abs(x[5]) + 2  # all positive: min > 0 paths
    x[6] = rng.integers(-8, 8, size=cols).astype(f32) * f32(0.25)  # exact ties
    return x


def _rms(name: str, x: np.ndarray, q: np.ndarray | torch.Tensor) -> float:
    y = dequantize(torch.as_tensor(np.asarray(q)), name, x.shape, dtype=torch.float32).numpy()
    return float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2)))


@pytest.mark.parametrize("name", ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_same_bytes_as_gguf_py(name):
    x = _data(16, 512)
    x[7, :3] = [np.nan, np.inf, -np.inf] if name in ("F32", "F16", "BF16") else 0
    ref = gq.quantize(x, T[name]).view(np.uint8).reshape(16, -1)
    ours = quantize(torch.from_numpy(x), name).numpy()
    assert np.array_equal(ref, ours)


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4", "BF16"])
def test_gguf_py_quantized_data_dequantizes_identically(name):
    x = _data(8, 512, seed=3)
    q = gq.quantize(x, T[name]).view(np.uint8)
    ref = gq.dequantize(q, T[name]).astype(f32)
    ours = dequantize(torch.from_numpy(q.reshape(-1)), name, x.shape, dtype=torch.float32).numpy()
    assert np.array_equal(ref.view(np.uint32), ours.view(np.uint32))


# ------------------------------------------------------------------ literal ggml reference (slow, few blocks)

def _nearest_int(v) -> int:
    return int(np.rint(f32(v)))


def _ref_make_qkx2(x, w, nmax, rmin, rdelta, nstep):
    n = len(x)
    mn, mx = x[0], x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        mn = min(mn, x[i]); mx = max(mx, x[i])
        sum_w += w[i]; sum_x += w[i] * x[i]
    mn = min(mn, f32(0))
    if mx == mn:
        return f32(0), -mn, [0] * n
    iscale = f32(nmax) / (mx - mn)
    scale = f32(1) / iscale
    L = [max(0, min(nmax, _nearest_int(iscale * (x[i] - mn)))) for i in range(n)]
    best = f32(0)
    for i in range(n):
        diff = scale * L[i] + mn - x[i]
        best += w[i] * diff * diff
    for s in range(nstep + 1):
        iscale = (f32(rmin) + f32(rdelta) * f32(s) + f32(nmax)) / (mx - mn)
        sl = sl2 = sxl = f32(0)
        La = []
        for i in range(n):
            l = max(0, min(nmax, _nearest_int(iscale * (x[i] - mn))))
            La.append(l)
            sl += w[i] * l; sl2 += w[i] * l * l; sxl += w[i] * l * x[i]
        D = sum_w * sl2 - sl * sl
        if D > 0:
            ts = (sum_w * sxl - sum_x * sl) / D
            tm = (sl2 * sum_x - sl * sxl) / D
            if tm > 0:
                tm = f32(0); ts = sxl / sl2
            cur = f32(0)
            for i in range(n):
                diff = ts * La[i] + tm - x[i]
                cur += w[i] * diff * diff
            if cur < best:
                L, best, scale, mn = La, cur, ts, tm
    return scale, -mn, L


def _ref_q4k_q5k_block(x, nmax, rmin, rdelta, nstep):
    """Returns the dequantized block as ggml's reference would produce it."""
    scales, mins, Ls = [], [], []
    for j in range(8):
        xs = x[32 * j:32 * j + 32]
        sx2 = f32(0)
        for v in xs:
            sx2 += v * v
        av = np.sqrt(sx2 / f32(32))
        w = [av + abs(v) for v in xs]
        s, m, L = _ref_make_qkx2(xs, w, nmax, rmin, rdelta, nstep)
        scales.append(s); mins.append(m); Ls.append(L)
    ms = max([f32(0)] + scales); mm = max([f32(0)] + mins)
    isc = f32(63) / ms if ms > 0 else f32(0)
    imn = f32(63) / mm if mm > 0 else f32(0)
    d = np.float16(ms / f32(63)).astype(f32); dmin = np.float16(mm / f32(63)).astype(f32)
    out = []
    for j in range(8):
        ls = min(63, _nearest_int(isc * scales[j])); lm = min(63, _nearest_int(imn * mins[j]))
        dj, dmj = d * f32(ls), dmin * f32(lm)
        L = Ls[j] if not dj else [max(0, min(nmax, _nearest_int((x[32 * j + i] + dmj) / dj))) for i in range(32)]
        out += [dj * f32(l) - dmj for l in L]
    return np.array(out, dtype=f32)


def _ref_make_qx(x, nmax):
    n = len(x)
    amax, mx = f32(0), f32(0)
    for v in x:
        if abs(v) > amax:
            amax, mx = abs(v), v
    if amax < f32(1e-15):
        return f32(0), [0] * n
    iscale = f32(-nmax) / mx
    sumlx = suml2 = f32(0)
    L = []
    for v in x:
        l = max(-nmax, min(nmax - 1, _nearest_int(iscale * v)))
        L.append(l + nmax)
        w = v * v
        sumlx += w * v * l; suml2 += w * l * l
    scale = sumlx / suml2 if suml2 else f32(0)
    best = scale * sumlx
    for i in range(-9, 10):
        if i == 0:
            continue
        iscale = -(f32(nmax) + f32(0.1) * f32(i)) / mx
        sumlx = suml2 = f32(0)
        for v in x:
            l = max(-nmax, min(nmax - 1, _nearest_int(iscale * v)))
            w = v * v
            sumlx += w * v * l; suml2 += w * l * l
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            L = [nmax + max(-nmax, min(nmax - 1, _nearest_int(iscale * v))) for v in x]
            scale = sumlx / suml2; best = scale * sumlx
    return scale, L


def _ref_q6k_block(x):
    scales, Ls = [], []
    max_scale, max_abs = f32(0), f32(0)
    for ib in range(16):
        s, L = _ref_make_qx(x[16 * ib:16 * ib + 16], 32)
        scales.append(s); Ls.append(L)
        if abs(s) > max_abs:
            max_abs, max_scale = abs(s), s
    if max_abs < f32(1e-15):
        return np.zeros(256, f32)
    iscale = f32(-128) / max_scale
    d = np.float16(f32(1) / iscale).astype(f32)
    out = []
    for j in range(16):
        sc = min(127, _nearest_int(iscale * scales[j]))
        dj = d * f32(sc)
        L = Ls[j] if not dj else [max(-32, min(31, _nearest_int(x[16 * j + i] / dj))) + 32 for i in range(16)]
        out += [dj * f32(l - 32) for l in L]
    return np.array(out, dtype=f32)


_REF = {
    "Q4_K": lambda b: _ref_q4k_q5k_block(b, 15, -1.0, 0.1, 20),
    "Q5_K": lambda b: _ref_q4k_q5k_block(b, 31, -0.5, 0.1, 15),
    "Q6_K": _ref_q6k_block,
}
_NAIVE = {"Q4_K": "Q4_1", "Q5_K": "Q5_1", "Q6_K": "Q5_1"}


@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quants_match_ggml_reference(name):
    x = _data(8, 256, seed=7)
    x[7] = np.random.default_rng(9).standard_t(3, size=256).astype(f32)  # heavy tails
    ref = np.stack([_REF[name](row) for row in x])
    ours = dequantize(quantize(torch.from_numpy(x), name), name, x.shape, dtype=torch.float32).numpy()
    rms_ref = float(np.sqrt(np.mean((ref.astype(np.float64) - x) ** 2)))
    rms_ours = float(np.sqrt(np.mean((ours.astype(np.float64) - x) ** 2)))
    assert rms_ours <= 1.05 * rms_ref + 1e-12, (rms_ours, rms_ref)
    # and almost every block is bit-identical to the literal reference
    same = [np.array_equal(a, b) for a, b in zip(ours, ref)]
    assert sum(same) >= 7, same


@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quants_beat_naive_quantizers(name):
    x = _data(64, 1024, seed=11)[8:]
    ours = _rms(name, x, quantize(torch.from_numpy(x), name))
    naive_name = _NAIVE[name]
    naive = _rms(naive_name, x, gq.quantize(x, T[naive_name]).view(np.uint8).reshape(-1))
    bound = {"Q4_K": 1.0, "Q5_K": 1.0, "Q6_K": 0.6}[name]
    assert ours < bound * naive, (ours, naive)


def test_zero_and_constant_blocks():
    x = np.zeros((2, 256), f32)
    x[1] = 0.75
    for name in ["Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_1"]:
        y = dequantize(quantize(torch.from_numpy(x), name), name, x.shape, dtype=torch.float32).numpy()
        assert np.all(np.isfinite(y)) and np.allclose(y, x, atol=0.01), name


def test_round_trip_write_read_both_readers(tmp_path):
    rng = np.random.default_rng(5)
    names = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "F32"]
    src = {n: rng.standard_normal((4, 512)).astype(f32) for n in names}
    p = str(tmp_path / "rt.gguf")
    meta = {"general.architecture": "rt", "general.name": "round trip", "rt.block_count": ("u32", 36),
            "rt.eps": 1e-6, "tokens": ["<s>", "ü", ""], "scores": [0.5, -1.0]}
    write_gguf(p, {f"t.{n}": (torch.from_numpy(src[n]), n) for n in names}, meta)
    r = gguf.GGUFReader(p)
    assert r.fields["rt.block_count"].contents() == 36
    assert r.fields["tokens"].contents() == ["<s>", "ü", ""]
    with GGUFFile(p) as g:
        assert g.metadata["rt.block_count"] == 36 and g.metadata["tokens"] == ["<s>", "ü", ""]
        assert g.metadata["general.name"] == "round trip"
        for t in r.tensors:
            n = t.name.split(".", 1)[1]
            ti = g.tensors[t.name]
            assert ti.type_id == int(t.tensor_type) == get_quant_type(n).type_id
            ours = g.tensor_numpy(t.name).tobytes()
            assert ours == np.asarray(t.data).tobytes()
            assert ours == quantize(torch.from_numpy(src[n]), n).numpy().tobytes()
            y = g.load(t.name).dequantize(torch.float32).numpy()
            ref = gq.dequantize(np.asarray(t.data).view(np.uint8), t.tensor_type).reshape(4, 512) \
                if n not in ("F32", "F16") else np.asarray(t.data).astype(f32)
            assert np.array_equal(y, ref)
            assert np.sqrt(np.mean((y - src[n]) ** 2)) < 0.1
