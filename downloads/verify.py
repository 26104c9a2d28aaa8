"""Is a finished download the file it should be? Read with the pack's own header readers (no tensor data)."""
from __future__ import annotations

import os
from pathlib import Path

from .catalog import PublishedFile

ROLE_NAMES = {"dit": "a Z-Image DiT", "te": "a Qwen3 text encoder", "vae": "a Flux VAE"}


def structural_problem(path: str | os.PathLike, expected: PublishedFile) -> str | None:
    """What is wrong with the file (truncated, an HTML page, another model), or None when it is sound.

    GGUF: every tensor's data lies inside the file (the pack's GGUF reader); safetensors: the header parses and
    its byte ranges cover the data exactly (the pack's safetensors reader). DiT, text encoder and VAE files must
    also be recognised as their role by content.
    """
    from ..loaders.errors import ModelFileError
    from ..loaders.safetensors_file import read_header, sniff_foreign_format
    from ..quant.gguf_reader import GGUFError, GGUFFile
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if head.lstrip()[:1] == b"<":
        return "an HTML page, not the model file (the server sent an error or login page)"
    if expected.name.lower().endswith(".gguf"):
        if head[:4] != b"GGUF":
            return f"not a GGUF file ({sniff_foreign_format(head) or 'starts with ' + repr(head[:16])})"
        try:
            GGUFFile(path).close()
        except GGUFError as exc:
            return f"a damaged GGUF file ({exc.reason} at byte {exc.offset})"
    else:
        try:
            read_header(path)
        except ModelFileError as exc:
            return exc.found
    if expected.role in ROLE_NAMES:
        from ..planner.files import inspect_file
        record = inspect_file(path)
        if record is None or record.role != expected.role:
            found = ROLE_NAMES.get(record.role, "another model") if record else "no Z-Image model file"
            return f"{found}, not {ROLE_NAMES[expected.role]}"
    return None
