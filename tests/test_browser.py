"""The real ComfyUI frontend (headless Debian chromium, Selenium + chromedriver) opening the shipped workflows.

From the test server's own page, each workflow is opened the way users open it: from the template browser (the
pack's entry under Extensions, clicking its card, whose thumbnail must have loaded) and by dropping its PNG card
onto the canvas. The cards show the readable titles (the file names, uncut) and, sorted A → Z in the browser's
sort menu, appear in tier order. After each load: the node count and links match the file, every node type is
registered, the widget values survived, the frontend's own conversion (graphToPrompt) equals the API twin, the
frontend reports no missing node types and no errors other than the model files a test server lacks, and it offers
exactly the workflow's model files (with their URLs on frontends that keep them) for download. A broken copy with an
unknown node type must be reported, so the check above can fail. Screenshots go to $ZIT_ARTIFACTS (default: a
pytest temp folder), one folder per frontend version.

Runs wherever chromium and chromedriver are installed (scripts/install_browser.sh); without them it is skipped,
except under CI (env CI set), where it fails.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from zimage_turbo.downloads.tiers import shipped_workflows
from zimage_turbo.fixtures.workflow_files import TIER_ORDER
from zimage_turbo.fixtures.workflow_files import shipped_graphs as _load
from zimage_turbo.headless.server import PACK_FOLDER_NAME

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[1]
SHIPPED = shipped_workflows()  # {id: UI json path}
NAMES = list(SHIPPED)  # ids (`6gb`, `basic`, …), in tier order
TITLES = [p.stem for p in SHIPPED.values()]  # the file names: what the cards are titled, in tier order
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,1000",
                # nothing but the test server: the frontend's release/news look-ups fail at once
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
THUMB_SIZE = 512


def _card(name: str) -> str:
    """JS expression: the template browser's card of the shipped workflow with this id."""
    selector = f'[data-testid="template-workflow-{SHIPPED[name].stem}"]'
    return f"document.querySelector({json.dumps(selector)})"


def _browser_missing() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return f"{', '.join(missing)} not installed (bash scripts/install_browser.sh)" if missing else None


# JS run in the page ------------------------------------------------------------------------------------------
PINIA = "const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;"
JS_READY = ("return !!(window.app && window.app.graph && window.LiteGraph && LiteGraph.registered_node_types"
            " && LiteGraph.registered_node_types['ZImageTurboSampler'] && document.querySelector('#vue-app'))")
# the innermost elements of open dialogs whose text is exactly arguments[0]
JS_FIND_TEXT = """const t = arguments[0];
const all = Array.from(document.querySelectorAll('[role=dialog] *')).filter(e => e.innerText && e.innerText.trim() === t);
return all.filter(e => !all.some(o => o !== e && e.contains(o)));"""
JS_CLOSE_DIALOGS = PINIA + """const ds = pinia._s.get('dialog');
for (const d of [...ds.dialogStack]) ds.closeDialog({key: d.key});
return ds.dialogStack.length;"""
JS_DROP_FILE = """const [b64, name, type] = arguments;
const bin = atob(b64); const bytes = new Uint8Array(bin.length);
for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
const dt = new DataTransfer();
dt.items.add(new File([bytes], name, {type}));
const target = document.querySelector('canvas#graph-canvas') || document.body;
for (const kind of ['dragenter', 'dragover', 'drop'])
  target.dispatchEvent(new DragEvent(kind, {dataTransfer: dt, bubbles: true, cancelable: true}));"""
JS_GRAPH = """const g = app.graph;
return JSON.stringify({count: g.nodes.length, unregistered: g.nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type),
  serialized: g.serialize()});"""
JS_TO_PROMPT = "const done = arguments[0]; app.graphToPrompt().then(r => done(JSON.stringify(r.output)), e => done('error: ' + e));"
# What the frontend reports: 1.4x keeps it in stores (missing nodes / models / media, errors); 1.3x shows dialogs.
JS_REPORT = PINIA + """const s = k => pinia._s.get(k);
const dialogs = Array.from(document.querySelectorAll('[role=dialog], .p-dialog')).map(e => e.innerText);
const out = {dialogs, stores: !!s('missingModel')};
if (s('missingModel')) {
  out.missingModels = (s('missingModel').missingModelCandidates || []).filter(c => c.isMissing !== false)
    .map(c => ({name: c.name, directory: c.directory, url: c.url || null}));
  out.modelsChecked = s('missingModel').missingModelCandidates !== null && !s('missingModel').isRefreshingMissingModels;
  out.modelsRefreshing = !!s('missingModel').isRefreshingMissingModels;
  out.missingNodes = s('missingNodesError').hasMissingNodes;
  out.missingMedia = s('missingMedia') ? s('missingMedia').hasMissingMedia : false;
  const e = s('executionError');
  out.otherErrors = {node: e.hasNodeError, prompt: e.hasPromptError, execution: e.hasExecutionError,
                     total: e.totalErrorCount};
}
return JSON.stringify(out);"""
MISSING_NODES_TEXT = re.compile(r"missing node|node types were not found", re.I)
MISSING_DIALOG_SETTLE_S = 3.0
FRONTEND_DISPLAY_INPUTS = {"PreviewAny": ("preview",)}  # frontend 1.32 sends PreviewAny's text box as an input
# The laid-out graph as the frontend drew it: node boxes (title bar included), title text widths, group boxes.
JS_LAYOUT = """const c = app.canvas; const ctx = c.canvas.getContext('2d');
ctx.font = c.title_text_font || ((LiteGraph.NODE_TEXT_SIZE || 14) + 'px Arial');
const th = LiteGraph.NODE_TITLE_HEIGHT || 30;
return JSON.stringify({titleHeight: th,
  nodes: app.graph.nodes.map(n => ({id: n.id, type: n.type, title: n.title || '', pos: Array.from(n.pos),
    size: Array.from(n.size), titleWidth: ctx.measureText(n.title || '').width})),
  groups: (app.graph.groups || app.graph._groups || []).map(g => ({title: g.title,
    box: Array.from(g._bounding || g.bounding)}))});"""
TITLE_MARGIN_PX = 30  # the collapse dot and padding beside the title text
# The pack's template cards in page order: [file name, title text, description text, title cut off]. A title
# element is the card's first text leaf (h3 with line-clamp: a cut title wraps into the hidden second line).
JS_PACK_CARDS = """const titles = new Set(arguments[0]);
return Array.from(document.querySelectorAll('[data-testid^="template-workflow-"]'))
  .map(c => [c.getAttribute('data-testid').slice('template-workflow-'.length), c])
  .filter(([name]) => titles.has(name))
  .map(([name, c]) => { const [t, d] = Array.from(c.querySelectorAll('h3, p')).filter(e => e.innerText.trim());
    return [name, t && t.innerText.trim(), d && d.innerText.trim(), !!t && t.scrollHeight > t.clientHeight + 1]; });"""
# the sort menu's A → Z entry (its label differs between frontend versions)
ALPHABETICAL_LABEL = re.compile(r"^(A → Z|Alphabetical \(A-Z\))$")


def _overlap(a: list, b: list) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def layout_problems(layout: dict) -> list[str]:
    """Titles wider than their node (cut off), nodes overlapping each other, nodes sticking out of the group
    their top-left corner is in."""
    th = layout["titleHeight"]
    boxes = {n["id"]: [n["pos"][0], n["pos"][1] - th, n["size"][0], n["size"][1] + th] for n in layout["nodes"]}
    problems = [f"node {n['id']} title {n['title']!r} is cut off ({n['titleWidth']:.0f} px text in a "
                f"{n['size'][0]:.0f} px node)" for n in layout["nodes"]
                if n["titleWidth"] + TITLE_MARGIN_PX > n["size"][0]]
    ids = sorted(boxes)
    problems += [f"nodes {a} and {b} overlap" for i, a in enumerate(ids) for b in ids[i + 1:]
                 if _overlap(boxes[a], boxes[b])]
    for node_id, (x, y, w, h) in boxes.items():
        for g in layout["groups"]:
            gx, gy, gw, gh = g["box"]
            if gx <= x < gx + gw and gy <= y < gy + gh and (x + w > gx + gw or y + h > gy + gh):
                problems.append(f"node {node_id} sticks out of group {g['title']!r}")
    return problems


class Frontend:
    def __init__(self, driver, server, folder: Path):
        self.driver, self.server, self.folder = driver, server, folder
        self.version = driver.execute_script("return window.__COMFYUI_FRONTEND_VERSION__ || 'unknown'")
        self.default_sort = driver.execute_script("return app.extensionManager.setting.get('Comfy.Templates.SortBy')")

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, what: str, predicate, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                self.shot(f"timeout_{re.sub(r'[^a-z0-9]+', '_', what.lower())}")
                raise AssertionError(f"frontend {self.version}: timed out waiting for {what}")
            time.sleep(0.25)

    def shot(self, name: str) -> Path:
        path = self.folder / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def click(self, element, timeout: float = 10.0) -> None:
        """A real click, retried while an opening dialog's mask or animation still covers the element."""
        from selenium.common.exceptions import ElementClickInterceptedException
        deadline = time.monotonic() + timeout
        while True:
            try:
                element.click()
                return
            except ElementClickInterceptedException:
                if time.monotonic() > deadline:
                    self.shot("click_intercepted")
                    raise
                time.sleep(0.25)

    def close_dialogs(self) -> None:
        self.js(JS_CLOSE_DIALOGS)
        self.wait("dialogs to close", lambda: not self.js("return document.querySelectorAll('[role=dialog]').length"),
                  10)

    def report(self) -> dict:
        return json.loads(self.js(JS_REPORT))

    def open_template_browser(self) -> None:
        self.close_dialogs()
        self.js("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        entry = self.wait("the pack in the template browser", lambda: self.js(JS_FIND_TEXT, PACK_FOLDER_NAME))
        self.click(entry[-1])
        self.wait("the pack's template cards", lambda: self.pack_cards())

    def pack_cards(self) -> list:
        return self.js(JS_PACK_CARDS, TITLES)

    def thumbnail_size(self, name: str) -> list:
        # scrolled into view first: the browser loads lazy thumbnails only near the viewport (16+ cards)
        return self.js(f"const c = {_card(name)};"
                       "const i = c && c.querySelector('img');"
                       "if (c && !(i && i.complete)) c.scrollIntoView({block: 'center'});"
                       "return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null;")

    def graph(self) -> dict:
        return json.loads(self.js(JS_GRAPH))

    def clear_graph(self) -> None:
        """Empty the canvas, so waiting for the next workflow cannot mistake the previous one for it."""
        self.js("app.graph.clear()")
        self.wait("the canvas to empty", lambda: self.graph()["count"] == 0, 10)


@contextlib.contextmanager
def open_frontend(server, artifacts: Path, label: str = ""):
    """A chromium session on the server's page, ready (the pack's nodes registered); screenshots under
    `artifacts/frontend-<version><label>`."""
    why = _browser_missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser test must run in CI: {why}")
        print(f"\nSKIPPING browser tests: {why}")
        pytest.skip(why)
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    image = server.base_dir / "input" / "example.png"  # what the img2img workflow's LoadImage names
    if not image.exists():
        Image.new("RGB", (64, 64), (150, 90, 40)).save(image)
    server.request("/settings/Comfy.TutorialCompleted", True)  # no first-run template dialog popping up later
    profile = Path(tempfile.mkdtemp(prefix="zit_chromium_"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_script_timeout(60)
        driver.get(server.url)
        deadline = time.monotonic() + 120
        while not driver.execute_script(JS_READY):
            assert time.monotonic() < deadline, "the ComfyUI frontend did not start within 120 s"
            time.sleep(0.5)
        version = driver.execute_script("return window.__COMFYUI_FRONTEND_VERSION__ || 'unknown'")
        folder = artifacts / f"frontend-{version}{label}"
        folder.mkdir(parents=True, exist_ok=True)
        print(f"\nbrowser screenshots: {folder}")
        yield Frontend(driver, server, folder)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _artifacts(tmp_path_factory) -> Path:
    return Path(os.environ.get("ZIT_ARTIFACTS") or tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def frontend(server, tmp_path_factory):
    """One chromium session on the test server's page for the whole module."""
    with open_frontend(server, _artifacts(tmp_path_factory)) as fe:
        yield fe


def _expected_models(ui: dict) -> list[dict]:
    return sorted((m for n in ui["nodes"] for m in n.get("properties", {}).get("models", [])),
                  key=lambda m: m["name"])


def skip_on_older_host(fe: Frontend, name: str) -> None:
    """Workflows with core nodes only newer ComfyUI has (the Z-Image Fun ControlNet) skip on older hosts."""
    from zimage_turbo.headless.validate import host_lacks
    lacks = host_lacks(_load(name)[0], fe.server.object_info())
    if lacks:
        reason = f"this ComfyUI has no {', '.join(f'{t} ({why})' for t, why in lacks.items())}"
        print(reason)
        pytest.skip(reason)


def check_opened_cleanly(fe: Frontend, name: str, how: str, models_present: bool = False) -> None:
    """The workflow opened intact; the frontend reports missing exactly the workflow's model files (none when
    the server has them all: `models_present`) and nothing else."""
    ui, api = _load(name)
    fe.wait(f"{name} ({how}) to load", lambda: fe.graph()["count"] == len(ui["nodes"])
            and fe.js("return app.graph.nodes.some(n => n.type === 'ZImageTurboSampler')"))
    graph = fe.graph()
    assert graph["unregistered"] == []
    serialized = {n["id"]: n for n in graph["serialized"]["nodes"]}
    assert sorted(serialized) == sorted(n["id"] for n in ui["nodes"])
    for node in ui["nodes"]:
        got = serialized[node["id"]]
        assert got["type"] == node["type"]
        assert got.get("widgets_values") == node["widgets_values"], f"{name} node {node['id']} widgets changed"
        assert got.get("title", node["title"]) == node["title"]
    assert sorted(map(list, graph["serialized"]["links"])) == sorted(ui["links"])
    assert layout_problems(json.loads(fe.js(JS_LAYOUT))) == [], f"{name}: layout as drawn"
    prompt = fe.driver.execute_async_script(JS_TO_PROMPT)
    assert not prompt.startswith("error"), prompt
    converted = json.loads(prompt)
    for node in converted.values():  # a display-only widget some frontends send (the node declares no such input)
        for key in FRONTEND_DISPLAY_INPUTS.get(node.get("class_type"), ()):
            node.get("inputs", {}).pop(key, None)
    assert converted == api, "the frontend's own conversion differs from the API twin"

    expected = [] if models_present else _expected_models(ui)
    if fe.report()["stores"]:  # frontend 1.4x: reports live in stores (an errors panel, not dialogs)
        if expected:
            report = fe.wait("the missing-model check", lambda: (r := fe.report())["modelsChecked"] and r)
        else:  # nothing missing leaves no candidates at all: wait as long as a report takes to appear
            time.sleep(MISSING_DIALOG_SETTLE_S)
            report = fe.wait("the missing-model check", lambda: not (r := fe.report())["modelsRefreshing"] and r)
        assert report["missingNodes"] is False
        assert report["missingMedia"] is False
        assert not any(report["otherErrors"][k] for k in ("node", "prompt", "execution")), report["otherErrors"]
        assert report["otherErrors"]["total"] == len(expected)  # nothing but the model files
        got = sorted(report["missingModels"], key=lambda m: m["name"])
        assert [(m["name"], m["directory"], m["url"]) for m in got] == \
            [(m["name"], m["directory"], m["url"]) for m in expected]
    else:  # frontend 1.3x: a "Missing Models" dialog offering each file
        def models_dialog():
            return next((d for d in fe.report()["dialogs"] if "Missing Models" in d), None)
        if models_present:  # 1.3x looks files up in core's folder listing, whose extensions exclude .gguf:
            expected = [m for m in _expected_models(ui) if m["name"].endswith(".gguf")]  # (fixed in 1.4x)
        if expected:
            text = fe.wait("the missing-models dialog", models_dialog)
            for m in expected:
                assert f"{m['directory']} / {m['name']}" in text
            listed = re.findall(r"^[a-z_]+ / (\S+)$", text, re.M)
            assert sorted(listed) == sorted(m["name"] for m in expected), f"{name}: {text}"
        else:  # the dialog opens right after the graph: give it the time it takes when files are missing
            time.sleep(MISSING_DIALOG_SETTLE_S)
            assert models_dialog() is None, f"{name}: {models_dialog()}"
        assert not any(MISSING_NODES_TEXT.search(d) for d in fe.report()["dialogs"])
    fe.shot(f"{name}_{how}_dialogs")
    fe.close_dialogs()
    fe.shot(f"{name}_{how}")


def test_template_browser_lists_pack_workflows_with_thumbnails(frontend):
    """Every card, titled with its readable file name, in full (not cut off) and described by the same words
    (the frontend's description is the file name with '-' and '_' made spaces), with its thumbnail."""
    frontend.open_template_browser()
    cards = frontend.pack_cards()
    assert sorted(c[0] for c in cards) == TITLES
    for name, title, description, cut in cards:
        assert (title, description, cut) == (name, name, False), f"frontend {frontend.version}: card {name}"
    for name in NAMES:
        size = frontend.wait(f"thumbnail of {name}", lambda: frontend.thumbnail_size(name), 20)
        assert size == [THUMB_SIZE, THUMB_SIZE]
    frontend.shot("template_browser")


def choose_sort(fe: Frontend, label: re.Pattern) -> None:
    """Pick the entry of the template browser's sort menu whose text matches, as a user does (two clicks)."""
    menu = fe.js("return Array.from(document.querySelectorAll('[role=dialog] [role=combobox]'))"
                 ".filter(e => /Sort by/.test(e.getAttribute('aria-label') || e.outerHTML)).pop()")
    assert menu is not None, f"frontend {fe.version}: no sort menu in the template browser"
    fe.click(menu)
    entries = fe.wait("the sort menu's entries", lambda: fe.js("return document.querySelectorAll('[role=option]')"))
    entry = next((e for e in entries if label.match(" ".join(e.text.split()))), None)  # no-break spaces too
    assert entry is not None, f"frontend {fe.version}: the sort menu offers {[e.text for e in entries]}"
    fe.click(entry)


def test_template_browser_sorted_alphabetically_shows_the_tiers_in_order(frontend):
    """What the README tells users: in the sort menu pick A → Z, and the cards are in tier order (6, 8, 12,
    16-24 GB, basic, img2img, LoRA, ControlNet, Base). The default order is the server's directory order."""
    fe = frontend
    fe.open_template_browser()
    choose_sort(fe, ALPHABETICAL_LABEL)
    fe.wait("the sort preference saved", lambda: fe.js(
        "return app.extensionManager.setting.get('Comfy.Templates.SortBy')") == "alphabetical", 10)
    fe.shot("template_browser_sorted")
    ids = {path.stem: name for name, path in SHIPPED.items()}
    assert [ids[c[0]] for c in fe.pack_cards()] == TIER_ORDER, f"frontend {fe.version}: cards sorted A → Z"
    fe.js("app.extensionManager.setting.set('Comfy.Templates.SortBy', arguments[0])", fe.default_sort)
    fe.close_dialogs()


def open_from_template_browser(fe: Frontend, name: str) -> None:
    """On an empty canvas, click the workflow's card in the template browser, as a user does."""
    skip_on_older_host(fe, name)
    fe.close_dialogs()
    fe.clear_graph()
    fe.open_template_browser()
    card = fe.js(f"return {_card(name)}")
    fe.js("arguments[0].scrollIntoView({block: 'center'})", card)
    fe.click(card)


@pytest.mark.parametrize("name", NAMES)
def test_workflow_opens_from_template_browser(frontend, name):
    open_from_template_browser(frontend, name)
    check_opened_cleanly(frontend, name, "template")


@pytest.mark.parametrize("name", NAMES)
def test_png_card_dropped_on_canvas_restores_workflow(frontend, name):
    skip_on_older_host(frontend, name)
    frontend.close_dialogs()
    frontend.clear_graph()
    png = SHIPPED[name].with_name(SHIPPED[name].stem + ".png")
    data = base64.b64encode(png.read_bytes()).decode()
    frontend.js(JS_DROP_FILE, data, png.name, "image/png")
    check_opened_cleanly(frontend, name, "png")


def test_unknown_node_type_is_reported(frontend):
    """The check has teeth: the same frontend flags a copy whose VAE loader type does not exist."""
    ui, _ = _load("8gb")
    broken = json.loads(json.dumps(ui))
    next(n for n in broken["nodes"] if n["type"] == "ZImageVAELoader")["type"] = "ZImageVAELoaderXL"
    frontend.close_dialogs()
    data = base64.b64encode(json.dumps(broken).encode()).decode()
    frontend.js(JS_DROP_FILE, data, "broken.json", "application/json")

    def flagged():
        report = frontend.report()
        if report["stores"]:
            return report["missingNodes"]
        return any(MISSING_NODES_TEXT.search(d) and "ZImageVAELoaderXL" in d for d in report["dialogs"])
    frontend.wait("the missing-node report", flagged)
    frontend.shot("broken_copy_missing_node")
    frontend.close_dialogs()


# ------------------------------------------------------------------------- a fresh server with every file
JS_NODE_CHOICES = """const [type, input] = arguments; const t = LiteGraph.registered_node_types[type];
const d = t && t.nodeData; if (!d) return null;
const spec = (d.input && (d.input.required || {})[input]) || (d.inputs && d.inputs[input]);
if (!spec) return null;
const c = Array.isArray(spec) ? spec[0] : (spec.options || spec.spec && spec.spec[0]);
return Array.isArray(c) ? c : (spec.options || null);"""
FILE_INPUTS = {"ZImageDiffusionModelLoader": ("unet_name", "diffusion_models"),
               "ZImageTextEncoderLoader": ("text_encoder_name", "text_encoders"),
               "ZImageVAELoader": ("vae_name", "vae"),
               "ZImageControlNetLoader": ("patch_name", "model_patches")}
CORE_LOADERS = {"UNETLoader": "unet_name", "CLIPLoader": "clip_name"}


@pytest.fixture(scope="module")
def fresh_frontend(tmp_path_factory, tiny_paths):
    """A ComfyUI server started for this module alone, whose models folder holds a tiny file of the right
    format under every name every shipped workflow names; the browser's page load is its first /object_info."""
    from zimage_turbo.fixtures.workflow_files import write_workflow_model_files
    from zimage_turbo.headless.server import ComfyServer, prepare_base_dir
    base = tmp_path_factory.mktemp("fresh_base")
    prepare_base_dir(base, REPO)
    files = write_workflow_model_files(base / "models")
    srv = ComfyServer.start(base_dir=base, log_path=base / "server.log")
    try:
        with open_frontend(srv, _artifacts(tmp_path_factory), "-fresh-server") as fe:
            fe.files = files
            yield fe
    finally:
        srv.stop()


def test_fresh_server_lists_every_file_on_first_page_load(fresh_frontend):
    """The node definitions the page got from the server's first /object_info list every file of the
    workflows (.gguf included) in the pack's loaders, and core UNETLoader / CLIPLoader list no .gguf."""
    fe = fresh_frontend
    by_folder: dict[str, set] = {}
    for path in fe.files:
        by_folder.setdefault(path.parent.name, set()).add(path.name)
    for node_type, (input_name, folder) in FILE_INPUTS.items():
        choices = fe.js(JS_NODE_CHOICES, node_type, input_name)
        assert choices is not None, f"{node_type}.{input_name}: no choices in the frontend's node definitions"
        assert by_folder.get(folder, set()) <= set(choices), \
            f"{node_type} on first page load lacks {sorted(by_folder.get(folder, set()) - set(choices))}"
    later = fe.server.object_info()  # and on every later call: core's lists stay free of files it cannot load
    for node_type, input_name in CORE_LOADERS.items():
        first = fe.js(JS_NODE_CHOICES, node_type, input_name) or []
        again = later[node_type]["input"]["required"][input_name][0]
        assert first and again, f"{node_type}: no file list"
        assert not [n for n in first + again if n.lower().endswith(".gguf")], f"{node_type} lists .gguf files"


def test_fresh_server_reports_a_file_it_lacks(fresh_frontend):
    """The check above has teeth on this server and within its settle time: a copy of the 6 GB workflow whose
    DiT file does not exist is reported (only that file)."""
    ui, _ = _load("6gb")
    broken = json.loads(json.dumps(ui))
    loader = next(n for n in broken["nodes"] if n["type"] == "ZImageDiffusionModelLoader")
    gone = "z_image_turbo-Q4_K_M-not-downloaded.gguf"
    loader["widgets_values"][0] = gone
    loader["properties"]["models"][0]["name"] = gone
    fe = fresh_frontend
    fe.close_dialogs()
    fe.clear_graph()
    fe.js(JS_DROP_FILE, base64.b64encode(json.dumps(broken).encode()).decode(), "broken.json", "application/json")
    fe.wait("the broken copy to load", lambda: fe.graph()["count"] == len(ui["nodes"]))
    time.sleep(MISSING_DIALOG_SETTLE_S)
    report = fe.report()
    if report["stores"]:
        assert [m["name"] for m in report["missingModels"]] == [gone], report
    else:
        assert any("Missing Models" in d and gone in d for d in report["dialogs"]), report["dialogs"]
    fe.close_dialogs()


@pytest.mark.parametrize("name", NAMES)
def test_fresh_server_opens_workflow_without_missing_models(fresh_frontend, name):
    open_from_template_browser(fresh_frontend, name)
    check_opened_cleanly(fresh_frontend, name, "template", models_present=True)
