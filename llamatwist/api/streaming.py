# -*- test-case-name: tests.test_server -*-
"""Server-sent events, and cancelling a task when its client goes away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.server import Request

from llamatwist.api.errors import error_body, send_error
from llamatwist.api.http import json_bytes
from llamatwist.runtime import PartialResult

__all__ = ["SSEStream", "on_disconnect", "partial_extras"]


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
    """``data: {json}\\n\\n`` events to one client; writes stop once it is gone."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.closed = False
        self.started = False
        on_disconnect(request, self._lost)

    def _lost(self) -> None:
        self.closed = True

    def _start(self) -> None:
        # Headers go out with the first event, so an error that comes before
        # any output is still a plain JSON error with its status (as OpenAI).
        self.started = True
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Connection", b"keep-alive")
        request.setHeader(b"X-Accel-Buffering", b"no")  # nginx: do not buffer the stream

    def send(self, obj: Any) -> None:
        self.send_raw(b"data: " + json_bytes(obj) + b"\n\n")

    def send_raw(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.started:
            self._start()
        self._request.write(data)

    def send_error(self, err: Exception) -> None:
        if self.closed:
            return
        if not self.started:
            self.started = True
            self._request.write(send_error(self._request, err))
            return
        # llama-server ends a failed stream with a `data: {"error": ...}` event.
        self.send(error_body(err))

