"""The README's first command: `python -m zimage_turbo run <workflow>` on the tiny models."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from zimage_turbo.headless.run import unique_path

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "z_image_turbo_basic.json"


def _run(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZIT_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "zimage_turbo", "run", str(WORKFLOW), "--width", "64", "--height", "64",
           "--seed", "9", "--prompt", "a lighthouse", "--out", str(tmp_path / "out.png"), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_headless_run_starts_server_and_saves_png_with_workflow(tmp_path):
    (tmp_path / "models").mkdir()
    proc = _run(tmp_path, "--models-dir", str(tmp_path / "models"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny RANDOM test models" in proc.stderr
    image = Image.open(tmp_path / "out.png")
    assert image.size == (64, 64)
    assert json.loads(image.text["workflow"]) == json.loads(WORKFLOW.read_text())
    prompt = json.loads(image.text["prompt"])
    texts = [n["inputs"]["text"] for n in prompt.values() if n["class_type"] == "CLIPTextEncode"]
    assert texts == ["a lighthouse"]


def test_headless_run_against_running_server_never_overwrites(server, tmp_path):
    (tmp_path / "out.png").write_bytes(b"user's picture")
    proc = _run(tmp_path, "--server", server.url, "--tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out.png").read_bytes() == b"user's picture"
    assert Image.open(tmp_path / "out_2.png").size == (64, 64)


def test_unique_path(tmp_path):
    first = tmp_path / "a.png"
    assert unique_path(first) == first
    first.write_bytes(b"x")
    (tmp_path / "a_2.png").write_bytes(b"x")
    assert unique_path(first) == tmp_path / "a_3.png"
