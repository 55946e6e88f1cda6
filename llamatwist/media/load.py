"""Media sources a client names → bytes → :class:`MediaInput`, with llama-server's forms and limits.

llama-server's ``handle_media`` (tools/server/server-common.cpp) takes four forms, and so does `load_media`:

- ``data:<image|audio|video>/<type>;base64,<data>``: decoded here; a corrupt payload is a MediaError.
- ``file://<path>``: only with ``--media-path``, relative to it (llama-server's form) or absolute under it; a
  ``..`` component (also percent-encoded), a NUL, a symlink leading out of the directory or anything but a
  regular file is refused.
- ``http://`` / ``https://``: fetched with treq within `MediaLimits` (llama-server: 10 MB, 10 s): a
  Content-Length past the size limit is refused before reading, a body that grows past it is cut off; redirects
  are followed by hand so their number is bounded and none leads to another scheme; a non-2xx status is refused.
- anything else: raw base64 (``input_audio``'s ``data``).

Every failure is a :class:`MediaError` naming the problem (:class:`MediaTooLarge` when it is a size limit, a
413 at the routes). Reading a file and decoding run in a thread (``in_thread``), never on the reactor.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urljoin, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent

from llamatwist.media import MediaError, MediaInput, decode_media

__all__ = [
    "MAX_MEDIA_BYTES",
    "MediaLimits",
    "MediaTooLarge",
    "fetch_url",
    "load_media",
    "read_data_uri",
    "read_local_file",
]

InThread = Callable[..., "Deferred[Any]"]

MAX_MEDIA_BYTES = 10 * 1024 * 1024  # llama-server's download limit (common_remote_params.max_size)


class MediaTooLarge(MediaError):
    """The source is past a size limit."""


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int = MAX_MEDIA_BYTES  # a file, download or data: URI's decoded size
    timeout: float = 10.0  # seconds for a whole download, redirects included (llama-server: 10 s)
    max_redirects: int = 5


# what a download that cannot complete raises (a bad URL is a ValueError from hyperlink)
_NET_ERRORS = (OSError, ValueError, ConnectError, ConnectionLost, ResponseFailed, ResponseNeverReceived,
               RequestTransmissionFailed, SchemeNotSupported)


def _too_large(what: str, limits: MediaLimits) -> MediaTooLarge:
    return MediaTooLarge(f"{what} is too large (the limit is {limits.max_bytes} bytes)")


def _b64decode(text: str, what: str, limits: MediaLimits) -> bytes:
    # whitespace (line-wrapped base64) is allowed; anything else outside the alphabet is corruption
    compact = "".join(text.split())
    if len(compact) // 4 * 3 > limits.max_bytes + 3:
        raise _too_large(what, limits)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"{what} is not valid base64 ({exc})") from None
    if not data:
        raise MediaError(f"{what} is empty")
    if len(data) > limits.max_bytes:
        raise _too_large(what, limits)
    return data


def read_data_uri(url: str, limits: MediaLimits = MediaLimits()) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` (or audio, or video) URI."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise MediaError("invalid data: URI: expected data:<mime type>;base64,<data>")
    mime = header[5:].split(";", 1)[0].strip().lower()
    if not mime.startswith(("image/", "audio/", "video/")):
        raise MediaError(f"unsupported data: URI media type {mime or '(none)'!r} (expected image/*, audio/* or "
                         "video/*)")
    if not header.endswith(";base64"):
        raise MediaError("a data: URI must be base64 encoded (data:<mime type>;base64,<data>)")
    return _b64decode(payload, "the data: URI's payload", limits)


def _local_path(url: str, media_path: str | None) -> str:
    if media_path is None:
        raise MediaError("file:// URLs are not allowed unless --media-path is specified")
    raw = url[len("file://"):]
    path = unquote(raw)
    if "\0" in path:
        raise MediaError("file path is not allowed: it contains a NUL character")
    if any(part == ".." for part in path.replace("\\", "/").split("/")):
        raise MediaError(f"file path is not allowed: {raw} (no '..' components)")
    root = os.path.realpath(media_path)
    # relative to --media-path (llama-server's form), or absolute; either way it must end up inside it once
    # symlinks are resolved
    resolved = os.path.realpath(path if os.path.isabs(path) else os.path.join(root, path))
    if resolved == root or os.path.commonpath([root, resolved]) != root:
        raise MediaError(f"file path is not allowed: {raw} is outside --media-path")
    return resolved


def read_local_file(url: str, media_path: str | None, limits: MediaLimits = MediaLimits()) -> bytes:
    """The bytes of a ``file://`` URL under ``media_path`` (blocking: run it in a thread)."""
    path = _local_path(url, media_path)
    raw = url[len("file://"):]
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise MediaError(f"file is not a regular file: {raw}")
            if st.st_size > limits.max_bytes:
                raise _too_large(f"file {raw} ({st.st_size} bytes)", limits)
            data = f.read(limits.max_bytes + 1)
    except OSError:
        raise MediaError(f"file does not exist or cannot be opened: {raw}") from None
    if len(data) > limits.max_bytes:
        raise _too_large(f"file {raw}", limits)
    return data


async def _get(url: str, limits: MediaLimits, reactor: Any) -> bytes:
    from treq.client import HTTPClient

    # one connection per download, closed after it (no pooled connection outlives the request)
    agent = Agent(reactor, connectTimeout=limits.timeout, pool=HTTPConnectionPool(reactor, persistent=False))
    client = HTTPClient(cast(IAgent, agent))
    for _ in range(limits.max_redirects + 1):
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError as exc:
            raise MediaError(f"failed to download media from {url!r}: {exc}") from None
        if scheme not in ("http", "https"):
            raise MediaError(f"cannot download media from {url!r}: only http and https URLs are fetched")
        try:
            response = await client.get(url, allow_redirects=False, unbuffered=True, reactor=reactor,
                                        headers=Headers({b"User-Agent": [b"llamatwist"]}))
        except _NET_ERRORS as exc:  # DNS, refused connection, TLS: the client named an unreachable URL
            raise MediaError(f"failed to download media from {url}: {exc.__class__.__name__}: {exc}") from None
        code = response.code
        if code in (301, 302, 303, 307, 308):
            location = response.headers.getRawHeaders(b"location")
            await _discard(response)
            if not location:
                raise MediaError(f"failed to download media from {url}: HTTP {code} without a Location")
            url = urljoin(url, location[0].decode("latin-1"))
            continue
        if not 200 <= code < 300:
            await _discard(response)
            raise MediaError(f"failed to download media from {url}: HTTP {code}")
        if response.length is not UNKNOWN_LENGTH and response.length > limits.max_bytes:
            await _discard(response)
            raise _too_large(f"the download from {url} ({response.length} bytes)", limits)
        return await _read(response, url, limits)
    raise MediaError(f"failed to download media: more than {limits.max_redirects} redirects")


class _Body(Protocol):
    """Reads a response body up to a size limit; past it, or when its Deferred is cancelled (the time limit),
    it drops the connection."""

    def __init__(self, url: str, limits: MediaLimits) -> None:
        self.url, self.limits = url, limits
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._drop())

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limits.max_bytes:
            self._drop()
            self.done.errback(_too_large(f"the download from {self.url}", self.limits))
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(MediaError(f"failed to download media from {self.url}: {reason.getErrorMessage()}"))


def _read(response: Any, url: str, limits: MediaLimits) -> Deferred[bytes]:
    body = _Body(url, limits)
    response.deliverBody(body)
    return body.done


async def _discard(response: Any) -> None:
    """Close the connection without reading a body that may be large."""
    d = _read(response, "", MediaLimits(max_bytes=0))
    d.addErrback(lambda _: None)
    d.cancel()


def fetch_url(url: str, limits: MediaLimits = MediaLimits(), reactor: Any = None) -> Deferred[bytes]:
    """The body of an http(s) URL within ``limits`` (size, time, redirects)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    d = Deferred.fromCoroutine(_get(url, limits, reactor))
    d.addTimeout(limits.timeout, reactor)

    def timed_out(failure: Any) -> Any:
        failure.trap(DeferredTimeout)
        raise MediaError(f"failed to download media from {url}: no complete answer within {limits.timeout:g} s")

    return d.addErrback(timed_out)


async def load_media(
    url: str,
    media_path: str | None,
    in_thread: InThread,
    limits: MediaLimits = MediaLimits(),
) -> MediaInput:
    """A client's media source (data: URI, file:// URL, http(s) URL or raw base64) → a decoded MediaInput."""
    if not isinstance(url, str) or not url:
        raise MediaError("the media source is empty (expected a data: URI, a file:// or http(s) URL, or base64)")
    lower = url[:8].lower()
    if lower.startswith("data:"):
        data = read_data_uri(url, limits)
    elif lower.startswith("file://"):
        data = await in_thread(read_local_file, url, media_path, limits)
    elif lower.startswith(("http://", "https://")):
        data = await fetch_url(url, limits)
    else:
        data = _b64decode(url, "the media data", limits)
    media: MediaInput = await in_thread(decode_media, data)
    return media
