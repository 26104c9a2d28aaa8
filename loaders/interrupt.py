"""Cancellation inside long loader/decoder loops: ComfyUI's interrupt flag, checked between tensors or tiles.

Call it as `interrupt.check_interrupted()` (module attribute), so tests can wrap it in a running server.
"""
from __future__ import annotations

import sys


def check_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user cancelled the prompt; a no-op where ComfyUI
    is not loaded (the command-line tools, plain library use)."""
    mm = sys.modules.get("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()
