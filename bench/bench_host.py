"""Shared by the bench scripts: make ComfyUI and this pack (as `zimage_turbo`) importable, in CPU or GPU mode."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_host(comfyui: str | None, cpu: bool) -> None:
    """Put the ComfyUI folder `comfyui` (or the one already on sys.path) and the pack on sys.path.

    The repo root itself must not be on sys.path (the pack's `nodes/` would shadow ComfyUI's `nodes`); the pack
    is imported as `zimage_turbo` from its folder whatever the folder is called.
    """
    if comfyui:
        sys.path.insert(0, str(Path(comfyui).resolve()))
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    sys.path.insert(0, str(REPO.parent))
    if "zimage_turbo" not in sys.modules:
        try:
            import zimage_turbo  # noqa: F401  (installed, or the repo folder is named zimage_turbo)
        except ImportError:
            import importlib.util
            spec = importlib.util.spec_from_file_location("zimage_turbo", REPO / "__init__.py",
                                                          submodule_search_locations=[str(REPO)])
            module = importlib.util.module_from_spec(spec)
            sys.modules["zimage_turbo"] = module
            spec.loader.exec_module(module)
    import comfy.cli_args
    comfy.cli_args.args.cpu = cpu
    try:
        import utils.extra_config  # noqa: F401  (0.3.75: claim `utils` before ComfyUI's nodes.py shadows it)
    except ImportError:
        pass
