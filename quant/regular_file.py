"""Open model files safely: only regular files, symlinks resolved with a loop guard, never blocking on a FIFO.

A path can name a directory, a named pipe (whose `open` blocks forever), a socket, a device, a dangling
symlink or a symlink loop. :func:`open_regular_file` refuses all of them with :class:`NotARegularFile`, whose
`found` says what the path is, before anything is read. No ComfyUI imports (quant/ rule); loaders wrap the
error into their ModelFileError (see loaders/file_access.py).
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotARegularFile(OSError):
    """The path is not a readable regular file; `found` describes what it is instead."""

    def __init__(self, path: str | os.PathLike, found: str) -> None:
        self.path, self.found = os.fspath(path), found
        super().__init__(f"{self.path}: {found}")


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def resolve_regular_file(path: str | os.PathLike) -> tuple[str, int]:
    """(resolved path, size in bytes) of a regular file; NotARegularFile for anything else."""
    path = os.fspath(path)
    try:
        real = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        if os.path.islink(path):
            raise NotARegularFile(path, f"a dangling symbolic link (to {os.readlink(path)!r})") from None
        raise NotARegularFile(path, "no file at this path") from None
    except OSError as exc:  # ELOOP and friends
        if "loop" in str(exc).lower() or getattr(exc, "errno", None) == 40:
            raise NotARegularFile(path, "a symbolic link loop") from None
        raise NotARegularFile(path, f"a path that cannot be read ({exc.strerror or exc})") from None
    try:
        st = os.stat(real)
    except OSError as exc:
        raise NotARegularFile(path, f"a path that cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(path, _kind(st.st_mode))
    return real, st.st_size


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for binary reading. The open itself never blocks (O_NONBLOCK) and the opened
    descriptor is checked again, so a path swapped for a FIFO after the first check is still refused."""
    real, _ = resolve_regular_file(path)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise NotARegularFile(path, f"a file that cannot be opened ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, _kind(mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
