# -*- test-case-name: tests.test_server -*-
"""The HTTP seam: JSON in and out, the route wrapper that answers every error (through
api/errors.py), the readiness gate."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.web.server import Request

from llamatwist.api.chatformat import ChatFormatter
from llamatwist.api.errors import REPORTED, NotSupported, ServerError, Unavailable, send_error
from llamatwist.api.params import parse_json_body
from llamatwist.config import ServerConfig
from llamatwist.constrain.spec import ConstraintSpec
from llamatwist.runtime import EngineService, EngineState, LoadedModel

__all__ = ["ApiContext", "handler", "json_bytes", "read_json"]

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]


@dataclass
class ApiContext:
    """What route modules need; passed explicitly, no globals."""

    config: ServerConfig
    engine: EngineService
    model_path: str
    chat_formatter: ChatFormatter | None = None  # set once the model is loaded
    default_constraint: ConstraintSpec = field(default_factory=ConstraintSpec)  # --grammar / -j

    @property
    def chat(self) -> ChatFormatter:
        if self.chat_formatter is None:
            raise Unavailable("Loading model")
        return self.chat_formatter

    @property
    def model_alias(self) -> str:
        # llama-server: the first -a alias, else the file name
        aliases = self.config.aliases
        return aliases[0] if aliases else os.path.basename(self.model_path)

    def require_ready(self) -> LoadedModel:
        if self.engine.state is not EngineState.READY or self.engine.loaded is None:
            raise Unavailable("Loading model")
        return self.engine.loaded

    @property
    def embedding_mode(self) -> bool:
        return self.config.embeddings or self.config.reranking

    def require_generation(self) -> LoadedModel:
        """Text generation routes; an embedding server has no sampling."""
        if self.embedding_mode:
            raise NotSupported("This server does not support completions. Start it without `--embeddings`")
        return self.require_ready()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def read_json(request: Request) -> dict[str, Any]:
    return parse_json_body(request.content.read() if request.content is not None else b"")


def send_json(request: Request, obj: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json_bytes(obj)


def handler(fn: Handler) -> Callable[..., Awaitable[Any]]:
    """Wrap an async route: an error listed in api/errors.py's table becomes
    llama-server's error body; anything else is logged and becomes a 500
    (never a dropped socket)."""

    @functools.wraps(fn)
    async def wrapper(request: Request, *args: Any, **kw: Any) -> Any:
        try:
            return await fn(request, *args, **kw)
        except REPORTED as err:
            return send_error(request, err)
        except Exception:
            log.exception("unhandled error in %s", fn.__name__)
            return send_error(request, ServerError("internal server error"))

    return wrapper
