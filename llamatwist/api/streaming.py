# -*- test-case-name: tests.test_server -*-
"""Server-sent events, and cancelling a task when its client goes away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.server import Request

from llamatwist.api.errors import ApiError, error_body
from llamatwist.api.http import json_bytes

__all__ = ["SSEStream", "on_disconnect"]


def on_disconnect(request: Request, callback: Callable[[], None]) -> None:
    """Call ``callback`` if the connection is lost before the response ends."""

    def lost(failure: Any) -> None:
        callback()

    request.notifyFinish().addErrback(lost)


class SSEStream:
    """``data: {json}\\n\\n`` events; ``done`` fires when the stream is closed."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.closed = False
        self.done: Deferred[None] = Deferred()
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Connection", b"keep-alive")
        request.setHeader(b"X-Accel-Buffering", b"no")  # nginx: do not buffer the stream
        on_disconnect(request, self._lost)

    def _lost(self) -> None:
        self.closed = True

    def send(self, obj: Any) -> None:
        if not self.closed:
            self._request.write(b"data: " + json_bytes(obj) + b"\n\n")

    def send_raw(self, line: bytes) -> None:
        if not self.closed:
            self._request.write(line)

    def send_error(self, err: ApiError) -> None:
        # llama-server ends a failed stream with an `error:` event.
        if not self.closed:
            self._request.write(b"error: " + json_bytes(error_body(err)) + b"\n\n")

    def close(self) -> None:
        if not self.done.called:
            self.done.callback(None)
