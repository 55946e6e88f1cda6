# -*- test-case-name: tests.test_server -*-
"""Server-sent events, and cancelling a task when its client goes away."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from twisted.web.server import Request

from llamatwist.api.errors import error_body, send_error
from llamatwist.api.http import json_bytes
from llamatwist.api.stream_sessions import SESSIONS
from llamatwist.runtime import PartialResult

__all__ = ["MAX_UNSENT_BYTES", "SSEStream", "on_disconnect", "partial_extras"]

log = logging.getLogger(__name__)

# What a stream may write while its client reads nothing (beyond the transport's own 64 KiB buffer and the
# kernel's): past it the client is dropped like one that went away, and its task is cancelled (issue 19).
MAX_UNSENT_BYTES: Final = 1 << 20


def partial_extras(r: PartialResult) -> dict[str, Any]:
    """What llama-server adds to a streamed chunk: ``timings`` (timings_per_token) and ``prompt_progress``
    (return_progress)."""
    out: dict[str, Any] = {}
    if r.timings is not None:
        out["timings"] = r.timings.to_json()
    if r.progress is not None:
        out["prompt_progress"] = r.progress.to_json()
    return out


def on_disconnect(request: Request, callback: Callable[[], None]) -> None:
    """Call ``callback`` if the connection is lost before the response ends."""

    def lost(failure: Any) -> None:
        callback()

    request.notifyFinish().addErrback(lost)


class SSEStream:
    """``data: {json}\\n\\n`` events to one client; writes stop once it is gone.

    ``ping_interval`` > 0 (llama-server's sse_ping_interval, seconds): after that long without an event a
    ``:`` comment goes out, so that clients and proxies that drop a silent connection (undici, nginx) keep it
    while a long prompt is processed."""

    content_type = b"text/event-stream"

    def __init__(self, request: Request, ping_interval: float = -1, clock: Any = None) -> None:
        self._request = request
        self.closed = False
        self.started = False
        self._unsent = 0
        # X-Conversation-Id: every event also goes to the conversation's session (resumable streams)
        self.session = SESSIONS.start(request)
        on_disconnect(request, self._lost)
        self._ping_interval = ping_interval
        self._ping: Any = None
        if ping_interval > 0:
            if clock is None:
                from twisted.internet import reactor as clock
            self._clock = clock
            request.notifyFinish().addBoth(self._stop_ping)
            self._arm()

    def _lost(self) -> None:
        self.closed = True

    def _arm(self) -> None:
        """(Re)start the silence timer."""
        if self._ping_interval <= 0 or self.closed:
            return
        if self._ping is not None and self._ping.active():
            self._ping.reset(self._ping_interval)
        else:
            self._ping = self._clock.callLater(self._ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self.send_raw(b":\n\n")

    def _stop_ping(self, result: Any = None) -> None:
        # the response ended, or the client went away (on_disconnect handles that): the outcome stops here,
        # else a lost connection's failure is logged as an unhandled error
        self._ping_interval = 0
        if self._ping is not None and self._ping.active():
            self._ping.cancel()

    def _start(self) -> None:
        # Headers go out with the first event, so an error that comes before
        # any output is still a plain JSON error with its status (as OpenAI).
        self.started = True
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", self.content_type)
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Connection", b"keep-alive")
        request.setHeader(b"X-Accel-Buffering", b"no")  # nginx: do not buffer the stream

    def send(self, obj: Any) -> None:
        self.send_raw(b"data: " + json_bytes(obj) + b"\n\n")

    def send_raw(self, data: bytes) -> None:
        if self.session is not None:
            self.session.append(data)
        if self.closed:
            return
        if not self.started:
            self._start()
        self._request.write(data)
        self._bound_unsent(len(data))
        self._arm()

    def _bound_unsent(self, n: int) -> None:
        """Twisted buffers every write and tells the channel to wait (``_waitingForTransport``) once its
        buffer is full; a client that stops reading would make that buffer grow with every token."""
        channel = getattr(self._request, "channel", None)
        if not getattr(channel, "_waitingForTransport", False):
            self._unsent = 0
            return
        self._unsent += n
        if self._unsent > MAX_UNSENT_BYTES:
            log.warning("a client stopped reading its stream (%d bytes unsent): dropped", self._unsent)
            self.closed = True
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()  # connectionLost: the route's on_disconnect cancels the task

    def send_error(self, err: Exception) -> None:
        if self.session is not None and not self.started:
            self.session.append(b"data: " + json_bytes(error_body(err)) + b"\n\n")
        if self.closed:
            return
        if not self.started:
            self.started = True
            self._request.write(send_error(self._request, err))
            return
        # llama-server ends a failed stream with a `data: {"error": ...}` event.
        self.send(error_body(err))

