"""One catalog of published files: the workflows' `properties.models`, the planner and `download` read the same rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from zimage_turbo.downloads import catalog
from zimage_turbo.downloads.tiers import UnknownFileError, shipped_workflows, workflow_files, workflow_model_entries
from zimage_turbo.planner.catalog import published_files

WORKFLOWS = shipped_workflows()
PLANNED_ROLES = ("dit", "te", "vae")
MODELS = ("turbo", "base")


def test_names_are_unique_and_urls_are_hub_resolve_urls():
    rows = catalog.by_name()
    assert len(rows) == len(catalog.CATALOG)
    for f in catalog.CATALOG:
        repo_id, revision, path = f.hf_location
        assert f.url == f"https://huggingface.co/{repo_id}/resolve/{revision}/{path}" and path.endswith(f.name)
        assert f.source == f"huggingface.co/{repo_id}"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_workflow_file_is_a_catalog_row(name):
    entries = workflow_model_entries(WORKFLOWS[name])
    assert entries, f"{name} names no model files"
    rows = workflow_files(WORKFLOWS[name])  # raises when an entry is not exactly a catalog row
    assert [r.entry() for r in rows] == [{k: e[k] for k in ("name", "url", "directory")} for e in entries]


def test_a_workflow_naming_an_unknown_file_fails(tmp_path):
    ui = json.loads(next(iter(WORKFLOWS.values())).read_text())
    node = next(n for n in ui["nodes"] if n.get("properties", {}).get("models"))
    node["properties"]["models"][0] = {"name": "mystery.gguf", "url": "https://huggingface.co/x/y/resolve/main/"
                                       "mystery.gguf", "directory": "diffusion_models"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(ui))
    with pytest.raises(UnknownFileError, match="mystery.gguf .* catalog .* lacks"):
        workflow_files(bad)
    node["properties"]["models"][0] = {**catalog.VAE.entry(), "url": catalog.VAE.url.replace("main", "dev")}
    bad.write_text(json.dumps(ui))
    with pytest.raises(UnknownFileError, match="lists as"):
        workflow_files(bad)


def _planned_by_name() -> dict:
    """{name: record} over every model the planner plans (the fp8-loaded extra records left out)."""
    out = {}
    for model in MODELS:
        out.update({m.name: m for m in published_files(model)[:-1]})
    return out


def test_planner_plans_over_the_catalog_rows():
    rows = [r for r in catalog.CATALOG if r.role in PLANNED_ROLES]
    planned = _planned_by_name()
    assert sorted(planned) == sorted(r.name for r in rows)  # every planner file is a catalog row, and back
    for r in rows:
        assert (planned[r.name].role, planned[r.name].main_type) == (r.role, r.weight), planned[r.name].label
    for model in MODELS:
        records = published_files(model)
        extra = records[-1]  # the model's bf16 DiT loaded as fp8 (the fp8 workflows' weight_dtype)
        assert extra.main_type == "F8_E4M3" and catalog.lookup(extra.name).weight == "BF16"
        assert [m.name for m in records[:-1]] == [r.name for r in rows if r.name in {m.name for m in records}]
    for path in WORKFLOWS.values():
        for f in workflow_files(path):
            if f.role in PLANNED_ROLES:
                assert f.name in planned


def test_planner_keeps_int8_and_fp8_weights_small():
    """ComfyUI keeps the INT8 ConvRot DiT's int8 blocks (not a bf16 copy) and the mixed fp8 encoder's fp8 layers."""
    from zimage_turbo.planner.catalog import record
    from zimage_turbo.planner.estimate import resident_bytes
    int8, bf16 = record(catalog.DIT_INT8_CONVROT), record(catalog.DIT_BF16)
    assert resident_bytes(int8) < 0.55 * resident_bytes(bf16)
    assert resident_bytes(record(catalog.TE_FP8_MIXED)) < 0.6 * resident_bytes(record(catalog.TE_BF16))


def test_planner_sizes_match_the_published_sizes():
    """Where the hosting page states a size, the planner's record (from shapes and types) is close to it."""
    planned = _planned_by_name()
    units = {"GB": 1e9, "MB": 1e6}
    checked = 0
    for r in catalog.CATALOG:
        if r.role in PLANNED_ROLES and r.size:
            value, unit = r.size.split()
            published = float(value) * units[unit]
            tolerance = 0.12 if r.name.endswith("_M.gguf") else 0.03  # K_M mixes keep some tensors in Q6_K
            assert abs(planned[r.name].weight_bytes - published) <= tolerance * published, (r.name, r.size)
            checked += 1
    assert checked >= 6


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_gguf_workflow_notes_name_the_download_command(name):
    from zimage_turbo.downloads.tiers import resolve
    ui = json.loads(WORKFLOWS[name].read_text())
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    files = workflow_files(WORKFLOWS[name])
    if not any(f.name.endswith(".gguf") for f in files):
        return
    line = next((l.strip() for l in note.splitlines() if "python -m zimage_turbo download" in l), None)
    assert line, f"{name}: the note does not name the download command"
    tier = line.split("download", 1)[1].split()[0]
    assert resolve([tier]) == files  # the command the note names fetches exactly the workflow's files
