"""A real ComfyUI server: /interrupt during a deliberately slow model load and during a tiled decode returns the
server to idle within 5 s; hostile inputs within the widgets' ranges end in clear messages, no image saved.

The load is made slow in this test server only: a test custom node (written below into its custom_nodes)
wraps the pack's `loaders.interrupt.check_interrupted` (found in sys.modules) with a sleep, for prompts whose
extra_data carries `zit_check_delay`. The loaders call that check between tensors and the tiled decode before
each tile, so with the sleep a load of N tensors takes N × delay unless the interrupt stops it.
"""
from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from zimage_turbo.fixtures.tiny_models import TINY_FILE_NAMES, build_dit_state_dict, save_safetensors_atomic
from zimage_turbo.headless.server import ComfyServer, history_error, output_images, prepare_base_dir

REPO = Path(__file__).resolve().parents[1]
CHECK_DELAY = 0.25  # seconds slept in each interrupt check of a "slow" prompt
IDLE_WITHIN = 5.0
SLOW_DIT = "zit_slow_dit.safetensors"  # a fresh name: the loader runs (no cached output)
NAN_DIT = "zit_nan_dit.safetensors"

SLOW_CHECKS_NODE = '''"""Test-only custom node: sleeps in the Z-Image pack's interrupt checks when a prompt asks."""
import sys
import time

from server import PromptServer

DELAY = {"seconds": 0.0}


def _slow(module):
    if getattr(module, "zit_test_slowed", False):
        return
    real = module.check_interrupted

    def check_interrupted():
        time.sleep(DELAY["seconds"])
        real()
    module.check_interrupted = check_interrupted
    module.zit_test_slowed = True


def _on_prompt(json_data):
    DELAY["seconds"] = float((json_data.get("extra_data") or {}).get("zit_check_delay", 0.0))
    for name, module in list(sys.modules.items()):
        if name.endswith(".loaders.interrupt") and hasattr(module, "check_interrupted"):
            _slow(module)
    return json_data


PromptServer.instance.add_on_prompt_handler(_on_prompt)
NODE_CLASS_MAPPINGS = {}
'''


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory, tiny_models_dir, tiny_paths):
    base = tmp_path_factory.mktemp("comfy_slow")
    prepare_base_dir(base, REPO, models_from=tiny_models_dir)
    node = base / "custom_nodes" / "zit_test_slow_checks"
    node.mkdir()
    (node / "__init__.py").write_text(SLOW_CHECKS_NODE)
    dits = base / "models" / "diffusion_models"
    (dits / SLOW_DIT).symlink_to(tiny_paths["diffusion_models"])
    sd = build_dit_state_dict()
    sd["layers.0.feed_forward.w1.weight"][5, 7] = float("nan")  # a large weight: found at run time
    save_safetensors_atomic(sd, dits / NAN_DIT)
    srv = ComfyServer.start(base_dir=base, log_path=base / "server.log")
    try:
        warm = srv.run(_prompt("zit_warm", size=64, steps=1), timeout=300)  # text encoder and VAE now cached
        assert history_error(warm) is None, (base / "server.log").read_text()[-3000:]
        yield srv
    finally:
        srv.stop()


def _prompt(prefix: str, size: int = 64, steps: int = 1, dit: str | None = None, **sampler) -> dict:
    """The basic text-to-image graph (loaders 1-3, prompt 4, sampler 5, decode 6, save 7) on the tiny models."""
    return {
        "1": {"class_type": "ZImageDiffusionModelLoader",
              "inputs": {"unet_name": dit or TINY_FILE_NAMES["diffusion_models"], "weight_dtype": "default"}},
        "2": {"class_type": "ZImageTextEncoderLoader",
              "inputs": {"text_encoder_name": TINY_FILE_NAMES["text_encoders"]}},
        "3": {"class_type": "ZImageVAELoader", "inputs": {"vae_name": TINY_FILE_NAMES["vae"]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["2", 0]}},
        "5": {"class_type": "ZImageTurboSampler",
              "inputs": {"model": ["1", 0], "positive": ["4", 0], "width": size, "height": size, "batch_size": 1,
                         "seed": 5, "steps": steps, "cfg": 1.0, "shift": 3.0, "sampler_name": "euler",
                         "scheduler": "simple", "denoise": 1.0, **sampler}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["3", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def _queue(server: ComfyServer, prompt: dict, delay: float = 0.0) -> str:
    body = {"prompt": prompt, "client_id": server.client_id, "extra_data": {"zit_check_delay": delay}}
    return server.request("/prompt", body)["prompt_id"]


def _interrupt_when(server: ComfyServer, prompt: dict, is_moment, settle: float = 0.0) -> dict:
    """Queue a slow `prompt`, send /interrupt when a websocket message satisfies `is_moment(type, data)` (after
    `settle` s), and return what happened: the end message's type and data, the messages after the interrupt,
    seconds to the end and to an idle queue, the /history entry."""
    events: queue.Queue = queue.Queue()
    listener = server.progress_listener(lambda kind, data: events.put((kind, data)))
    assert listener.connected.is_set(), "no websocket connection to the server"
    after: list[tuple[str, dict]] = []
    try:
        prompt_id = _queue(server, prompt, CHECK_DELAY)
        sent = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                kind, data = events.get(timeout=1.0)
            except queue.Empty:
                continue
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if sent is not None:
                after.append((kind, data))
            if kind in ("execution_interrupted", "execution_error", "execution_success"):
                ended = time.monotonic()
                break
            if sent is None and is_moment(kind, data):
                time.sleep(settle)
                sent = time.monotonic()
                server.interrupt()
        else:
            pytest.fail("the prompt did not end")
    finally:
        listener.stop()
    assert sent is not None, f"the prompt ended ({kind}: {data}) before the moment to interrupt came"
    while server.request("/queue")["queue_running"] and time.monotonic() - sent < 30:
        time.sleep(0.05)
    return {"kind": kind, "data": data, "after": after, "stopped_after": ended - sent,
            "idle_after": time.monotonic() - sent, "entry": server.wait_for(prompt_id, timeout=60)}


def _assert_interrupted_in(result: dict, node_type: str) -> None:
    assert result["kind"] == "execution_interrupted", (result["kind"], result["data"])
    assert result["data"].get("node_type") == node_type, f"interrupted in {result['data'].get('node_type')}"
    assert result["stopped_after"] < IDLE_WITHIN and result["idle_after"] < IDLE_WITHIN, result
    assert not output_images(result["entry"]), "an interrupted prompt saved an image"


@pytest.mark.server
def test_interrupt_during_a_slow_model_load(slow_server):
    tensors = len(build_dit_state_dict())
    assert tensors * CHECK_DELAY > 4 * IDLE_WITHIN, "the load would not be slow enough to tell"
    result = _interrupt_when(slow_server, _prompt("zit_slow_load", dit=SLOW_DIT),
                             lambda kind, data: kind == "executing" and data.get("node") == "1", settle=1.0)
    _assert_interrupted_in(result, "ZImageDiffusionModelLoader")


@pytest.mark.server
def test_interrupt_during_a_tiled_decode(slow_server):
    """Interrupted while tile 2 decodes: at most that tile reports progress afterwards, none of the 23 after it."""
    prompt = _prompt("zit_slow_decode", size=256)
    prompt["6"] = {"class_type": "ZImageVAEDecode", "inputs": {"samples": ["5", 0], "vae": ["3", 0], "tile_size": 128}}
    result = _interrupt_when(slow_server, prompt, lambda kind, data: kind == "progress" and data.get("node") == "6"
                             and data["value"] == 1)
    _assert_interrupted_in(result, "ZImageVAEDecode")
    later = [data["value"] for kind, data in result["after"] if kind == "progress" and data.get("node") == "6"]
    assert all(value <= 2 for value in later), f"tiles decoded after the interrupt: {later}"


@pytest.mark.server
def test_damaged_dit_through_the_server_saves_nothing(slow_server):
    entry = slow_server.run(_prompt("zit_nan", dit=NAN_DIT, steps=2), timeout=300)
    assert history_error(entry) == (f"ZImageTurboSampler: {NAN_DIT}: the diffusion model produced NaN/Inf at step "
                                    f"1 of 2. Its weights (or a LoRA or ControlNet patch applied to it) hold NaN/Inf:"
                                    f" the file is damaged, download it again.")
    assert not output_images(entry)
    assert not list((slow_server.base_dir / "output").glob("zit_nan*")), "an image was written"


@pytest.mark.server
def test_widget_extremes_through_the_server(slow_server):
    """The last seed with a batch of 2 wraps; 16384² at batch 64 and a 1 MB prompt are refused at once."""
    entry = slow_server.run(_prompt("zit_seed", batch_size=2, seed=2 ** 64 - 1), timeout=300)
    assert history_error(entry) is None and len(output_images(entry)) == 2

    start = time.monotonic()
    entry = slow_server.run(_prompt("zit_huge", size=16384, batch_size=64), timeout=60)
    assert time.monotonic() - start < 10
    assert history_error(entry).startswith("ZImageTurboSampler: 16384×16384, batch 64 needs about "), entry
    assert not output_images(entry)

    prompt = _prompt("zit_long")
    prompt["4"]["inputs"]["text"] = "a fox " * 200_000
    entry = slow_server.run(prompt, timeout=60)
    assert history_error(entry).startswith("CLIPTextEncode: the prompt is 1,200,000 characters long; "), entry
