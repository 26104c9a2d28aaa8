"""The one error users see when a model file is wrong: it names the file, what was expected and what was found."""
from __future__ import annotations

import os


class ModelFileError(ValueError):
    """A model file that cannot be used for the requested purpose.

    The message reads: "<file>: expected <expected>, found <found>. <hint>" so the ComfyUI error dialog says
    everything a user needs without a traceback.
    """

    def __init__(self, path: str | os.PathLike, expected: str, found: str, hint: str = "", key: str | None = None
                 ) -> None:
        self.path = os.fspath(path)
        self.expected, self.found, self.hint = expected, found, hint
        self.key = key  # the metadata key or tensor name at fault, when there is one
        message = f"{os.path.basename(self.path)}: expected {expected}, found {found}."
        if hint:
            message += f" {hint}"
        super().__init__(message)
