"""The shipped workflows: generated files up to date, template browser listing, validator, PNG cards, and every
API twin run through the real server on the tiny models."""
from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from zimage_turbo.downloads.tiers import api_twin, find_workflow, shipped_workflows
from zimage_turbo.fixtures.tiny_models import TINY_FILE_NAMES
from zimage_turbo.fixtures.workflow_files import TIER_ORDER
from zimage_turbo.fixtures.workflow_files import shipped_graphs as _load
from zimage_turbo.headless.server import PACK_FOLDER_NAME, history_error, output_images
from zimage_turbo.headless.validate import host_lacks, png_problems, validate_workflow
from zimage_turbo.headless.workflow import set_inputs, substitute_models

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
SHIPPED = shipped_workflows()  # {id: UI json path}, in file-name order
NAMES = list(SHIPPED)  # the ids (`6gb`, `basic`, …): the file names are the template titles ("01 Z-Image …")
TIERS = ["6gb", "8gb", "12gb", "24gb"]
INPUT_IMAGE = "example.png"
CONTROLNET = [f"controlnet_{kind}_{tier}" for tier in ("6gb", "12gb") for kind in ("canny", "depth", "inpaint")]
BASE = ["base_6gb", "base_12gb", "base_24gb"]  # Z-Image Base (issue 19)
LORA = ["8gb_lora"]  # issue 17
WINDOWS_FORBIDDEN = set('<>:"/\\|?*')


def skip_on_older_host(ui: dict, object_info: dict) -> None:
    """Workflows with core nodes only newer ComfyUI has (the Z-Image Fun ControlNet) skip on older hosts."""
    lacks = host_lacks(ui, object_info)
    if lacks:
        reason = f"this ComfyUI has no {', '.join(f'{t} ({why})' for t, why in lacks.items())}"
        print(reason)
        pytest.skip(reason)


def _file(name: str, suffix: str) -> Path:
    """The shipped workflow's file with this suffix (.png card, .jpg thumbnail)."""
    return SHIPPED[name].with_name(SHIPPED[name].stem + suffix)


def put_input_image(server) -> None:
    """The img2img workflow loads input/example.png (ComfyUI ships one; the test server's input/ is empty)."""
    target = server.base_dir / "input" / INPUT_IMAGE
    if not target.exists():
        Image.new("RGB", (64, 64), (150, 90, 40)).save(target)


def test_shipped_set_is_complete():
    assert set(TIERS) | {"basic", "img2img"} | set(CONTROLNET) | set(BASE) | set(LORA) == set(NAMES)
    for name in NAMES:
        assert api_twin(SHIPPED[name]).exists()
        assert _file(name, ".png").exists()
        assert Image.open(_file(name, ".jpg")).format == "JPEG"


def test_file_names_are_readable_titles_in_tier_order():
    """Frontends title a custom-node template card with its file name (and describe it with the same name, '-'
    and '_' made spaces) and sort alphabetically by it: the names are readable titles ("01 Turbo 6 GB") whose
    alphabetical order is the tier order, portable, without '-' or '_'."""
    stems = [p.stem for p in SHIPPED.values()]
    assert [stems[NAMES.index(i)] for i in TIER_ORDER] == sorted(stems)
    assert sorted(stems)[:7] == ["01 Turbo 6 GB", "02 Turbo 8 GB", "03 Turbo 12 GB", "04 Turbo 16 to 24 GB",
                                 "05 Turbo basic (official files)", "06 Turbo img2img", "07 Turbo LoRA 8 GB"]
    assert sorted(stems)[-1] == "16 Base 24 GB"
    for number, stem in enumerate(sorted(stems), 1):
        assert stem.startswith(f"{number:02d} ") and not {"_", "-"} & set(stem), stem
        assert stem.isascii() and stem.isprintable() and not WINDOWS_FORBIDDEN & set(stem), stem
        assert stem == stem.strip(" .") and not {"#", "%"} & set(stem), stem  # nothing a URL path would cut
    assert sorted(p.name for p in WORKFLOWS.glob("*.png") if p.name != "icon.png") == \
        sorted(f"{s}.png" for s in stems)  # cards and thumbnails carry the same names


@pytest.mark.parametrize("name", NAMES)
def test_tools_find_each_workflow_by_id_former_name_and_title(name):
    path = SHIPPED[name]
    former = json.loads(path.read_text())["extra"]["zimage_turbo"]["former_name"]
    assert former == ("z_image_" if name.startswith("base_") else "z_image_turbo_") + name  # the 0.x file names
    for alias in (name, name.upper(), former, path.stem, path.name):
        assert find_workflow(alias) == path, alias


def test_generated_files_are_up_to_date():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "build_workflows.py"), "--check"],
                          capture_output=True, text=True, timeout=600, cwd="/")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("name", TIERS)
def test_tier_graphs_have_what_users_need(name):
    ui, api = _load(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    types = [n["type"] for n in ui["nodes"]]
    assert {"ZImageDiffusionModelLoader", "ZImageTextEncoderLoader", "ZImageVAELoader", "ZImageTurboSampler",
            "ZImageSaveImage", "Note"} <= set(types)
    assert all(n.get("title") for n in ui["nodes"]) and len(ui["groups"]) >= 3
    sampler = next(n for n in api.values() if n["class_type"] == "ZImageTurboSampler")["inputs"]
    assert (sampler["width"], sampler["height"], sampler["steps"], sampler["cfg"]) == (1024, 1024, 8, 1.0)
    sampler_ui = next(n for n in ui["nodes"] if n["type"] == "ZImageTurboSampler")
    assert sampler_ui["widgets_values"][4] in ("randomize", "fixed")  # seed control
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    models = [m for n in nodes.values() for m in n["properties"].get("models", [])]
    assert len(models) == 3
    for m in models:
        assert m["url"].startswith("https://huggingface.co/") and m["url"].endswith("/" + m["name"])
        assert m["directory"] in ("diffusion_models", "text_encoders", "vae")
        assert f"models/{m['directory']}/{m['name']}" in note
    gb = int(name.removesuffix("gb"))
    decoders = {"VAEDecodeTiled"} if gb == 6 else {"VAEDecode"}
    assert decoders <= set(types) and not ({"VAEDecode", "VAEDecodeTiled"} - decoders) & set(types)
    te = next(m["name"] for m in models if m["directory"] == "text_encoders")
    dit = next(n for n in nodes.values() if n["type"] == "ZImageDiffusionModelLoader")["widgets_values"]
    expected = {6: ("Qwen3-4B-Q4_K_M.gguf", ["z_image_turbo-Q4_K_M.gguf", "default"]),
                8: ("Qwen3-4B-Q6_K.gguf", ["z_image_turbo_bf16.safetensors", "fp8_e4m3fn"]),
                12: ("Qwen3-4B-Q8_0.gguf", ["z_image_turbo_bf16.safetensors", "fp8_e4m3fn"]),
                24: ("qwen_3_4b.safetensors", ["z_image_turbo_bf16.safetensors", "default"])}[gb]
    assert (te, dit) == expected


@pytest.mark.parametrize("name", BASE)
def test_base_graphs_have_what_users_need(name):
    """Base: 28 steps at cfg 4 with a wired negative prompt, core EasyCache between loader and sampler at
    threshold 0 (no caching until raised), the Base DiT file of the tier from the catalog."""
    from zimage_turbo.downloads.catalog import DIT_BASE_BF16, DIT_BASE_Q4_K_M
    ui, api = _load(name)
    sampler = next(n for n in api.values() if n["class_type"] == "ZImageTurboSampler")["inputs"]
    assert (sampler["steps"], sampler["cfg"], sampler["shift"], sampler["preset"], sampler["variety"]) == \
        (28, 4.0, 3.0, "custom", 0.0)
    negative = api[sampler["negative"][0]]
    assert negative["class_type"] == "CLIPTextEncode" and negative["inputs"]["text"]
    cache = api[sampler["model"][0]]
    assert cache["class_type"] == "EasyCache" and cache["inputs"]["reuse_threshold"] == 0.0
    assert api[cache["inputs"]["model"][0]]["class_type"] == "ZImageDiffusionModelLoader"
    dit = next(n for n in api.values() if n["class_type"] == "ZImageDiffusionModelLoader")["inputs"]
    gb = int(name.split("_")[-1].removesuffix("gb"))
    assert dit["unet_name"] == (DIT_BASE_Q4_K_M if gb == 6 else DIT_BASE_BF16).name
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert "28 steps, cfg 4 with the negative prompt" in note


@pytest.mark.parametrize("name", NAMES)
def test_png_card_holds_exactly_the_graphs(name):
    ui, api = _load(name)
    data = _file(name, ".png").read_bytes()
    assert png_problems(data, ui, api) == []
    image = Image.open(io.BytesIO(data))
    assert json.loads(image.text["workflow"]) == ui and json.loads(image.text["prompt"]) == api
    # tEXt chunks, as SaveImage writes them (the frontend reads tEXt; iTXt would need Unicode handling)
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    assert chunks.count(b"tEXt") == 2 and b"iTXt" not in chunks and b"zTXt" not in chunks


@pytest.mark.server
def test_template_browser_lists_the_workflows_with_thumbnails(server):
    listing = server.request("/workflow_templates")
    stems = [p.stem for p in SHIPPED.values()]
    assert sorted(listing[PACK_FOLDER_NAME]) == stems  # api/ twins are not listed
    for name, path in SHIPPED.items():
        url = f"/api/workflow_templates/{PACK_FOLDER_NAME}/{urllib.parse.quote(path.stem)}"  # as browsers send it
        served = server.request(f"{url}.json")
        assert served == _load(name)[0]
        with urllib.request.urlopen(f"{server.url}{url}.jpg") as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            assert Image.open(io.BytesIO(r.read())).size == (512, 512)


@pytest.mark.server
@pytest.mark.parametrize("name", NAMES)
def test_validator_passes_on_shipped_workflow(server, name):
    ui, api = _load(name)
    skip_on_older_host(ui, server.object_info())
    assert validate_workflow(ui, server.object_info(), api) == []


def _broken(kind: str) -> tuple[dict, dict, str]:
    """A broken copy of the 6 GB workflow and the words its problem must be reported with."""
    ui, api = _load("6gb")
    ui, api = copy.deepcopy(ui), copy.deepcopy(api)
    node = {n["type"]: n for n in ui["nodes"]}
    if kind == "wrong_node_type":
        node["ZImageVAELoader"]["type"] = "ZImageVAELoaderXL"
        return ui, api, "unknown node type 'ZImageVAELoaderXL'"
    if kind == "bad_link":  # the VAE wired into the sampler's model input
        link = next(l for l in ui["links"] if l[3] == node["ZImageTurboSampler"]["id"] and l[4] == 0)
        vae = node["ZImageVAELoader"]
        link[1], link[5] = vae["id"], "VAE"
        vae["outputs"][0]["links"].append(link[0])
        node["ZImageDiffusionModelLoader"]["outputs"][0]["links"].remove(link[0])
        return ui, api, "types differ"
    if kind == "out_of_range":
        node["ZImageTurboSampler"]["widgets_values"][5] = 0  # steps, min 1
        return ui, api, "steps: 0 is below the minimum 1"
    if kind == "off_step":
        node["VAEDecodeTiled"]["widgets_values"][0] = 500  # tile_size, step 32 from 64
        return ui, api, "tile_size: 500 is not on the step 32"
    if kind == "bad_combo":
        node["ZImageTurboSampler"]["widgets_values"][8] = "euler_turbo_9000"
        return ui, api, "sampler_name: 'euler_turbo_9000' is not one of the choices"
    if kind == "bad_model_file":
        node["ZImageVAELoader"]["widgets_values"][0] = "ae.txt"
        return ui, api, "'ae.txt' is not a model file models/vae accepts"
    if kind == "dangling_link":
        ui["links"].append([99, 42, 0, node["ZImageTurboSampler"]["id"], 3, "LATENT"])
        ui["last_link_id"] = 99
        return ui, api, "link 99: joins missing node 42"
    if kind == "unconnected_input":
        sampler = node["ZImageTurboSampler"]
        link_id = sampler["inputs"][1]["link"]
        sampler["inputs"][1]["link"] = None
        ui["links"] = [l for l in ui["links"] if l[0] != link_id]
        node["CLIPTextEncode"]["outputs"][0]["links"] = []
        return ui, api, "required input 'positive' (CONDITIONING) is not connected"
    if kind == "stale_twin":
        next(n for n in api.values() if n["class_type"] == "ZImageTurboSampler")["inputs"]["steps"] = 9
        return ui, api, "API twin differs from the converted UI graph at node 5"
    raise ValueError(kind)


BROKEN_KINDS = ["wrong_node_type", "bad_link", "out_of_range", "off_step", "bad_combo", "bad_model_file",
                "dangling_link", "unconnected_input", "stale_twin"]


@pytest.mark.server
@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_validator_reports_broken_copy(server, kind):
    ui, api, words = _broken(kind)
    problems = validate_workflow(ui, server.object_info(), api)
    assert any(words in p for p in problems), problems


@pytest.mark.server
def test_validator_script_passes_shipped_and_fails_broken_copies(server, tmp_path):
    script = [sys.executable, str(REPO / "scripts" / "validate_workflows.py"), "--server", server.url]
    ok = subprocess.run(script, capture_output=True, text=True, timeout=300, cwd="/")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(NAMES)} workflows, 0 problems" in ok.stdout
    (tmp_path / "api").mkdir()
    for kind in ("wrong_node_type", "bad_link", "out_of_range"):
        ui, api, _ = _broken(kind)
        (tmp_path / f"{kind}.json").write_text(json.dumps(ui))
        (tmp_path / "api" / f"{kind}.json").write_text(json.dumps(api))
    # a card whose chunks no longer match its JSON
    ui, api = _load("8gb")
    (tmp_path / "api" / "stale_card.json").write_text(json.dumps(api))
    ui_changed = copy.deepcopy(ui)
    ui_changed["nodes"][3]["pos"] = [0, 0]
    (tmp_path / "stale_card.json").write_text(json.dumps(ui_changed))
    (tmp_path / "stale_card.png").write_bytes(_file("8gb", ".png").read_bytes())
    bad = subprocess.run(script + [str(tmp_path)], capture_output=True, text=True, timeout=300, cwd="/")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    for kind in ("wrong_node_type", "bad_link", "out_of_range"):
        assert f"FAIL {tmp_path / kind}.json" in bad.stdout
    assert "stale_card.png: PNG 'workflow' chunk differs from the JSON file" in bad.stdout


def tiny_prompt(api: dict, seed: int, prefix: str) -> dict:
    """The API twin on the tiny models, 64x64, 2 steps, saving under `prefix`."""
    prompt = substitute_models(api, TINY_FILE_NAMES)
    set_inputs(prompt, "ZImageTurboSampler", {"seed": seed, "width": 64, "height": 64, "steps": 2})
    set_inputs(prompt, "SaveImage", {"filename_prefix": prefix})
    set_inputs(prompt, "ZImageSaveImage", {"filename_prefix": prefix})
    return prompt


@pytest.mark.server
@pytest.mark.parametrize("name", NAMES)
def test_shipped_workflow_runs_on_the_server(server, name):
    ui, api = _load(name)
    skip_on_older_host(ui, server.object_info())
    put_input_image(server)
    prompt = tiny_prompt(api, 7, f"zit_wf_{name}")
    assert {n["class_type"] for n in prompt.values()} == {n["class_type"] for n in api.values()}
    entry = server.run(prompt, workflow=ui, timeout=300)
    assert history_error(entry) is None, history_error(entry)
    images = output_images(entry)
    assert len(images) == 1
    image = Image.open(server.base_dir / "output" / images[0]["subfolder"] / images[0]["filename"])
    assert image.size == (64, 64)
    assert json.loads(image.text["workflow"]) == ui
    saved = json.loads(image.text["prompt"])
    for node in saved.values():
        node.pop("is_changed", None)  # ComfyUI 0.30 records the LoadImage file hash in the saved prompt
    assert saved == prompt
    pixels = image.convert("L").getextrema()
    assert pixels[0] != pixels[1], "a flat image"
