"""Hostile input to the command-line tools (issue 16): `quantize`, `run` and `plan`.

Every failure ends in exactly one line on stderr naming the file, a non-zero exit and no traceback, found before
any work (the input is never quantized, the server never started), and leaves no output or temporary behind.
Real processes (`python -m zimage_turbo …`) run under a timeout, so a hang fails instead of blocking; the long
parametrized families call the same `main()` in-process under an alarm, which is as strict and much faster.
Signals are sent by the process to itself at chosen points (mid-write, just after publishing): deterministic.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "05 Turbo basic (official files).json"  # a path with spaces, as the shipped ones
PROCESS_TIMEOUT = 120  # a loaded 2-core CI box needs ~15 s to import torch; a hang is what this catches
IN_PROCESS_TIMEOUT = 30
QUICK_SECONDS = 10  # the runner's refusals load no torch and start nothing: well under this
ENV = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


# The quantize command does not use ComfyUI: its real-process runs (torch imports, seconds each) run once per
# suite, on the newest host, like tests/test_interrupt.py's (scripts/test.sh sets ZIT_SOAK=0 on the others).
host_independent = pytest.mark.skipif(os.environ.get("ZIT_SOAK") == "0",
                                      reason="host-independent; runs on the newest host (ZIT_SOAK=0 here)")


# ------------------------------------------------------------------------------------------------ helpers
class Hung(BaseException):
    """Raised by the alarm in an in-process call that did not return in time (a BaseException: main() cannot
    turn it into an ordinary error line)."""


def cli(*args, cwd: Path, preexec_fn=None) -> subprocess.CompletedProcess:
    """`python -m zimage_turbo ARGS` in a real process, with a timeout."""
    return subprocess.run([sys.executable, "-m", "zimage_turbo", *map(str, args)], cwd=cwd, env=ENV, text=True,
                          capture_output=True, timeout=PROCESS_TIMEOUT, preexec_fn=preexec_fn)


def main_in_process(*args, capfd) -> tuple[int, str]:
    """(exit code, stderr) of `main(ARGS)` in this process, under an alarm."""
    from zimage_turbo.__main__ import main

    def hung(signum, frame):
        raise Hung(f"{' '.join(map(str, args))} did not return within {IN_PROCESS_TIMEOUT} s")

    capfd.readouterr()
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(IN_PROCESS_TIMEOUT)
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, capfd.readouterr().err


def one_clear_line(stderr: str, *must_name: str) -> str:
    """The single stderr line, after checking there is one, without a traceback, naming each of `must_name`."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    for name in must_name:
        assert str(name) in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    """Everything in `folder` but `keep`: outputs, temporaries, probes."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A real small tmpfs at `path` (root only; skipped with the reason elsewhere)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the patched variant of this test runs everywhere)")
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def unwritable_folder(path: Path):
    """A folder no new file can be created in: read-only for a normal user, a read-only tmpfs for root."""
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    else:
        with tmpfs(path, "ro,size=1m") as mounted:
            yield mounted


# ------------------------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def files(tiny_paths, tmp_path_factory) -> dict[str, Path]:
    """Good and hostile inputs for the quantize command."""
    import torch
    from zimage_turbo.fixtures.tiny_models import build_dit_state_dict, dit_to_diffusers_layout, \
        save_safetensors_atomic
    from zimage_turbo.quant.convert import scaled_fp8_state_dict
    folder = tmp_path_factory.mktemp("hostile_inputs")
    dit = tiny_paths["diffusion_models"]
    sd = build_dit_state_dict()
    damaged = dict(sd, **{"layers.0.attention.qkv.weight": torch.zeros(8, 8, dtype=torch.bfloat16)})
    paths = {"dit": dit, "vae": tiny_paths["vae"], "text_encoder": tiny_paths["text_encoders"],
             "lora": tiny_paths["loras"], "controlnet": tiny_paths["model_patches"],
             "diffusers": save_safetensors_atomic(dit_to_diffusers_layout(sd), folder / "dit_diffusers.safetensors"),
             "damaged": save_safetensors_atomic(damaged, folder / "dit_damaged.safetensors"),
             "scaled_fp8": save_safetensors_atomic(scaled_fp8_state_dict(sd)[0], folder / "dit_fp8.safetensors")}
    paths["truncated"] = folder / "dit_truncated.safetensors"
    paths["truncated"].write_bytes(dit.read_bytes()[:4096])
    paths["empty"] = folder / "empty.safetensors"
    paths["empty"].write_bytes(b"")
    paths["pickle"] = folder / "model.ckpt"
    paths["pickle"].write_bytes(b"\x80\x04\x95" + bytes(64))
    paths["gguf"] = folder / "dit.gguf"
    paths["gguf"].write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    paths["missing"] = folder / "missing.safetensors"
    paths["directory"] = folder / "a_folder.safetensors"
    paths["directory"].mkdir()
    paths["fifo"] = folder / "pipe.safetensors"
    os.mkfifo(paths["fifo"])
    paths["dangling"] = folder / "dangling.safetensors"
    paths["dangling"].symlink_to(folder / "nowhere.safetensors")
    paths["loop"] = folder / "loop_a.safetensors"
    paths["loop"].symlink_to(folder / "loop_b.safetensors")
    (folder / "loop_b.safetensors").symlink_to(paths["loop"])
    return paths


# ------------------------------------------------------------------------------------------------ quantize: inputs
REFUSED_INPUTS = {  # input → words of what the message says was found
    "vae": "Flux VAE", "text_encoder": "Qwen3 text encoder", "lora": "unrecognised model",
    "damaged": "damaged Z-Image DiT", "scaled_fp8": "already quantized", "truncated": "truncated",
    "empty": "empty file", "pickle": "pickle", "gguf": "GGUF", "missing": "no file", "directory": "directory",
    "fifo": "named pipe", "dangling": "dangling symbolic link", "loop": "symbolic link loop",
}


@pytest.mark.parametrize("what", sorted(REFUSED_INPUTS))
@pytest.mark.parametrize("qtype", ["Q8_0", "scaled_fp8"])
def test_quantize_refuses_what_is_not_a_dit_or_patch(files, tmp_path, capfd, monkeypatch, what, qtype):
    from zimage_turbo.quant import convert
    monkeypatch.setattr(convert, "load_source", lambda *a: pytest.fail("tensors were loaded"))
    out = tmp_path / "out.gguf"
    code, err = main_in_process("quantize", files[what], out, "--type", qtype, capfd=capfd)
    assert code == 1
    line = one_clear_line(err, files[what].name, "expected a Z-Image DiT or a Z-Image Fun ControlNet patch",
                          REFUSED_INPUTS[what])
    assert line.startswith("error: ")
    assert leftovers(tmp_path) == []


@host_independent
@pytest.mark.parametrize("what", ["vae", "fifo"])
def test_quantize_refusal_in_a_real_process(files, tmp_path, what):
    """The same refusals at the real process boundary (a FIFO must not hang the process)."""
    proc = cli("quantize", files[what], tmp_path / "out.gguf", cwd=tmp_path)
    assert proc.returncode == 1
    one_clear_line(proc.stderr, files[what].name, REFUSED_INPUTS[what])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("qtype", ["Q2_K", "IQ4_NL", "Q8_1", "bogus", ""])
def test_quantize_refuses_an_unsupported_type_before_reading_the_input(files, tmp_path, capfd, qtype):
    from zimage_turbo.quant.convert import TARGET_TYPES
    # the FIFO input proves the input was never touched: its error would come first otherwise
    code, err = main_in_process("quantize", files["fifo"], tmp_path / "out.gguf", "--type", qtype, capfd=capfd)
    assert code == 2
    one_clear_line(err, f"--type {qtype}", "supported: " + ", ".join(TARGET_TYPES))
    assert "Q4_K" in TARGET_TYPES and "scaled_fp8" in TARGET_TYPES and "Q2_K" not in TARGET_TYPES
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ quantize: outputs
def _no_folder(tmp_path: Path, name: str) -> tuple[Path, str]:
    return tmp_path / "no_such_folder" / name, "does not exist"


def _folder_is_a_file(tmp_path: Path, name: str) -> tuple[Path, str]:
    (tmp_path / "a_file").write_bytes(b"x")
    return tmp_path / "a_file" / name, "is not a folder"


def _dangling_link(tmp_path: Path, name: str) -> tuple[Path, str]:
    (tmp_path / name).symlink_to(tmp_path / "elsewhere")
    return tmp_path / name, "symbolic link"


def _link_to_a_file(tmp_path: Path, name: str) -> tuple[Path, str]:
    (tmp_path / "target").write_bytes(b"the user's file")
    (tmp_path / name).symlink_to(tmp_path / "target")
    return tmp_path / name, "symbolic link"


def _existing(tmp_path: Path, name: str) -> tuple[Path, str]:
    (tmp_path / name).write_bytes(b"the user's file")
    return tmp_path / name, "already exists"


# case → maker(folder, file name) of an output path and the words its refusal says; the runner takes a missing
# folder (it makes it) and an existing file (it writes `name_2`), the quantize command refuses them too
BAD_OUTPUTS = {"folder is a file": _folder_is_a_file, "dangling link": _dangling_link,
               "link to a file": _link_to_a_file}
BAD_QUANTIZE_OUTPUTS = {**BAD_OUTPUTS, "missing folder": _no_folder, "existing file": _existing}


def _regular_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("case", sorted(BAD_QUANTIZE_OUTPUTS))
def test_quantize_refuses_a_bad_output_before_reading_the_input(files, tmp_path, capfd, case):
    out, found = BAD_QUANTIZE_OUTPUTS[case](tmp_path, "out.gguf")
    before = _regular_files(tmp_path)
    keep = set(leftovers(tmp_path))
    code, err = main_in_process("quantize", files["fifo"], out, capfd=capfd)  # FIFO: read first, it would say so
    assert code == 1
    one_clear_line(err, out.name, found)
    assert leftovers(tmp_path, keep) == []
    assert _regular_files(tmp_path) == before


def test_quantize_refuses_an_unwritable_folder(files, tmp_path, capfd):
    with unwritable_folder(tmp_path / "locked") as folder:
        code, err = main_in_process("quantize", files["dit"], folder / "out.gguf", capfd=capfd)
        assert code == 1
        one_clear_line(err, "out.gguf", "cannot write in")
        assert leftovers(folder) == []


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "scaled_fp8"])
def test_quantize_refuses_too_little_free_space_before_the_work(files, tmp_path, capfd, monkeypatch, qtype):
    from zimage_turbo.quant import convert, output_file
    monkeypatch.setattr(output_file, "free_bytes", lambda folder: 1 << 20)
    monkeypatch.setattr(convert, "load_source", lambda *a: pytest.fail("tensors were loaded"))
    code, err = main_in_process("quantize", files["dit"], tmp_path / "out.gguf", "--type", qtype, capfd=capfd)
    assert code == 1
    one_clear_line(err, "out.gguf", "needs about", "1.0 MB free")
    assert leftovers(tmp_path) == []


def test_quantize_refuses_a_real_small_disk(files, tmp_path, capfd):
    with tmpfs(tmp_path / "small", "size=2m") as folder:
        code, err = main_in_process("quantize", files["dit"], folder / "out.gguf", capfd=capfd)
        assert code == 1
        one_clear_line(err, "out.gguf", "needs about", "free")
        assert leftovers(folder) == []


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "F16", "scaled_fp8"])
def test_output_size_estimate_is_a_close_upper_bound(files, tmp_path, qtype):
    """The free-space check uses the estimate: never below the real size (else a full disk mid-write), within
    10 % above it (else a false refusal). Checked on a real conversion."""
    from zimage_turbo.quant.convert import convert_to_gguf, convert_to_scaled_fp8, estimated_gguf_bytes, \
        estimated_scaled_fp8_bytes, inspect_source
    shapes = inspect_source(files["dit"]).shapes
    out = tmp_path / "out"
    if qtype == "scaled_fp8":
        convert_to_scaled_fp8(files["dit"], out)
        estimate = estimated_scaled_fp8_bytes(shapes)
    else:
        convert_to_gguf(files["dit"], out, qtype)
        estimate = estimated_gguf_bytes(shapes, qtype)
    assert out.stat().st_size <= estimate <= out.stat().st_size * 1.1


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(files, tmp_path, capfd, monkeypatch):
    """A real ENOSPC: a 4 MB tmpfs that claims to have room (the estimate passes), a 14 MB output."""
    from zimage_turbo.quant import convert, output_file
    monkeypatch.setattr(output_file, "free_bytes", lambda folder: 1 << 40)
    monkeypatch.setattr(convert, "_progress", lambda items, desc: items)  # tqdm read TQDM_DISABLE at import
    with tmpfs(tmp_path / "small", "size=4m") as folder:
        for qtype, name in (("Q8_0", "out.gguf"), ("scaled_fp8", "out.safetensors")):
            code, err = main_in_process("quantize", files["dit"], folder / name, "--type", qtype, capfd=capfd)
            assert code == 1
            one_clear_line(err, name, "disk is full", "nothing was left behind")
            assert leftovers(folder) == []


def _file_size_limit(limit: int):
    def apply() -> None:
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@host_independent
@pytest.mark.parametrize("qtype,name", [("Q8_0", "out.gguf"), ("scaled_fp8", "out.safetensors")])
def test_write_failure_in_a_real_process_is_one_line_and_leaves_nothing(files, tmp_path, qtype, name):
    """A real write error for any user (the file-size limit: EFBIG), through the real process boundary."""
    proc = cli("quantize", files["dit"], tmp_path / name, "--type", qtype, cwd=tmp_path,
               preexec_fn=_file_size_limit(1 << 20))
    assert proc.returncode == 1
    one_clear_line(proc.stderr, name, "file too large", "nothing was left behind")
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ quantize: signals
# Runs the quantize command and sends it `signal` at `point`: "writing" (the temporary is half written: the GGUF
# header is out, its tensors not; the safetensors complete but not yet published) or "published" (the final name
# was just given, before the temporary name is removed). At "pause" it sends nothing: it says "writing" on stdout
# and sleeps mid-write, for a signal from outside.
SIGNAL_AT = """
import os, runpy, signal, sys, time
point, sig = sys.argv[1], getattr(signal, sys.argv[2])
import zimage_turbo.quant.convert as convert
import zimage_turbo.quant.gguf_writer as writer
def send():
    if point == "pause":
        print("writing", flush=True)
        time.sleep(60)
    os.kill(os.getpid(), sig)
def after(fn):
    def wrapped(*args, **kwargs):
        result = fn(*args, **kwargs)
        send()
        return result
    return wrapped
if point == "published":
    os.link = after(os.link)
else:
    writer._pad = after(writer._pad)
    convert.save_file = after(convert.save_file)
sys.argv = ["zimage_turbo"] + sys.argv[3:]
runpy.run_module("zimage_turbo", run_name="__main__", alter_sys=True)
"""


def _quantize_signalled(src: Path, out: Path, point: str, sig: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SIGNAL_AT, point, sig, "quantize", str(src), str(out), "--type",
                           "scaled_fp8" if out.suffix == ".safetensors" else "Q8_0"],
                          cwd=out.parent, env=ENV, capture_output=True, text=True, timeout=PROCESS_TIMEOUT)


@host_independent
@pytest.mark.parametrize("name,sig", [("out.gguf", "SIGTERM"), ("out.safetensors", "SIGTERM"), ("out.gguf", "SIGINT"),
                                      ("out.safetensors", "SIGHUP")])
def test_signal_mid_write_removes_the_temporary(files, tmp_path, name, sig):
    proc = _quantize_signalled(files["dit"], tmp_path / name, "writing", sig)
    assert proc.returncode == 128 + getattr(signal, sig), proc.stderr[-2000:]
    one_clear_line(proc.stderr, name, f"interrupted by {sig}", "nothing was written")
    assert leftovers(tmp_path) == [], "a temporary (or the output) was left behind"


@host_independent
@pytest.mark.parametrize("name,sig", [("out.gguf", "SIGINT"), ("out.safetensors", "SIGTERM")])
def test_signal_after_publishing_reports_the_written_file(files, tmp_path, name, sig):
    from safetensors import safe_open
    proc = _quantize_signalled(files["dit"], tmp_path / name, "published", sig)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {tmp_path / name} (a {sig} came after it was complete)" in proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr
    assert leftovers(tmp_path) == [name]
    sd_keys = set(safe_open(str(files["dit"]), "pt").keys())
    if name.endswith(".gguf"):
        import gguf
        assert {t.name for t in gguf.GGUFReader(str(tmp_path / name)).tensors} == sd_keys
    else:
        with safe_open(str(tmp_path / name), "pt") as f:
            assert sd_keys < set(f.keys())


@host_independent
def test_sigterm_from_outside_while_writing_leaves_nothing(files, tmp_path, name="out.gguf"):
    """A real SIGTERM from another process while the command sleeps half-way through its write."""
    out = tmp_path / name
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_AT, "pause", "SIGTERM", "quantize", str(files["dit"]),
                             str(out), "--type", "Q8_0"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(p.name.startswith(f".{name}.") for p in tmp_path.iterdir()), "no temporary while writing"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    one_clear_line(err, name, "interrupted by SIGTERM", "nothing was written")
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ quantize: works
@host_independent
def test_valid_quantize_in_a_real_process(files, tmp_path):
    import gguf
    from safetensors import safe_open
    proc = cli("quantize", files["dit"], tmp_path / "out.gguf", "--type", "q8_0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {tmp_path / 'out.gguf'}" in proc.stderr and "Traceback" not in proc.stderr
    assert leftovers(tmp_path) == ["out.gguf"]
    with safe_open(str(files["dit"]), "pt") as f:
        assert {t.name for t in gguf.GGUFReader(str(tmp_path / "out.gguf")).tensors} == set(f.keys())


def test_diffusers_layout_dit_is_accepted_and_renamed(files, tmp_path):
    """The content check takes a diffusers-layout DiT and writes the ComfyUI names, as before."""
    import gguf
    from zimage_turbo.quant.convert import convert_to_gguf
    convert_to_gguf(files["diffusers"], tmp_path / "a.gguf", "Q8_0")
    convert_to_gguf(files["dit"], tmp_path / "b.gguf", "Q8_0")
    names = [{t.name: (t.tensor_type, tuple(t.shape)) for t in gguf.GGUFReader(str(tmp_path / n)).tensors}
             for n in ("a.gguf", "b.gguf")]
    assert names[0] == names[1]


# ------------------------------------------------------------------------------------------------ run: workflow file
def _bad_workflows(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (workflow file, words of the message)."""
    cases = {"malformed": ("{not json", "the JSON cannot be read"), "list": ("[1, 2]", "the JSON is a list"),
             "string": ('"a prompt"', "the JSON is a str"), "number": ("42", "the JSON is a int"),
             "no nodes": ("{}", "no nodes"), "not api": ('{"1": {"inputs": {}}}', "not an API-format node"),
             "bad ui node": ('{"nodes": [{"id": 1}]}', "a node without an id or a type")}
    out = {}
    for name, (text, words) in cases.items():
        path = folder / f"{name.replace(' ', '_')}.json"
        path.write_text(text)
        out[name] = (path, words)
    out["missing"] = (folder / "missing.json", "no file at this path")
    (folder / "a_folder.json").mkdir()
    out["directory"] = (folder / "a_folder.json", "a directory")
    os.mkfifo(folder / "pipe.json")
    out["fifo"] = (folder / "pipe.json", "named pipe")
    return out


BAD_WORKFLOW_NAMES = ["malformed", "list", "string", "number", "no nodes", "not api", "bad ui node", "missing",
                      "directory", "fifo"]


@pytest.mark.parametrize("name", BAD_WORKFLOW_NAMES)
def test_run_refuses_a_bad_workflow_file_in_one_line(tmp_path, name):
    path, words = _bad_workflows(tmp_path)[name]
    start = time.monotonic()
    proc = cli("run", path, "--out", tmp_path / "out.png", "--server", _closed_port_url(), cwd=tmp_path)
    assert time.monotonic() - start < QUICK_SECONDS
    assert proc.returncode == 1
    one_clear_line(proc.stderr, path.name, words)
    assert not (tmp_path / "out.png").exists()


def _closed_port_url() -> str:
    """A URL nothing listens on: a runner that got past its checks would say it cannot reach the server."""
    from zimage_turbo.headless.server import free_port
    return f"http://127.0.0.1:{free_port()}"


# ------------------------------------------------------------------------------------------------ run: arguments
BAD_RUN_ARGUMENTS = [("--width", "0"), ("--width", "-16"), ("--width", "100"), ("--width", "16400"),
                     ("--height", "0"), ("--height", "8"), ("--seed", "-1"), ("--seed", str(1 << 64)),
                     ("--timeout", "0"), ("--timeout", "-5"), ("--timeout", "nan")]


@pytest.mark.parametrize("flag,value", BAD_RUN_ARGUMENTS)
def test_run_refuses_bad_sizes_seeds_and_timeouts(tmp_path, capfd, flag, value):
    code, err = main_in_process("run", WORKFLOW, "--out", tmp_path / "out.png", "--server", _closed_port_url(),
                                flag, value, capfd=capfd)
    assert code == 1
    one_clear_line(err, flag, "must be")
    assert leftovers(tmp_path) == []


def test_run_size_limits_are_the_sampler_widgets(comfy_host):
    from zimage_turbo.headless import run
    from zimage_turbo.nodes.sampler import ZImageTurboSampler
    spec = ZImageTurboSampler.INPUT_TYPES()["required"]
    for name in ("width", "height"):
        assert (spec[name][1]["min"], spec[name][1]["max"], spec[name][1]["step"]) == \
            (run.SIZE_MIN, run.SIZE_MAX, run.SIZE_STEP)
    assert (spec["seed"][1]["min"], spec["seed"][1]["max"]) == (0, run.SEED_MAX)


def test_usage_errors_are_one_line(tmp_path):
    proc = cli("run", WORKFLOW, "--width", "wide", cwd=tmp_path)
    assert proc.returncode == 2
    one_clear_line(proc.stderr, "--width", "invalid int value")


# ------------------------------------------------------------------------------------------------ run: --out
@pytest.mark.parametrize("case", sorted(BAD_OUTPUTS))
def test_run_refuses_a_bad_out_before_anything_runs(tmp_path, case):
    out, words = BAD_OUTPUTS[case](tmp_path, "out.png")
    before = _regular_files(tmp_path)
    keep = set(leftovers(tmp_path))
    start = time.monotonic()
    proc = cli("run", WORKFLOW, "--out", out, "--server", _closed_port_url(), cwd=tmp_path)
    assert time.monotonic() - start < QUICK_SECONDS
    assert proc.returncode == 1
    line = one_clear_line(proc.stderr, out.name, words)
    assert "server" not in line, "the runner reached for the server before checking --out"
    assert leftovers(tmp_path, keep) == []
    assert _regular_files(tmp_path) == before


class _ServerStub:
    """Stands in for ComfyServer: records every use; `object_info` knows no node at all."""
    uses: list[str] = []

    def __init__(self, url: str) -> None:
        self.url, self.base_dir = url, None
        self.uses.append("connect")

    @classmethod
    def start(cls, **kwargs):
        cls.uses.append("start")
        raise AssertionError("a server was started")

    def object_info(self) -> dict:
        self.uses.append("object_info")
        return {}

    def queue_prompt(self, *args):
        self.uses.append("queue_prompt")
        raise AssertionError("a prompt was queued")


@pytest.fixture
def server_stub(monkeypatch):
    from zimage_turbo.headless import run
    _ServerStub.uses = []
    monkeypatch.setattr(run, "ComfyServer", _ServerStub)
    return _ServerStub


@pytest.mark.parametrize("case", ["unwritable folder", *sorted(BAD_OUTPUTS)])
def test_run_never_starts_a_server_for_a_bad_out(tmp_path, capfd, server_stub, case):
    with contextlib.ExitStack() as stack:
        if case == "unwritable folder":
            out, words = stack.enter_context(unwritable_folder(tmp_path / "locked")) / "out.png", "cannot write in"
        else:
            out, words = BAD_OUTPUTS[case](tmp_path, "out.png")
        code, err = main_in_process("run", WORKFLOW, "--out", out, capfd=capfd)
        assert code == 1
        one_clear_line(err, out.name, words)
    assert server_stub.uses == []


def test_run_unknown_ui_node_is_one_line(tmp_path, capfd, server_stub):
    from zimage_turbo.headless.workflow import VIRTUAL_NODE_TYPES
    workflow = json.loads(WORKFLOW.read_text())
    first = next(n for n in workflow["nodes"] if n["type"] not in VIRTUAL_NODE_TYPES and not n.get("mode"))
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow))
    code, err = main_in_process("run", path, "--out", tmp_path / "out.png", "--server", "http://stub", capfd=capfd)
    assert code == 1
    one_clear_line(err, "workflow.json", f"node {first['id']}: unknown node type '{first['type']}'")
    assert server_stub.uses == ["connect", "object_info"]
    assert leftovers(tmp_path) == ["workflow.json"]


def test_unreachable_server_is_one_line(tmp_path):
    url = _closed_port_url()
    proc = cli("run", WORKFLOW, "--out", tmp_path / "out.png", "--server", url, cwd=tmp_path)
    assert proc.returncode == 1
    one_clear_line(proc.stderr, url, "did not answer")


# ------------------------------------------------------------------------------------------------ exclusive write
def test_write_new_file_never_replaces_nor_follows(tmp_path):
    from zimage_turbo.quant.output_file import write_new_file
    (tmp_path / "out.png").write_bytes(b"mine")
    (tmp_path / "out_2.png").symlink_to(tmp_path / "dangling_target.png")
    (tmp_path / "out_3.png").symlink_to(tmp_path / "out.png")
    assert write_new_file(tmp_path / "out.png", b"new") == tmp_path / "out_4.png"
    assert (tmp_path / "out_4.png").read_bytes() == b"new"
    assert (tmp_path / "out.png").read_bytes() == b"mine"
    assert not (tmp_path / "dangling_target.png").exists()


def test_write_new_file_failure_leaves_no_partial_file(tmp_path):
    from zimage_turbo.quant.output_file import OutputFileError, write_new_file
    with tmpfs(tmp_path / "small", "size=64k") as folder:
        with pytest.raises(OutputFileError, match="disk is full.*partial file was removed"):
            write_new_file(folder / "out.png", bytes(1 << 20))
        assert leftovers(folder) == []


# ------------------------------------------------------------------------------------------------ plan
@pytest.mark.parametrize("args,words", [(["--vram", "0"], "--vram 0.0"), (["--vram", "nan"], "--vram nan"),
                                        (["--vram", "6", "--width", "-5"], "--width -5"),
                                        (["--vram", "6", "--batch", "0"], "--batch 0"),
                                        (["--vram", "6", "--prompt-tokens", "99999"], "--prompt-tokens 99999"),
                                        (["--vram", "6", "--models-dir", "/no/such/folder"], "not a folder")])
def test_plan_refuses_bad_arguments_in_one_line(capfd, args, words):
    code, err = main_in_process("plan", *args, capfd=capfd)
    assert code == 1
    one_clear_line(err, words)
