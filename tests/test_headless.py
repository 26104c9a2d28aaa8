"""The README's first command: `python -m zimage_turbo run basic` (a shipped workflow's id, or a path) on the tiny
models."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from zimage_turbo.headless.run import workflow_argument
from zimage_turbo.quant.output_file import write_new_file
from zimage_turbo.headless.workflow import WorkflowError

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "05 Turbo basic (official files).json"


def _run(tmp_path, workflow: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZIT_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "zimage_turbo", "run", workflow, "--width", "64", "--height", "64",
           "--seed", "9", "--prompt", "a lighthouse", "--out", str(tmp_path / "out.png"), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_headless_run_starts_server_and_saves_png_with_workflow(tmp_path):
    (tmp_path / "models").mkdir()
    proc = _run(tmp_path, "basic", "--models-dir", str(tmp_path / "models"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny RANDOM test models" in proc.stderr
    image = Image.open(tmp_path / "out.png")
    assert image.size == (64, 64)
    assert json.loads(image.text["workflow"]) == json.loads(WORKFLOW.read_text())
    prompt = json.loads(image.text["prompt"])
    texts = [n["inputs"]["text"] for n in prompt.values() if n["class_type"] == "CLIPTextEncode"]
    assert texts == ["a lighthouse"]


def test_headless_run_against_running_server_never_overwrites(server, tmp_path, monkeypatch):
    (tmp_path / "out.png").write_bytes(b"user's picture")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    proc = _run(tmp_path, str(WORKFLOW), "--server", server.url, "--tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out.png").read_bytes() == b"user's picture"
    assert Image.open(tmp_path / "out_2.png").size == (64, 64)
    assert not list((tmp_path / "tmp").iterdir())  # no work folder for a server it did not start


def test_workflow_argument_is_a_path_or_a_shipped_workflow(tmp_path, monkeypatch):
    """`run` takes a shipped workflow's id or former file name (no quoting of a path with spaces), and a path as
    it is, even one named like an id; anything else is refused naming the ids."""
    for name in ("basic", "BASIC", "z_image_turbo_basic", "05 Turbo basic (official files)"):
        assert workflow_argument(name) == str(WORKFLOW)
    assert workflow_argument("6") == str(REPO / "workflows" / "01 Turbo 6 GB.json")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "basic").write_text("{}")
    assert workflow_argument("basic") == "basic"
    with pytest.raises(WorkflowError, match=r"^7gb: expected a workflow file \(\.json\) or a shipped workflow's id "
                                            r"\(6gb, 8gb, 12gb, 24gb, basic, img2img, .*\), found no file at this path$"):
        workflow_argument("7gb")


def test_output_name_never_taken(tmp_path):
    first = tmp_path / "a.png"
    assert write_new_file(first, b"1") == first
    (tmp_path / "a_2.png").write_bytes(b"x")
    assert write_new_file(first, b"3") == tmp_path / "a_3.png"
    assert first.read_bytes() == b"1" and (tmp_path / "a_2.png").read_bytes() == b"x"
