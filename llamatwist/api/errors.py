# -*- test-case-name: tests.test_params -*-
"""API errors in llama-server's shape, mapped to JSON and status in one place."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ApiError", "ExceedContext", "InvalidRequest", "MethodNotAllowed", "NotFound", "NotSupported",
    "PayloadTooLarge", "ServerError", "Unauthorized", "Unavailable", "error_body", "error_json", "from_result",
]


class ApiError(Exception):
    code = 500
    type = "server_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidRequest(ApiError):
    code = 400
    type = "invalid_request_error"


class ExceedContext(ApiError):
    code = 400
    type = "exceed_context_size_error"


class NotFound(ApiError):
    code = 404
    type = "not_found_error"


class NotSupported(ApiError):
    code = 501
    type = "not_supported_error"


class Unavailable(ApiError):
    code = 503
    type = "unavailable_error"


class ServerError(ApiError):
    code = 500
    type = "server_error"


class Unauthorized(ApiError):
    code = 401
    type = "authentication_error"


class PayloadTooLarge(ApiError):
    code = 413
    type = "invalid_request_error"


class MethodNotAllowed(ApiError):
    code = 405
    type = "invalid_request_error"


def from_result(code: int, message: str, type_: str, extra: dict[str, Any]) -> ApiError:
    """Rebuild an ApiError from an error result sent by the decode loop."""
    err = ApiError(message, **extra)
    err.code = code
    err.type = type_
    return err


def error_body(err: ApiError) -> dict[str, Any]:
    return {"error": {"code": err.code, "message": err.message, "type": err.type, **err.extra}}


def error_json(err: ApiError) -> bytes:
    return json.dumps(error_body(err)).encode()
