# -*- test-case-name: tests.test_webui -*-
"""The web UI routes: the built-in chat UI at ``/`` and ``/index.html``,
``/completion.js``, the modules the UI loads on demand (pdf.js and its data
files under ``/pdfjs/``), ``/sw.js``
(a service worker that removes itself) and ``--path DIR`` static files.

As llama-server: ``--no-webui`` serves none of them; with ``--path`` the
directory replaces the built-in UI (``/`` is ``DIR/index.html``).  The UI is
served from memory, gzipped when the client accepts it, with an ETag and
``Cache-Control: no-cache`` so that a new build is picked up on the next load.

Routes are registered last (see app.py), so API routes always win; static
files are looked up only for paths no route matched (the 404 handler), so
they cannot shadow the API either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.web import static
from twisted.web.resource import Resource
from twisted.web.server import Request
from werkzeug.exceptions import NotFound as WzNotFound

from llamatwist.api.errors import NotFound, send_error
from llamatwist.config import ServerConfig
from llamatwist.webui import (
    MODULES,
    PDFJS_DATA,
    Asset,
    completion_js,
    index_html,
    module_asset,
    pdfjs_data,
    resolve_static,
    service_worker_js,
)

__all__ = ["register", "send_asset"]

_HTML = b"text/html; charset=utf-8"
_JS = b"text/javascript; charset=utf-8"


def _accepts_gzip(request: Request) -> bool:
    value = request.getHeader(b"accept-encoding")
    if not isinstance(value, bytes):
        return False
    for part in value.lower().split(b","):
        coding, _, params = part.strip().partition(b";")
        if coding.strip() in (b"gzip", b"*"):
            q = params.strip()
            return not (q.startswith(b"q=") and q[2:].strip().rstrip(b"0").rstrip(b".") in (b"", b"0"))
    return False


def _etag_matches(request: Request, etag: bytes) -> bool:
    value = request.getHeader(b"if-none-match")
    if not isinstance(value, bytes):
        return False
    tags = [t.strip().removeprefix(b"W/") for t in value.split(b",")]
    return b"*" in tags or etag in tags


def send_asset(request: Request, asset: Asset, content_type: bytes, *, isolation: bool = False) -> bytes:
    """An in-memory asset with content negotiation and revalidation."""
    request.setHeader(b"ETag", asset.etag)
    request.setHeader(b"Cache-Control", b"no-cache")
    vary = request.responseHeaders.getRawHeaders(b"vary", [])
    request.setHeader(b"Vary", b", ".join([*vary, b"Accept-Encoding"]))
    if _etag_matches(request, asset.etag):
        request.setResponseCode(304)
        return b""
    if isolation:
        request.setHeader(b"Cross-Origin-Opener-Policy", b"same-origin")
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    if _accepts_gzip(request):
        request.setHeader(b"Content-Encoding", b"gzip")
        body = asset.gzipped
    else:
        body = asset.plain
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return b"" if request.method == b"HEAD" else body


class _StaticFile(Resource):
    """One regular file, rendered by twisted.web.static.File (content type,
    Range, If-Modified-Since, streaming), with no child lookup."""

    isLeaf = True

    def __init__(self, path: str) -> None:
        super().__init__()
        self._file = static.File(path)

    def render(self, request: Request) -> Any:
        request.setHeader(b"Cache-Control", b"no-cache")
        return self._file.render(request)


def register(app: Klein, config: ServerConfig) -> None:
    root = config.static_path if config.webui else None

    def from_path(*segments: str) -> _StaticFile | None:
        """The file at these segments in the --path directory, which wins over a built-in asset; None if none."""
        path = resolve_static(root, [s.encode() for s in segments]) if root is not None else None
        return _StaticFile(str(path)) if path is not None else None

    def script(name: str, asset: Callable[[], Asset]) -> None:
        """``/name``: the file of that name in the --path directory when there is one, else the built-in asset."""

        @app.route(f"/{name}", methods=["GET", "HEAD"], endpoint=f"script_{name}")
        def serve(request: Request) -> Any:
            return from_path(name) or send_asset(request, asset(), _JS)

    # also with --no-webui, as llama-server: a browser's worker from its UI must still be able to remove itself
    script("sw.js", service_worker_js)
    if not config.webui:
        return

    if root is None:

        @app.route("/", methods=["GET", "HEAD"])
        @app.route("/index.html", methods=["GET", "HEAD"])
        def index(request: Request) -> bytes:
            return send_asset(request, index_html(), _HTML, isolation=True)

    script("completion.js", completion_js)
    for module in MODULES:
        script(module, functools.partial(module_asset, module))

    @app.route("/pdfjs/<kind>/<name>", methods=["GET", "HEAD"])
    def pdfjs_file(request: Request, kind: str, name: str) -> Any:
        """pdf.js's data files (``PDFJS_DATA``); as the modules, a file at that path under --path wins."""
        static = from_path("pdfjs", kind, name)
        if static is not None:
            return static
        data = f"pdfjs/{kind}/{name}"
        if data not in PDFJS_DATA:
            return send_error(request, NotFound("File Not Found"))
        return send_asset(request, pdfjs_data(data), PDFJS_DATA[data])

    if root is None:
        return

    # Registered before app.py's own 404 handler, so Klein tries this one first.
    @app.handle_errors(WzNotFound)
    def static_file(request: Request, failure: Any) -> Any:
        if request.method in (b"GET", b"HEAD"):
            path = resolve_static(root, list(request.postpath or []))
            if path is not None:
                return _StaticFile(str(path))
        return send_error(request, NotFound("File Not Found"))
