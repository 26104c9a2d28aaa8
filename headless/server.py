"""Start, drive and stop a real ComfyUI server (main.py) over HTTP, from Python's standard library."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PACK_FOLDER_NAME = "ComfyUI-ZImage-Turbo"


class ServerError(RuntimeError):
    """The server did not start, answer or finish a prompt."""


def find_comfyui_dir() -> Path:
    """The ComfyUI tree on sys.path (the folder holding main.py), or $COMFYUI_DIR."""
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"])
    spec = importlib.util.find_spec("comfy")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ServerError("no ComfyUI found: run scripts/setup_host.sh, or set COMFYUI_DIR")
    return Path(locations[0]).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base_dir(base: Path, pack_dir: Path, models_from: Path | None = None) -> Path:
    """Lay out a ComfyUI base directory: custom_nodes/<pack> → pack_dir, models/<folder>/ → files of models_from."""
    base = Path(base)
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_FOLDER_NAME
    if not link.exists():
        link.symlink_to(Path(pack_dir).resolve(), target_is_directory=True)
    if models_from is not None:
        for folder in Path(models_from).iterdir():
            if folder.is_dir():
                (base / "models" / folder.name).mkdir(parents=True, exist_ok=True)
                for f in folder.iterdir():
                    target = base / "models" / folder.name / f.name
                    if not target.exists():
                        target.symlink_to(f.resolve())
    for sub in ("output", "input", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


@dataclass
class ComfyServer:
    """A running ComfyUI server: `url`, and the process when this object started it."""
    url: str
    process: subprocess.Popen | None = None
    base_dir: Path | None = None
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def start(cls, base_dir: Path, log_path: Path | None = None, port: int | None = None,
              extra_args: list[str] | None = None, timeout: float = 120.0,
              python: str = sys.executable) -> "ComfyServer":
        """Start `main.py --cpu` (on a machine without CUDA) on 127.0.0.1 and wait until /object_info answers."""
        import torch  # only to know whether a GPU is there
        port = port or free_port()
        args = [python, str(find_comfyui_dir() / "main.py"), "--listen", "127.0.0.1", "--port", str(port),
                "--base-directory", str(base_dir), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
        if not torch.cuda.is_available():
            args.append("--cpu")
        args += extra_args or []
        log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(base_dir))
        server = cls(url=f"http://127.0.0.1:{port}", process=proc, base_dir=Path(base_dir))
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    # --- HTTP ---------------------------------------------------------------------------------------------
    def request(self, path: str, body: dict | None = None, timeout: float = 30.0):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.process.returncode} during startup")
            try:
                self.request("/object_info/KSampler", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                time.sleep(0.5)
        raise ServerError(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s")

    def object_info(self) -> dict:
        return self.request("/object_info", timeout=60)

    def queue_prompt(self, prompt: dict, workflow: dict | None = None) -> str:
        """POST /prompt; returns the prompt id. A validation failure raises ServerError with the server's words."""
        body: dict = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        try:
            return self.request("/prompt", body)["prompt_id"]
        except urllib.error.HTTPError as exc:
            raise ServerError(f"prompt rejected: {exc.read().decode(errors='replace')}") from None

    def wait_for(self, prompt_id: str, timeout: float = 600.0, on_tick=None) -> dict:
        """Wait for a prompt to finish; returns its /history entry (status says success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.request(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.process.returncode} while running a prompt")
            if on_tick:
                on_tick()
            time.sleep(0.2)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, workflow: dict | None = None, timeout: float = 600.0) -> dict:
        return self.wait_for(self.queue_prompt(prompt, workflow), timeout)

    def fetch_image(self, image: dict) -> bytes:
        """Bytes of an output image entry ({filename, subfolder, type}) via /view."""
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        return self.request(f"/view?{query}", timeout=60)

    def progress_listener(self, on_message) -> "ProgressListener":
        """Listen on the server's websocket (ws://…/ws?clientId=<client_id>) in a thread; `on_message(type, data)`
        gets every JSON message (progress, executing, execution_success/error). Never raises: without a
        websocket the caller still has the /history polling of `wait_for`."""
        return ProgressListener(self.url, self.client_id, on_message)

    def interrupt(self) -> None:
        self.request("/interrupt", {})

    def rss(self) -> int:
        """The server process's resident memory in bytes (Linux /proc)."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise ServerError(f"no VmRSS for server process {self.process.pid}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server this object started (SIGINT, then SIGKILL after `timeout`)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ProgressListener:
    """A websocket reader thread (aiohttp); `stop()` closes it. `connected` tells whether it got through."""

    def __init__(self, url: str, client_id: str, on_message) -> None:
        import threading
        self.on_message, self.connected = on_message, threading.Event()
        self._stop = threading.Event()
        self._ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + f"/ws?clientId={client_id}"
        self._thread = threading.Thread(target=self._run, daemon=True, name="comfy-ws")
        self._thread.start()
        self.connected.wait(5.0)

    def _run(self) -> None:
        import asyncio
        try:
            asyncio.run(self._listen())
        except Exception:  # noqa: BLE001 - progress is best effort; polling still finishes the run
            pass

    async def _listen(self) -> None:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self._ws_url, heartbeat=20) as ws:
                self.connected.set()
                while not self._stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            return
                        continue  # binary frames are previews
                    try:
                        data = json.loads(msg.data)
                        self.on_message(data.get("type"), data.get("data") or {})
                    except Exception:  # noqa: BLE001
                        continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def history_error(entry: dict) -> str | None:
    """The exception message of a failed prompt's /history entry, or None when it succeeded."""
    if entry.get("status", {}).get("status_str") != "error":
        return None
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message', '').strip()}"
    return "unknown error"


def output_images(entry: dict) -> list[dict]:
    """Every saved image ({filename, subfolder, type}) of a /history entry."""
    return [img for out in entry.get("outputs", {}).values() for img in out.get("images", [])
            if img.get("type") == "output"]
