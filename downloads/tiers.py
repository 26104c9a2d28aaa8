"""Which files a tier needs: the `properties.models` entries of the shipped workflow, looked up in the catalog."""
from __future__ import annotations

import json
from pathlib import Path

from .catalog import PublishedFile, by_name

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"
WORKFLOW_PREFIX = "z_image_turbo_"


class UnknownFileError(LookupError):
    """A name that is neither a shipped workflow (tier) nor a catalog file."""


def shipped_workflows(workflows_dir: Path = WORKFLOWS_DIR) -> dict[str, Path]:
    """{workflow name: UI json path} of the shipped workflows (API twins live in workflows/api/)."""
    return {p.stem: p for p in sorted(workflows_dir.glob("*.json"))}


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
    """A shipped workflow by name: `z_image_turbo_6gb`, `6gb`, `6GB` or `6` all name the 6 GB tier."""
    workflows = shipped_workflows(workflows_dir)
    key = name.strip().lower().removesuffix(".json")
    for candidate in (key, WORKFLOW_PREFIX + key, WORKFLOW_PREFIX + key + "gb"):
        if candidate in workflows:
            return workflows[candidate]
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
            tiers = ", ".join(n.removeprefix(WORKFLOW_PREFIX) for n in shipped_workflows(workflows_dir))
            raise UnknownFileError(f"'{name}' is neither a tier/workflow ({tiers}) nor a file of the catalog "
                                   "(see `download --list`)")
        out += [r for r in rows if r not in out]
    return out
