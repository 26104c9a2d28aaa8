"""Step caching (issue 19): core's EasyCache and LazyCache on the pack's MODEL, every DiT format, with the pack's
sampler at Base settings (cfg 4 with a negative). Threshold 0 = the uncached latent; a threshold skips model
calls (counted at the DiT's input embedder, so a skipped call is one that never reached the network)."""
from __future__ import annotations

import pytest
import torch

STEPS = 12
CACHES = ["EasyCache", "LazyCache"]


@pytest.fixture(scope="module")
def formats(comfy_host, tiny_paths, tmp_path_factory):
    """{format: loaded MODEL} for the tiny DiT in each format users have."""
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.quant.convert import convert_to_gguf, convert_to_scaled_fp8
    src = tiny_paths["diffusion_models"]
    tmp = tmp_path_factory.mktemp("cache_formats")
    convert_to_gguf(src, tmp / "dit-Q8_0.gguf", "Q8_0")
    convert_to_gguf(src, tmp / "dit-Q4_K.gguf", "Q4_K")
    convert_to_scaled_fp8(src, tmp / "dit-scaled_fp8.safetensors")
    return {
        "bf16": lambda: load_zimage_dit(src),
        "fp8_e4m3fn": lambda: load_zimage_dit(src, weight_dtype="fp8_e4m3fn"),
        "scaled_fp8": lambda: load_zimage_dit(tmp / "dit-scaled_fp8.safetensors"),
        "gguf_Q8_0": lambda: load_zimage_dit(tmp / "dit-Q8_0.gguf"),
        "gguf_Q4_K": lambda: load_zimage_dit(tmp / "dit-Q4_K.gguf"),
    }


def _cond(seed, tokens=12):
    return [[torch.randn(1, tokens, 256, generator=torch.Generator().manual_seed(seed)), {}]]


def with_cache(model, cache: str, threshold: float):
    """The model through core's cache node (the node a workflow uses), as ComfyUI executes it."""
    from comfy_extras import nodes_easycache
    node = {"EasyCache": nodes_easycache.EasyCacheNode, "LazyCache": nodes_easycache.LazyCacheNode}[cache]
    out = node.execute(model, threshold, 0.15, 0.95, False)
    return out.result[0] if hasattr(out, "result") else out[0]


def _run(model) -> tuple[torch.Tensor, int]:
    """Base-style sampling through the pack's sampler; (latent, model inputs evaluated: batch rows that reached
    the network, so a batched positive+negative call counts 2)."""
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    calls = []
    handle = model.model.diffusion_model.x_embedder.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        latent, _ = ZImageTurboSampler().sample(model, _cond(3), 32, 32, 1, 9, STEPS, 4.0, 3.0, "euler",
                                                "simple", 1.0, negative=_cond(8))
    finally:
        handle.remove()
    return latent["samples"], sum(calls)


def test_both_hosts_have_the_core_caches(comfy_host):
    from comfy_extras import nodes_easycache
    assert hasattr(nodes_easycache, "EasyCacheNode") and hasattr(nodes_easycache, "LazyCacheNode")


@pytest.mark.parametrize("fmt", ["bf16", "fp8_e4m3fn", "scaled_fp8", "gguf_Q8_0", "gguf_Q4_K"])
def test_caches_on_every_dit_format(formats, fmt):
    model = formats[fmt]()
    plain, plain_calls = _run(model)
    assert plain_calls == 2 * STEPS  # positive and negative each step (batched or not: two inputs)
    for cache in CACHES:
        off, off_calls = _run(with_cache(model, cache, 0.0))
        assert torch.equal(off, plain), f"{cache} at threshold 0 must be the uncached latent ({fmt})"
        assert off_calls == plain_calls
        cached, cached_calls = _run(with_cache(model, cache, 3.0))
        assert torch.isfinite(cached).all()
        assert cached_calls < plain_calls, f"{cache} skipped nothing on {fmt}"


@pytest.mark.parametrize("cache", CACHES)
def test_caches_with_core_ksampler(formats, cache):
    """The pack's MODEL + core cache node + core KSampler (shift from ModelSamplingAuraFlow): threshold 0 is the
    uncached latent, a threshold skips DiT evaluations."""
    import nodes
    from comfy_extras.nodes_model_advanced import ModelSamplingAuraFlow
    model = ModelSamplingAuraFlow().patch_aura(formats["gguf_Q8_0"](), 3.0)[0]
    latent = {"samples": torch.zeros(1, 16, 4, 4)}

    def run(m):
        rows = []
        hook = m.model.diffusion_model.x_embedder.register_forward_hook(
            lambda module, args, out: rows.append(args[0].shape[0]))
        try:
            out = nodes.KSampler().sample(m, 4, STEPS, 4.0, "euler", "simple", _cond(3), _cond(8), latent)[0]
        finally:
            hook.remove()
        return out["samples"], sum(rows)

    plain, plain_rows = run(model)
    off, off_rows = run(with_cache(model, cache, 0.0))
    assert torch.equal(off, plain) and off_rows == plain_rows == 2 * STEPS
    cached, cached_rows = run(with_cache(model, cache, 3.0))
    assert torch.isfinite(cached).all() and cached_rows < plain_rows
