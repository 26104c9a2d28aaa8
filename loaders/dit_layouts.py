"""Z-Image DiT key layouts: diffusers → ComfyUI, and multi-file (sharded) diffusers checkpoints.

A shard index is untrusted JSON: it is read only for a file that is not a whole DiT by itself, only when it is a
regular file of bounded size, only if it names that file, and then it must map tensor names to plain file names
in its own folder; only the shards it lists are read.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .detect import classify, strip_known_prefix
from .errors import ModelFileError
from .file_access import check_model_file, open_model_file
from .safetensors_file import SafetensorsHeader, read_header

# diffusers name piece → ComfyUI name piece (inside blocks); the q/k/v projections are concatenated instead.
BLOCK_RENAMES = ((".attention.norm_q.", ".attention.q_norm."), (".attention.norm_k.", ".attention.k_norm."),
                 (".attention.to_out.0.", ".attention.out."))
TOP_RENAMES = (("all_x_embedder.2-1.", "x_embedder."), ("all_final_layer.2-1.", "final_layer."))
QKV_PARTS = ("to_q", "to_k", "to_v")
INDEX_SUFFIX = ".safetensors.index.json"


def is_diffusers_layout(keys) -> bool:
    return any(k.startswith("all_x_embedder.") for k in keys)


def concat_rows(parts: list[torch.Tensor], name: str) -> torch.Tensor:
    return torch.cat(parts, dim=0)


def diffusers_to_comfy(sd: dict[str, torch.Tensor], top_renames=TOP_RENAMES,
                       join_rows: Callable[[list[torch.Tensor], str], torch.Tensor] = concat_rows
                       ) -> dict[str, torch.Tensor]:
    """Rename a diffusers `ZImageTransformer2DModel` state dict to ComfyUI's NextDiT layout (also the blocks of a
    Fun ControlNet patch, with its own top-level renames): q/k/v become one qkv, joined by `join_rows`."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        base, _, leaf = key.rpartition(".")
        block, _, proj = base.rpartition(".")
        if proj in QKV_PARTS and block.endswith(".attention"):
            qkv.setdefault(f"{block}.qkv.{leaf}", {})[proj] = value
            continue
        new = key
        for old, rep in top_renames:
            if new.startswith(old):
                new = rep + new[len(old):]
        for old, rep in BLOCK_RENAMES:
            new = new.replace(old, rep)
        out[new] = value
    for key, parts in qkv.items():
        if set(parts) != set(QKV_PARTS):
            raise KeyError(f"{key}: q/k/v projections incomplete ({sorted(parts)})")
        out[key] = join_rows([parts[p] for p in QKV_PARTS], key)
    return out


# A diffusers DiT index is ~60 KB and names 2-3 shards; the largest LLM indexes are a few MB and ~200 shards.
MAX_INDEX_BYTES = 8 << 20
MAX_SHARDS = 1024
INDEX_EXPECTED = "a shard index (*.safetensors.index.json) whose 'weight_map' maps tensor names to shard files"
INDEX_HINT = "The index is damaged: download the checkpoint's index again."


@dataclass(frozen=True)
class ShardIndex:
    """A checked `*.safetensors.index.json`: every shard it names, in order, each in the index's folder."""
    path: Path
    shards: tuple[Path, ...]


def is_whole_dit(shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether these tensors (prefix stripped, ComfyUI or diffusers layout) are a whole Z-Image DiT by themselves."""
    if is_diffusers_layout(shapes):
        try:
            shapes = diffusers_to_comfy(shapes, join_rows=_joined_shape)
        except KeyError:  # q/k/v split across files
            return False
    kind = classify(shapes)
    return kind is not None and kind.name == "zimage_dit"


def _joined_shape(parts: list[tuple[int, ...]], name: str) -> tuple[int, ...]:
    return (sum(p[0] for p in parts if p),) + tuple(parts[0][1:])


def checkpoint_headers(path: str | os.PathLike, expected: str) -> list[SafetensorsHeader]:
    """The headers of the files a DiT checkpoint is made of: `path` alone when its own tensors are a whole DiT
    (no index is read then), else every shard of the index beside it that lists it, each checked present.

    Indexes that cannot be read, or that do not name `path`, are never used (and never an error); an index that
    names `path` is checked as untrusted JSON, and only the files it lists are read.
    """
    header = read_header(path, expected=expected)
    if is_whole_dit(strip_known_prefix(header.shapes())[1]):
        return [header]
    index = shard_index_for(path, expected)
    if index is None:
        return [header]
    for shard in index.shards:
        try:
            check_model_file(shard, expected)
        except ModelFileError as exc:
            raise ModelFileError(shard, f"{expected}: every shard listed in {index.path.name}", exc.found,
                                 "Put every shard of the checkpoint in the folder of its index.") from None
    return [header if shard.name == Path(path).name else read_header(shard, expected=expected)
            for shard in index.shards]


def shard_index_for(path: str | os.PathLike, expected: str = INDEX_EXPECTED) -> ShardIndex | None:
    """The `*.safetensors.index.json` next to `path` that names it as a shard, checked; None when none does.

    Index files that are no regular file, too large or not JSON are skipped: they cannot be told to belong to
    `path`. One that names `path` but breaks the schema is a ModelFileError naming that index.
    """
    path = Path(path)
    for candidate in sorted(path.parent.glob("*" + INDEX_SUFFIX)):
        try:
            document = _read_index_json(candidate, expected)
        except ModelFileError:
            continue
        if _names_file(document, path.name):
            return _checked_index(candidate, document)
    return None


def _read_index_json(index: Path, expected: str) -> object:
    with open_model_file(index, expected) as f:
        raw = f.read(MAX_INDEX_BYTES + 1)
    if len(raw) > MAX_INDEX_BYTES:
        raise ModelFileError(index, f"{INDEX_EXPECTED}, of at most {MAX_INDEX_BYTES} bytes",
                             f"a file of more than {MAX_INDEX_BYTES} bytes", INDEX_HINT)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        found = "JSON nested too deeply" if isinstance(exc, RecursionError) else f"no valid JSON ({str(exc)[:120]})"
        raise ModelFileError(index, INDEX_EXPECTED, found, INDEX_HINT) from None


def _names_file(document: object, name: str) -> bool:
    """Whether an index's weight_map mentions `name` (as a value of a map, or an item of a list)."""
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if isinstance(weight_map, dict):
        return any(value == name for value in weight_map.values())
    return isinstance(weight_map, list) and any(item == name for item in weight_map)


def _checked_index(index: Path, document: object) -> ShardIndex:
    """The shards of an index whose weight_map is a map of tensor names to plain file names in its folder."""
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict):
        found = "no 'weight_map'" if weight_map is None else f"a 'weight_map' that is {_json_kind(weight_map)}"
        raise ModelFileError(index, INDEX_EXPECTED, found, INDEX_HINT)
    names: set[str] = set()
    for tensor, shard in weight_map.items():
        if not _is_plain_file_name(shard):
            raise ModelFileError(index, INDEX_EXPECTED, f"tensor '{tensor[:120]}' mapped to {_json_value(shard)}, "
                                 "which is no file name in the index's folder", INDEX_HINT)
        names.add(shard)
        if len(names) > MAX_SHARDS:
            raise ModelFileError(index, f"{INDEX_EXPECTED}, at most {MAX_SHARDS} of them",
                                 f"more than {MAX_SHARDS} shard files", INDEX_HINT)
    return ShardIndex(index, tuple(index.parent / name for name in sorted(names)))


def _is_plain_file_name(value: object) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 255 and value not in (".", "..")
            and not any(c in value for c in ("/", "\\", "\0")))


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), "another value")


def _json_value(value: object) -> str:
    return f"{json.dumps(value)[:80]} ({_json_kind(value)})"
