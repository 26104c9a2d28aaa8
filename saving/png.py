"""PNG writing with ComfyUI's text chunks plus A1111 `parameters`; existing files are never overwritten."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

_HASH_CACHE: dict[tuple[str, int, float], str] = {}


def short_model_hash(path: str) -> str | None:
    """A1111 'AutoV2' hash: first 10 hex digits of the file's sha256 (cached per path, size and mtime)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = (path, stat.st_size, stat.st_mtime)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(16 << 20), b""):
                digest.update(chunk)
        _HASH_CACHE[key] = digest.hexdigest()[:10]
    return _HASH_CACHE[key]


def png_info(prompt: dict | None, extra_pnginfo: dict | None, parameters: str | None) -> PngInfo:
    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def write_png_exclusive(folder: Path, stem: str, counter: int, image: Image.Image, info: PngInfo,
                        compress_level: int = 4) -> tuple[str, int]:
    """Write `<stem>_<counter:05>_.png`, moving on to the next counter while a file of that name exists.

    The file is created with O_EXCL, so a file another process wrote meanwhile is never replaced.
    Returns (file name, counter used).
    """
    while True:
        name = f"{stem}_{counter:05}_.png"
        try:
            with open(folder / name, "xb") as f:
                image.save(f, format="PNG", pnginfo=info, compress_level=compress_level)
            return name, counter
        except FileExistsError:
            counter += 1


def to_pil(image_tensor) -> Image.Image:
    """A ComfyUI IMAGE entry ([H, W, 3] floats in 0..1) as a PIL image."""
    array = np.clip(255.0 * image_tensor.cpu().numpy(), 0, 255).astype(np.uint8)
    return Image.fromarray(array)
