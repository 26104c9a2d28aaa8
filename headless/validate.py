"""Check shipped workflows against a server's node definitions (/object_info).

`validate_workflow(ui, object_info, api=None)` returns a list of problems (empty when the workflow is sound):

- every node type exists (frontend-only nodes such as Note aside);
- every widget value is valid for its input: combo membership, INT/FLOAT type, min/max and step, STRING and
  BOOLEAN types, seed "control after generate" values; model-file combos accept any file name whose extension
  the model folder accepts (the real weights are not on a test server), image-upload combos any image name;
- every input slot named in the UI exists on the node, every required socket input is connected;
- every link joins an existing output slot to an existing input slot of a matching type, and both ends agree;
- the API-format twin, when given, equals the UI graph converted with `ui_to_api` against the same definitions.

No ComfyUI import: it works on any /object_info JSON.
"""
from __future__ import annotations

import math
from typing import Any

from .workflow import MODEL_FILE_INPUTS, VIRTUAL_NODE_TYPES, WorkflowError, ui_to_api

# Extensions ComfyUI lists in model folders (folder_paths.supported_pt_extensions) plus GGUF, which this pack's
# loaders add to the folders they read.
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
GGUF_FOLDERS = frozenset({"diffusion_models", "text_encoders", "model_patches"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
WIDGET_KINDS = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})


# Core node types that only newer ComfyUI releases have: a workflow using one cannot run on an older host, which is
# the host's limit, not the workflow's fault (validators and tests skip such workflows there and say why).
NEWER_CORE_NODES = {"ZImageFunControlnet": "the Z-Image Fun ControlNet (ComfyUI after 0.4.0)"}


def host_lacks(ui: dict, object_info: dict) -> dict[str, str]:
    """{node type: what it is} of the newer-ComfyUI core nodes the UI workflow uses and this host lacks."""
    used = {n.get("type") for n in ui.get("nodes", []) if isinstance(n, dict)}
    return {t: why for t, why in NEWER_CORE_NODES.items() if t in used and t not in object_info}


def _options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _combo_values(spec: list) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return list(_options(spec).get("options", []))
    return None


def _is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_KINDS


def _has_control(name: str, spec: list) -> bool:
    return spec[0] in ("INT", "FLOAT") and bool(_options(spec).get("control_after_generate")
                                               or name in ("seed", "noise_seed"))


def _inputs(info: dict) -> dict[str, tuple[list, bool]]:
    """{input name: (spec, required)} in declaration order."""
    out = {}
    for section in ("required", "optional"):
        for name, spec in (info.get("input", {}).get(section) or {}).items():
            out[name] = (list(spec) if isinstance(spec, (list, tuple)) else [spec], section == "required")
    return out


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _socket_types(kind: Any) -> set[str]:
    if isinstance(kind, list):
        return {"COMBO"}
    return {t.strip() for t in str(kind).split(",")}


def types_match(output_type: str, input_type: Any) -> bool:
    """ComfyUI's rule: equal, '*' on either side, or overlapping comma-separated unions."""
    out, inp = _socket_types(output_type), _socket_types(input_type)
    return "*" in out or "*" in inp or bool(out & inp)


def check_value(class_type: str, name: str, spec: list, value: Any) -> str | None:
    """Why `value` is not valid for input `name` (spec from /object_info), or None."""
    kind, opts = spec[0], _options(spec)
    combo = _combo_values(spec)
    if combo is not None:
        if value in combo:
            return None
        folder = MODEL_FILE_INPUTS.get((class_type, name))
        if folder is not None and isinstance(value, str):
            accepted = MODEL_EXTENSIONS | ({".gguf"} if folder in GGUF_FOLDERS else set())
            if _extension(value) in accepted:
                return None
            return f"'{value}' is not a model file models/{folder} accepts ({', '.join(sorted(accepted))})"
        if opts.get("image_upload") and isinstance(value, str) and _extension(value) in IMAGE_EXTENSIONS:
            return None
        shown = ", ".join(map(repr, combo[:8])) + (", …" if len(combo) > 8 else "")
        return f"{value!r} is not one of the choices [{shown}]"
    if kind == "INT" or kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        if kind == "INT" and not (isinstance(value, int) or float(value).is_integer()):
            return f"{value!r} is not an integer"
        if not math.isfinite(value):
            return f"{value!r} is not finite"
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None and value < lo:
            return f"{value} is below the minimum {lo}"
        if hi is not None and value > hi:
            return f"{value} is above the maximum {hi}"
        step = opts.get("step")
        if step and kind == "INT":
            if (value - (lo or 0)) % step:
                return f"{value} is not on the step {step} (from {lo or 0})"
        elif step and kind == "FLOAT":
            n = (value - (lo or 0)) / step
            if abs(n - round(n)) > 1e-6 * max(1.0, abs(n)):
                return f"{value} is not on the step {step} (from {lo or 0})"
        return None
    if kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    return None


def validate_api(prompt: dict, object_info: dict) -> list[str]:
    """Problems of an API-format prompt: node types, input values, links and their types, missing inputs."""
    problems = []
    for node_id, node in prompt.items():
        ctype = node.get("class_type")
        where = f"node {node_id} ({ctype})"
        info = object_info.get(ctype)
        if info is None:
            problems.append(f"{where}: unknown node type '{ctype}'")
            continue
        declared = _inputs(info)
        given = node.get("inputs", {})
        for name, value in given.items():
            if name not in declared:
                problems.append(f"{where}: no input named '{name}'")
                continue
            spec, _ = declared[name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                origin = prompt.get(value[0])
                if origin is None:
                    problems.append(f"{where}: input '{name}' links to missing node {value[0]}")
                    continue
                outputs = object_info.get(origin.get("class_type"), {}).get("output")
                if outputs is None:
                    continue  # unknown origin type: reported at the origin
                if not isinstance(value[1], int) or not 0 <= value[1] < len(outputs):
                    problems.append(f"{where}: input '{name}' links to output {value[1]} of node {value[0]}, "
                                    f"which has {len(outputs)} outputs")
                    continue
                if not types_match(outputs[value[1]], spec[0]):
                    problems.append(f"{where}: input '{name}' wants {spec[0]} but node {value[0]} output "
                                    f"{value[1]} gives {outputs[value[1]]}")
                continue
            if not _is_widget(spec):
                problems.append(f"{where}: input '{name}' ({spec[0]}) must be a link, got {value!r}")
                continue
            why = check_value(ctype, name, spec, value)
            if why:
                problems.append(f"{where}: {name}: {why}")
        for name, (spec, required) in declared.items():
            if required and name not in given:
                problems.append(f"{where}: required input '{name}' is missing")
    return problems


def _validate_ui_structure(ui: dict, object_info: dict) -> list[str]:
    problems = []
    nodes = {}
    for node in ui.get("nodes", []):
        if node["id"] in nodes:
            problems.append(f"node {node['id']}: duplicate id")
        nodes[node["id"]] = node
    links = {}
    for link in ui.get("links", []):
        if not isinstance(link, list) or len(link) != 6:
            problems.append(f"link {link!r}: not [id, origin, slot, target, slot, type]")
            continue
        links[link[0]] = link
    if ui.get("last_node_id", 0) < max(nodes, default=0):
        problems.append("last_node_id is below the largest node id")
    if ui.get("last_link_id", 0) < max(links, default=0):
        problems.append("last_link_id is below the largest link id")

    for node in nodes.values():
        ntype = node["type"]
        where = f"node {node['id']} ({ntype})"
        if ntype in VIRTUAL_NODE_TYPES:
            continue
        info = object_info.get(ntype)
        if info is None:
            problems.append(f"{where}: unknown node type '{ntype}'")
            continue
        declared = _inputs(info)
        for slot in node.get("inputs", []):
            if slot["name"] not in declared:
                problems.append(f"{where}: no input named '{slot['name']}'")
        linked = {s["name"] for s in node.get("inputs", []) if s.get("link") is not None}
        if node.get("mode", 0) == 0:
            for name, (spec, required) in declared.items():
                if required and not _is_widget(spec) and name not in linked:
                    problems.append(f"{where}: required input '{name}' ({spec[0]}) is not connected")
        values = node.get("widgets_values")
        if isinstance(values, list):
            expected = sum(1 + _has_control(n, s) for n, (s, _) in declared.items() if _is_widget(s))
            uploads = sum(1 for s, _ in declared.values() if _options(s).get("image_upload"))
            if len(values) < expected:
                problems.append(f"{where}: {len(values)} widget values, the node has {expected}")
            elif len(values) > expected + uploads:
                problems.append(f"{where}: {len(values)} widget values, the node has only {expected}")
            i = 0
            for name, (spec, _) in declared.items():
                if not _is_widget(spec):
                    continue
                i += 1
                if _has_control(name, spec):
                    if i < len(values) and values[i] not in CONTROL_VALUES:
                        problems.append(f"{where}: {name}: control after generate {values[i]!r} is not one of "
                                        f"{sorted(CONTROL_VALUES)}")
                    i += 1
        models = node.get("properties", {}).get("models", [])
        for entry in models:
            if not all(isinstance(entry.get(k), str) and entry[k] for k in ("name", "url", "directory")):
                problems.append(f"{where}: properties.models entry {entry!r} needs name, url and directory")
            elif not entry["url"].startswith("https://"):
                problems.append(f"{where}: model URL {entry['url']!r} is not https")
            elif entry["name"] not in (values or []):
                problems.append(f"{where}: properties.models names {entry['name']!r}, which no widget loads")

    for lid, (_, origin_id, origin_slot, target_id, target_slot, ltype) in links.items():
        where = f"link {lid}"
        origin, target = nodes.get(origin_id), nodes.get(target_id)
        if origin is None or target is None:
            problems.append(f"{where}: joins missing node {origin_id if origin is None else target_id}")
            continue
        outs, ins = origin.get("outputs", []), target.get("inputs", [])
        if not 0 <= origin_slot < len(outs):
            problems.append(f"{where}: node {origin_id} has no output slot {origin_slot}")
            continue
        if not 0 <= target_slot < len(ins):
            problems.append(f"{where}: node {target_id} has no input slot {target_slot}")
            continue
        if lid not in (outs[origin_slot].get("links") or []):
            problems.append(f"{where}: not listed in node {origin_id} output {origin_slot}'s links")
        if ins[target_slot].get("link") != lid:
            problems.append(f"{where}: node {target_id} input {target_slot} holds link "
                            f"{ins[target_slot].get('link')}, not {lid}")
        if origin["type"] in VIRTUAL_NODE_TYPES or target["type"] in VIRTUAL_NODE_TYPES:
            continue
        oinfo, tinfo = object_info.get(origin["type"]), object_info.get(target["type"])
        if oinfo is None or tinfo is None:
            continue
        declared_out = oinfo.get("output", [])
        if origin_slot >= len(declared_out):
            problems.append(f"{where}: {origin['type']} has only {len(declared_out)} outputs")
            continue
        out_type = declared_out[origin_slot]
        in_name = ins[target_slot]["name"]
        in_spec = _inputs(tinfo).get(in_name)
        if in_spec is None:
            continue  # reported above
        if not types_match(out_type, in_spec[0][0]):
            problems.append(f"{where}: {origin['type']} output {origin_slot} ({out_type}) → {target['type']} "
                            f"input '{in_name}' ({in_spec[0][0]}): types differ")
        if ltype != out_type and ltype != "*":
            problems.append(f"{where}: says type {ltype} but the output gives {out_type}")
        if outs[origin_slot].get("type") not in (out_type, None):
            problems.append(f"{where}: node {origin_id} output {origin_slot} says {outs[origin_slot]['type']}, "
                            f"the node gives {out_type}")
    return problems


def validate_workflow(ui: dict, object_info: dict, api: dict | None = None) -> list[str]:
    """All problems of a UI-format workflow (and of its API twin when given) against /object_info."""
    problems = _validate_ui_structure(ui, object_info)
    try:
        converted = ui_to_api(ui, object_info)
    except (WorkflowError, KeyError, IndexError, TypeError) as exc:
        problems.append(f"cannot convert to API format: {exc}")
        return problems
    problems += [p for p in validate_api(converted, object_info) if p not in problems]
    if api is not None:
        if api != converted:
            for node_id in sorted(set(api) | set(converted), key=lambda k: (len(k), k)):
                if api.get(node_id) != converted.get(node_id):
                    problems.append(f"API twin differs from the converted UI graph at node {node_id}: "
                                    f"twin {api.get(node_id)!r} vs converted {converted.get(node_id)!r}")
    return problems


def png_problems(png: bytes, ui: dict, api: dict | None) -> list[str]:
    """Problems of a workflow card PNG: its `workflow` (and `prompt`) text chunks must hold exactly these graphs,
    written as ComfyUI's SaveImage writes them (json.dumps into tEXt chunks)."""
    import io
    import json
    from PIL import Image
    try:
        image = Image.open(io.BytesIO(png))
        image.load()
    except OSError as exc:
        return [f"not a readable PNG: {exc}"]
    if image.format != "PNG":
        return [f"not a PNG but {image.format}"]
    problems = []
    expected = {"workflow": ui} if api is None else {"prompt": api, "workflow": ui}
    for key, data in expected.items():
        text = image.text.get(key)
        if text is None:
            problems.append(f"PNG has no '{key}' chunk")
        elif text != json.dumps(data):
            same = False
            try:
                same = json.loads(text) == data
            except ValueError:
                pass
            problems.append(f"PNG '{key}' chunk " + ("is not written as json.dumps() writes it" if same
                                                      else "differs from the JSON file"))
    return problems


def workflow_files(paths) -> list:
    """UI-format workflow files under the given files/folders (a folder's api/ twins are not listed)."""
    from pathlib import Path
    out = []
    for p in map(Path, paths):
        out += sorted(p.glob("*.json")) if p.is_dir() else [p]
    return out


def validate_workflow_file(path, object_info: dict) -> list[str]:
    """validate_workflow on DIR/NAME.json with its twin DIR/api/NAME.json and card DIR/NAME.png (if present)."""
    import json
    from pathlib import Path
    path = Path(path)
    try:
        ui = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [f"cannot read: {exc}"]
    if not isinstance(ui, dict) or not isinstance(ui.get("nodes"), list):
        return ["not a UI-format workflow (no 'nodes' list)"]
    twin_path = path.parent / "api" / path.name
    problems = []
    api = None
    if twin_path.exists():
        try:
            api = json.loads(twin_path.read_text())
        except ValueError as exc:
            problems.append(f"API twin {twin_path}: {exc}")
    else:
        problems.append(f"no API twin at {twin_path}")
    problems += validate_workflow(ui, object_info, api)
    card = path.with_suffix(".png")
    if card.exists():
        problems += [f"{card.name}: {p}" for p in png_problems(card.read_bytes(), ui, api)]
    return problems
