"""VRAM planner: byte counts from headers, ComfyUI's own formulas, measured peaks on the tiny models, tier choices."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from zimage_turbo.downloads.tiers import find_workflow
from zimage_turbo.planner import estimate as E
from zimage_turbo.planner.catalog import published_files
from zimage_turbo.planner.files import inspect_file, scan_models_dir, synthetic_dit, synthetic_te, synthetic_vae
from zimage_turbo.fixtures.shapes import QWEN3_4B, TINY_DIT
from zimage_turbo.quant.types import QUANT_TYPES

REPO = Path(__file__).resolve().parents[1]
GiB = E.GiB

# Independent element counts of the real models (FACTS §1.4, §2.4, §5), not taken from fixtures/shapes.py.
D, F, L, R = 3840, 10240, 30, 2
LAYER_MATRICES = 3 * D * D + D * D + 3 * F * D + 4 * D * 256  # qkv, out, w1/w2/w3, adaLN (per modulated block)
DIT_PARAMS = 6_154_908_736
TE_PARAMS = 4_022_468_096
VAE_PARAMS = 83_819_683


def test_published_sizes_match_models_md():
    assert synthetic_dit("BF16").n_params == DIT_PARAMS
    assert synthetic_dit("BF16").weight_bytes == 2 * DIT_PARAMS  # 12.3 GB
    assert synthetic_te("BF16").weight_bytes == 2 * TE_PARAMS  # 8.04 GB
    assert synthetic_vae().weight_bytes == 4 * VAE_PARAMS  # 335 MB
    assert round(synthetic_te("Q6_K").weight_bytes / 1e9, 2) == 3.30  # published 3.31 GB
    assert round(synthetic_dit("Q5_K").weight_bytes / 1e9, 1) == 5.2  # published Q5_K_S 5.19 GB


@pytest.mark.parametrize("qtype", sorted({q.name for q in QUANT_TYPES.values() if q.block_size > 1}))
def test_every_ggml_type_dit_bytes(qtype):
    """GGUF DiT: layers' matrices in the type, everything else BF16/F32 (city96 layout)."""
    qt = next(q for q in QUANT_TYPES.values() if q.name == qtype)
    mf = synthetic_dit(qtype)
    quantized = L * LAYER_MATRICES
    rest = mf.n_params - quantized
    expected_q = quantized // qt.block_size * qt.type_size
    assert sum(t.n_bytes for t in mf.tensors if t.dtype == qtype) == expected_q
    assert mf.weight_bytes - expected_q == sum(t.n_bytes for t in mf.tensors if t.dtype in ("BF16", "F32"))
    host = E.HostProfile()
    resident = E.resident_bytes(mf, host)
    assert resident == expected_q + 2 * rest  # plain tensors held in bf16 on the card
    p = E.plan(synthetic_te("Q6_K"), mf, synthetic_vae(), 24 * GiB, 1024, 1024, host=host)
    assert p.stage("sample").weights == resident and not p.offload


def test_fp8_weight_dtype_halves_bf16_matrices():
    bf16 = synthetic_dit("BF16")
    matrices = sum(t.numel for t in bf16.tensors if len(t.shape) >= 2)
    host = E.HostProfile()
    assert E.resident_bytes(bf16, host, "fp8_e4m3fn") == 2 * DIT_PARAMS - matrices
    fp8 = synthetic_dit("F8_E4M3")
    assert E.resident_bytes(fp8, host, usable=4 * GiB) == fp8.weight_bytes  # kept fp8 on a small card
    assert E.resident_bytes(fp8, host, usable=40 * GiB) > 1.9 * fp8.weight_bytes  # upcast when bf16 fits


def test_gguf_te_stays_quantized_without_its_last_layer():
    q6 = synthetic_te("Q6_K")
    last = f"blk.{QWEN3_4B.num_hidden_layers - 1}."
    loaded = [t for t in q6.tensors if not t.name.startswith(last) and t.name not in ("output_norm.weight",)]
    assert len(loaded) < len(q6.tensors)
    # quantized tensors (token_embd included) stay in their blocks; 1-D F32 norms are held in bf16
    expected = sum(t.n_bytes if len(t.shape) >= 2 else 2 * t.numel for t in loaded)
    assert E.resident_bytes(q6) == expected
    emb = next(t for t in q6.tensors if t.name == "token_embd.weight")
    assert emb.n_bytes == 151936 * 2560 * 210 // 256  # Q6_K: 210 bytes per 256 weights, never 16 bit


@pytest.mark.parametrize("side,expected_mib", [(512, 229.376), (1024, 917.504), (2048, 3670.016)])
def test_comfy_memory_required_formula(side, expected_mib):
    host = E.HostProfile(memory_usage_factor=2.8, flash_attention=True)
    assert E.comfy_dit_memory_required(side, side, 1, host) == pytest.approx(expected_mib * E.MiB, abs=1)
    # batch·(H/8)·(W/8)·2 bytes·0.01·2.8 MiB
    assert expected_mib == pytest.approx((side // 8) ** 2 * 2 * 0.01 * 2.8)


def test_known_plan_figures_6gb_1024():
    p = E.plan(synthetic_te("Q6_K"), synthetic_dit("Q4_K"), synthetic_vae(), 6 * GiB, 1024, 1024)
    s = p.stage("sample")
    assert s.weights == E.resident_bytes(synthetic_dit("Q4_K"))
    tokens = 64 * 64 + 128
    assert s.activations == tokens * (15 * 3840 * 2 + 8 * 128)
    assert p.stage("decode").activations == 648 * 2 * 1024 * 1024
    assert s.other_resident == 0 and s.note == "TE unloaded"  # the 6 GB card never holds both
    assert not s.offload and p.fits and p.peak <= 5.5 * GiB


@pytest.mark.parametrize("vram", [6, 8, 12, 16, 24])
@pytest.mark.parametrize("side", [512, 1024, 1536, 2048])
def test_tiers_and_resolutions(vram, side):
    choice = E.choose(published_files(), vram * GiB, side, side)
    best = choice.best
    assert best.fits, best.table()
    assert best.tier == E.TIER_WORKFLOWS[E.tier_for(vram * GiB)]
    assert best.workflow == f"workflows/{find_workflow(best.tier).name}"
    assert best.peak + best.host.cuda_context <= vram * GiB
    if side * side > 1536 * 1536 and vram <= 6:
        assert best.decode_tiles is not None  # 2048² on 6 GB: tiled decode (the documented fallback)


SIX_GB_DITS = {"Q3_K", "Q4_K", "Q5_K", "F8_E4M3"}  # MODELS.md's 6 GB tier (GGUF Q3_K … Q5_K, or FP8 with offload)
SIX_GB_TES = {"Q8_0", "Q6_K", "Q5_K", "Q4_K"}


@pytest.mark.parametrize("side", [512, 768, 1024, 1280, 1536, 2048])
def test_six_gb_choice_is_the_6gb_workflow_or_documented_fallback(side):
    best = E.choose(published_files(), 6 * GiB, side, side).best
    assert (best.tier, best.workflow) == ("6gb", "workflows/01 Turbo 6 GB.json")
    assert best.dit.main_type in SIX_GB_DITS and best.te.main_type in SIX_GB_TES
    if side <= 1536:
        assert best.peak <= 5.5 * GiB
    # documented fallbacks: above 1536² the DiT streams part of its weights and the decode is tiled
    if side > 1536:
        assert best.stage("sample").offload or best.decode_tiles is not None
    assert (REPO / best.workflow).is_file()


def _write_sparse_safetensors(path: Path, mf) -> None:
    header, offset = {}, 0
    for t in mf.tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.n_bytes]}
        offset += t.n_bytes
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)  # sparse: no data written


def _write_sparse_gguf(path: Path, mf, arch: str) -> None:
    type_ids = {q.name: q.type_id for q in QUANT_TYPES.values()}
    s = lambda x: struct.pack("<Q", len(x.encode())) + x.encode()  # noqa: E731
    out = bytearray(struct.pack("<IIQQ", 0x46554747, 3, len(mf.tensors), 1))
    out += s("general.architecture") + struct.pack("<I", 8) + s(arch)
    offset = 0
    for t in mf.tensors:
        out += s(t.name) + struct.pack("<I", len(t.shape)) + struct.pack(f"<{len(t.shape)}Q", *reversed(t.shape))
        out += struct.pack("<IQ", type_ids[t.dtype], offset)
        offset += -(-t.n_bytes // 32) * 32
    data_start = -(-len(out) // 32) * 32
    with open(path, "wb") as f:
        f.write(bytes(out))
        f.truncate(data_start + offset)


def test_real_headers_full_size_sparse_files(tmp_path):
    """Full-size files (sparse: headers only on disk) read through the same code as users' files."""
    sets = {"diffusion_models/z_bf16.safetensors": synthetic_dit("BF16"),
            "diffusion_models/z_q4.gguf": synthetic_dit("Q4_K"),
            "text_encoders/qwen_q6.gguf": synthetic_te("Q6_K"),
            "text_encoders/qwen_bf16.safetensors": synthetic_te("BF16"),
            "vae/ae.safetensors": synthetic_vae()}
    for rel, mf in sets.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".gguf"):
            _write_sparse_gguf(path, mf, "qwen3" if mf.role == "te" else "lumina2")
        else:
            _write_sparse_safetensors(path, mf)
    found = {Path(m.path).name: m for m in scan_models_dir(tmp_path)}
    assert len(found) == 5
    for rel, mf in sets.items():
        got = found[Path(rel).name]
        assert (got.role, got.weight_bytes, got.main_type) == (mf.role, mf.weight_bytes, mf.main_type)
        assert E.resident_bytes(got) == E.resident_bytes(mf)
    choice = E.choose(list(found.values()), 6 * GiB, 1024, 1024)
    assert choice.best.dit.name == "z_q4.gguf" and choice.best.te.name == "qwen_q6.gguf"


def test_cli_plan(capsys, tmp_path):
    from zimage_turbo.__main__ import main
    assert main(["plan", "--vram", "6", "--width", "1024", "--height", "1024"]) == 0
    out = capsys.readouterr().out
    assert 'tier workflow "01 Turbo 6 GB" (id 6gb)' in out and "PEAK" in out


# ----------------------------------------------------------------- checked against ComfyUI on the tiny models
def _within(a, b, tol=0.15):
    return abs(a - b) <= tol * b


@pytest.fixture(scope="module")
def tiny_loaded(comfy_host, tiny_paths):
    import torch
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    from zimage_turbo.loaders.vae import load_flux_vae
    with torch.inference_mode():
        return {"dit": load_zimage_dit(tiny_paths["diffusion_models"]),
                "te": load_qwen3_text_encoder(tiny_paths["text_encoders"]),
                "vae": load_flux_vae(tiny_paths["vae"])}


def test_weight_bytes_match_comfy_accounting(tiny_loaded, tiny_paths):
    import comfy.model_management as mm
    dit, te, vae = tiny_loaded["dit"], tiny_loaded["te"], tiny_loaded["vae"]
    dit_ds = mm.dtype_size(dit.model.get_dtype())
    host = E.HostProfile(compute_bytes=dit_ds, vae_bytes=mm.dtype_size(vae.vae_dtype))
    assert _within(E.resident_bytes(inspect_file(tiny_paths["diffusion_models"]), host), dit.model_size())
    assert _within(E.resident_bytes(inspect_file(tiny_paths["vae"]), host), vae.patcher.model_size())
    te_host = E.HostProfile(compute_bytes=mm.dtype_size(max(te.patcher.model.parameters(), key=lambda p: p.numel()).dtype))
    assert _within(E.resident_bytes(inspect_file(tiny_paths["text_encoders"]), te_host), te.patcher.model_size())


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K"])
def test_gguf_te_bytes_match_comfy_accounting(comfy_host, tmp_path, type_name):
    """The planner's bytes for a GGUF text encoder equal what ComfyUI counts for the loaded CLIP."""
    import torch
    from zimage_turbo.fixtures.shapes import TINY_QWEN3
    from zimage_turbo.fixtures.tiny_models import write_qwen3_gguf
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    path = write_qwen3_gguf(tmp_path / f"qwen3-{type_name}.gguf", TINY_QWEN3, type_name)
    with torch.inference_mode():
        te = load_qwen3_text_encoder(path)
    mf = inspect_file(path)
    assert E.te_unloaded(mf)  # the last layer is left out...
    dtypes = {p.dtype for p in te.patcher.model.parameters() if p.ndim == 1}
    host = E.HostProfile(compute_bytes=max(torch.finfo(d).bits // 8 for d in dtypes))
    assert _within(E.resident_bytes(mf, host), te.patcher.model_size(), 0.02)  # ...and the embedding quantized


def test_fp8_weight_bytes_match_comfy_accounting(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    import comfy.model_management as mm
    import torch
    with torch.inference_mode():
        dit = load_zimage_dit(tiny_paths["diffusion_models"], weight_dtype="fp8_e4m3fn")
    mf = inspect_file(tiny_paths["diffusion_models"])
    host = E.HostProfile(compute_bytes=mm.dtype_size(dit.model.manual_cast_dtype or torch.float32))
    assert _within(E.resident_bytes(mf, host, "fp8_e4m3fn"), dit.model_size())


def test_memory_required_formula_is_comfys(tiny_loaded):
    import comfy.model_management as mm
    import comfy.supported_models
    dit = tiny_loaded["dit"]
    flash = bool(mm.xformers_enabled() or mm.pytorch_attention_flash_attention())
    host = E.HostProfile(memory_usage_factor=comfy.supported_models.ZImage.memory_usage_factor, flash_attention=flash,
                         compute_bytes=mm.dtype_size(dit.model.get_dtype()))
    for w, h, b in ((1024, 1024, 1), (1536, 1024, 2), (2048, 2048, 1)):
        expected = dit.model.memory_required([b, 16, h // 8, w // 8])
        assert E.comfy_dit_memory_required(w, h, b, host) == pytest.approx(expected, rel=1e-6)


def test_activation_formulas_match_measured_peaks(tiny_loaded, monkeypatch):
    """Peak bytes of a real ComfyUI forward (NextDiT with PyTorch SDPA as on CUDA; the Flux VAE decoder)."""
    import torch
    import comfy.ldm.lumina.model as lumina
    import comfy.ldm.modules.attention as attention
    from zimage_turbo.planner.measure import PeakTracker
    monkeypatch.setattr(lumina, "optimized_attention_masked", attention.attention_pytorch)
    dit = tiny_loaded["dit"]
    dims = E.dit_dims(synthetic_dit("F32", spec=TINY_DIT))
    ds = torch.finfo(dit.model.get_dtype()).bits // 8
    with torch.inference_mode():
        for w, h, n_text in ((512, 512, 40), (512, 256, 100)):
            x = torch.randn(1, 16, h // 8, w // 8)
            with PeakTracker() as tracker:
                dit.model.apply_model(x, torch.tensor([0.5]), c_crossattn=torch.randn(1, n_text, 256), num_tokens=n_text)
            assert _within(E.dit_activation_bytes(dims, w, h, 1, n_text, ds), tracker.peak), (w, h, tracker.peak)
        vae = tiny_loaded["vae"]
        z = torch.randn(1, 16, 16, 16)
        with PeakTracker() as tracker:
            vae.decode(z)
        assert _within(E.vae_decode_bytes(128, 128, 1, torch.finfo(vae.vae_dtype).bits // 8), tracker.peak)
