# -*- test-case-name: tests.test_errors -*-
"""Every error the server answers with, in llama-server's shape, decided in one place.

`TABLE` maps an exception class (the HTTP layer's own `ApiError` classes, the runtime's typed errors,
chat-template errors) to its answer: status, error type, message and extra fields. `error_body` is the
one function that turns an exception into the ``{"error": ...}`` object, for JSON responses
(`send_error`, `error_json`) and for the SSE event that ends a failed stream alike.

A route family whose clients expect another body (Anthropic's ``{"type": "error", "error": ...}``) registers
it for its paths with `register_error_shape`: `send_error` then writes that shape for every error on those
paths, the ones answered before routing (401, 503, 404) included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llamatwist.chat import ChatError
from llamatwist.runtime import (
    ContextExceeded,
    DecodeFailed,
    DecodeLoopCrashed,
    InputTooLarge,
    InvalidSlot,
    KVCacheFull,
    ShuttingDown,
    SlotBusy,
    SlotFileError,
    SlotFileUnwritable,
)
from llamatwist.tools.base import ToolParamError, UnknownTool
from llamatwist.tools.mcp import McpProtocolError

if TYPE_CHECKING:
    from twisted.web.server import Request

__all__ = [
    "REPORTED", "TABLE", "ApiError", "BadGateway", "ErrorAnswer", "FeatureDisabled", "HeadersTooLarge", "InvalidRequest", "MethodNotAllowed",
    "NotFound", "NotSupported", "PayloadTooLarge", "RequestTimeout", "ServerError", "Unauthorized", "Unavailable", "answer", "error_body",
    "error_json", "path_error_json", "register_error_shape", "send_error",
]


class ApiError(Exception):
    """An error the HTTP layer raises itself; its class picks its row of `TABLE`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ApiError):
    pass


class NotFound(ApiError):
    pass


class NotSupported(ApiError):
    pass


class Unavailable(ApiError):
    pass


class ServerError(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class MethodNotAllowed(ApiError):
    pass


class RequestTimeout(ApiError):
    """The request's headers or body did not arrive in time (a slow or stalled client)."""


class HeadersTooLarge(ApiError):
    pass


class BadGateway(ApiError):
    """The server a proxy route forwards to could not be reached or answered nothing (/cors-proxy)."""


class FeatureDisabled(ApiError):
    """A route of a feature this server runs without (llama-server's 403 ``feature_disabled``)."""


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    type: str
    message: str
    extra: Mapping[str, int] = field(default_factory=dict)


def _as(status: int, type_: str) -> Callable[[Exception], ErrorAnswer]:
    """A row whose message is the exception's own text."""
    return lambda exc: ErrorAnswer(status, type_, str(exc))


def _context_exceeded(exc: ContextExceeded) -> ErrorAnswer:
    return ErrorAnswer(
        400, "exceed_context_size_error",
        f"request ({exc.n_prompt} tokens) exceeds the available context size ({exc.n_ctx} tokens), try increasing it",
        {"n_prompt_tokens": exc.n_prompt, "n_ctx": exc.n_ctx},
    )


def _input_too_large(exc: InputTooLarge) -> ErrorAnswer:
    return ErrorAnswer(
        400, "invalid_request_error",
        f"input ({exc.n_tokens} tokens) is too large to process. increase the physical batch size "
        f"(current: {exc.n_ubatch}, -ub/--ubatch-size)",
    )


# An exception answers with the row of its class, else of its nearest base class that has one.
TABLE: dict[type[Exception], Callable[[Any], ErrorAnswer]] = {
    # raised by the HTTP layer
    ApiError: _as(500, "server_error"),
    ServerError: _as(500, "server_error"),
    InvalidRequest: _as(400, "invalid_request_error"),
    Unauthorized: _as(401, "authentication_error"),
    NotFound: _as(404, "not_found_error"),
    MethodNotAllowed: _as(405, "invalid_request_error"),
    PayloadTooLarge: _as(413, "invalid_request_error"),
    RequestTimeout: _as(408, "invalid_request_error"),
    HeadersTooLarge: _as(431, "invalid_request_error"),
    NotSupported: _as(501, "not_supported_error"),
    Unavailable: _as(503, "unavailable_error"),
    FeatureDisabled: _as(403, "feature_disabled"),
    BadGateway: _as(502, "server_error"),
    # server tools (llamatwist.tools): a missing or mistyped parameter, a tool that does not exist
    ToolParamError: _as(400, "invalid_request_error"),
    UnknownTool: lambda exc: ErrorAnswer(404, "invalid_request_error", str(exc.args[0])),
    McpProtocolError: lambda exc: ErrorAnswer(502, "server_error", f"MCP server: {exc}"),  # its reply, not the client
    # the runtime's typed errors (llamatwist.runtime.errors)
    ContextExceeded: _context_exceeded,
    InputTooLarge: _input_too_large,
    KVCacheFull: lambda exc: ErrorAnswer(503, "unavailable_error", "the KV cache is full, retry later"),
    DecodeFailed: lambda exc: ErrorAnswer(500, "server_error", f"decode failed: {exc.detail}"),
    DecodeLoopCrashed: lambda exc: ErrorAnswer(500, "server_error", "decode loop crashed"),
    ShuttingDown: lambda exc: ErrorAnswer(503, "unavailable_error", f"{exc}: the request was stopped, retry"),
    InvalidSlot: lambda exc: ErrorAnswer(400, "invalid_request_error", "Invalid slot ID"),
    SlotBusy: lambda exc: ErrorAnswer(
        409, "invalid_request_error", f"slot {exc.id_slot} is busy processing a task; try again when it is idle"
    ),
    SlotFileError: _as(400, "invalid_request_error"),
    SlotFileUnwritable: lambda exc: ErrorAnswer(500, "server_error", f"cannot write {exc.filename}: {exc.reason}"),
    # chat requests and templates: the status llama-server uses for each failure travels with the error
    ChatError: lambda exc: ErrorAnswer(exc.status, exc.error_type, exc.message),
}

# What a route reports to its client; anything else is a bug, logged and answered as a 500.
REPORTED: tuple[type[Exception], ...] = tuple(TABLE)

_INTERNAL = ErrorAnswer(500, "server_error", "internal server error")


def answer(exc: BaseException) -> ErrorAnswer:
    for cls in type(exc).__mro__:
        row = TABLE.get(cls)
        if row is not None:
            return row(exc)
    return _INTERNAL


def error_body(exc: BaseException) -> dict[str, Any]:
    """``{"error": {"code", "message", "type", ...extra}}``: the body of every error response and event."""
    a = answer(exc)
    return {"error": {"code": a.status, "message": a.message, "type": a.type, **a.extra}}


def error_json(exc: BaseException) -> bytes:
    return json.dumps(error_body(exc)).encode()


ErrorShape = Callable[[ErrorAnswer], dict[str, Any]]

# route path (without --api-prefix) -> the error body its family writes; the path and everything under it
_SHAPES: dict[bytes, ErrorShape] = {}


def register_error_shape(path: bytes, shape: ErrorShape) -> None:
    _SHAPES[path.rstrip(b"/")] = shape


def path_error_json(path: bytes, exc: BaseException) -> bytes:
    """The error body for a request to ``path`` (query string allowed): its family's shape, else `error_json`'s."""
    path = path.split(b"?", 1)[0].rstrip(b"/") + b"/"
    # segment-aligned, anywhere in the path: an --api-prefix comes before the route
    shape = next((shape for p, shape in _SHAPES.items() if p + b"/" in path), None)
    return error_json(exc) if shape is None else json.dumps(shape(answer(exc))).encode()


def send_error(request: Request, exc: BaseException) -> bytes:
    """Set the status and content type of an error response; returns its body."""
    request.setResponseCode(answer(exc).status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    # Twisted's test DummyRequest has no .path, only .uri
    return path_error_json(getattr(request, "path", None) or getattr(request, "uri", None) or b"", exc)
