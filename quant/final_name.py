"""Move a finished temporary file to its final name without ever replacing a file someone else put there."""
from __future__ import annotations

import os


def move_into_place(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Give the complete file `tmp` the name `path`.

    Without `overwrite` the move is a hard link (atomic, fails when `path` appeared meanwhile) followed by
    removing `tmp`, so a user's file that shows up while we write is never replaced. Filesystems without
    hard links fall back to an existence check and a rename.
    """
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
    except OSError:
        if os.path.exists(path):
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)
