"""`python -m zimage_turbo download`: against a local stand-in of the Hugging Face file API (fixtures/hub_stub.py).

Complete download (through HF_ENDPOINT and HF_TOKEN in a subprocess, as users run it), a connection dropped
halfway and resumed, a part left by an earlier run resumed with a Range request, 404, an HTML page served with
status 200, a size that disagrees with the HEAD, an existing target left untouched, a disk too small (checked
before starting) and a disk that fills up mid-download (a patched writer). No test leaves a partial file under
the final name.
"""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zimage_turbo.downloads import catalog, cli, fetch
from zimage_turbo.downloads.catalog import PublishedFile

from zimage_turbo.fixtures.hub_stub import start_hub_stub

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, bytes]:
    """Bytes of a tiny DiT GGUF and a tiny Qwen3 GGUF (structurally real files of each role)."""
    from zimage_turbo.fixtures.tiny_models import build_dit_state_dict, save_safetensors_atomic, write_qwen3_gguf
    from zimage_turbo.quant.convert import convert_to_gguf
    d = tmp_path_factory.mktemp("tiny_gguf")
    convert_to_gguf(save_safetensors_atomic(build_dit_state_dict(), d / "dit.safetensors"), d / "dit.gguf", "Q8_0")
    write_qwen3_gguf(d / "te.gguf", type_name="Q8_0")
    return {"dit": (d / "dit.gguf").read_bytes(), "te": (d / "te.gguf").read_bytes()}


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    """The stub is local: an offline-mode environment (HF_HUB_OFFLINE=1) must not turn the client away."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


@pytest.fixture()
def hub():
    stub, httpd = start_hub_stub()
    yield stub
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def local(hub, monkeypatch):
    """In-process downloads go to the stub (the subprocess test covers HF_ENDPOINT itself)."""
    from huggingface_hub import hf_hub_url

    def stub_url(f: PublishedFile) -> str:
        repo_id, revision, filename = f.hf_location
        return hf_hub_url(repo_id, filename, revision=revision, endpoint=hub.url)
    monkeypatch.setattr(fetch, "hub_url", stub_url)
    return hub


def _file(name: str, role: str = "dit", directory: str = "diffusion_models") -> PublishedFile:
    return PublishedFile(name, directory, f"https://huggingface.co/test/repo/resolve/main/sub/{name}", "", "test",
                         role, "Q4_K")


def _serve(hub, f: PublishedFile, data: bytes, behaviour: str = "ok") -> None:
    repo_id, revision, path = f.hf_location
    hub.add(f"{repo_id}/resolve/{revision}/{path}", data, behaviour)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []


def test_complete_download_through_hf_endpoint_and_token(hub, tiny_files, tmp_path):
    dit, te = catalog.DIT_Q4_K_M, catalog.TE_Q4_K_M
    _serve(hub, dit, tiny_files["dit"])
    _serve(hub, te, tiny_files["te"])
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_OFFLINE": "0"}
    cmd = [sys.executable, "-m", "zimage_turbo", "download", dit.name, te.name, "--models-dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "diffusion_models" / dit.name).read_bytes() == tiny_files["dit"]
    assert (tmp_path / "text_encoders" / te.name).read_bytes() == tiny_files["te"]
    assert _leftovers(tmp_path / "diffusion_models") == [dit.name]
    heads = hub.requests("HEAD")
    assert heads and all(auth == "Bearer hf_test_token" for _, _, _, auth in heads)
    assert any(p.startswith("/cdn/") for _, p, _, _ in hub.requests("GET"))
    # a second run finds both files and leaves them alone: no request at all
    n = len(hub.log)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 0 and proc.stdout.count("left untouched") == 2, proc.stdout + proc.stderr
    assert len(hub.log) == n


def test_dropped_connection_is_resumed(local, tiny_files, tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 2 ** 16)  # the client writes what arrived before the drop
    f = _file("dropped.gguf")
    _serve(local, f, tiny_files["dit"], "drop")
    path = fetch.download(tmp_path, fetch.remote_info(f))
    assert path.read_bytes() == tiny_files["dit"]
    ranges = [r for m, _, r, _ in local.requests("GET")]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert _leftovers(tmp_path / "diffusion_models") == ["dropped.gguf"]


def test_part_from_an_earlier_run_is_resumed(local, tiny_files, tmp_path):
    f = _file("resumed.gguf")
    _serve(local, f, tiny_files["dit"])
    remote = fetch.remote_info(f)
    target = fetch.target_path(tmp_path, f)
    target.parent.mkdir(parents=True)
    k = len(tiny_files["dit"]) // 3
    fetch.part_path(target, remote.etag).write_bytes(tiny_files["dit"][:k])
    stale = target.with_name(target.name + ".0ld0ld0ld.part")  # a part of an older upstream version
    stale.write_bytes(b"old")
    assert fetch.bytes_needed(tmp_path, remote) == len(tiny_files["dit"]) - k
    assert fetch.download(tmp_path, remote).read_bytes() == tiny_files["dit"]
    assert [r for _, _, r, _ in local.requests("GET")] == [f"bytes={k}-"]
    assert _leftovers(target.parent) == ["resumed.gguf"]


def test_not_found(local, tmp_path):
    f = _file("missing.gguf")
    _serve(local, f, b"", "404")
    with pytest.raises(fetch.DownloadError, match=r"missing.gguf: not found at .*404"):
        fetch.remote_info(f)
    assert _leftovers(tmp_path / "diffusion_models") == []


@pytest.mark.parametrize("name,role,directory", [("page.gguf", "dit", "diffusion_models"),
                                                  ("page.safetensors", "te", "text_encoders")])
def test_html_error_page_with_status_200_is_deleted(local, tmp_path, name, role, directory):
    f = _file(name, role, directory)
    _serve(local, f, b"x" * 10, "html")
    with pytest.raises(fetch.DownloadError, match=rf"{name}: the downloaded file is an HTML page.*deleted"):
        fetch.download(tmp_path, fetch.remote_info(f))
    assert _leftovers(tmp_path / directory) == []


def test_size_disagreeing_with_the_server_is_deleted(local, tiny_files, tmp_path):
    f = _file("short.gguf")
    _serve(local, f, tiny_files["dit"], "short")
    remote = fetch.remote_info(f)
    assert remote.size == len(tiny_files["dit"]) + 1000
    with pytest.raises(fetch.DownloadError, match="short.gguf: the server sent a different number of bytes"):
        fetch.download(tmp_path, remote)
    assert _leftovers(tmp_path / "diffusion_models") == []


def test_wrong_model_in_the_right_format_is_deleted(local, tiny_files, tmp_path):
    f = _file("not_a_dit.gguf")
    _serve(local, f, tiny_files["te"])  # a real GGUF, but a text encoder
    with pytest.raises(fetch.DownloadError, match="a Qwen3 text encoder, not a Z-Image DiT; deleted"):
        fetch.download(tmp_path, fetch.remote_info(f))
    assert _leftovers(tmp_path / "diffusion_models") == []


def test_existing_target_is_left_untouched(local, tiny_files, tmp_path):
    f = _file("kept.gguf")
    _serve(local, f, tiny_files["dit"])
    target = fetch.target_path(tmp_path, f)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the user's own file")
    stamp = target.stat().st_mtime_ns
    assert fetch.download(tmp_path, fetch.remote_info(f)) == target
    assert target.read_bytes() == b"the user's own file" and target.stat().st_mtime_ns == stamp
    assert local.requests("GET") == []
    # a file that appears at the final name during the download is not replaced either
    other = _file("raced.gguf")
    _serve(local, other, tiny_files["dit"])
    remote = fetch.remote_info(other)
    real_check = fetch.structural_problem

    def appear_then_check(path, expected):
        fetch.target_path(tmp_path, other).write_bytes(b"appeared meanwhile")
        return real_check(path, expected)
    import zimage_turbo.downloads.fetch as fetch_module
    fetch_module.structural_problem = appear_then_check
    try:
        with pytest.raises(fetch.DownloadError, match="appeared .* left untouched"):
            fetch.download(tmp_path, remote)
    finally:
        fetch_module.structural_problem = real_check
    assert fetch.target_path(tmp_path, other).read_bytes() == b"appeared meanwhile"


def _args(names, models_dir, **kw) -> argparse.Namespace:
    return argparse.Namespace(names=names, models_dir=str(models_dir), list=False, dry_run=False, **kw)


def test_disk_too_small_is_reported_before_starting(local, tiny_files, tmp_path, monkeypatch, capsys):
    f = _file("big.gguf")
    _serve(local, f, tiny_files["dit"])
    monkeypatch.setattr(catalog, "CATALOG", catalog.CATALOG + (f,))
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 6, 10 ** 6 - 1000, 1000))
    with pytest.raises(SystemExit) as exc:
        cli.run(_args([f.name], tmp_path))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not enough disk space" in err and "1000 bytes is free" in err
    assert local.requests("GET") == [] and _leftovers(tmp_path / "diffusion_models") == []


class _FullDisk:
    """A writer that accepts `room` bytes, then fails like a full disk."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.real.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_disk_filling_up_keeps_the_part_and_a_rerun_resumes(local, tiny_files, tmp_path, monkeypatch):
    import builtins
    f = _file("full.gguf")
    data = tiny_files["dit"]
    _serve(local, f, data)
    remote = fetch.remote_info(f)
    room = len(data) // 2
    monkeypatch.setattr(fetch, "open", lambda p, mode="r": _FullDisk(builtins.open(p, mode), room), raising=False)
    with pytest.raises(fetch.DownloadError, match="full.gguf: the disk filled up; .* kept .* resume"):
        fetch.download(tmp_path, remote)
    target = fetch.target_path(tmp_path, f)
    part = fetch.part_path(target, remote.etag)
    assert not target.exists() and part.stat().st_size == room
    monkeypatch.undo()
    from huggingface_hub import hf_hub_url
    monkeypatch.setattr(fetch, "hub_url", lambda g: hf_hub_url(*g.hf_location[::2], revision="main",
                                                                endpoint=local.url))
    assert fetch.download(tmp_path, fetch.remote_info(f)).read_bytes() == data
    assert local.requests("GET")[-1][2] == f"bytes={room}-"
    assert _leftovers(target.parent) == ["full.gguf"]


def test_tier_names_resolve_to_the_workflow_files(local, tmp_path, capsys):
    from zimage_turbo.downloads.tiers import resolve
    six = resolve(["6gb"])
    # the id, the file name before readable titles (users' scripts), the card's title, its file name
    assert six == resolve(["z_image_turbo_6gb"]) == resolve(["6"]) == resolve(["01 Turbo 6 GB"]) \
        == resolve(["01 Turbo 6 GB.json"])
    assert resolve(["z_image_base_12gb"]) == resolve(["base_12gb"]) != resolve(["12gb"])
    assert [f.name for f in six] == [catalog.DIT_Q4_K_M.name, catalog.TE_Q4_K_M.name, catalog.VAE.name]
    for f in six:
        _serve(local, f, b"\0" * 64)
    cli.run(argparse.Namespace(names=["6gb"], models_dir=str(tmp_path), list=False, dry_run=True))
    out = capsys.readouterr().out
    assert out.count("would") == 3 and local.requests("GET") == [] and not any(tmp_path.iterdir())
    with pytest.raises(SystemExit, match=r"'7gb' is neither a tier/workflow \(6gb, 8gb, 12gb, 24gb, basic, .*\)"):
        cli.run(_args(["7gb"], tmp_path))


def test_unreachable_endpoint_is_reported(tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(fetch, "hub_url", lambda f: f"http://127.0.0.1:{port}/test/repo/resolve/main/{f.name}")
    with pytest.raises(fetch.DownloadError, match=r"x.gguf: cannot reach .* Check the network or HF_ENDPOINT"):
        fetch.remote_info(_file("x.gguf"))
    assert _leftovers(tmp_path) == []


def test_finished_int8_and_fp8_files_pass_the_structural_check(tmp_path):
    """The header check and the planner's scan accept the `.comfy_quant` layouts (I8/F8 weights, U8 entries)."""
    import torch
    from zimage_turbo.downloads.verify import structural_problem
    from zimage_turbo.fixtures.comfy_quant_files import comfy_quant_entry, hand_written_int8_layout
    from zimage_turbo.fixtures.tiny_models import build_dit_state_dict, build_qwen3_state_dict, save_safetensors_atomic
    from zimage_turbo.planner.files import inspect_file
    dit = save_safetensors_atomic(hand_written_int8_layout(build_dit_state_dict()), tmp_path / "int8.safetensors")
    assert structural_problem(dit, catalog.DIT_INT8_CONVROT) is None
    assert (inspect_file(dit).role, inspect_file(dit).main_type) == ("dit", "I8")
    te_sd = {}
    for k, v in build_qwen3_state_dict().items():
        if k.startswith("model.layers.1.") and v.ndim == 2:
            te_sd[k] = v.to(torch.float8_e4m3fn)
            te_sd[k + "_scale"] = torch.ones(())
            te_sd[k[: -len("weight")] + "comfy_quant"] = comfy_quant_entry({"format": "float8_e4m3fn"})
        else:
            te_sd[k] = v
    te = save_safetensors_atomic(te_sd, tmp_path / "fp8_mixed.safetensors")
    assert structural_problem(te, catalog.TE_FP8_MIXED) is None and inspect_file(te).role == "te"
    assert structural_problem(te, catalog.DIT_INT8_CONVROT) == "a Qwen3 text encoder, not a Z-Image DiT"
