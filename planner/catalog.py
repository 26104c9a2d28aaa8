"""The published files as planner records: what the planner assumes when no models folder is given.

The files are the download catalog's (`downloads/catalog.py`, the same rows the shipped workflows name); each row's
role and main weight type pick the shape table and the type mix of its record. One extra record stands for the
official bf16 DiT loaded with weight_dtype fp8_e4m3fn (what the 8 GB and 12 GB workflows do).
"""
from __future__ import annotations

from ..downloads.catalog import CATALOG, DIT_BASE_BF16, DIT_BASE_Q4_K_M, DIT_BF16, PublishedFile
from .files import ModelFile, synthetic_dit, synthetic_te, synthetic_vae

SYNTHETIC = {"dit": synthetic_dit, "te": synthetic_te, "vae": synthetic_vae}


def record(row: PublishedFile) -> ModelFile:
    """The planner record of a catalog row (sizes from the shapes and the row's weight type)."""
    return SYNTHETIC[row.role](row.weight, name=row.name)


# The DiT rows of Z-Image Base (same shapes as Turbo's; a plan is for one model, so the DiTs of the other are left
# out). Base shares Turbo's text encoders and VAE.
BASE_DITS = frozenset({DIT_BASE_BF16.name, DIT_BASE_Q4_K_M.name})
FP8_SOURCE = {"turbo": DIT_BF16, "base": DIT_BASE_BF16}  # the bf16 file the fp8 workflows load as fp8_e4m3fn


def published_files(model: str = "turbo") -> list[ModelFile]:
    """The published files for planning `model` ("turbo" or "base"): its DiTs, every text encoder and VAE."""
    rows = [row for row in CATALOG if row.role in SYNTHETIC
            and (row.role != "dit" or (row.name in BASE_DITS) == (model == "base"))]
    return [record(row) for row in rows] + [synthetic_dit("F8_E4M3", name=FP8_SOURCE[model].name)]
