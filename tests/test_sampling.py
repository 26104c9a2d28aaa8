"""Turbo sampling on the tiny model: schedules, seeds, img2img, presets, A1111 parameters."""
from __future__ import annotations

import re

import pytest
import torch

from zimage_turbo.saving.a1111 import GenerationParameters, parse_parameters
from zimage_turbo.sampling import schedules
from zimage_turbo.sampling.sizes import SIZE_PRESETS, resolve_size


def _documented_sigmas() -> dict[int, list[float]]:
    rows = re.findall(r"^\| (\d+) \| ([\d. ]+) \|$", schedules.__doc__, re.M)
    return {int(n): [float(x) for x in values.split()] for n, values in rows}


def test_lowstep_sigmas_match_documented_table():
    table = _documented_sigmas()
    assert sorted(table) == [4, 6, 8, 9]
    for steps, documented in table.items():
        sigmas = schedules.lowstep_sigmas(steps, 3.0)
        assert len(sigmas) == steps + 1
        assert [round(x, 4) for x in sigmas.tolist()] == documented
        assert torch.all(sigmas[:-1] > sigmas[1:]), "sigmas must decrease"


@pytest.fixture(scope="module")
def tiny_model(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(tiny_paths["diffusion_models"])


def _cond(seed=3):
    return [[torch.randn(1, 12, 256, generator=torch.Generator().manual_seed(seed)), {}]]


def _recording(model):
    """A clone of the model that records the sigma of every model call."""
    seen: list[float] = []

    def wrapper(apply_model, args):
        seen.extend(args["timestep"].tolist())
        return apply_model(args["input"], args["timestep"], **args["c"])

    clone = model.clone()
    clone.set_model_unet_function_wrapper(wrapper)
    return clone, seen


def test_native_simple_schedule_matches_documented_values(tiny_model):
    import comfy.samplers
    from zimage_turbo.sampling.turbo import with_flow_shift
    sampling = with_flow_shift(tiny_model, 3.0).get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", 8)
    documented = re.search(r"for 8 steps:\n([\d. ]+)\.", schedules.__doc__).group(1).split()
    assert [round(x, 4) for x in sigmas.tolist()] == [float(x) for x in documented]


@pytest.mark.parametrize("scheduler", ["simple", "lowstep"])
def test_model_sees_the_schedule(tiny_model, scheduler):
    import comfy.samplers
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample, with_flow_shift
    model, seen = _recording(tiny_model)
    turbo_sample(model, _cond(), empty_latent(64, 64), seed=1, steps=6, scheduler=scheduler)
    if scheduler == "lowstep":
        expected = schedules.lowstep_sigmas(6, 3.0)
    else:
        expected = comfy.samplers.calculate_sigmas(with_flow_shift(tiny_model, 3.0).get_model_object("model_sampling"),
                                                   "simple", 6)
    torch.testing.assert_close(torch.tensor(seen), expected[:-1].float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler_name", ["euler", "res_multistep"])
@pytest.mark.parametrize("scheduler", ["simple", "lowstep"])
def test_samplers_and_schedules_run(tiny_model, sampler_name, scheduler):
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    out = turbo_sample(tiny_model, _cond(), empty_latent(64, 64), seed=2, steps=4, sampler_name=sampler_name,
                       scheduler=scheduler)["samples"]
    assert out.shape == (1, 16, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("scheduler", ["simple", "lowstep"])
def test_batch_of_three_equals_three_single_runs(tiny_model, scheduler):
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    batch = turbo_sample(tiny_model, _cond(), empty_latent(64, 64, 3), seed=40, steps=3, scheduler=scheduler)
    for i in range(3):
        single = turbo_sample(tiny_model, _cond(), empty_latent(64, 64, 1), seed=40 + i, steps=3, scheduler=scheduler)
        torch.testing.assert_close(batch["samples"][i:i + 1], single["samples"], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batch["samples"][0], batch["samples"][1])


def test_sampler_node_reports_seeds(tiny_model):
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    _, seeds = ZImageTurboSampler().sample(tiny_model, _cond(), 64, 64, 3, 7, 1, 1.0, 3.0, "euler", "simple", 1.0)
    assert seeds == "7, 8, 9"


@pytest.mark.parametrize("scheduler", ["simple", "lowstep"])
def test_img2img_denoise(tiny_model, scheduler):
    import comfy.samplers
    from zimage_turbo.sampling.turbo import turbo_sample, with_flow_shift
    start = {"samples": torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(9))}
    same = turbo_sample(tiny_model, _cond(), start, seed=1, steps=8, denoise=0.0, scheduler=scheduler)
    assert torch.equal(same["samples"], start["samples"])

    model, seen = _recording(tiny_model)
    turbo_sample(model, _cond(), start, seed=1, steps=4, denoise=0.5, scheduler=scheduler)
    if scheduler == "lowstep":
        full = schedules.lowstep_sigmas(8, 3.0)
    else:
        full = comfy.samplers.calculate_sigmas(with_flow_shift(tiny_model, 3.0).get_model_object("model_sampling"),
                                               "simple", 8)
    torch.testing.assert_close(torch.tensor(seen), full[4:-1].float(), rtol=1e-5, atol=1e-6)


def test_inpaint_mask_keeps_unmasked_region(tiny_model):
    from zimage_turbo.sampling.turbo import turbo_sample
    start = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0
    out = turbo_sample(tiny_model, _cond(), {"samples": start, "noise_mask": mask}, seed=3, steps=3, denoise=0.7)
    kept = out["samples"][..., 4:]
    torch.testing.assert_close(kept, start[..., 4:], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out["samples"][..., :4], start[..., :4])


def test_size_presets():
    for label, (w, h) in SIZE_PRESETS.items():
        assert w % 16 == 0 and h % 16 == 0
        target = 2 * 1024 * 1024 if "2MP" in label else 1024 * 1024
        assert abs(w * h - target) / target < 0.06, label
        a, b = map(int, re.search(r"\((\d+):(\d+)", label).groups())
        assert abs((w / h) / (a / b) - 1) < 0.03, label
    assert resolve_size("1024x1024 (1:1, 1MP)", 0, 0) == (1024, 1024)
    assert resolve_size("custom", 1000, 777) == (992, 768)


def test_latent_node(comfy_host):
    from zimage_turbo.nodes.latent import ZImageLatent
    latent, w, h = ZImageLatent().make("1360x768 (16:9, 1MP)", 0, 0, 2)
    assert (w, h) == (1360, 768) and latent["samples"].shape == (2, 16, 96, 170)


def test_a1111_parameters_round_trip():
    params = GenerationParameters("a cat, on a mat: 1", "blurry", {"Steps": 8, "Sampler": "Euler", "CFG scale": 1.0,
                                                                    "Seed": 42, "Size": "1024x1024", "Model": "z, x"})
    parsed = parse_parameters(params.to_text())
    assert parsed.positive == "a cat, on a mat: 1" and parsed.negative == "blurry"
    assert parsed.settings == {"Steps": "8", "Sampler": "Euler", "CFG scale": "1.0", "Seed": "42",
                               "Size": "1024x1024", "Model": "z, x"}
    a1111 = "masterpiece\nline two\nNegative prompt: ugly\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1"
    parsed = parse_parameters(a1111)
    assert parsed.positive == "masterpiece\nline two" and parsed.negative == "ugly"
    assert parsed.settings["Sampler"] == "DPM++ 2M" and parsed.settings["Seed"] == "1"


def test_png_writer_skips_existing_names(tmp_path):
    from PIL import Image
    from zimage_turbo.saving.png import png_info, write_png_exclusive
    (tmp_path / "x_00001_.png").write_bytes(b"mine")
    name, counter = write_png_exclusive(tmp_path, "x", 1, Image.new("RGB", (8, 8)), png_info(None, None, "p"))
    assert (name, counter) == ("x_00002_.png", 2)
    assert (tmp_path / "x_00001_.png").read_bytes() == b"mine"
    assert Image.open(tmp_path / name).text["parameters"] == "p"


@pytest.fixture
def progress_hook():
    """Install a ComfyUI progress hook (what the server does) for the test; yields the recorded calls."""
    import comfy.utils
    calls: list[tuple[int, int, object]] = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    yield calls, lambda hook: comfy.utils.set_progress_bar_global_hook(hook)
    comfy.utils.set_progress_bar_global_hook(previous)


def test_progress_and_latent2rgb_preview_every_step(tiny_model, progress_hook, monkeypatch):
    import comfy.cli_args
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    monkeypatch.setattr(comfy.cli_args.args, "preview_method", comfy.cli_args.LatentPreviewMethod.Latent2RGB)
    calls, install = progress_hook
    install(lambda value, total, preview, **kw: calls.append((value, total, preview)))
    turbo_sample(tiny_model, _cond(), empty_latent(64, 64), seed=1, steps=4)
    assert [(v, t) for v, t, _ in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for _, _, preview in calls:
        fmt, image = preview[0], preview[1]
        assert fmt == "JPEG" and image.size[0] > 0


def test_interrupt_stops_within_a_step(tiny_model, progress_hook):
    """/interrupt arriving during step 2 stops sampling before step 3 completes (hook per step on older hosts,
    a check before every op on newer ones)."""
    import comfy.model_management as mm
    from zimage_turbo.sampling.turbo import empty_latent, turbo_sample
    completed: list[float] = []

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        completed.append(float(args["timestep"][0]))
        if len(completed) == 2:
            mm.interrupt_current_processing(True)  # what POST /interrupt does
        return out

    model = tiny_model.clone()
    model.set_model_unet_function_wrapper(wrapper)
    _, install = progress_hook
    install(lambda value, total, preview, **kw: mm.throw_exception_if_processing_interrupted())  # main.py's hook
    try:
        with pytest.raises(mm.InterruptProcessingException):
            turbo_sample(model, _cond(), empty_latent(64, 64), seed=1, steps=8)
    finally:
        mm.interrupt_current_processing(False)
    assert len(completed) == 2
