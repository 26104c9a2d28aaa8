"""Which files a tier needs: the `properties.models` entries of the shipped workflow, looked up in the catalog.

A shipped workflow's file name is its template card title ("01 Turbo 6 GB.json"); the tools name it by
the short id stored in it (`extra.zimage_turbo.id`: `6gb`, `basic`, `base_12gb`, written by
scripts/build_workflows.py), and accept its former file name (`extra.zimage_turbo.former_name`, e.g.
`z_image_turbo_6gb`) and its file name too.
"""
from __future__ import annotations

import json
from pathlib import Path

from .catalog import PublishedFile, by_name

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"


class UnknownFileError(LookupError):
    """A name that is neither a shipped workflow (tier) nor a catalog file."""


def workflow_names(path: Path) -> dict:
    """The workflow's `extra.zimage_turbo` entry ({"id", "former_name"}); {"id": <file stem>} when it has none."""
    extra = (json.loads(path.read_text(encoding="utf-8")).get("extra") or {}).get("zimage_turbo") or {}
    return {"id": path.stem, **extra}


def shipped_workflows(workflows_dir: Path = WORKFLOWS_DIR) -> dict[str, Path]:
    """{workflow id: UI json path} of the shipped workflows in file-name order, which is the tier order (API twins
    live in workflows/api/ under the same file name)."""
    return {workflow_names(p)["id"]: p for p in sorted(workflows_dir.glob("*.json"))}


def api_twin(path: Path) -> Path:
    """The API-format twin of a shipped UI workflow."""
    return path.parent / "api" / path.name


def workflow_model_entries(path: Path) -> list[dict]:
    """Every `properties.models` entry of a UI workflow, in node order, without repeats."""
    seen, out = set(), []
    for node in json.loads(path.read_text(encoding="utf-8")).get("nodes", []):
        for entry in (node.get("properties") or {}).get("models", []):
            key = (entry.get("directory"), entry.get("name"))
            if key not in seen:
                seen.add(key)
                out.append(entry)
    return out


def workflow_files(path: Path) -> list[PublishedFile]:
    """The catalog rows a workflow names; a name the catalog lacks, or a row that differs, is an error."""
    catalog = by_name()
    files = []
    for entry in workflow_model_entries(path):
        row = catalog.get(entry.get("name", ""))
        if row is None or row.entry() != {k: entry.get(k) for k in ("name", "url", "directory")}:
            raise UnknownFileError(f"{path.name} names {entry.get('directory')}/{entry.get('name')} "
                                   f"({entry.get('url')}), which the catalog (downloads/catalog.py) "
                                   + ("lacks" if row is None else f"lists as {row.entry()}"))
        files.append(row)
    return files


def find_workflow(name: str, workflows_dir: Path = WORKFLOWS_DIR) -> Path | None:
    """A shipped workflow by id, former name or file name: `6gb`, `6GB`, `6`, `z_image_turbo_6gb` and
    `01 Turbo 6 GB` all name the 6 GB tier."""
    key = name.strip().lower().removesuffix(".json")
    for path in sorted(workflows_dir.glob("*.json")):
        names = workflow_names(path)
        known = {path.stem.lower(), names["id"], names["id"].removesuffix("gb"), names.get("former_name")}
        if key in known:
            return path
    return None


def resolve(names: list[str], workflows_dir: Path = WORKFLOWS_DIR) -> list[PublishedFile]:
    """The files for command-line names (tiers/workflows or file names), in order, without repeats."""
    catalog = by_name()
    out: list[PublishedFile] = []
    for name in names:
        workflow = find_workflow(name, workflows_dir)
        if workflow is not None:
            rows = workflow_files(workflow)
        elif name in catalog:
            rows = [catalog[name]]
        else:
            tiers = ", ".join(shipped_workflows(workflows_dir))
            raise UnknownFileError(f"'{name}' is neither a tier/workflow ({tiers}) nor a file of the catalog "
                                   "(see `download --list`)")
        out += [r for r in rows if r not in out]
    return out
