"""Runtime guards: NaN/Inf never passes silently, sizes the device cannot hold are refused before allocating,
seeds wrap, long prompts are refused, a tiled decode stops at the next tile when interrupted.

Damaged weights are in *large* tensors (the loaders check only small ones at load): a bf16 DiT and a Q8_0 GGUF
DiT whose block scales are NaN/Inf, a text encoder, a VAE conv. Each must stop the prompt with a message naming
the file (or the stage), in-process through the pack's nodes and through core KSampler / CLIPTextEncode /
VAEDecode. The server cases (no image saved) are in test_interrupt_server.py.
"""
from __future__ import annotations

import time

import pytest
import torch

from zimage_turbo.fixtures.tiny_models import build_dit_state_dict, save_safetensors_atomic

NAN_DIT_KEY = "layers.0.feed_forward.w1.weight"  # 1024×384: a large weight, not checked at load
STEPS = 2


def _cond(tokens: int = 12, seed: int = 3):
    return [[torch.randn(1, tokens, 256, generator=torch.Generator().manual_seed(seed)), {}]]


def _poisoned(value: float) -> torch.Tensor:
    w = build_dit_state_dict()[NAN_DIT_KEY].clone()
    w[5, 7] = value
    return w


@pytest.fixture(scope="module")
def dit(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(tiny_paths["diffusion_models"])


@pytest.fixture(scope="module", params=["nan", "inf"])
def damaged_dit(request, comfy_host, tmp_path_factory):
    """A bf16 DiT with one NaN (or Inf) in a large weight."""
    from zimage_turbo.loaders.dit import load_zimage_dit
    sd = build_dit_state_dict()
    sd[NAN_DIT_KEY] = _poisoned(float(request.param))
    path = save_safetensors_atomic(sd, tmp_path_factory.mktemp("nan") / f"dit_{request.param}_bf16.safetensors")
    return load_zimage_dit(path), path.name


@pytest.fixture(scope="module", params=["nan", "inf"])
def damaged_gguf_dit(request, comfy_host, tmp_path_factory):
    """A Q8_0 GGUF DiT one of whose blocks has a NaN (or Inf) fp16 scale."""
    from zimage_turbo.loaders.dit import load_zimage_dit
    from zimage_turbo.quant.convert import dit_gguf_metadata, quantize_dit_tensor
    from zimage_turbo.quant.gguf_writer import write_gguf
    tensors = {k: quantize_dit_tensor(k, v.float(), "Q8_0") for k, v in build_dit_state_dict().items()}
    target = tensors[NAN_DIT_KEY]
    assert target.quant_type.name == "Q8_0"
    scale = torch.tensor([float(request.param)], dtype=torch.float16).view(torch.uint8)
    target.blocks()[3, 0:2] = scale  # block 3's scale (bytes 0-1 of a Q8_0 block)
    path = tmp_path_factory.mktemp("nan_gguf") / f"dit_{request.param}-Q8_0.gguf"
    write_gguf(path, tensors, dit_gguf_metadata("damaged", "Q8_0"))
    return load_zimage_dit(path), path.name


def _pack_sample(model, cond=None, size=64, steps=STEPS, **kwargs):
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    return turbo_sample(model, cond or _cond(), empty_latent(size, size), seed=1, steps=steps, **kwargs)


def _core_ksampler(model, cond=None, size=64, steps=STEPS):
    import nodes
    latent = nodes.EmptyLatentImage().generate(size, size, 1)[0]
    return nodes.KSampler().sample(model, 1, steps, 1.0, "euler", "simple", cond or _cond(), _cond(),
                                   latent, denoise=1.0)[0]


# --------------------------------------------------------------------------------------------------- NaN/Inf
@pytest.mark.parametrize("sampler", [_pack_sample, _core_ksampler], ids=["pack_sampler", "core_ksampler"])
def test_damaged_dit_stops_at_step_one_naming_the_file(damaged_dit, sampler):
    from zimage_turbo.sampling.guards import NonFiniteError
    model, name = damaged_dit
    with pytest.raises(NonFiniteError) as info:
        sampler(model)
    assert str(info.value).startswith(f"{name}: the diffusion model produced NaN/Inf at step 1 of {STEPS}. ")
    assert "damaged" in str(info.value)


@pytest.mark.parametrize("sampler", [_pack_sample, _core_ksampler], ids=["pack_sampler", "core_ksampler"])
def test_gguf_dit_with_non_finite_block_scale_stops_naming_the_file(damaged_gguf_dit, sampler):
    from zimage_turbo.sampling.guards import NonFiniteError
    model, name = damaged_gguf_dit
    with pytest.raises(NonFiniteError, match=rf"^{name}: the diffusion model produced NaN/Inf at step 1 of {STEPS}"):
        sampler(model)


def test_intact_dit_passes_the_guard_unchanged(dit):
    """The guard only looks: with it removed the latent is bit-identical."""
    import comfy.patcher_extension
    from zimage_turbo.sampling.guards import FORWARD_GUARD_KEY, forward_guard
    bare = dit.clone()
    bare.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, FORWARD_GUARD_KEY)
    assert forward_guard(dit) is not None and forward_guard(bare) is None
    assert torch.equal(_pack_sample(dit)["samples"], _pack_sample(bare)["samples"])


@pytest.mark.parametrize("sampler", [_pack_sample, _core_ksampler], ids=["pack_sampler", "core_ksampler"])
def test_non_finite_conditioning_is_blamed_on_the_text_encoder(dit, tiny_paths, sampler):
    from zimage_turbo.sampling.guards import NonFiniteError
    cond = _cond()
    cond[0][0][0, 4, 10] = float("nan")
    with pytest.raises(NonFiniteError) as info:
        sampler(dit, cond)
    assert str(info.value).startswith("the conditioning from the text encoder holds NaN/Inf (seen by "
                                      f"{tiny_paths['diffusion_models'].name} at step 1 of {STEPS})")


def test_non_finite_input_latent_is_named(dit):
    from zimage_turbo.sampling.guards import NonFiniteError
    from zimage_turbo.sampling.turbo import turbo_sample
    start = {"samples": torch.zeros(1, 16, 8, 8)}
    start["samples"][0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="the latent given to the diffusion model holds NaN/Inf at step 1 of 4"):
        turbo_sample(dit, _cond(), start, seed=1, steps=4, denoise=0.5)


def test_final_latent_is_checked(dit, monkeypatch):
    """A sampler whose own arithmetic overflows (the model's outputs were finite) is caught at the end."""
    import comfy.sample
    from zimage_turbo.sampling.guards import NonFiniteError
    real = comfy.sample.sample
    monkeypatch.setattr(comfy.sample, "sample", lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(NonFiniteError, match=r"^zimage_tiny_dit_bf16\.safetensors: the sampler's final latent "
                                             r"holds NaN/Inf \(euler/simple\)"):
        _pack_sample(dit)


@pytest.fixture(scope="module")
def damaged_text_encoder(comfy_host, tmp_path_factory):
    """The tiny Qwen3 with one NaN in a large weight (layer 0's MLP down projection)."""
    from zimage_turbo.fixtures.tiny_models import build_qwen3_state_dict
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    sd = build_qwen3_state_dict()
    sd["model.layers.0.mlp.down_proj.weight"][3, 9] = float("nan")
    path = save_safetensors_atomic(sd, tmp_path_factory.mktemp("nan_te") / "qwen3_nan.safetensors")
    return load_qwen3_text_encoder(path)


def test_damaged_text_encoder_stops_at_the_encode(damaged_text_encoder):
    import nodes
    from zimage_turbo.sampling.guards import NonFiniteError
    with pytest.raises(NonFiniteError, match=r"^the text encoder produced NaN/Inf conditioning: its weights hold "
                                             r"NaN/Inf \(the file is damaged"):
        nodes.CLIPTextEncode().encode(damaged_text_encoder, "a red fox")


@pytest.fixture(scope="module")
def vae(comfy_host, tiny_paths, tmp_path_factory):
    """The tiny Flux VAE, loaded from a file named damaged_ae.safetensors (a link to it)."""
    from zimage_turbo.loaders.vae import load_flux_vae
    link = tmp_path_factory.mktemp("nan_vae") / "damaged_ae.safetensors"
    link.symlink_to(tiny_paths["vae"])
    return load_flux_vae(link)


@pytest.fixture
def damaged_vae(vae):
    """That VAE with one NaN in a decoder conv while the test runs (the loaded copy is modified rather than a
    335 MB file written: the runtime check sees the same weights)."""
    conv = vae.first_stage_model.decoder.conv_in
    intact = conv.weight
    weight = intact.detach().clone()
    weight[0, 0, 1, 1] = float("nan")
    conv.weight = torch.nn.Parameter(weight, requires_grad=False)
    yield vae
    conv.weight = intact


def _latent(size: int = 8) -> torch.Tensor:
    return torch.randn(1, 16, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("node", ["ZImageVAEDecode", "ZImageVAEDecode_tiled", "VAEDecode", "VAEDecodeTiled"])
def test_damaged_vae_stops_naming_the_file(damaged_vae, node):
    import nodes
    from zimage_turbo.nodes.vae_decode import ZImageVAEDecode
    from zimage_turbo.sampling.guards import NonFiniteError
    decode = {"ZImageVAEDecode": lambda s: ZImageVAEDecode().decode(s, damaged_vae),
              "ZImageVAEDecode_tiled": lambda s: ZImageVAEDecode().decode(s, damaged_vae, tile_size=128),
              "VAEDecode": lambda s: nodes.VAEDecode().decode(damaged_vae, s),
              "VAEDecodeTiled": lambda s: nodes.VAEDecodeTiled().decode(damaged_vae, s, 128, 32)}[node]
    with pytest.raises(NonFiniteError, match=r"^damaged_ae\.safetensors: the VAE decoded NaN/Inf from a finite "
                                             r"latent: its weights hold NaN/Inf"):
        decode({"samples": _latent(8)})


def test_vae_blames_a_non_finite_latent(damaged_vae):
    from zimage_turbo.nodes.vae_decode import ZImageVAEDecode
    from zimage_turbo.sampling.guards import NonFiniteError
    latent = _latent()
    latent[0, 2, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^damaged_ae\.safetensors: the latent given to the VAE holds NaN"):
        ZImageVAEDecode().decode({"samples": latent}, damaged_vae)


# ------------------------------------------------------------------------------------------------------ seeds
def test_seed_wraps_past_the_largest_seed(dit):
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    top = 2 ** 64 - 1
    args = (_cond(), 64, 64)
    rest = (1, 1.0, 3.0, "euler", "simple", 1.0)
    batch, seeds = ZImageTurboSampler().sample(dit, *args, 2, top, *rest)
    assert seeds == f"{top}, 0"
    last, _ = ZImageTurboSampler().sample(dit, *args, 1, top, *rest)
    first, _ = ZImageTurboSampler().sample(dit, *args, 1, 0, *rest)
    torch.testing.assert_close(batch["samples"][0:1], last["samples"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batch["samples"][1:2], first["samples"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------- size and memory
def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def test_oversize_request_is_refused_before_allocating(dit):
    """16384² at batch 64 needs terabytes even for the tiny DiT: refused at once, with the numbers."""
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    from zimage_turbo.sampling.limits import SizeTooLargeError
    before, start = _rss(), time.perf_counter()
    with pytest.raises(SizeTooLargeError) as info:
        ZImageTurboSampler().sample(dit, _cond(), 16384, 16384, 64, 1, 1, 1.0, 3.0, "euler", "simple", 1.0)
    elapsed, grown = time.perf_counter() - start, _rss() - before
    assert elapsed < 1.0 and grown < 64 << 20, (elapsed, grown >> 20)
    message = str(info.value)
    assert message.startswith("16384×16384, batch 64 needs about ") and " is free: " in message, message
    assert "the CPU (RAM)" in message and ("the largest size that fits is about " in message
                                           or "no size fits" in message), message


def _with_free_memory(monkeypatch, free: int) -> None:
    from zimage_turbo.sampling import limits
    monkeypatch.setattr(limits, "free_memory", lambda device: free)


def test_refusal_names_the_largest_size_that_fits(dit, monkeypatch):
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    from zimage_turbo.sampling.limits import SizeTooLargeError, request_for
    free = 300 << 20
    _with_free_memory(monkeypatch, free)
    with pytest.raises(SizeTooLargeError) as info:
        ZImageTurboSampler().sample(dit, _cond(), 4096, 2048, 1, 1, 1, 1.0, 3.0, "euler", "simple", 1.0)
    message = str(info.value)
    asked = request_for(dit, 4096, 2048, 1, 12)
    assert message.startswith(f"4096×2048 needs about {asked.bytes / 2 ** 30:.1f} GiB for the diffusion model's "
                              f"activations on the CPU (RAM), but 0.3 GiB is free: the largest size that fits is "
                              f"about "), message
    width, height = map(int, message.rsplit("about ", 1)[1].rstrip(".").split("×"))
    assert width % 16 == 0 and height % 16 == 0 and abs(width / height - 2) < 0.05
    assert asked.resized(width, height).bytes <= free < asked.resized(width + 16, height + 16).bytes


def test_core_ksampler_is_refused_by_the_models_guard(dit, monkeypatch):
    from zimage_turbo.sampling.limits import SizeTooLargeError
    _with_free_memory(monkeypatch, 4 << 20)
    with pytest.raises(SizeTooLargeError, match=r"^512×512 needs about .* is free: the largest size that fits is "
                                                r"about \d+×\d+\.$"):
        _core_ksampler(dit, size=512, steps=1)


CPU_ALLOCATOR_FAILURE = ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 987654321 bytes. "
                         "Error code 12 (Cannot allocate memory)")


def _failing_forward(model):
    """A clone whose DiT forward fails like the CPU allocator does (inside the loader's guard)."""
    import comfy.patcher_extension

    def fail(executor, *args, **kwargs):
        raise RuntimeError(CPU_ALLOCATOR_FAILURE)
    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_fail", fail)
    return clone


@pytest.mark.parametrize("sampler", [_pack_sample, _core_ksampler], ids=["pack_sampler", "core_ksampler"])
def test_out_of_memory_while_sampling_becomes_a_clear_message(dit, sampler):
    from zimage_turbo.sampling.limits import SamplingOutOfMemoryError
    with pytest.raises(SamplingOutOfMemoryError) as info:
        sampler(_failing_forward(dit), size=128)
    message = str(info.value)
    assert message.startswith("128×128: out of memory while sampling on the CPU (RAM) (DefaultCPUAllocator: can't "
                              "allocate memory: you tried to allocate 987654321 bytes."), message
    assert "is free: the largest size that fits is about" in message, message
    assert isinstance(info.value, torch.OutOfMemoryError)  # ComfyUI frees its models after it, as after any OOM


def test_out_of_memory_outside_the_model_is_translated_by_the_sampler(dit, monkeypatch):
    import comfy.sample
    from zimage_turbo.sampling.limits import SamplingOutOfMemoryError

    def fail(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(comfy.sample, "sample", fail)
    with pytest.raises(SamplingOutOfMemoryError, match=r"^64×64: out of memory while sampling on the CPU \(RAM\) "
                                                       r"\(CUDA out of memory\. Tried to allocate 20\.00 GiB\)"):
        _pack_sample(dit)


def test_largest_fitting_is_exact_for_the_formula():
    from zimage_turbo.planner.estimate import DiTDims
    from zimage_turbo.sampling.limits import Request, largest_fitting
    request = Request(16384, 9216, 2, 200, DiTDims(3840, 128, 0, 0), 2)
    free = 24 << 30
    width, height = largest_fitting(request, free)
    assert request.resized(width, height).bytes <= free < request.resized(width + 16, height + 16).bytes
    assert abs(width / height - 16 / 9) < 0.02
    assert largest_fitting(request, 1 << 20) is None


# ---------------------------------------------------------------------------------------------- long prompts
@pytest.fixture(scope="module")
def text_encoders(comfy_host, tiny_paths, tmp_path_factory):
    """The pack's CLIPs: safetensors, GGUF with the bundled tokenizer, GGUF with the file's own tokenizer."""
    from zimage_turbo.fixtures.tiny_models import write_qwen3_gguf
    from zimage_turbo.loaders.gguf_tokenizer import bundled_tokenizer_dir
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    gguf = write_qwen3_gguf(tmp_path_factory.mktemp("te") / "qwen3-tiny-Q8_0.gguf", type_name="Q8_0",
                            tokenizer_dir=bundled_tokenizer_dir())
    return {"safetensors": load_qwen3_text_encoder(tiny_paths["text_encoders"]),
            "gguf": load_qwen3_text_encoder(gguf),
            "gguf_own_tokenizer": load_qwen3_text_encoder(gguf, tokenizer="gguf")}


@pytest.fixture(params=["safetensors", "gguf", "gguf_own_tokenizer"])
def clip(request, text_encoders):
    return text_encoders[request.param]


@pytest.mark.parametrize("size", [100_000, 1_000_000])
def test_huge_prompt_is_refused_before_tokenizing(clip, size):
    import nodes
    from zimage_turbo.loaders.text_encoder_guard import MAX_PROMPT_CHARS, PromptTooLongError
    before, start = _rss(), time.perf_counter()
    with pytest.raises(PromptTooLongError) as info:
        nodes.CLIPTextEncode().encode(clip, "a fox " * (size // 6))
    assert time.perf_counter() - start < 0.5 and _rss() - before < 32 << 20
    assert str(info.value) == (f"the prompt is {size // 6 * 6:,} characters long; Z-Image's text encoder takes "
                               f"prompts of at most 1504 tokens, so prompts over {MAX_PROMPT_CHARS:,} characters "
                               f"are refused before tokenizing: shorten it.")


def test_prompt_over_the_token_limit_is_refused_with_its_length(clip):
    import nodes
    from zimage_turbo.loaders.text_encoder_guard import MAX_PROMPT_CHARS, PromptTooLongError, token_count
    text = "fox " * 1600
    assert len(text) < MAX_PROMPT_CHARS
    with pytest.raises(PromptTooLongError, match=r"^the prompt is 1,6\d\d tokens long \(6,400 characters\); "
                                                 r"Z-Image reads at most 1504 tokens"):
        nodes.CLIPTextEncode().encode(clip, text)
    at_limit = "fox " * 1400
    assert token_count(clip.tokenize(at_limit)) <= 1504
    (cond,) = nodes.CLIPTextEncode().encode(clip, at_limit)
    assert cond[0][0].shape[1] > 1400 and torch.isfinite(cond[0][0]).all()


def test_prompt_limit_matches_the_dits_caption_range():
    """1504 = the longest caption (padded to 32) whose picture, placed at caption length + 1, stays on the DiT's
    RoPE axis of 1536 positions (FACTS §1.2 axes_lens)."""
    from zimage_turbo.loaders.text_encoder_guard import MAX_PROMPT_TOKENS
    assert MAX_PROMPT_TOKENS == max(p for p in range(0, 1536, 32) if p + 1 < 1536)


# --------------------------------------------------------------------------------------- tiled decode interrupt
def test_tiled_decode_stops_before_the_next_tile(vae, monkeypatch):
    """An interrupt raised while tile 2 decodes: tile 3 never starts (the picture has 7 tiles)."""
    import comfy.model_management as mm
    import comfy.utils
    from zimage_turbo.loaders import interrupt
    from zimage_turbo.planner.decode import decode
    decoded = []
    real = vae.first_stage_model.decode

    def counting(*args, **kwargs):
        decoded.append(1)
        return real(*args, **kwargs)

    def cancelled_during_tile_two():
        if len(decoded) >= 2:
            raise mm.InterruptProcessingException()
    monkeypatch.setattr(vae.first_stage_model, "decode", counting)
    monkeypatch.setattr(interrupt, "check_interrupted", cancelled_during_tile_two)
    with pytest.raises(mm.InterruptProcessingException):
        decode(vae, _latent(16), tile_size=128)
    assert len(decoded) == 2
    tiles = sum(comfy.utils.get_tiled_scale_steps(16, 16, x, y, 4) for x, y in ((8, 32), (32, 8), (16, 16)))
    assert tiles == 7
