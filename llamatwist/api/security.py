# -*- test-case-name: tests.test_security -*-
"""What llama-server's HTTP layer does before routing: CORS, API keys,
``--api-prefix``, the loading gate and the request body limit.

`SecureResource` wraps the Klein resource and follows the pre-routing handler
of llama.cpp's tools/server/server-http.cpp, in its order:

1. every response gets ``Access-Control-Allow-Origin`` (`allow_origin`);
2. ``OPTIONS`` is a CORS preflight, answered 200 at once for any path: no
   key is asked for, since browsers send none with a preflight;
3. while the model loads, everything but the web UI answers 503;
4. with API keys set, every path but the public ones (`PUBLIC_PATHS`) needs
   ``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``, else 401;
5. the path must start with the ``--api-prefix``, which is moved from
   ``postpath`` to ``prepath`` before Klein routes the rest; else 404.

The body limit cannot wait for the resource, which Twisted calls only once
the whole body is in: `body_limited_request` makes a `Request` class for
``Site(requestFactory=...)`` that refuses an announced Content-Length over
the limit before reading the body, and stops a chunked body as soon as it
goes over. The limit, `MAX_BODY_BYTES`, is cpp-httplib's default payload
limit, which llama-server keeps (CPPHTTPLIB_PAYLOAD_MAX_LENGTH, 100 MiB).

Paths are compared after the prefix is taken off: ``/api/health`` is public
under ``--api-prefix /api``. (llama-server compares the full path there, so
its own public routes need a key under a prefix; llamatwist does not copy
that.)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import logging
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

from twisted.web.http import HTTPChannel, combinedLogFormatter
from twisted.web.resource import Resource
from twisted.web.server import Request

from llamatwist.api.errors import (
    HeadersTooLarge,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    path_error_json,
    send_error,
)
from llamatwist.api.request_metrics import RequestMetrics
from llamatwist.config import ServerConfig
from llamatwist.webui import MODULES, PDFJS_DATA, resolve_static

__all__ = [
    "MAX_BODY_BYTES",
    "PUBLIC_PATHS",
    "SecureResource",
    "SecurityPolicy",
    "access_log_line",
    "allow_origin",
    "answer_and_close",
    "api_key_valid",
    "body_limited_request",
    "guarded_channel",
    "origin_is_localhost",
    "presented_api_key",
    "route_path",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 100 * 1024 * 1024

# server-http.cpp: frontend_paths ("/" and the embedded UI assets) and
# get_public_endpoints ("/health", "/v1/health" plus frontend_paths).  Files
# served from --path count as frontend paths too (see `SecureResource`).
FRONTEND_PATHS: Final = frozenset({b"/", b"/index.html", b"/completion.js", b"/sw.js",
                                   *(f"/{m}".encode() for m in (*MODULES, *PDFJS_DATA))})
PUBLIC_PATHS: Final = frozenset({b"/health", b"/v1/health"}) | FRONTEND_PATHS

_BEARER: Final = b"Bearer "
_JSON: Final = b"application/json; charset=utf-8"


# --------------------------------------------------------------------------
# Pure helpers.


def presented_api_key(authorization: bytes | None, x_api_key: bytes | None) -> bytes:
    """The key a request presents, read as llama-server reads it.

    ``Authorization`` wins when present and non-empty, else ``X-Api-Key``; a
    leading ``"Bearer "`` (case-sensitive) is dropped from either.
    """
    key = authorization or x_api_key or b""
    return key.removeprefix(_BEARER)


def api_key_valid(presented: bytes, keys: Sequence[bytes]) -> bool:
    """Whether `presented` is one of `keys`.

    Compared in constant time with every key (no early exit on a match), on
    SHA-256 digests so that not even the key lengths show in the timing.
    """
    digest = hashlib.sha256(presented).digest()
    found = False
    for key in keys:
        found |= hmac.compare_digest(digest, hashlib.sha256(key).digest())
    return found and bool(presented)


def origin_is_localhost(origin: str) -> bool:
    """server-http.cpp origin_is_localhost: the Origin's host is localhost,
    127.0.0.1 or ::1, on any port."""
    try:
        host = urlsplit(origin).hostname
    except ValueError:
        return False
    return host in ("localhost", "127.0.0.1", "::1")


def allow_origin(origins: str, credentials: bool, origin: str | None) -> str | None:
    """The ``Access-Control-Allow-Origin`` value, or None for no header.

    ``*`` is sent as ``*``, credentials or not: browsers then refuse every
    credentialed cross-origin request, so the default (``*`` with
    --cors-credentials on) denies them. llama-server echoes the request's
    Origin there instead, which lets any web page make credentialed calls;
    llamatwist grants credentials only to origins named with --cors-origins
    (issue 19). ``localhost`` echoes only local origins; one origin is sent as
    it is. A comma-separated list (llama-server would send it verbatim, which
    browsers reject) echoes the request's Origin when it is listed.
    """
    if origins == "*":
        return "*"
    if origins == "localhost":
        return origin if origin and origin_is_localhost(origin) else None
    allowed = [o.strip() for o in origins.split(",") if o.strip()]
    if len(allowed) <= 1:
        return origins.strip()
    return origin if origin in allowed else None


def route_path(postpath: Sequence[bytes], prefix: Sequence[bytes]) -> bytes | None:
    """The path Klein routes (``postpath`` joined, prefix segments removed),
    or None when the path is not under the prefix."""
    if list(postpath[: len(prefix)]) != list(prefix):
        return None
    return b"/" + b"/".join(postpath[len(prefix) :])


def _prefix_segments(prefix: str) -> tuple[bytes, ...]:
    return tuple(s.encode("utf-8") for s in prefix.strip("/").split("/") if s)


# --------------------------------------------------------------------------
# The resource.


@dataclass(frozen=True)
class SecurityPolicy:
    api_keys: tuple[bytes, ...] = ()
    prefix: tuple[bytes, ...] = ()  # --api-prefix as path segments
    cors_origins: str = "*"
    cors_methods: str = "GET, POST, DELETE, OPTIONS"
    cors_headers: str = "*"
    cors_credentials: bool = True
    static_path: str | None = None  # --path, when the UI is on: its files are public
    public: frozenset[bytes] = PUBLIC_PATHS  # served without a key (+ Vertex AI's health route)

    @classmethod
    def from_config(cls, config: ServerConfig) -> SecurityPolicy:
        return cls(
            api_keys=tuple(k.encode("utf-8") for k in config.api_keys if k),
            prefix=_prefix_segments(config.api_prefix),
            cors_origins=config.cors_origins,
            cors_methods=config.cors_methods,
            cors_headers=config.cors_headers,
            cors_credentials=config.cors_credentials,
            static_path=config.static_path if config.webui else None,
            public=PUBLIC_PATHS | ({config.vertex[0].encode("utf-8")} if config.vertex and config.vertex[0] else set()),
        )


def _header(request: Request, name: bytes) -> bytes | None:
    value = request.getHeader(name)
    return value if isinstance(value, bytes) else None


class SecureResource(Resource):
    """Wraps the app's (leaf) resource; see the module docstring."""

    isLeaf = True

    def __init__(self, wrapped: Resource, policy: SecurityPolicy, is_ready: Callable[[], bool] | None = None,
                 metrics: RequestMetrics | None = None) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._policy = policy
        self._is_ready = is_ready
        self._metrics = metrics

    def render(self, request: Request) -> bytes | int:
        policy = self._policy
        route = route_path(request.postpath or [], policy.prefix)
        if self._metrics is not None:
            self._metrics.started(request, "" if route is None else route.decode("utf-8", "replace"))
        origin = _header(request, b"origin")
        allowed = allow_origin(
            policy.cors_origins,
            policy.cors_credentials,
            None if origin is None else origin.decode("utf-8", "surrogateescape"),
        )
        # credentials only with a named origin (see allow_origin), on the preflight and on the answer itself
        credentials = policy.cors_credentials and allowed not in (None, "*")
        if allowed is not None:
            request.setHeader(b"Access-Control-Allow-Origin", allowed.encode("utf-8", "surrogateescape"))
            if allowed != "*":
                request.setHeader(b"Vary", b"Origin")
            if credentials and request.method != b"OPTIONS":
                request.setHeader(b"Access-Control-Allow-Credentials", b"true")
        if request.method == b"OPTIONS":
            request.setHeader(b"Access-Control-Allow-Credentials", b"true" if credentials else b"false")
            request.setHeader(b"Access-Control-Allow-Methods", policy.cors_methods.encode("utf-8"))
            request.setHeader(b"Access-Control-Allow-Headers", policy.cors_headers.encode("utf-8"))
            request.setHeader(b"Content-Type", b"text/html")
            return b""

        frontend = route in FRONTEND_PATHS or self._static_file(request, route)
        if self._is_ready is not None and not frontend and not self._is_ready():
            return send_error(request, Unavailable("Loading model"))
        if policy.api_keys and not frontend and route not in policy.public:
            key = presented_api_key(_header(request, b"authorization"), _header(request, b"x-api-key"))
            if not api_key_valid(key, policy.api_keys):
                log.warning("unauthorized: Invalid API Key")
                return send_error(request, Unauthorized("Invalid API Key"))
        if route is None:
            return send_error(request, NotFound("File Not Found"))
        if policy.prefix:
            n = len(policy.prefix)
            request.prepath = [*(request.prepath or []), *(request.postpath or [])[:n]]
            request.postpath = (request.postpath or [])[n:]
        result: bytes | int = self._wrapped.render(request)
        return result

    def _static_file(self, request: Request, route: bytes | None) -> bool:
        """Whether the request is a GET/HEAD of a file under --path."""
        root = self._policy.static_path
        if root is None or route is None or request.method not in (b"GET", b"HEAD"):
            return False
        return resolve_static(root, route.split(b"/")) is not None


# --------------------------------------------------------------------------
# The access log.


def _no_query(value: bytes) -> bytes:
    return value.split(b"?", 1)[0]


class _WithoutQueries:
    """A request as the access log sees it: the URI and the Referer without their query strings, where a
    client may have put a key (llama-server logs the path alone too). Keys in headers are never logged."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.uri = _no_query(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    def getHeader(self, name: bytes) -> bytes | None:
        value = self._request.getHeader(name)
        return _no_query(value) if value is not None and name.lower() == b"referer" else value


def access_log_line(timestamp: str, request: Request) -> str:
    """Site(logFormatter=...): Twisted's combined log line, without query strings."""
    return str(combinedLogFormatter(timestamp, _WithoutQueries(request)))


# --------------------------------------------------------------------------
# The body limit.


class BodyLimitedRequest(Request):
    """A Request that refuses a body over `max_body` bytes with 413.

    The answer is written straight to the connection, which is then closed:
    the request never reaches the resource, and what is left of the body is
    not read.
    """

    max_body: ClassVar[int] = MAX_BODY_BYTES
    _body_bytes = 0
    _too_large = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self.content = io.BytesIO()  # type: ignore[assignment]  # typed None in Twisted
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._too_large:
            super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._too_large = True
        log.warning("request body over the limit of %d bytes: refused with 413", self.max_body)
        channel = self.channel
        transport: Any = getattr(channel, "transport", None)
        if not isinstance(channel, HTTPChannel) or transport is None:
            if channel is not None:
                channel.loseConnection()
            return
        # No "100 Continue" after the answer (the channel sends it after gotLength).
        self.requestHeaders.removeHeader(b"expect")
        answer_and_close(channel, b"413 Payload Too Large",
                         PayloadTooLarge(f"request body too large: the limit is {self.max_body} bytes"))


def answer_and_close(channel: HTTPChannel, status: bytes, exc: Exception) -> None:
    """Answer on the connection itself, before (or instead of) any Request, then close it; what the client
    sends after is dropped unparsed."""
    transport: Any = channel.transport
    if transport is None:
        return
    # the request line's path, when it came: a route family with its own error shape (Anthropic's) gets it too
    path = getattr(channel, "_path", b"")
    body = path_error_json(path if isinstance(path, bytes) else b"", exc)
    transport.write(
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: " + _JSON + b"\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body) + body
    )
    channel.dataReceived = _discard  # type: ignore[method-assign]
    channel.loseConnection()


def _discard(data: bytes) -> None:
    pass


def body_limited_request(max_body: int = MAX_BODY_BYTES) -> type[Request]:
    """A `BodyLimitedRequest` class with the given limit, for Site(requestFactory=...)."""
    return type("BodyLimitedRequest", (BodyLimitedRequest,), {"max_body": max_body})


# --------------------------------------------------------------------------
# Slow and idle clients.

HEADER_TIMEOUT: Final = 30.0  # seconds a request's headers may take (nginx's client_header_timeout is 60)


class GuardedChannel(HTTPChannel):
    """An HTTPChannel that slow clients cannot hold (issue 19).

    Twisted's idle timeout restarts on every byte, so a client that trickles its headers or its body (a
    slowloris) would keep a connection, and its descriptor, for ever. Here:

    * the headers of a request must all arrive within `header_timeout` seconds of its first byte (or of the
      connection, for a client that sends nothing): else 408;
    * its body must all arrive within `body_timeout` seconds of its headers: else 408;
    * headers over Twisted's limits (16 KiB in all, 16 KiB a line, 500 headers) are a 431, a malformed
      request line or header a 400, each with a JSON body, where Twisted answers an empty 400 or closes;
    * past `max_connections` open connections, a new one is closed at once, so that the process keeps
      descriptors for its own files (model, slot saves, logs).
    """

    header_timeout: ClassVar[float | None] = HEADER_TIMEOUT
    body_timeout: ClassVar[float | None] = None
    max_connections: ClassVar[int] = 1 << 30
    open_connections: ClassVar[int] = 0  # per subclass (one per server), see `guarded_channel`

    _deadline: Any = None
    _counted = False

    def connectionMade(self) -> None:
        cls = type(self)
        if cls.open_connections >= cls.max_connections:
            log.warning("%d connections open: a new one is refused", cls.open_connections)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        cls.open_connections += 1
        self._counted = True
        super().connectionMade()
        self._arm(self.header_timeout, "headers")

    def connectionLost(self, reason: Any = None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            type(self).open_connections -= 1
        super().connectionLost(reason)

    def _arm(self, seconds: float | None, what: str) -> None:
        self._disarm()
        if seconds is not None and seconds > 0:
            self._deadline = self.callLater(seconds, functools.partial(self._too_slow, what, seconds))

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self, what: str, seconds: float) -> None:
        self._deadline = None
        log.info("a client took over %g s to send its request %s: 408", seconds, what)
        answer_and_close(self, b"408 Request Timeout",
                         RequestTimeout(f"the request {what} did not arrive within {seconds:g} seconds"))

    def dataReceived(self, data: bytes) -> None:
        # the first byte of a request (line mode, no deadline running) starts the clock for its headers
        if self.line_mode and self._deadline is None and not self._handlingRequest:
            self._arm(self.header_timeout, "headers")
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._headers_too_large()
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._headers_too_large()

    def _headers_too_large(self) -> None:
        answer_and_close(self, b"431 Request Header Fields Too Large",
                         HeadersTooLarge(f"request headers too large: the limit is {self.totalHeadersSize} bytes"))

    def _respondToBadRequestAndDisconnect(self) -> None:
        answer_and_close(self, b"400 Bad Request", InvalidRequest("malformed HTTP request line or header"))

    def allHeadersReceived(self) -> None:
        self._arm(self.body_timeout, "body")
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()


def guarded_channel(read_timeout: float, max_connections: int = 0) -> type[GuardedChannel]:
    """A `GuardedChannel` class with its own limits and connection count, for ``site.protocol``.

    ``read_timeout`` is --timeout: a body must arrive within it, headers within it or `HEADER_TIMEOUT`,
    whichever is shorter (<= 0: no body deadline, `HEADER_TIMEOUT` still). A `max_connections` of 0 leaves
    room for 128 other descriptors under the process's limit."""
    header_timeout = min(HEADER_TIMEOUT, read_timeout) if read_timeout > 0 else HEADER_TIMEOUT
    body_timeout = read_timeout if read_timeout > 0 else None
    if max_connections <= 0:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        max_connections = max(16, soft - 128) if soft != resource.RLIM_INFINITY else 1 << 16
    return type("GuardedChannel", (GuardedChannel,), {
        "header_timeout": header_timeout, "body_timeout": body_timeout,
        "max_connections": max_connections, "open_connections": 0,
    })  # fmt: skip
