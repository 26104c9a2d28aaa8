"""Test harness: a real ComfyUI host in-process (CPU), a real ComfyUI server, tiny random models.

The host comes from scripts/setup_host.sh (ComfyUI on sys.path through a .pth in the venv).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bootstrap_host() -> bool:
    """Put ComfyUI in CPU mode before anything imports comfy.model_management. False when no host is installed.

    The repo root must not be on sys.path: the pack's `nodes/` package would shadow ComfyUI's `nodes` module.
    """
    import sys
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    try:
        import comfy.cli_args
    except ImportError:
        return False
    comfy.cli_args.args.cpu = True
    import utils.extra_config  # noqa: F401  (0.3.75: nodes.py would otherwise shadow the `utils` package)
    return True


HAVE_HOST = _bootstrap_host()


@pytest.fixture(scope="session")
def comfy_host():
    """ComfyUI imported in-process on CPU: the modules tests call into."""
    if not HAVE_HOST:
        pytest.fail("no ComfyUI host on sys.path: run scripts/setup_host.sh first")
    import comfy.model_management
    import comfy.sample
    import comfy.sd
    import nodes
    import comfyui_version
    assert comfy.model_management.get_torch_device().type == "cpu"
    return {"version": comfyui_version.__version__, "sd": comfy.sd, "sample": comfy.sample, "nodes": nodes}


@pytest.fixture(autouse=True)
def _inference_mode(request):
    """ComfyUI runs nodes under inference_mode; so do the in-process tests that use the host."""
    if "comfy_host" in request.fixturenames:
        import torch
        with torch.inference_mode():
            yield
    else:
        yield


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A ComfyUI models/ folder holding the tiny DiT, text encoder and VAE (built once per session)."""
    from zimage_turbo.fixtures.tiny_models import write_tiny_models
    cache = os.environ.get("ZIT_FIXTURE_CACHE")
    models = Path(cache) if cache else tmp_path_factory.mktemp("models")
    write_tiny_models(models)
    return models


@pytest.fixture(scope="session")
def tiny_paths(tiny_models_dir) -> dict[str, Path]:
    """{folder: path} of the tiny model files."""
    from zimage_turbo.fixtures.tiny_models import TINY_FILE_NAMES
    return {folder: tiny_models_dir / folder / name for folder, name in TINY_FILE_NAMES.items()}


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_models_dir):
    """A real ComfyUI server (main.py --cpu) with this pack in custom_nodes and the tiny models, on a free port."""
    from zimage_turbo.headless.server import ComfyServer, prepare_base_dir
    base = tmp_path_factory.mktemp("comfy_base")
    prepare_base_dir(base, REPO, models_from=tiny_models_dir)
    srv = ComfyServer.start(base_dir=base, log_path=base / "server.log")
    try:
        yield srv
    finally:
        srv.stop()
        if os.environ.get("ZIT_KEEP_SERVER_LOG"):
            shutil.copy(base / "server.log", os.environ["ZIT_KEEP_SERVER_LOG"])
