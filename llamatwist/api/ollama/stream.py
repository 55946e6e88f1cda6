# -*- test-case-name: tests.test_ollama -*-
"""Ollama's streamed answers: newline-delimited JSON objects."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from llamatwist.api.errors import answer
from llamatwist.api.http import json_bytes
from llamatwist.api.ollama.response import error_shape
from llamatwist.api.streaming import SSEStream

__all__ = ["NDJSONStream"]


class NDJSONStream(SSEStream):
    """One JSON object per line (``application/x-ndjson``), as Ollama streams; no keep-alive comments (a
    line that is not JSON would break its clients)."""

    content_type = b"application/x-ndjson"

    def __init__(self, request: Request) -> None:
        super().__init__(request, ping_interval=-1)

    def send(self, obj: Any) -> None:
        self.send_raw(json_bytes(obj) + b"\n")

    def send_error(self, err: Exception) -> None:
        if not self.started or self.closed:
            super().send_error(err)  # before any line: a plain JSON error with its status (Ollama's shape)
            return
        self.send(error_shape(answer(err)))
