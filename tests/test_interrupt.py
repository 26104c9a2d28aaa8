"""Interrupts: /interrupt through the real server mid-sampling, and the quantize command killed mid-write.

- Cancelling a prompt stops within one step, the prompt is reported as interrupted in /history, memory
  goes back, and the next prompt runs with the same loaded models (its loader nodes come from the cache).
- `python -m zimage_turbo quantize` SIGKILLed while writing leaves nothing under the final name (at most a
  hidden temporary), and never replaces an existing file, even one that appears while it runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zimage_turbo.fixtures.tiny_models import TINY_FILE_NAMES
from zimage_turbo.fixtures.workflow_files import shipped_graphs
from zimage_turbo.headless.server import history_error, output_images
from zimage_turbo.headless.workflow import set_inputs, substitute_models

LOADER_NODES = {"1", "2", "3"}  # the DiT, text encoder and VAE loaders of the shipped API workflow


def _prompt(seed: int, steps: int, prefix: str, size: int = 64) -> dict:
    api = shipped_graphs("basic")[1]
    prompt = substitute_models(api, TINY_FILE_NAMES)
    set_inputs(prompt, "ZImageTurboSampler", {"seed": seed, "width": size, "height": size, "steps": steps})
    set_inputs(prompt, "SaveImage", {"filename_prefix": prefix})
    return prompt


def _messages(entry: dict) -> dict[str, dict]:
    return {kind: data for kind, data in entry.get("status", {}).get("messages", [])}


@pytest.mark.server
def test_interrupt_mid_sampling_stops_within_a_step_and_the_next_prompt_reuses_the_models(server):
    websocket = pytest.importorskip("websocket", reason="websocket-client is needed to watch sampling progress")
    warm = server.run(_prompt(1, 2, "zit_int_warm"), timeout=300)
    assert history_error(warm) is None
    rss_warm = server.rss()

    ws = websocket.create_connection(f"{server.url.replace('http', 'ws')}/ws?clientId={server.client_id}", timeout=60)
    try:
        prompt_id = server.queue_prompt(_prompt(2, 100, "zit_int_long"))  # the node's maximum
        at_interrupt = None
        last_step = 0
        interrupted_at = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            raw = ws.recv()
            if isinstance(raw, bytes):
                continue  # preview images
            message = json.loads(raw)
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if message["type"] == "progress":
                last_step = data["value"]
                if at_interrupt is None and last_step >= 3:
                    at_interrupt = last_step
                    interrupted_at = time.monotonic()
                    server.interrupt()
            elif message["type"] == "execution_interrupted":
                stopped_after = time.monotonic() - interrupted_at
                break
            elif message["type"] in ("execution_error", "execution_success"):
                pytest.fail(f"prompt ended with {message['type']} instead of being interrupted")
        else:
            pytest.fail("no execution_interrupted message")
    finally:
        ws.close()
    assert at_interrupt is not None and at_interrupt < 100
    assert last_step <= at_interrupt + 1, f"interrupt at step {at_interrupt}, sampling went on to {last_step}"
    assert stopped_after < 5.0

    entry = server.wait_for(prompt_id, timeout=60)
    assert "execution_interrupted" in _messages(entry)
    assert not output_images(entry), "an interrupted prompt saved an image"
    assert server.request("/queue")["queue_running"] == []

    after = server.run(_prompt(3, 2, "zit_int_after"), timeout=300)
    assert history_error(after) is None and len(output_images(after)) == 1
    cached = set(_messages(after).get("execution_cached", {}).get("nodes", []))
    assert LOADER_NODES <= cached, f"models were reloaded after the interrupt (cached nodes: {sorted(cached)})"
    rss_after = server.rss()
    assert rss_after < rss_warm * 1.10 + (64 << 20), f"RSS {rss_warm >> 20} MiB -> {rss_after >> 20} MiB"


# ------------------------------------------------------------------------------------------------ quantize
# The quantize command does not use ComfyUI: its subprocess tests run once per suite, with the soak
# (scripts/test.sh sets ZIT_SOAK=0 on all hosts but the newest).
host_independent = pytest.mark.skipif(os.environ.get("ZIT_SOAK") == "0",
                                      reason="host-independent; runs on the newest host (ZIT_SOAK=0 here)")
QUANT_DIT = dict(dim=768, n_layers=2, n_refiner_layers=1, head_dim=128, cap_feat_dim=256, ffn_hidden=2048)


@pytest.fixture(scope="module")
def big_dit(tmp_path_factory) -> Path:
    """A ~60 MB random DiT: big enough that writing the output takes a while to catch."""
    from zimage_turbo.fixtures.shapes import DiTSpec
    from zimage_turbo.fixtures.tiny_models import build_dit_state_dict, save_safetensors_atomic
    path = tmp_path_factory.mktemp("quant_src") / "dit_bf16.safetensors"
    save_safetensors_atomic(build_dit_state_dict(DiTSpec(**QUANT_DIT)), path)
    return path


def _quantize(src: Path, out: Path, qtype: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zimage_turbo", "quantize", str(src), str(out), "--type", qtype],
                            cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})


def _temporaries(folder: Path, out: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name != out.name and out.name in p.name]


def _wait_for_temporary(proc: subprocess.Popen, folder: Path, out: Path, timeout: float = 300) -> Path | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name != out.name and out.name in entry.name:
                    return Path(entry.path)
        time.sleep(0.0005)
    return None


# Runs the quantize command and SIGKILLs it at the moment it would give its finished output the final name
# (os.link / os.replace): the latest possible kill, deterministic where a timed kill can miss a short write.
KILL_AT_PUBLISH = """
import os, runpy, signal, sys
def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
os.link = os.replace = os.rename = _die
sys.argv = ["zimage_turbo"] + sys.argv[1:]
runpy.run_module("zimage_turbo", run_name="__main__", alter_sys=True)
"""


def _assert_nothing_under_final_name(folder: Path, out: Path) -> None:
    assert not out.exists(), "a killed quantize left a file under the final name"
    for leftover in _temporaries(folder, out):
        assert leftover.name.startswith(".") and leftover.suffix in (".tmp", ".part"), leftover.name


@host_independent
@pytest.mark.parametrize("qtype,suffix", [("Q8_0", ".gguf"), ("scaled_fp8", ".safetensors")])
def test_quantize_killed_before_publishing_leaves_no_file_under_the_final_name(big_dit, tmp_path, qtype, suffix):
    out = tmp_path / f"out{suffix}"
    proc = subprocess.run([sys.executable, "-c", KILL_AT_PUBLISH, "quantize", str(big_dit), str(out), "--type", qtype],
                          cwd=tmp_path, capture_output=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    temporaries = _temporaries(tmp_path, out)
    assert temporaries and all(t.stat().st_size > 0 for t in temporaries), "the output was never written"
    _assert_nothing_under_final_name(tmp_path, out)


def _race_quantize(src: Path, out: Path, act, won, attempts: int = 5) -> tuple[subprocess.Popen, str]:
    """Run the quantize command and call act(proc) as soon as its temporary appears, until won(proc) says the
    race was won (the command may finish first: then the finished output is removed and it runs again).
    Returns the process and its stderr."""
    for attempt in range(attempts):
        proc = _quantize(src, out, "Q8_0")
        if _wait_for_temporary(proc, out.parent, out) is not None:
            act(proc)
        _, err = proc.communicate(timeout=300)
        if won(proc):
            return proc, err.decode()
        assert proc.returncode == 0 and out.exists(), err.decode()[-2000:]
        out.unlink()
    pytest.fail("the quantize command always finished before the race could be won")


@host_independent
def test_quantize_killed_mid_write_leaves_no_file_under_the_final_name(big_dit, tmp_path):
    """A kill while the GGUF's tensor data is being written."""
    out = tmp_path / "out.gguf"
    _race_quantize(big_dit, out, lambda p: p.send_signal(signal.SIGKILL), lambda p: p.returncode == -signal.SIGKILL)
    _assert_nothing_under_final_name(tmp_path, out)


@pytest.mark.parametrize("qtype,suffix", [("Q8_0", ".gguf"), ("scaled_fp8", ".safetensors")])
def test_quantize_never_replaces_an_existing_file(tmp_path, tiny_paths, qtype, suffix):
    import argparse
    from zimage_turbo.quant.convert import run
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"the user's file")
    args = argparse.Namespace(input=str(tiny_paths["diffusion_models"]), output=str(out), type=qtype,
                              keep_refiners=False, stats=False)
    with pytest.raises(SystemExit, match="already exists"):
        run(args)
    assert out.read_bytes() == b"the user's file"
    assert not _temporaries(tmp_path, out)


@host_independent
def test_quantize_keeps_a_file_that_appears_while_it_runs(big_dit, tmp_path):
    """The GGUF is moved into place with a link that fails when the name was taken meanwhile."""
    out = tmp_path / "out.gguf"
    proc, err = _race_quantize(big_dit, out, lambda p: out.write_bytes(b"appeared meanwhile"),
                               lambda p: p.returncode != 0)  # 0: it published before the file appeared
    assert proc.returncode != 0 and "already exists" in err
    assert out.read_bytes() == b"appeared meanwhile"
    assert not _temporaries(tmp_path, out), "the temporary was left behind after a refused rename"
