"""Workflow JSON: UI-format graphs → API-format prompts, model-name substitution, prompt/seed overrides."""
from __future__ import annotations

import json
from typing import Any

# Frontend-only node types that never reach the server.
VIRTUAL_NODE_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_WIDGET_NAMES = frozenset({"seed", "noise_seed"})
MODE_ACTIVE = 0

# Loader inputs that name a model file: (class_type, input name) → models/ folder.
MODEL_FILE_INPUTS: dict[tuple[str, str], str] = {
    ("ZImageDiffusionModelLoader", "unet_name"): "diffusion_models",
    ("ZImageTextEncoderLoader", "text_encoder_name"): "text_encoders",
    ("ZImageVAELoader", "vae_name"): "vae",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("ZImageControlNetLoader", "patch_name"): "model_patches",
    ("ModelPatchLoader", "name"): "model_patches",
    ("ZImageLoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
}


class WorkflowError(ValueError):
    """A workflow that cannot be converted or run, with the node it concerns."""


def parse_workflow(text: str | bytes) -> dict:
    """A workflow file's JSON (UI or API format) as a dict; anything else is a WorkflowError."""
    try:
        workflow = json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise WorkflowError(f"not a workflow: the JSON cannot be read ({reason})") from None
    if not isinstance(workflow, dict):
        raise WorkflowError(f"not a workflow: the JSON is a {type(workflow).__name__}, not an object")
    return workflow


def is_ui_format(workflow: dict) -> bool:
    return isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list)


def check_workflow(workflow: dict) -> None:
    """Raise WorkflowError unless `workflow` has the shape of a UI-format graph or an API-format prompt, with at
    least one node (what can be checked without the server's node list)."""
    if is_ui_format(workflow):
        for node in workflow["nodes"]:
            _check_ui_node(node)
        nodes = workflow["nodes"]
    else:
        _check_api(workflow)
        nodes = workflow
    if not nodes:
        raise WorkflowError("not a workflow: it has no nodes")


def _check_ui_node(node: Any) -> None:
    if not isinstance(node, dict) or not isinstance(node.get("id"), (int, str)) or not isinstance(node.get("type"), str):
        raise WorkflowError("not a UI-format workflow: a node without an id or a type")


def _check_api(prompt: Any) -> None:
    """Raise WorkflowError unless `prompt` has the API format's shape: {id: {"class_type": str, "inputs": {}}}."""
    if not isinstance(prompt, dict):
        raise WorkflowError(f"not an API-format workflow: a {type(prompt).__name__}, not an object")
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs"), dict):
            raise WorkflowError(f"node {str(node_id)[:40]}: not an API-format node (needs class_type and inputs)")


def _ordered_inputs(info: dict) -> list[tuple[str, list]]:
    inputs = info.get("input", {})
    return [(name, spec) for section in ("required", "optional") for name, spec in inputs.get(section, {}).items()]


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _takes_control_value(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] in ("INT", "FLOAT") and (options.get("control_after_generate") or name in SEED_WIDGET_NAMES)


def ui_to_api(ui: dict, object_info: dict) -> dict[str, dict[str, Any]]:
    """Convert a UI-format workflow (litegraph JSON) to the API prompt the frontend would queue.

    Widget values are matched to inputs in the node's declared order; seed widgets carry one extra
    "control after generate" value in the UI that the API omits. Muted/bypassed and frontend-only nodes
    are left out.
    """
    if not is_ui_format(ui):
        raise WorkflowError("not a UI-format workflow: no 'nodes' list")
    raw_links = ui.get("links") or []
    if not isinstance(raw_links, list) or not all(isinstance(link, list) and len(link) >= 3
                                                  and isinstance(link[0], (int, str)) for link in raw_links):
        raise WorkflowError("not a UI-format workflow: 'links' must be a list of [id, from node, from slot, …]")
    links = {link[0]: link for link in raw_links}
    prompt: dict[str, dict[str, Any]] = {}
    for node in ui["nodes"]:
        _check_ui_node(node)
        try:
            entry = _convert_node(node, links, object_info)
        except WorkflowError:
            raise
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
            raise WorkflowError(f"node {node['id']} ({node['type']}): malformed ({type(exc).__name__}: "
                                f"{str(exc)[:200]})") from None
        if entry is not None:
            prompt[str(node["id"])] = entry
    return prompt


def _convert_node(node: dict, links: dict, object_info: dict) -> dict[str, Any] | None:
    """One UI node as an API node (None for frontend-only, muted and bypassed nodes)."""
    if node["type"] in VIRTUAL_NODE_TYPES or node.get("mode", MODE_ACTIVE) != MODE_ACTIVE:
        return None
    info = object_info.get(node["type"])
    if info is None:
        raise WorkflowError(f"node {node['id']}: unknown node type '{node['type']}' (not in this ComfyUI; is the "
                            "custom node pack that provides it installed?)")
    linked = {}
    for slot in node.get("inputs") or []:
        if slot.get("link") is not None:
            if slot["link"] not in links:
                raise WorkflowError(f"node {node['id']} ({node['type']}): input '{slot.get('name')}' uses link "
                                    f"{slot['link']}, which the workflow does not have")
            linked[slot["name"]] = links[slot["link"]]
    values = list(node.get("widgets_values") or [])
    inputs: dict[str, Any] = {}
    for name, spec in _ordered_inputs(info):
        if name in linked:
            link = linked[name]
            inputs[name] = [str(link[1]), link[2]]
            if _is_widget(spec):  # a widget converted to an input still holds its value slot
                values and values.pop(0)
                if _takes_control_value(name, spec) and values:
                    values.pop(0)
            continue
        if not _is_widget(spec):
            continue
        if not values:
            raise WorkflowError(f"node {node['id']} ({node['type']}): no widget value for '{name}'")
        inputs[name] = values.pop(0)
        if _takes_control_value(name, spec) and values:
            values.pop(0)
    entry: dict[str, Any] = {"inputs": inputs, "class_type": node["type"]}
    if node.get("title"):
        entry["_meta"] = {"title": node["title"]}
    return entry


def model_files(prompt: dict) -> list[tuple[str, str, str, str]]:
    """(node id, input name, folder, file name) of every model file a prompt loads."""
    _check_api(prompt)
    out = []
    for node_id, node in prompt.items():
        for (cls, name), folder in MODEL_FILE_INPUTS.items():
            if node["class_type"] == cls and isinstance(node["inputs"].get(name), str):
                out.append((node_id, name, folder, node["inputs"][name]))
    return out


def substitute_models(prompt: dict, by_folder: dict[str, str]) -> dict:
    """A copy of the prompt whose loaders load `by_folder[folder]` instead of the file they name."""
    _check_api(prompt)
    out = {k: {**v, "inputs": dict(v["inputs"])} for k, v in prompt.items()}
    for node_id, name, folder, _ in model_files(prompt):
        if folder in by_folder:
            out[node_id]["inputs"][name] = by_folder[folder]
    return out


def set_inputs(prompt: dict, class_type: str, values: dict[str, Any], first_only: bool = False) -> int:
    """Set inputs on nodes of `class_type` (in node-id order) in place; returns how many nodes changed."""
    _check_api(prompt)
    changed = 0
    for node_id in sorted(prompt, key=lambda k: (0, int(k), "") if k.isascii() and k.isdigit() else (1, 0, k)):
        node = prompt[node_id]
        if node["class_type"] == class_type:
            node["inputs"].update(values)
            changed += 1
            if first_only:
                break
    return changed
