"""The built-in web UI, shipped as data files of this package.

``index.html.gz`` is the whole chat UI (built from ``web/`` by Vite into one
HTML file, gzipped); it is committed so that installs without Node.js still
get the UI, and ``web/scripts/pack.mjs --check`` proves it matches the source.
``completion.js`` is the hand-written ``llamaComplete()`` helper for custom
front-ends; ``pdf.min.mjs.gz`` and ``pdf.worker.min.mjs.gz`` are pdf.js (from
npm, packed beside the UI), which the UI loads to read a PDF attachment; ``mcp.min.mjs.gz`` is its MCP
client (the official SDK, built by ``web/vite.mcp.config.js``), loaded when the settings name an MCP server;
``mermaid.min.js.gz`` is Mermaid (npm), which it loads to draw a reply's first mermaid diagram; ``pdfjs/`` holds
pdf.js's data files (CMaps, WebAssembly decoders, an ICC profile), which pdf.js fetches for a PDF that needs them.
`resolve_static` maps a request path onto a ``--path`` directory.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from urllib.parse import unquote_to_bytes

__all__ = [
    "MODULES",
    "PDFJS_DATA",
    "Asset",
    "completion_js",
    "index_html",
    "module_asset",
    "pdfjs_data",
    "resolve_static",
    "service_worker_js",
]


@dataclass(frozen=True)
class Asset:
    gzipped: bytes  # the body sent to clients that accept gzip
    etag: bytes  # strong ETag, quoted

    @functools.cached_property
    def plain(self) -> bytes:
        """The body for clients that do not accept gzip."""
        return gzip.decompress(self.gzipped)


def _asset(gzipped: bytes) -> Asset:
    return Asset(gzipped, b'"' + hashlib.sha256(gzipped).hexdigest()[:32].encode("ascii") + b'"')


@functools.lru_cache(maxsize=1)
def index_html() -> Asset:
    """The chat UI (read once, then served from memory)."""
    return _asset(files(__name__).joinpath("index.html.gz").read_bytes())


#: the JavaScript modules the UI loads on demand, served at /NAME from NAME.gz
MODULES = ("pdf.min.mjs", "pdf.worker.min.mjs", "mcp.min.mjs", "mermaid.min.js")


@functools.lru_cache(maxsize=len(MODULES))
def module_asset(name: str) -> Asset:
    """One of `MODULES` (read once, then served from memory)."""
    if name not in MODULES:
        raise KeyError(name)
    return _asset(files(__name__).joinpath(f"{name}.gz").read_bytes())


def _pdfjs_files() -> dict[str, bytes]:
    folder = files(__name__).joinpath("pdfjs")
    types = {"cmaps": b"application/octet-stream", "wasm": b"application/wasm", "iccs": b"application/vnd.iccprofile"}
    found = {}
    for kind, content_type in types.items():
        if folder.joinpath(kind).is_dir():
            for entry in folder.joinpath(kind).iterdir():
                if entry.name.endswith(".gz"):
                    found[f"pdfjs/{kind}/{entry.name.removesuffix('.gz')}"] = content_type
    return dict(sorted(found.items()))


#: pdf.js's data files the UI has it fetch for a PDF that needs them (the CMaps of CJK text; the JBIG2, JPEG 2000
#: and colour decoders as WebAssembly; an ICC profile), served at /PATH from PATH.gz: path -> content type
PDFJS_DATA = _pdfjs_files()


@functools.lru_cache(maxsize=32)
def pdfjs_data(path: str) -> Asset:
    """One of `PDFJS_DATA` (read once, then served from memory)."""
    if path not in PDFJS_DATA:
        raise KeyError(path)
    return _asset(files(__name__).joinpath(f"{path}.gz").read_bytes())


@functools.lru_cache(maxsize=1)
def completion_js() -> Asset:
    plain = files(__name__).joinpath("completion.js").read_bytes()
    return _asset(gzip.compress(plain, mtime=0))


# A browser that ran llama-server's web UI at this address keeps that UI's service worker, which goes on showing the
# old UI from its cache. The worker's update check (a fetch of /sw.js) gets this one instead: it unregisters, empties
# the caches and reloads the pages it controlled, which then get this server's UI. llama-server answers the same
# way when its own UI is off or replaced; this UI has no service worker of its own.
_SW_REMOVE = b"""self.addEventListener('install', () => self.skipWaiting())
self.addEventListener('activate', (event) => event.waitUntil((async () => {
  await self.registration.unregister()
  for (const key of await caches.keys()) await caches.delete(key)
  for (const client of await self.clients.matchAll({ type: 'window' })) client.navigate(client.url)
})()))
"""


@functools.lru_cache(maxsize=1)
def service_worker_js() -> Asset:
    """``/sw.js``: the service worker that removes itself (above)."""
    return _asset(gzip.compress(_SW_REMOVE, mtime=0))


def resolve_static(root: str | Path, segments: list[bytes]) -> Path | None:
    """The regular file under `root` that the (still percent-encoded) path
    `segments` name, or None.

    A directory stands for its ``index.html``.  Segments that decode to
    ``.``/``..``, contain a slash, a backslash or NUL, or start with a dot
    (hidden files) are refused, and the resolved file (symlinks followed)
    must still lie inside `root`: no traversal.
    """
    try:
        base = Path(root).resolve(strict=True)
    except OSError:
        return None
    parts: list[str] = []
    for raw in segments:
        if not raw:
            continue  # "//" or a trailing slash
        try:
            seg = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if seg.startswith(".") or any(c in seg for c in "/\\\x00"):
            return None
        parts.append(seg)
    try:
        path = base.joinpath(*parts).resolve(strict=True)
        if path.is_dir():
            path = (path / "index.html").resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path
