"""The published Z-Image-Turbo files (MODELS.md) as planner records: what the planner assumes when no
models folder is given."""
from __future__ import annotations

from .files import ModelFile, synthetic_dit, synthetic_te, synthetic_vae

DIT_TYPES = ("BF16", "F8_E4M3", "Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K")
TE_TYPES = ("BF16", "Q8_0", "Q6_K", "Q5_K", "Q4_K")


def published_files() -> list[ModelFile]:
    return ([synthetic_dit(t) for t in DIT_TYPES] + [synthetic_te(t) for t in TE_TYPES] + [synthetic_vae()])
