"""New output files of the command-line tools: checked before any work, written exclusively.

The quantize command and the headless runner both make one new file. Everything that can make writing it fail
is checked first (a link in its place, a missing or unwritable folder, too little free space), so hours of work
or a sampled picture are never thrown away at the end; the write itself never follows a link and never replaces
a file (O_CREAT | O_EXCL | O_NOFOLLOW). No ComfyUI imports.
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

# errno → what it means for a file being written (the disk-full family gets one clear wording)
WRITE_FAILURES = {errno.ENOSPC: "the disk is full (no space left on device)",
                  errno.EDQUOT: "the disk quota is exhausted",
                  errno.EFBIG: "the file grew past the size this process may write (file too large)",
                  errno.EROFS: "the file system is read-only",
                  errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied"}
_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)")
EXCLUSIVE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))


class OutputFileError(ValueError):
    """An output path that cannot be written; the message names it and says why, in one line."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")


def refuse_link(path: Path) -> None:
    """A symbolic link (dangling or not) where the new file should go is refused: it is never written through."""
    if path.is_symlink():
        raise OutputFileError(path, f"a symbolic link (to {os.readlink(path)!r}); give the name of a new file, "
                                    "links are never written through")


def check_folder(path: Path, create: bool = False) -> Path:
    """The folder `path` will be written in: it exists (made when `create`), is a folder and takes a new file
    (checked by creating and removing a probe, which also catches read-only file systems)."""
    folder = path.parent
    if create and not folder.exists() and not folder.is_symlink():
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise OutputFileError(path, f"its folder {folder} cannot be created ({exc.strerror or exc})") from None
    if not folder.exists():
        raise OutputFileError(path, f"its folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise OutputFileError(path, f"{folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise OutputFileError(path, f"cannot write in {folder} ({write_failure(exc)})") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def check_free_space(path: Path, needed: int) -> None:
    """Refuse before the work when the folder of `path` has less than `needed` bytes free."""
    free = free_bytes(path.parent)
    if free < needed:
        raise OutputFileError(path, f"needs about {_size(needed)} but {path.parent} has {_size(free)} free; "
                                    "free some space or write elsewhere")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def write_failure(exc: BaseException) -> str:
    """What an OS error (or a library error quoting one, like safetensors' "os error 28") means for a write."""
    error = os_error_of(exc)
    if error is None:
        return str(exc)
    return WRITE_FAILURES.get(error.errno, error.strerror or str(error))


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError a library error stands for (safetensors reports I/O errors as text with "os error N")."""
    if isinstance(exc, OSError):
        return exc
    match = _OS_ERROR_IN_TEXT.search(str(exc))
    return OSError(int(match.group(1)), os.strerror(int(match.group(1)))) if match else None


def numbered_names(path: Path) -> Iterator[Path]:
    """`path`, then `stem_2.ext`, `stem_3.ext`, …"""
    yield path
    n = 2
    while True:
        yield path.with_name(f"{path.stem}_{n}{path.suffix}")
        n += 1


def write_new_file(path: Path, data: bytes) -> Path:
    """Write `data` to the first of `numbered_names(path)` that does not exist (a link counts as existing), created
    exclusively so nothing is ever replaced or written through; a failed write leaves no partial file."""
    for candidate in numbered_names(path):
        try:
            fd = os.open(candidate, EXCLUSIVE_FLAGS, 0o644)
        except FileExistsError:  # a file, folder or link (O_EXCL never follows one) has that name
            continue
        except OSError as exc:
            raise OutputFileError(candidate, f"cannot be created ({write_failure(exc)})") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException as exc:
            os.unlink(candidate)
            if isinstance(exc, OSError):
                raise OutputFileError(candidate, f"could not be written ({write_failure(exc)}); "
                                                 "the partial file was removed") from None
            raise
        return candidate
