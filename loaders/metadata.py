"""Typed reads of model-file metadata: every metadata value a loader uses goes through these accessors.

A file's metadata is untrusted: a GGUF key may hold a string where a count belongs, NaN where a float
belongs, an array, or a count of 2^40. Each accessor states the type and range it wants (and, for counts,
the tensors the value must agree with) and raises :class:`BadMetadata` (key, expected, found) otherwise;
:class:`MetadataReader` binds the accessors to one file and turns that into a `ModelFileError` such as
"Qwen3-4B-Q6_K.gguf: expected qwen3.block_count to be an integer from 1 to 4096 matching the 36 blocks of
tensors, found 'abc' (a string)". Nothing here allocates or loops in proportion to a value read from a file.

Sequences (GGUF arrays) are read through the sequence protocol (len, iteration, indexing), so numpy arrays,
lists and lazy sequences are all accepted.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from .errors import ModelFileError

MISSING: Any = object()  # "no default": the key is required
DAMAGED_HINT = "The file is damaged or was written by a broken converter; re-download it."
_PREVIEW = 60  # characters of a value shown in a message


class BadMetadata(ValueError):
    """One metadata value that is not what a loader needs (no file name: see :meth:`for_file`)."""

    def __init__(self, key: str, expected: str, found: str) -> None:
        self.key, self.expected, self.found = key, expected, found
        super().__init__(f"expected {key} to be {expected}, found {found}")

    def for_file(self, path: str | os.PathLike, hint: str = DAMAGED_HINT) -> ModelFileError:
        return ModelFileError(path, f"{self.key} to be {self.expected}", self.found, hint, key=self.key)


# ------------------------------------------------------------------------------------------ describing values
def _is_sequence(value: Any) -> bool:
    """An array-like value (numpy array, list, tuple, lazy sequence), not a string."""
    if isinstance(value, (str, bytes, bytearray)) or isinstance(value, np.ndarray) and value.ndim == 0:
        return False
    return hasattr(value, "__len__") and hasattr(value, "__getitem__")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _kind(value: Any) -> str:
    """'a string', 'an integer', 'a number', 'a boolean', 'an array', … (the kind of a scalar value)."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if _is_int(value):
        return "an integer"
    if _is_number(value):
        return "a number"
    if _is_sequence(value):
        return "an array"
    return f"a {type(value).__name__}"


_PLURALS = {"a string": "strings", "a boolean": "booleans", "an integer": "integers", "a number": "numbers",
            "an array": "arrays"}


def _element_kind(value: Any) -> str:
    """The kind of a sequence's elements ('integers', 'strings', 'mixed values', …), from its dtype or first items."""
    if isinstance(value, np.ndarray):
        return {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers", "U": "strings"}.get(
            value.dtype.kind, f"{value.dtype} values")
    kinds = {_kind(value[i]) for i in range(min(len(value), 4))}
    if len(kinds) != 1:
        return "mixed values" if kinds else "values"
    kind = kinds.pop()
    return _PLURALS.get(kind, kind[2:] + " values")


def describe_value(value: Any) -> str:
    """What a value is, for a message: "'abc' (a string)", "nan (a number)", "an array of 3 integers"."""
    if value is None or value is MISSING:
        return "no value"
    if _is_sequence(value):
        try:
            n = len(value)
            return f"an array of {n} {_element_kind(value)}" if n else "an empty array"
        except Exception:  # noqa: BLE001 - a sequence that cannot even be measured is still described
            return "an unreadable array"
    if isinstance(value, str):
        shown = repr(value[:_PREVIEW]) + ("…" if len(value) > _PREVIEW else "")
        return f"{shown} (a string)"
    if isinstance(value, (bool, np.bool_)):
        return f"{str(bool(value)).lower()} (a boolean)"
    if _is_number(value):
        return f"{str(int(value))[:_PREVIEW]} (an integer)" if _is_int(value) else f"{float(value)!r} (a number)"
    return _kind(value)


def _number_text(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# ------------------------------------------------------------------------------------------ the accessors
def _get(metadata: Mapping[str, Any], key: str, default: Any) -> Any:
    if key in metadata:
        return metadata[key]
    if default is MISSING:
        raise BadMetadata(key, "present", "no such key")
    return default


def read_int(metadata: Mapping[str, Any], key: str, low: int, high: int, *, default: Any = MISSING,
             allowed: Sequence[int] | None = None, agreement: str = "") -> Any:
    """An integer in [low, high] (and in `allowed`, described by `agreement`, e.g. "matching the 36 blocks of
    tensors"); `default` when the key is absent."""
    if key not in metadata and default is not MISSING:
        return default
    value = _get(metadata, key, default)
    expected = f"an integer from {low} to {high}" + (f" {agreement}" if agreement else "")
    if not _is_int(value) or not low <= int(value) <= high or (allowed is not None and int(value) not in allowed):
        raise BadMetadata(key, expected, describe_value(value))
    return int(value)


def read_number(metadata: Mapping[str, Any], key: str, above: float, at_most: float, *,
                default: Any = MISSING) -> Any:
    """A finite number in (above, at_most]; `default` when the key is absent."""
    if key not in metadata and default is not MISSING:
        return default
    value = _get(metadata, key, default)
    expected = f"a number above {_number_text(above)} and at most {_number_text(at_most)}"
    if not _is_number(value) or not math.isfinite(float(value)) or not above < float(value) <= at_most:
        raise BadMetadata(key, expected, describe_value(value))
    return float(value)


def read_string(metadata: Mapping[str, Any], key: str, *, default: Any = MISSING, max_length: int = 1 << 16) -> Any:
    """A string (of at most `max_length` characters); `default` when the key is absent."""
    if key not in metadata and default is not MISSING:
        return default
    value = _get(metadata, key, default)
    if not isinstance(value, str) or len(value) > max_length:
        raise BadMetadata(key, f"a string of at most {max_length} characters", describe_value(value))
    return value


def read_string_array(metadata: Mapping[str, Any], key: str, *, max_length: int, min_length: int = 0,
                      default: Any = MISSING, what: str = "strings") -> Any:
    """A sequence of `min_length`..`max_length` strings (returned as given, not copied)."""
    if key not in metadata and default is not MISSING:
        return default
    value = _get(metadata, key, default)
    expected = f"an array of {min_length} to {max_length} {what}"
    if not _is_sequence(value) or not min_length <= len(value) <= max_length:
        raise BadMetadata(key, expected, describe_value(value))
    if isinstance(value, np.ndarray) and value.dtype.kind != "U":
        raise BadMetadata(key, expected, describe_value(value))
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise BadMetadata(key, expected, f"an array whose entry {index} is {describe_value(item)}")
    return value


def read_int_array(metadata: Mapping[str, Any], key: str, length: int, *, default: Any = MISSING) -> Any:
    """A sequence of exactly `length` integers, as a 1-D int64 numpy array."""
    if key not in metadata and default is not MISSING:
        return default
    value = _get(metadata, key, default)
    expected = f"an array of {length} integers"
    if not _is_sequence(value) or len(value) != length:
        raise BadMetadata(key, expected, describe_value(value))
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise BadMetadata(key, expected, describe_value(value))
        if value.dtype == np.uint64 and length and int(value.max()) >= 1 << 63:
            raise BadMetadata(key, expected, "an array with an integer beyond 2^63")
        return value.astype(np.int64)
    for index, item in enumerate(value):
        if not _is_int(item) or not -(1 << 63) <= int(item) < 1 << 63:
            raise BadMetadata(key, expected, f"an array whose entry {index} is {describe_value(item)}")
    return np.array([int(v) for v in value], dtype=np.int64)


def parse_json_object(key: str, raw: str | bytes) -> dict:
    """A JSON object from a metadata string or stored bytes (UTF-8), e.g. `_quantization_metadata`."""
    expected = "a JSON object"
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadMetadata(key, expected, f"bytes that are not UTF-8 text ({exc.reason} at byte {exc.start})") \
                from None
    if not isinstance(raw, str):
        raise BadMetadata(key, expected, describe_value(raw))
    try:
        raw.encode("utf-8")
        value = json.loads(raw)
    except UnicodeEncodeError:
        raise BadMetadata(key, expected, "text with an unpaired surrogate (not UTF-8)") from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise BadMetadata(key, expected, f"text that is not JSON ({reason})") from None
    if not isinstance(value, dict):
        raise BadMetadata(key, expected, f"JSON {describe_value(value)}")
    return value


class MetadataReader:
    """The accessors bound to one file: a bad value raises ModelFileError naming the file and the key."""

    def __init__(self, path: str | os.PathLike, metadata: Mapping[str, Any], hint: str = DAMAGED_HINT) -> None:
        self.path, self.metadata, self.hint = path, metadata, hint

    def _call(self, accessor, *args, **kwargs):
        try:
            return accessor(self.metadata, *args, **kwargs)
        except BadMetadata as exc:
            raise exc.for_file(self.path, self.hint) from None

    def int(self, key: str, low: int, high: int, **kwargs) -> Any:
        return self._call(read_int, key, low, high, **kwargs)

    def number(self, key: str, above: float, at_most: float, **kwargs) -> Any:
        return self._call(read_number, key, above, at_most, **kwargs)

    def string(self, key: str, **kwargs) -> Any:
        return self._call(read_string, key, **kwargs)
