"""The planner and Z-Image Base (issue 19): Base files, the doubled activations of a cfg > 1 step when ComfyUI
batches positive and negative, Base tier workflows."""
from __future__ import annotations

from pathlib import Path

from zimage_turbo.downloads.catalog import DIT_BASE_BF16, DIT_BASE_Q4_K_M, DIT_BF16
from zimage_turbo.planner import estimate as E
from zimage_turbo.planner.catalog import BASE_DITS, published_files
from zimage_turbo.planner.files import synthetic_dit, synthetic_te, synthetic_vae

GiB = E.GiB
REPO = Path(__file__).resolve().parents[1]


def test_published_files_per_model():
    base = {f.name for f in published_files("base") if f.role == "dit"}
    turbo = {f.name for f in published_files("turbo") if f.role == "dit"}
    assert base == {DIT_BASE_BF16.name, DIT_BASE_Q4_K_M.name} == set(BASE_DITS)
    assert DIT_BF16.name in turbo and not turbo & base
    shared = lambda files: {f.name for f in files if f.role in ("te", "vae")}  # noqa: E731
    assert shared(published_files("base")) == shared(published_files("turbo"))


def _sample_stage(vram_gib: float, cfg: float):
    p = E.plan(synthetic_te("Q8_0"), synthetic_dit("F8_E4M3"), synthetic_vae(), int(vram_gib * GiB), cfg=cfg,
               model="base" if cfg != 1.0 else "turbo")
    return p, p.stage("sample")


def test_cfg_step_doubles_the_activations_when_batched():
    dims = E.dit_dims(synthetic_dit("F8_E4M3"))
    single = E.dit_activation_bytes(dims, 1024, 1024, 1)
    _, turbo = _sample_stage(24, 1.0)
    p, base = _sample_stage(24, 4.0)
    assert turbo.activations == single
    assert base.activations == E.dit_activation_bytes(dims, 1024, 1024, 2) > 1.9 * single
    assert "batched" in base.note and (p.tier, p.workflow) == ("base_24gb", "workflows/16 Base 24 GB.json")


def test_batching_rule_is_comfyuis():
    """calc_cond_batch batches cond+uncond when memory_required(2B) * 1.5 < free memory; cfg 1 never runs both."""
    assert E.cfg_batches_conds(4.0, 1000, 1501) and not E.cfg_batches_conds(4.0, 1000, 1500)
    assert not E.cfg_batches_conds(1.0, 1, 10 ** 12)
    dims = E.dit_dims(synthetic_dit("Q4_K"))
    p = E.plan(synthetic_te("Q4_K"), synthetic_dit("Q4_K"), synthetic_vae(), 6 * GiB, cfg=4.0, model="base")
    sample = p.stage("sample")
    req2 = E.comfy_dit_memory_required(1024, 1024, 2)
    free = 6 * GiB - E.HostProfile().cuda_context - sample.other_resident - sample.on_gpu
    batched = req2 * 1.5 < free
    assert sample.activations == E.dit_activation_bytes(dims, 1024, 1024, 2 if batched else 1)
    assert ("batched" in sample.note) == batched and "cfg>1" in sample.note


def test_base_tier_workflows_exist():
    for gb, tier in E.BASE_TIER_WORKFLOWS.items():
        path = E.tier_workflow_file(tier)
        assert path.startswith("workflows/") and (REPO / path).exists(), tier
        assert E.tier_for(int(gb * GiB), E.BASE_TIER_WORKFLOWS) == gb
    assert E.tier_for(8 * GiB, E.BASE_TIER_WORKFLOWS) == 6  # 8 GB cards take the GGUF workflow


def test_cli_plans_base(capsys):
    from zimage_turbo.__main__ import main
    assert main(["plan", "--vram", "12", "--model", "base"]) == 0
    out = capsys.readouterr().out
    assert 'tier workflow "15 Base 12 GB" (id base_12gb)' in out and "cfg>1" in out and DIT_BASE_BF16.name in out
    assert DIT_BF16.name not in out


def test_planner_node_plans_base(comfy_host, tiny_paths):
    import folder_paths
    from zimage_turbo.nodes.planner import ZImageVRAMPlanner
    for kind in ("diffusion_models", "text_encoders", "vae"):
        folder_paths.add_model_folder_path(kind, str(tiny_paths[kind].parent))
    spec = ZImageVRAMPlanner.INPUT_TYPES()["optional"]["model"]
    assert spec[0] == ["turbo", "base"] and spec[1]["tooltip"]
    turbo = ZImageVRAMPlanner().plan(12.0, 1024, 1024, 1)["result"][0]
    base = ZImageVRAMPlanner().plan(12.0, 1024, 1024, 1, model="base")["result"][0]
    assert '"03 Turbo 12 GB" (id 12gb)' in turbo and "cfg>1" not in turbo
    assert '"15 Base 12 GB" (id base_12gb)' in base and "cfg>1" in base
