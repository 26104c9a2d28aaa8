"""Soak: 200 prompts through the real server on the tiny models.

Mixed DiT tiers (bf16 safetensors, the same weights as fp8 in memory, a Q8_0 GGUF), seeds and sizes, with a
bad-file prompt every 20. After the warm-up the server's RSS grows by no more than 5 % (a fall is no leak),
every good prompt yields its own image (the PNG carries its own prompt: nothing was overwritten, names are
unique), and every failing prompt reports its error, naming the file, in /history.

Runs once per suite: scripts/test.sh sets ZIT_SOAK=0 on all hosts but the newest. ZIT_SOAK_PROMPTS changes
the prompt count (e.g. 2000 for a long soak, see README "Reliability").
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import pytest
from PIL import Image

from zimage_turbo.fixtures.tiny_models import TINY_FILE_NAMES
from zimage_turbo.fixtures.workflow_files import shipped_graphs
from zimage_turbo.headless.server import history_error, output_images
from zimage_turbo.headless.workflow import set_inputs, substitute_models

N_PROMPTS = int(os.environ.get("ZIT_SOAK_PROMPTS", 200))
BLOCK = 20  # prompts queued at once; one of them is the bad-file prompt; RSS is read after each block
RSS_TOLERANCE = 0.05
SIZES = [(64, 64), (96, 64), (64, 112), (128, 128)]
PREFIX = "zit_soak"  # one prefix for all: ComfyUI's own counter must keep every name unique


def _bad_files(models: Path, tiny_models_dir: Path) -> list[tuple[str, str]]:
    """(folder, file name) of broken files, made in the server's models folders."""
    dit = (tiny_models_dir / "diffusion_models" / TINY_FILE_NAMES["diffusion_models"]).read_bytes()
    made = {
        ("diffusion_models", "soak_truncated_dit.safetensors"): dit[: len(dit) // 3],
        ("text_encoders", "soak_empty_te.safetensors"): b"",
        ("vae", "soak_pickle_vae.safetensors"): b"\x80\x04\x95" + b"\0" * 64,
        ("diffusion_models", "soak_garbage.gguf"): b"GGUF" + b"\xff" * 60,
    }
    for (folder, name), data in made.items():
        (models / folder / name).write_bytes(data)
    shutil.copy(tiny_models_dir / "vae" / TINY_FILE_NAMES["vae"], models / "diffusion_models" / "soak_vae_as_dit.safetensors")
    return list(made) + [("diffusion_models", "soak_vae_as_dit.safetensors")]


def _tiers(models: Path, tiny_models_dir: Path) -> list[tuple[str, str]]:
    """(DiT file, weight_dtype) of each tier."""
    from zimage_turbo.quant.convert import convert_to_gguf
    gguf = models / "diffusion_models" / "soak_tiny_q8_0.gguf"
    if not gguf.exists():
        convert_to_gguf(tiny_models_dir / "diffusion_models" / TINY_FILE_NAMES["diffusion_models"], gguf, "Q8_0")
    bf16 = TINY_FILE_NAMES["diffusion_models"]
    return [(bf16, "default"), (gguf.name, "default"), (bf16, "fp8_e4m3fn")]


def _prompt(api: dict, dit: str, weight_dtype: str, seed: int, size: tuple[int, int], text: str) -> dict:
    prompt = substitute_models(api, {**TINY_FILE_NAMES, "diffusion_models": dit})
    set_inputs(prompt, "ZImageDiffusionModelLoader", {"weight_dtype": weight_dtype})
    set_inputs(prompt, "ZImageTurboSampler", {"seed": seed, "width": size[0], "height": size[1], "steps": 2})
    set_inputs(prompt, "CLIPTextEncode", {"text": text})
    set_inputs(prompt, "SaveImage", {"filename_prefix": PREFIX})
    return prompt


def block_plan(block: int, n_tiers: int, n_bad: int) -> list[tuple[str, int]]:
    """What each prompt of a block runs: ("tier", index) or ("bad", index of the broken file).

    Every block: 6 prompts per tier (loaded models reused, then swapped), a bad-file prompt, and one prompt of
    the first tier last, so that every block ends in the same state before RSS is read. The first block runs
    every broken file (a failed load and the reload after it take the process's memory to its high-water
    mark, which a busy machine reaches later otherwise); later blocks one each, in turn.
    """
    plan = [("tier", 0 if j == BLOCK - 1 else (j // 6) % n_tiers) for j in range(BLOCK)]
    bad_slots = [BLOCK - 2 - 3 * k for k in range(n_bad)] if block == 0 else [BLOCK - 2]
    for k, j in enumerate(bad_slots):
        plan[j] = ("bad", k if block == 0 else block % n_bad)
    return plan


def warmup_blocks(n_blocks: int, n_tiers: int, n_bad: int) -> int:
    """The blocks it takes until every tier's models have been loaded and every broken file has failed once
    (read off the plan, not a fixed count)."""
    wanted = {("tier", t) for t in range(n_tiers)} | {("bad", b) for b in range(n_bad)}
    seen: set = set()
    for block in range(n_blocks):
        seen.update(block_plan(block, n_tiers, n_bad))
        if seen >= wanted:
            return block + 1
    raise AssertionError(f"{n_blocks} blocks never run every tier and broken file: the soak is too short")


def rss_drift_problem(rss: list[int], warmup: int, tolerance: float = RSS_TOLERANCE) -> str | None:
    """None when the server's memory does not grow after the warm-up; else what grew.

    Two signs of a leak, each bounded by `tolerance`: a reading above the warm-up's high-water mark (the
    warm-up runs every tier and every broken file, so it sets the ceiling), and a rise from the first third of
    the readings after the warm-up to the last third (medians, so one noisy reading is no trend). A fall is
    the allocator giving memory back, not a leak. At least two readings after the warm-up are needed.
    """
    after = rss[warmup:]
    if warmup < 1 or len(after) < 2:
        return f"only {len(after)} RSS readings after a warm-up of {warmup} blocks: run more prompts"
    report = ", ".join(f"{r >> 20}" for r in rss)
    ceiling = max(rss[:warmup])
    over = max(after) / ceiling - 1
    if over > tolerance:
        return f"RSS rose {over:+.1%} above the warm-up's high-water mark (MiB per block: {report})"
    third = max(1, len(after) // 3)
    rise = statistics.median(after[-third:]) / statistics.median(after[:third]) - 1
    if rise > tolerance:
        return f"RSS kept growing after a warm-up of {warmup} blocks: {rise:+.1%} (MiB per block: {report})"
    return None


@pytest.mark.server
@pytest.mark.soak
@pytest.mark.skipif(os.environ.get("ZIT_SOAK") == "0", reason="the soak runs on one host (ZIT_SOAK=0)")
def test_soak_200_prompts(server, tiny_models_dir):
    api = shipped_graphs("basic")[1]
    models = server.base_dir / "models"
    tiers = _tiers(models, tiny_models_dir)
    bad_files = _bad_files(models, tiny_models_dir)
    rss: list[int] = []
    good: dict[str, dict] = {}
    bad: dict[str, str] = {}
    start = time.monotonic()
    n_blocks = -(-N_PROMPTS // BLOCK)
    warmup = warmup_blocks(n_blocks, len(tiers), len(bad_files))
    for block_start in range(0, N_PROMPTS, BLOCK):
        queued = []
        block_time = time.monotonic()
        plan = block_plan(block_start // BLOCK, len(tiers), len(bad_files))
        for i in range(block_start, min(block_start + BLOCK, N_PROMPTS)):
            what, index = plan[i % BLOCK]
            tier = tiers[index] if what == "tier" else tiers[0]
            prompt = _prompt(api, *tier, seed=1000 + i, size=SIZES[i % len(SIZES)], text=f"a fox, take {i % 3}")
            if what == "bad":
                folder, name = bad_files[index]
                prompt = substitute_models(prompt, {folder: name})
                bad_id = server.queue_prompt(prompt)
                bad[bad_id] = name
                queued.append(bad_id)
            else:
                prompt_id = server.queue_prompt(prompt)
                good[prompt_id] = prompt
                queued.append(prompt_id)
        server.wait_for(queued[-1], timeout=600)
        time.sleep(0.5)
        rss.append(server.rss())
        print(f"soak block {block_start // BLOCK}: {time.monotonic() - block_time:.1f} s, RSS {rss[-1] >> 20} MiB",
              flush=True)

    history = {pid_: server.request(f"/history/{pid_}")[pid_] for pid_ in [*good, *bad]}
    names = []
    for prompt_id, prompt in good.items():
        entry = history[prompt_id]
        assert history_error(entry) is None, f"good prompt failed: {history_error(entry)}"
        images = output_images(entry)
        assert len(images) == 1
        image = images[0]
        names.append((image["subfolder"], image["filename"]))
        png = Image.open(server.base_dir / "output" / image["subfolder"] / image["filename"])
        assert json.loads(png.text["prompt"]) == prompt, f"{image['filename']} holds another prompt's image"
        assert png.size == (prompt["5"]["inputs"]["width"], prompt["5"]["inputs"]["height"])
    assert len(set(names)) == len(names) == len(good), "an output name was used twice"
    for prompt_id, name in bad.items():
        error = history_error(history[prompt_id])
        assert error is not None and name in error and "expected" in error, error
        assert not output_images(history[prompt_id])

    report = ", ".join(f"{r >> 20}" for r in rss)
    print(f"soak: {N_PROMPTS} prompts in {time.monotonic() - start:.0f} s; warm-up {warmup} blocks; "
          f"RSS per block (MiB): {report}")
    problem = rss_drift_problem(rss, warmup)
    assert problem is None, problem


# ------------------------------------------------------------------------------ the check itself (no server)
MiB = 1 << 20


def test_plan_covers_every_tier_and_broken_file_in_the_warmup():
    n_tiers, n_bad = 3, 5
    first = block_plan(0, n_tiers, n_bad)
    assert sorted(i for what, i in first if what == "bad") == list(range(n_bad))
    assert {i for what, i in first if what == "tier"} == set(range(n_tiers))
    assert first[-1] == ("tier", 0)
    later = [block_plan(b, n_tiers, n_bad) for b in range(1, 10)]
    assert all(sum(what == "bad" for what, _ in p) == 1 and p[-1] == ("tier", 0) for p in later)
    assert warmup_blocks(10, n_tiers, n_bad) == 1
    with pytest.raises(AssertionError, match="too short"):
        warmup_blocks(0, n_tiers, n_bad)


def test_drift_check_passes_a_flat_series_after_the_warmup():
    """The series of the busy-machine failure: a jump while the warm-up still loads, flat afterwards."""
    series = [m * MiB for m in (803, 1108, 1109, 1101, 1109, 1101, 1102, 1110, 1110, 1110)]
    assert rss_drift_problem(series, warmup=2) is None
    assert "+38" in rss_drift_problem(series, warmup=1)  # a warm-up that ended too early


def test_drift_check_passes_memory_given_back():
    """The series of a CI run: the warm-up's high-water mark, then the allocator returns 5 % and RSS wobbles."""
    series = [m * MiB for m in (1358, 1285, 1309, 1325, 1309, 1309, 1285, 1285, 1285, 1285)]
    assert rss_drift_problem(series, warmup=1) is None
    shrink = [1000 * MiB] * 5 + [900 * MiB] * 5
    assert rss_drift_problem(shrink, warmup=1) is None


def test_drift_check_catches_a_leak():
    leak = [int(1000 * MiB * 1.01 ** k) for k in range(10)]  # +1 % per block: 10 MB per 20 prompts
    assert "above the warm-up's high-water mark" in rss_drift_problem(leak, warmup=1)
    # the same leak after the allocator gave memory back: still under the ceiling, but a steady rise
    hidden = [1358 * MiB] + [int(1200 * MiB * 1.01 ** k) for k in range(9)]
    assert "kept growing" in rss_drift_problem(hidden, warmup=1)
    step = [1000 * MiB] * 4 + [1080 * MiB] * 6  # one jump that stays
    assert rss_drift_problem(step, warmup=1) is not None
    wobble = [1358 * MiB] + [m * MiB for m in (1285, 1285, 1285, 1309, 1325, 1325, 1325, 1325, 1285)]
    assert rss_drift_problem(wobble, warmup=1) is None
    assert "run more prompts" in rss_drift_problem([1000 * MiB] * 2, warmup=1)
