"""Text-encoder offload policy: after encoding, ComfyUI's model management moves the TE off the card before the
DiT loads when both do not fit. This is core behaviour (load_models_gpu → free_memory → partially_unload /
unload); the pack relies on it and adds nothing by hand. Shown by accounting on a fake card: the tiny models
are "loaded" onto torch's meta device (no memory), get_free_memory reports budget − loaded bytes, and the
very calls the nodes make run: CLIP.load_model (first thing CLIPTextEncode does) and
sampler_helpers.prepare_sampling (what every ComfyUI sampler, ours included, does before the first step).
"""
from __future__ import annotations

import pytest
import torch

from zimage_turbo.planner import estimate

META = torch.device("meta")


@pytest.fixture(scope="module")
def models_on_meta(comfy_host, tiny_paths):
    import comfy.model_management as mm
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    with torch.inference_mode():
        clip = load_qwen3_text_encoder(tiny_paths["text_encoders"])
        dit = load_zimage_dit(tiny_paths["diffusion_models"])
        cond = clip.encode_from_tokens_scheduled(clip.tokenize("a lighthouse"))  # a real encode, on CPU
    mm.unload_all_models()
    for patcher in (clip.patcher, dit):  # from here on, the "card" is the meta device (weights are dropped)
        patcher.load_device = patcher.offload_device = META
    yield clip, dit, cond
    mm.unload_all_models()


@pytest.fixture
def fake_card(models_on_meta, monkeypatch):
    import comfy.model_management as mm
    budget = {"bytes": 0}

    def get_free_memory(dev=None, torch_free_too=False):
        used = sum(m.model.loaded_size() for m in mm.current_loaded_models if m.device == META)
        free = budget["bytes"] - used
        return (free, 0) if torch_free_too else free
    monkeypatch.setattr(mm, "get_free_memory", get_free_memory)
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NORMAL_VRAM)
    mm.unload_all_models()
    yield (*models_on_meta, budget)
    mm.unload_all_models()


def _encode_then_sample(clip, dit, cond):
    import comfy.sampler_helpers as sh
    with torch.inference_mode():
        clip.load_model()
    te_loaded = clip.patcher.loaded_size()
    with torch.inference_mode():
        sh.prepare_sampling(dit, [1, 16, 16, 16], {"positive": sh.convert_cond(cond)}, model_options=dit.model_options)
    return te_loaded


def test_te_leaves_the_card_when_te_and_dit_do_not_fit(fake_card):
    import comfy.model_management as mm
    clip, dit, cond, budget = fake_card
    te, di = clip.patcher.model_size(), dit.model_size()
    card = max(te, int(1.1 * di)) + 1_000_000  # each fits alone, never both
    budget["bytes"] = mm.minimum_inference_memory() + card
    assert _encode_then_sample(clip, dit, cond) == te  # the TE was whole on the card for encoding
    assert dit.loaded_size() == di  # the DiT loads whole, no streaming …
    left = clip.patcher.loaded_size()
    assert left < te  # … because the TE left the card first
    assert left + di <= card
    # the planner predicts what stays of the TE (ComfyUI unloads whole modules: within the largest module)
    predicted = estimate._evict(te, budget["bytes"], int(1.1 * di) + mm.minimum_inference_memory())
    assert abs(left - predicted) <= 151936 * 256 * 4 + 1_000_000


def test_te_stays_when_both_fit_and_planner_agrees(fake_card):
    import comfy.model_management as mm
    clip, dit, cond, budget = fake_card
    te, di = clip.patcher.model_size(), dit.model_size()
    budget["bytes"] = mm.minimum_inference_memory() + te + 2 * di
    _encode_then_sample(clip, dit, cond)
    assert clip.patcher.loaded_size() == te and dit.loaded_size() == di
    # the planner's eviction rule gives the same three answers
    need = int(di * 1.1) + mm.minimum_inference_memory()
    assert estimate._evict(te, budget["bytes"], need) == te
    assert estimate._evict(te, mm.minimum_inference_memory() + int(1.1 * di), need) == 0
