"""Image-size presets: 1024² and common aspect ratios at ~1 MP and ~2 MP, sides multiples of 16."""
from __future__ import annotations

import math

SIDE_MULTIPLE = 16
ASPECTS: tuple[tuple[int, int], ...] = ((1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9), (9, 16), (21, 9), (9, 21))
MEGAPIXELS = {"1MP": 1024 * 1024, "2MP": 2 * 1024 * 1024}
CUSTOM = "custom"


def _round(x: float) -> int:
    return max(SIDE_MULTIPLE, int(round(x / SIDE_MULTIPLE)) * SIDE_MULTIPLE)


def size_for(aspect: tuple[int, int], pixels: int) -> tuple[int, int]:
    """(width, height) with the aspect ratio, about `pixels` in area, both multiples of 16."""
    a, b = aspect
    width = math.sqrt(pixels * a / b)
    return _round(width), _round(width * b / a)


def _build() -> dict[str, tuple[int, int]]:
    presets: dict[str, tuple[int, int]] = {}
    for label, pixels in MEGAPIXELS.items():
        for aspect in ASPECTS:
            w, h = size_for(aspect, pixels)
            presets[f"{w}x{h} ({aspect[0]}:{aspect[1]}, {label})"] = (w, h)
    return presets


SIZE_PRESETS: dict[str, tuple[int, int]] = _build()
DEFAULT_PRESET = next(iter(SIZE_PRESETS))  # 1024x1024 (1:1, 1MP)


def resolve_size(preset: str, width: int, height: int) -> tuple[int, int]:
    """The preset's size, or the given width/height (rounded down to multiples of 16) for `custom`."""
    if preset == CUSTOM:
        return max(SIDE_MULTIPLE, width // SIDE_MULTIPLE * SIDE_MULTIPLE), max(SIDE_MULTIPLE, height // SIDE_MULTIPLE * SIDE_MULTIPLE)
    if preset not in SIZE_PRESETS:
        raise ValueError(f"unknown size preset {preset!r}")
    return SIZE_PRESETS[preset]
