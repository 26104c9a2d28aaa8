"""The real ComfyUI frontend (headless Debian chromium, Selenium + chromedriver) opening the shipped workflows.

From the test server's own page, each workflow is opened the way users open it: from the template browser (the
pack's entry under Extensions, clicking its card, whose thumbnail must have loaded) and by dropping its PNG card
onto the canvas. After each load: the node count and links match the file, every node type is registered, the
widget values survived, the frontend's own conversion (graphToPrompt) equals the API twin, the frontend reports
no missing node types and no errors other than the model files a test server lacks, and it offers exactly the
workflow's model files (with their URLs on frontends that keep them) for download. A broken copy with an unknown
node type must be reported, so the check above can fail. Screenshots go to $ZIT_ARTIFACTS (default: a pytest temp
folder), one folder per frontend version.

Runs wherever chromium and chromedriver are installed (scripts/install_browser.sh); without them it is skipped,
except under CI (env CI set), where it fails.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from zimage_turbo.headless.server import PACK_FOLDER_NAME

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,1000",
                # nothing but the test server: the frontend's release/news look-ups fail at once
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
THUMB_SIZE = 512


def _load(name: str) -> tuple[dict, dict]:
    return (json.loads((WORKFLOWS / f"{name}.json").read_text()),
            json.loads((WORKFLOWS / "api" / f"{name}.json").read_text()))


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
  out.missingNodes = s('missingNodesError').hasMissingNodes;
  out.missingMedia = s('missingMedia') ? s('missingMedia').hasMissingMedia : false;
  const e = s('executionError');
  out.otherErrors = {node: e.hasNodeError, prompt: e.hasPromptError, execution: e.hasExecutionError,
                     total: e.totalErrorCount};
}
return JSON.stringify(out);"""
MISSING_NODES_TEXT = re.compile(r"missing node|node types were not found", re.I)


class Frontend:
    def __init__(self, driver, server, folder: Path):
        self.driver, self.server, self.folder = driver, server, folder
        self.version = driver.execute_script("return window.__COMFYUI_FRONTEND_VERSION__ || 'unknown'")

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
        self.wait("the pack's template cards",
                  lambda: self.js("return document.querySelectorAll('[data-testid^=\"template-workflow-z_image\"]').length"))

    def thumbnail_size(self, name: str) -> list:
        return self.js(f"const i = document.querySelector('[data-testid=\"template-workflow-{name}\"] img');"
                       "return i && i.complete ? [i.naturalWidth, i.naturalHeight] : null;")

    def graph(self) -> dict:
        return json.loads(self.js(JS_GRAPH))

    def clear_graph(self) -> None:
        """Empty the canvas, so waiting for the next workflow cannot mistake the previous one for it."""
        self.js("app.graph.clear()")
        self.wait("the canvas to empty", lambda: self.graph()["count"] == 0, 10)


@pytest.fixture(scope="module")
def frontend(server, tmp_path_factory):
    """One chromium session on the test server's page for the whole module."""
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
        root = Path(os.environ.get("ZIT_ARTIFACTS") or tmp_path_factory.mktemp("browser"))
        folder = root / f"frontend-{version}"
        folder.mkdir(parents=True, exist_ok=True)
        print(f"\nbrowser screenshots: {folder}")
        yield Frontend(driver, server, folder)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _expected_models(ui: dict) -> list[dict]:
    return sorted((m for n in ui["nodes"] for m in n.get("properties", {}).get("models", [])),
                  key=lambda m: m["name"])


def check_opened_cleanly(fe: Frontend, name: str, how: str) -> None:
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
    prompt = fe.driver.execute_async_script(JS_TO_PROMPT)
    assert not prompt.startswith("error"), prompt
    assert json.loads(prompt) == api, "the frontend's own conversion differs from the API twin"

    expected = _expected_models(ui)
    if fe.report()["stores"]:  # frontend 1.4x: reports live in stores (an errors panel, not dialogs)
        report = fe.wait("the missing-model check", lambda: (r := fe.report())["modelsChecked"] and r)
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
        text = fe.wait("the missing-models dialog", models_dialog)
        for m in expected:
            assert f"{m['directory']} / {m['name']}" in text
        assert not any(MISSING_NODES_TEXT.search(d) for d in fe.report()["dialogs"])
    fe.shot(f"{name}_{how}_dialogs")
    fe.close_dialogs()
    fe.shot(f"{name}_{how}")


def test_template_browser_lists_pack_workflows_with_thumbnails(frontend):
    frontend.open_template_browser()
    cards = frontend.js("return Array.from(document.querySelectorAll('[data-testid^=\"template-workflow-\"]'))"
                        ".map(e => e.getAttribute('data-testid').replace('template-workflow-', ''))")
    assert sorted(c for c in cards if c.startswith("z_image")) == NAMES
    for name in NAMES:
        size = frontend.wait(f"thumbnail of {name}", lambda: frontend.thumbnail_size(name), 20)
        assert size == [THUMB_SIZE, THUMB_SIZE]
    frontend.shot("template_browser")


@pytest.mark.parametrize("name", NAMES)
def test_workflow_opens_from_template_browser(frontend, name):
    frontend.close_dialogs()
    frontend.clear_graph()
    frontend.open_template_browser()
    card = frontend.js(f"return document.querySelector('[data-testid=\"template-workflow-{name}\"]')")
    frontend.js("arguments[0].scrollIntoView({block: 'center'})", card)
    frontend.click(card)
    check_opened_cleanly(frontend, name, "template")


@pytest.mark.parametrize("name", NAMES)
def test_png_card_dropped_on_canvas_restores_workflow(frontend, name):
    frontend.close_dialogs()
    frontend.clear_graph()
    data = base64.b64encode((WORKFLOWS / f"{name}.png").read_bytes()).decode()
    frontend.js(JS_DROP_FILE, data, f"{name}.png", "image/png")
    check_opened_cleanly(frontend, name, "png")


def test_unknown_node_type_is_reported(frontend):
    """The check has teeth: the same frontend flags a copy whose VAE loader type does not exist."""
    ui, _ = _load("z_image_turbo_8gb")
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
