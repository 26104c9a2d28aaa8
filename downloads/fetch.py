"""Fetch one catalog file into `models/<directory>/<name>` with huggingface_hub, safely.

huggingface_hub supplies the Hub protocol: `hf_hub_url` (honours HF_ENDPOINT), `get_hf_file_metadata` (the HEAD
call: etag, size, commit; HF_TOKEN through `build_hf_headers`) and `http_get` (ranged GET, progress bar, retries
that resume a dropped connection, the size consistency check). `hf_hub_download` itself is not used: in
huggingface_hub 2.x it downloads to a process-unique temporary file that is deleted when the process fails (no
resume across runs), writes into the cache or a repo-shaped `local_dir` (not `models/<folder>/<name>`, and a
second copy of a 12 GB file), and replaces an outdated file (we never overwrite one).

The file is written to `<name>.<etag>.part` in the target folder (ComfyUI lists no `.part` files); a later run
resumes a part of the same etag with a Range request; only a complete, size-checked, structurally sound file is
linked to its final name (atomically, failing if a file appeared there meanwhile).
"""
from __future__ import annotations

import errno
import inspect
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .catalog import PublishedFile
from .verify import structural_problem

PART_SUFFIX = ".part"


class DownloadError(RuntimeError):
    """A download that failed; the message names the file and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """What the server says about a file (HEAD)."""
    file: PublishedFile
    url: str  # where to GET (the redirect target, as huggingface_hub does)
    size: int
    etag: str
    same_host: bool  # the GET stays on the Hub host (keep the token) or goes to a signed CDN URL (drop it)


def target_path(models_dir: Path, f: PublishedFile) -> Path:
    return Path(models_dir) / f.directory / f.name


def part_path(target: Path, etag: str) -> Path:
    tag = re.sub(r"[^0-9A-Za-z]", "", etag)[:16] or "noetag"
    return target.with_name(f"{target.name}.{tag}{PART_SUFFIX}")


def stale_parts(target: Path, keep: Path | None = None) -> list[Path]:
    """Parts of earlier downloads of this name with another etag (a changed upstream file)."""
    if not target.parent.is_dir():
        return []
    pattern = re.compile(re.escape(target.name) + r"\.[0-9A-Za-z]+" + re.escape(PART_SUFFIX) + "$")
    return [p for p in target.parent.iterdir() if pattern.match(p.name) and p != keep]


def hub_url(f: PublishedFile) -> str:
    """The file's resolve URL on the configured endpoint (HF_ENDPOINT, as the Hugging Face tooling reads it)."""
    from huggingface_hub import hf_hub_url
    repo_id, revision, filename = f.hf_location
    return hf_hub_url(repo_id, filename, revision=revision)


def remote_info(f: PublishedFile) -> RemoteFile:
    """HEAD the file; errors (404, no size, unreachable host) become DownloadError naming the file."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError
    url = hub_url(f)
    retry = {"retry_on_errors": True} if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters else {}
    try:
        meta = get_hf_file_metadata(url, **retry)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            raise DownloadError(f"{f.name}: not found at {url} (HTTP 404). The file may have been renamed or "
                                f"removed upstream; see {f.source}.") from None
        hint = " Set HF_TOKEN to a token that can read the repository." if status in (401, 403) else ""
        raise DownloadError(f"{f.name}: the server refused {url} (HTTP {status}).{hint}") from None
    except Exception as exc:  # the HTTP client's connection errors (its class differs between hub versions)
        raise DownloadError(f"{f.name}: cannot reach {url} ({type(exc).__name__}: {exc}). Check the network or "
                            "HF_ENDPOINT.") from None
    if meta.size is None or meta.etag is None:
        raise DownloadError(f"{f.name}: {url} did not state the file's size and etag; not a Hugging Face file "
                            "endpoint (check HF_ENDPOINT).")
    location = meta.location or url
    return RemoteFile(f, location, meta.size, meta.etag, urlsplit(location).netloc == urlsplit(url).netloc)


def bytes_needed(models_dir: Path, remote: RemoteFile) -> int:
    """Bytes still to write for this file (its size less a resumable part)."""
    part = part_path(target_path(models_dir, remote.file), remote.etag)
    have = part.stat().st_size if part.is_file() else 0
    return max(remote.size - have, 0) if have <= remote.size else remote.size


def check_disk_space(models_dir: Path, remotes: list[RemoteFile]) -> None:
    """Raise DownloadError before anything is written when a filesystem cannot hold what is to come."""
    needed: dict[int, tuple[Path, int]] = {}
    for r in remotes:
        folder = _existing_parent(target_path(models_dir, r.file).parent)
        dev = os.stat(folder).st_dev
        where, total = needed.get(dev, (folder, 0))
        needed[dev] = (where, total + bytes_needed(models_dir, r))
    for folder, total in needed.values():
        free = shutil.disk_usage(folder).free
        if total > free:
            raise DownloadError(f"not enough disk space in {folder}: the download needs {_gb(total)} and "
                                f"{_gb(free)} is free. Free {_gb(total - free)} or choose another --models-dir.")


def download(models_dir: Path, remote: RemoteFile) -> Path:
    """Download (or resume) one file; returns its final path. Never overwrites; never leaves a partial file
    under the final name."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    f = remote.file
    target = target_path(models_dir, f)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target, remote.etag)
    for old in stale_parts(target, keep=part):
        old.unlink()
    if part.is_file() and part.stat().st_size > remote.size:
        part.unlink()
    have = part.stat().st_size if part.is_file() else 0
    headers = build_hf_headers()
    if not remote.same_host:
        headers.pop("authorization", None)  # a signed CDN URL: the token stays with the Hub
    try:
        with open(part, "ab") as out:
            http_get(remote.url, out, resume_size=have, headers=headers, expected_size=remote.size,
                     displayed_filename=f.name)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"{f.name}: the disk filled up; {part.stat().st_size} of {remote.size} bytes are "
                                f"kept in {part}. Free space and run the command again to resume.") from None
        if exc.errno is None and "Consistency check failed" in str(exc):
            part.unlink(missing_ok=True)
            raise DownloadError(f"{f.name}: the server sent a different number of bytes than the {remote.size} it "
                                "announced; the partial file was deleted. Try again later.") from None
        raise DownloadError(f"{f.name}: download failed ({exc}); {_kept(part)}") from None
    except Exception as exc:  # network errors after huggingface_hub's own retries, HTTP errors on the GET
        raise DownloadError(f"{f.name}: download failed ({type(exc).__name__}: {exc}); {_kept(part)}") from None
    size = part.stat().st_size
    if size != remote.size:
        part.unlink()
        raise DownloadError(f"{f.name}: got {size} bytes, the server announced {remote.size}; deleted.")
    problem = structural_problem(part, f)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{f.name}: the downloaded file is {problem}; deleted. Check the URL ({f.url}) in "
                            "a browser.")
    _move_no_overwrite(part, target)
    return target


def _move_no_overwrite(src: Path, dst: Path) -> None:
    """Rename src to dst, failing (and keeping src) if dst exists (the pack's no-replace publish)."""
    from ..quant.final_name import move_into_place
    try:
        move_into_place(src, dst)
    except FileExistsError:
        raise DownloadError(f"{dst.name}: a file appeared at {dst} during the download; it was left untouched "
                            f"and the download is kept as {src}.") from None


def _kept(part: Path) -> str:
    if part.is_file() and part.stat().st_size:
        return f"{part.stat().st_size} bytes are kept in {part.name}; run the command again to resume."
    part.unlink(missing_ok=True)
    return "nothing was kept."


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"
