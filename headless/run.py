"""`python -m zimage_turbo run WORKFLOW`: run a shipped workflow through a real ComfyUI and save the picture.

Real weights are used when the files the workflow names are in the models folder; otherwise the tiny random
models are built (seconds, cached) so the whole path still runs, and the output says so loudly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

from ..downloads.tiers import find_workflow, shipped_workflows
from ..quant import output_file
from ..quant.regular_file import NotARegularFile, open_regular_file
from ..quant.signal_guard import SignalGuard
from .server import ComfyServer, ServerError, find_comfyui_dir, history_error, output_images, prepare_base_dir
from .workflow import WorkflowError, check_workflow, is_ui_format, model_files, parse_workflow, set_inputs, \
    substitute_models, ui_to_api

PACK_DIR = Path(__file__).resolve().parents[1]
TINY_DEFAULT_SIZE = 256  # the tiny models' picture is noise: no need to spend a CPU minute on 1024²
CACHE_DIR = Path(os.environ.get("ZIT_CACHE_DIR", Path.home() / ".cache" / "zimage_turbo"))


# The sampler widget's ranges (nodes/sampler.py; a test checks they agree): a value outside them is refused
# here, before anything starts, instead of being rejected (or silently ignored) after the server is up.
SIZE_MIN, SIZE_MAX, SIZE_STEP = 64, 16384, 16
SEED_MAX = 0xFFFFFFFFFFFFFFFF
MAX_WORKFLOW_BYTES = 64 << 20


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse sizes, seeds and timeouts the sampler or the wait cannot take, with the accepted range."""
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and not (SIZE_MIN <= value <= SIZE_MAX and value % SIZE_STEP == 0):
            raise SystemExit(f"error: --{name} {value}: must be a multiple of {SIZE_STEP} from {SIZE_MIN} to {SIZE_MAX}")
    if args.seed is not None and not 0 <= args.seed <= SEED_MAX:
        raise SystemExit(f"error: --seed {args.seed}: must be from 0 to {SEED_MAX} (2^64 - 1)")
    if not 0 < args.timeout < float("inf"):
        raise SystemExit(f"error: --timeout {args.timeout}: must be a positive number of seconds")


def workflow_argument(name: str) -> str:
    """The workflow file `run` was given: an existing path as it is, else the shipped workflow with that id
    (`basic`, `6gb`, …) or former name; an unknown name is refused naming the ids."""
    if os.path.lexists(name):
        return name
    shipped = find_workflow(name)
    if shipped is None:
        raise WorkflowError(f"{name}: expected a workflow file (.json) or a shipped workflow's id "
                            f"({', '.join(shipped_workflows())}), found no file at this path")
    return str(shipped)


def read_workflow(path: str | os.PathLike) -> dict:
    """A workflow file's JSON, checked to be a UI or API workflow; WorkflowError naming the file otherwise (a
    folder or FIFO is refused without blocking)."""
    name = os.fspath(path)
    try:
        with open_regular_file(path) as f:
            raw = f.read(MAX_WORKFLOW_BYTES + 1)
    except NotARegularFile as exc:
        raise WorkflowError(f"{name}: expected a workflow file (.json), found {exc.found}") from None
    if len(raw) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"{name}: not a workflow: larger than {MAX_WORKFLOW_BYTES >> 20} MB")
    try:
        workflow = parse_workflow(raw)
        check_workflow(workflow)
    except WorkflowError as exc:
        raise WorkflowError(f"{name}: {exc}") from None
    return workflow


def prepare_output(path: Path) -> Path:
    """Check where the picture will go before anything runs: not a link, a folder that exists (it is made) and
    takes a new file. The picture itself is written exclusively (never replacing or following anything)."""
    output_file.refuse_link(path)
    output_file.check_folder(path, create=True)
    return path


def missing_models(prompt: dict, models_dir: Path) -> list[str]:
    return [f"{folder}/{name}" for _, _, folder, name in model_files(prompt) if not (models_dir / folder / name).exists()]


def tiny_models() -> tuple[Path, dict[str, str]]:
    from ..fixtures.tiny_models import TINY_FILE_NAMES, write_tiny_models
    folder = CACHE_DIR / "tiny_models"
    write_tiny_models(folder)
    return folder, dict(TINY_FILE_NAMES)


def _progress(start: float) -> None:
    elapsed = time.monotonic() - start
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  running… {elapsed:5.1f} s")
        sys.stderr.flush()


class ProgressBar:
    """A per-step bar on stderr (tqdm) fed by the server's websocket messages for one prompt."""

    def __init__(self, node_titles: dict[str, str]) -> None:
        self.node_titles, self.prompt_id, self.bar, self.node = node_titles, None, None, None
        self.events: list[str] = []

    def __call__(self, kind: str, data: dict) -> None:
        if self.prompt_id and data.get("prompt_id") not in (None, self.prompt_id):
            return
        if kind == "executing" and data.get("node") is not None:
            self.node = str(data["node"])
            self.events.append(f"executing {self.node}")
        elif kind == "progress":
            self._step(int(data.get("value", 0)), max(1, int(data.get("max", 1))))
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self.events.append(kind)
            self.close()

    def _step(self, value: int, total: int) -> None:
        from tqdm import tqdm
        if self.bar is None or self.bar.total != total or value < self.bar.n:
            self.close()
            self.bar = tqdm(total=total, file=sys.stderr, unit="step", leave=True, dynamic_ncols=True,
                            desc=self.node_titles.get(self.node or "", self.node or "running"))
        self.bar.update(value - self.bar.n)
        self.events.append(f"progress {value}/{total}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> Path:
    """Check everything that can be checked, then start (or reach) the server, run the workflow and save the
    picture; SIGTERM stops a started server like Ctrl-C does."""
    check_arguments(args)
    args.workflow = workflow_argument(args.workflow)
    workflow = read_workflow(args.workflow)
    out = prepare_output(Path(args.out))
    models_dir = Path(args.models_dir) if args.models_dir else find_comfyui_dir() / "models"
    with SignalGuard():
        return _run(args, workflow, out, models_dir)


def _run(args: argparse.Namespace, workflow: dict, out: Path, models_dir: Path) -> Path:
    server = ComfyServer(url=args.server) if args.server else None
    # The base folder of a server this run starts (a running server has its own: no temp folder is left behind)
    base = Path(args.work_dir) if args.work_dir else None if server else Path(tempfile.mkdtemp(prefix="zimage_run_"))
    try:
        if server is None:
            print(f"starting ComfyUI ({find_comfyui_dir()}) …", file=sys.stderr)
            prepare_base_dir(base, PACK_DIR)
            server = ComfyServer.start(base_dir=base, log_path=base / "comfyui.log",
                                       extra_args=["--extra-model-paths-config", str(_model_paths_yaml(base, models_dir))])
        prompt = _api_prompt(workflow, server, args.workflow)
        ui_graph = workflow if is_ui_format(workflow) else None
        missing = missing_models(prompt, models_dir) if not args.tiny else ["(--tiny)"]
        if missing:
            tiny_dir, names = tiny_models()
            if not args.server:  # a running server must hold the tiny models itself
                _link_models(base, tiny_dir)
            prompt = substitute_models(prompt, names)
            if not (args.width or args.height):
                args.width = args.height = TINY_DEFAULT_SIZE
            print("NOTE: real weights not found (" + ", ".join(missing) + ").\n"
                  "      Using the tiny RANDOM test models: the picture is noise, it only proves the pipeline runs.\n"
                  "      Put the real files in " + str(models_dir) + " for a real image (see README).", file=sys.stderr)
        if args.prompt is not None and not set_inputs(prompt, "CLIPTextEncode", {"text": args.prompt}, first_only=True):
            raise SystemExit("error: the workflow has no CLIPTextEncode node to put --prompt into")
        if args.seed is not None:
            set_inputs(prompt, "ZImageTurboSampler", {"seed": args.seed})
        if args.width or args.height:
            set_inputs(prompt, "ZImageTurboSampler", {k: v for k, v in (("width", args.width), ("height", args.height)) if v})
        start = time.monotonic()
        bar = ProgressBar({k: (v.get("_meta") or {}).get("title") or v.get("class_type", k) for k, v in prompt.items()})
        listener = server.progress_listener(bar)
        try:
            bar.prompt_id = server.queue_prompt(prompt, ui_graph)
            tick = (lambda: None) if listener.connected.is_set() else (lambda: _progress(start))
            entry = server.wait_for(bar.prompt_id, timeout=args.timeout, on_tick=tick)  # polling finishes the run
        finally:
            listener.stop()
            bar.close()
        if not listener.connected.is_set():
            print(file=sys.stderr)
        error = history_error(entry)
        if error:
            raise SystemExit(f"error: the workflow failed: {error}")
        images = output_images(entry)
        if not images:
            raise SystemExit("error: the workflow finished but saved no image")
        saved = _save(out, server.fetch_image(images[0]), images[0], server)
        print(f"saved {saved} ({time.monotonic() - start:.1f} s)", file=sys.stderr)
        return saved
    except ServerError as exc:
        log = base / "comfyui.log" if base else None
        raise SystemExit(f"error: {exc}" + (f" (server log: {log})" if log and log.exists() else "")) from None
    except (urllib.error.URLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SystemExit(f"error: the ComfyUI server at {server.url} did not answer ({reason})") from None
    finally:
        if server is not None and not args.server:
            server.stop()


def _api_prompt(workflow: dict, server: ComfyServer, name: str) -> dict:
    """The API prompt of a workflow (a UI graph is converted with the server's node list); errors name the file."""
    if not is_ui_format(workflow):
        return workflow
    try:
        return ui_to_api(workflow, server.object_info())
    except WorkflowError as exc:
        raise WorkflowError(f"{name}: {exc}") from None


def _save(out: Path, data: bytes, image: dict, server: ComfyServer) -> Path:
    """Write the picture exclusively; when even that fails, say where the server's own copy is."""
    try:
        return output_file.write_new_file(out, data)
    except output_file.OutputFileError as exc:
        where = Path(server.base_dir or "<the server's base folder>") / image.get("type", "output")
        raise output_file.OutputFileError(exc.path, f"{exc.problem}; the server's copy is "
                                                    f"{where / image.get('subfolder', '') / image['filename']}") from None


def _model_paths_yaml(base: Path, models_dir: Path) -> Path:
    """An extra_model_paths.yaml that adds the user's models folder next to the run's own."""
    path = base / "extra_model_paths.yaml"
    folders = ("diffusion_models", "text_encoders", "vae", "clip", "unet", "loras")
    lines = ["user_models:", f"  base_path: {json.dumps(str(models_dir))}"] + [f"  {f}: {f}" for f in folders]
    path.write_text("\n".join(lines) + "\n")
    return path


def _link_models(base: Path, tiny_dir: Path) -> None:
    prepare_base_dir(base, PACK_DIR, models_from=tiny_dir)


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a workflow (UI or API JSON) and save its image")
    p.add_argument("workflow", help="a shipped workflow's id (basic, 6gb, 8gb, 12gb, 24gb, img2img, …: `download "
                   "--list` shows them) or a workflow file (UI or API JSON)")
    p.add_argument("--prompt", help="replace the text of the first CLIPTextEncode")
    p.add_argument("--seed", type=int, help="sampler seed")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--out", default="out/z_image_turbo.png", help="output PNG (never overwritten: _2, _3 … added)")
    p.add_argument("--models-dir", help="ComfyUI models folder with real weights (default: the host's models/)")
    p.add_argument("--tiny", action="store_true", help="use the tiny random models even if real ones exist")
    p.add_argument("--server", help="URL of a running ComfyUI with this pack (default: start one)")
    p.add_argument("--work-dir", help="base directory for the started server (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.set_defaults(func=run)
