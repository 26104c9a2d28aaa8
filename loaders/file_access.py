"""The loaders' entry check on a model path: a regular file (see quant/regular_file.py), else ModelFileError."""
from __future__ import annotations

import os
from typing import BinaryIO

from ..quant.regular_file import NotARegularFile, open_regular_file, resolve_regular_file
from .errors import ModelFileError

HINT = "Pick a model file (not a folder, link or pipe); re-download it if it is missing."


def not_a_model_file(exc: NotARegularFile, expected: str) -> ModelFileError:
    """The ModelFileError for a path that is no regular file (what it is instead, from `exc`)."""
    return ModelFileError(exc.path, expected, exc.found, HINT)


def check_model_file(path: str | os.PathLike, expected: str) -> tuple[str, int]:
    """(resolved path, size) of `path` when it is a regular file; ModelFileError naming what it is otherwise."""
    try:
        return resolve_regular_file(path)
    except NotARegularFile as exc:
        raise not_a_model_file(exc, expected) from None


def open_model_file(path: str | os.PathLike, expected: str) -> BinaryIO:
    """`open(path, "rb")` for a regular file only (never blocks on a FIFO); ModelFileError otherwise."""
    try:
        return open_regular_file(path)
    except NotARegularFile as exc:
        raise not_a_model_file(exc, expected) from None
