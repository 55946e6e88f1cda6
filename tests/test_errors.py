"""api/errors.py: the one table from exception to llama-server's error answer (no server needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamatwist.api.errors import (
    REPORTED,
    ApiError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    Unavailable,
    answer,
    error_body,
    error_json,
)
from llamatwist.chat import ChatInputError, TemplateError
from llamatwist.runtime import (
    ContextExceeded,
    DecodeFailed,
    DecodeLoopCrashed,
    InputTooLarge,
    InvalidSlot,
    KVCacheFull,
    SlotBusy,
    SlotFileError,
    SlotFileUnwritable,
    TaskError,
)

CASES: list[tuple[Exception, dict[str, Any]]] = [
    (InvalidRequest("bad"), {"code": 400, "message": "bad", "type": "invalid_request_error"}),
    (Unauthorized("Invalid API Key"), {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}),
    (NotFound("File Not Found"), {"code": 404, "message": "File Not Found", "type": "not_found_error"}),
    (MethodNotAllowed("m"), {"code": 405, "message": "m", "type": "invalid_request_error"}),
    (PayloadTooLarge("big"), {"code": 413, "message": "big", "type": "invalid_request_error"}),
    (ServerError("oops"), {"code": 500, "message": "oops", "type": "server_error"}),
    (NotSupported("no"), {"code": 501, "message": "no", "type": "not_supported_error"}),
    (Unavailable("Loading model"), {"code": 503, "message": "Loading model", "type": "unavailable_error"}),
    (ContextExceeded(300, 256), {
        "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 300, "n_ctx": 256,
        "message": "request (300 tokens) exceeds the available context size (256 tokens), try increasing it",
    }),
    (InputTooLarge(600, 512), {
        "code": 400, "type": "invalid_request_error",
        "message": "input (600 tokens) is too large to process. increase the physical batch size "
                   "(current: 512, -ub/--ubatch-size)",
    }),
    (KVCacheFull(), {"code": 503, "message": "the KV cache is full, retry later", "type": "unavailable_error"}),
    (DecodeFailed("llama_decode returned -3"),
     {"code": 500, "message": "decode failed: llama_decode returned -3", "type": "server_error"}),
    (DecodeLoopCrashed(), {"code": 500, "message": "decode loop crashed", "type": "server_error"}),
    (InvalidSlot(7), {"code": 400, "message": "Invalid slot ID", "type": "invalid_request_error"}),
    (SlotBusy(1), {"code": 409, "type": "invalid_request_error",
                   "message": "slot 1 is busy processing a task; try again when it is idle"}),
    (SlotFileError("slot file not found: a.bin"),
     {"code": 400, "message": "slot file not found: a.bin", "type": "invalid_request_error"}),
    (SlotFileUnwritable("a.bin", "No space left on device"),
     {"code": 500, "message": "cannot write a.bin: No space left on device", "type": "server_error"}),
    (ChatInputError("no messages"), {"code": 400, "message": "no messages", "type": "invalid_request_error"}),
    (ChatInputError("parse", status=500), {"code": 500, "message": "parse", "type": "server_error"}),
    (TemplateError("render"), {"code": 400, "message": "render", "type": "invalid_request_error"}),
    (TemplateError("raise_exception", status=500), {"code": 500, "message": "raise_exception", "type": "server_error"}),
]


@pytest.mark.parametrize(("exc", "expected"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_table(exc: Exception, expected: dict[str, Any]) -> None:
    assert error_body(exc) == {"error": expected}
    assert answer(exc).status == expected["code"]
    assert isinstance(exc, REPORTED)


def test_body_keeps_llama_server_key_order_and_spacing() -> None:
    assert error_json(ContextExceeded(5, 4)) == (
        b'{"error": {"code": 400, "message": "request (5 tokens) exceeds the available context size (4 tokens), '
        b'try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 5, "n_ctx": 4}}'
    )
    assert json.loads(error_json(ApiError("x"))) == {"error": {"code": 500, "message": "x", "type": "server_error"}}


def test_every_runtime_error_has_a_row() -> None:
    import llamatwist.runtime.errors as runtime_errors

    for name in runtime_errors.__all__:
        cls = getattr(runtime_errors, name)
        assert cls is TaskError or cls in REPORTED, name


def test_unknown_exceptions_are_internal_errors() -> None:
    assert not isinstance(KeyError("x"), REPORTED)
    assert error_body(KeyError("x")) == {"error": {"code": 500, "message": "internal server error",
                                                   "type": "server_error"}}
