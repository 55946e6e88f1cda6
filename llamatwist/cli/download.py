# -*- test-case-name: tests.test_flags_download -*-
"""-mu/--model-url: a model file fetched into the per-user cache, as llama-server's downloader.

A download goes to ``<dest>.downloadInProgress`` and resumes from there (an HTTP Range request) after an
interruption; it is renamed into place only once its size matches the server's Content-Length and the
file starts with the GGUF magic, so a cache never holds half a model under the real name. A progress bar
goes to stderr. ``--offline`` never touches the network: the cached file or a start-up error.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final, TypeAlias

__all__ = ["DownloadError", "Progress", "fetch_model", "model_url_path"]

Progress: TypeAlias = Callable[[int, "int | None"], None]  # (bytes so far, total bytes if known)

_CHUNK: Final = 1 << 20
_PART: Final = ".downloadInProgress"


class DownloadError(RuntimeError):
    """The model could not be fetched; the message names the URL and the file."""


def model_url_path(url: str, cache: Path) -> Path:
    """Where -mu's file lands without -m: the URL's last path segment in the cache's models directory."""
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise DownloadError(f"--model-url {url}: the URL names no file (give -m for the destination)")
    return cache / "models" / name


def fetch_model(url: str, dest: Path, *, offline: bool = False, out: IO[str] | None = None,
                token: str | None = None, what: str = "--model-url", sha256: str | None = None,
                progress: Progress | None = None, gguf: bool = True) -> Path:
    """`dest`, downloaded from `url` first unless it is already there (``sha256``: the download's digest must be
    this; ``what``: the flag named in errors; ``progress``: told the bytes so far instead of a bar on `out`,
    and may raise to stop the download, whose part stays for a resume; ``gguf``: the file must be one)."""
    if dest.is_file():
        return dest
    if offline:
        raise DownloadError(f"--offline: {dest} is not in the cache and would be downloaded from {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + _PART)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "llamatwist"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part is already whole
            return _finish(url, part, dest, have, what, sha256, gguf)
        raise DownloadError(f"{what} {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{what} {url}: {getattr(err, 'reason', err)}") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as fh:
            _copy(response, fh, have, total, progress or _bar_to(out or sys.stderr))
        if progress is None:
            (out or sys.stderr).write("\n")
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{what} {url}: got {size} of {total} bytes (run again to resume)")
    return _finish(url, part, dest, size, what, sha256, gguf)


def _finish(url: str, part: Path, dest: Path, size: int, what: str, sha256: str | None, gguf: bool = True) -> Path:
    with open(part, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF" and gguf:
        part.unlink()
        raise DownloadError(f"{what} {url}: not a GGUF file ({size} bytes, starts with {magic!r})")
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(part, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            part.unlink()
            raise DownloadError(f"{what} {url}: sha256 {digest.hexdigest()} is not the {sha256} the registry "
                                "announced")
    os.replace(part, dest)  # atomic: the same directory
    return dest


def _copy(src: IO[bytes], dst: IO[bytes], done: int, total: int | None, progress: Progress) -> None:
    last = 0.0
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        done += len(chunk)
        now = time.monotonic()
        if now - last > 0.2 or (total is not None and done >= total):
            last = now
            progress(done, total)


def _bar_to(out: IO[str]) -> Progress:
    def show(done: int, total: int | None) -> None:
        out.write("\r" + _bar(done, total))
        out.flush()

    return show


def _bar(done: int, total: int | None) -> str:
    mib = done / (1 << 20)
    if not total:
        return f"downloading: {mib:.1f} MiB"
    share = min(done / total, 1.0)
    filled = int(share * 40)
    return f"[{'=' * filled}{' ' * (40 - filled)}] {share:6.1%} {mib:.1f}/{total / (1 << 20):.1f} MiB"
