"""Z-Image DiT key layouts: diffusers → ComfyUI, and multi-file (sharded) diffusers checkpoints."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch

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


def shard_index_for(path: str | os.PathLike) -> Path | None:
    """The `*.safetensors.index.json` next to `path` that lists it as a shard, if any."""
    path = Path(path)
    for index in sorted(path.parent.glob("*" + INDEX_SUFFIX)):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError):
            continue
        if path.name in set(weight_map.values()):
            return index
    return None


def shard_files(index: Path) -> list[Path]:
    """Every shard an index names, in order, all next to the index."""
    weight_map = json.loads(index.read_text()).get("weight_map", {})
    names = sorted(set(weight_map.values()))
    return [index.parent / n for n in names]
