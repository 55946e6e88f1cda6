# -*- test-case-name: tests.test_server -*-
"""The HTTP seam: JSON in and out, the route wrapper that answers every error (through
api/errors.py), the readiness gate."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.chatformat import ChatFormatter
from llamatwist.api.errors import REPORTED, InvalidRequest, NotSupported, ServerError, Unavailable, send_error
from llamatwist.api.request_metrics import RequestMetrics
from llamatwist.config import ServerConfig
from llamatwist.constrain.reasoning_budget import ReasoningSwitch
from llamatwist.constrain.spec import ConstraintSpec
from llamatwist.runtime import EngineService, EngineState, LoadedModel
from llamatwist.tools.service import ToolsService

__all__ = ["MAX_JSON_DEPTH", "ApiContext", "handler", "json_bytes", "load_json", "query_param", "read_json"]

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
    # chat completions running now, by id: the switch that ends their thinking (None: no reasoning_control)
    live_completions: dict[str, ReasoningSwitch | None] = field(default_factory=dict)
    tools: ToolsService | None = None  # /tools: --tools and the MCP servers (None: llama-server's 403)
    request_metrics: RequestMetrics | None = None  # llamatwist:* in /metrics (None: not counted)

    @property
    def chat(self) -> ChatFormatter:
        if self.chat_formatter is None:
            raise Unavailable("Loading model")
        return self.chat_formatter

    @property
    def model_alias(self) -> str:
        # llama-server: the first -a alias, else the -hf or -dr repo as given, else the model path
        aliases = self.config.aliases
        return aliases[0] if aliases else self.config.hf_repo or self.config.docker_repo or self.model_path

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

    def require_embeddings(self) -> LoadedModel:
        """Embedding routes: a server started with ``--embeddings`` (a reranker ranks, it does not embed)."""
        if not self.config.embeddings or self.config.reranking:
            raise NotSupported("This server does not support embeddings. Start it with `--embeddings`")
        return self.require_ready()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# Far deeper than any real request (a JSON schema nests a few dozen levels), far below what the recursive
# code behind the parser (schema compilers, templates, json.dumps) can take.
MAX_JSON_DEPTH: Final = 64
_INT_RANGE: Final = (-(2**63), 2**64 - 1)  # what nlohmann::json keeps as an integer


class _Rejected(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(f"duplicate key {json.dumps(key, ensure_ascii=False)}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not a JSON number")


def _field(path: tuple[str | int, ...]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"'{text}'" if text else "the request body"


def _check_values(root: Any) -> None:
    """What json.loads lets through that no request may hold: nesting deeper than MAX_JSON_DEPTH, numbers
    that are infinite or outside 64 bits, strings with lone surrogates (``"\\ud800"``: not UTF-8)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise InvalidRequest(f"{_field(path[:8])}...: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, (*path, key)))
            elif isinstance(item, str):
                if not item.isascii():
                    try:
                        item.encode("utf-8")
                    except UnicodeEncodeError:
                        raise InvalidRequest(f"{_field((*path, key))}: invalid string (a lone UTF-16 surrogate)") from None
            elif isinstance(item, bool):
                continue
            elif isinstance(item, int):
                if not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
                    raise InvalidRequest(f"{_field((*path, key))}: integer out of the 64-bit range")
            elif isinstance(item, float) and not math.isfinite(item):
                raise InvalidRequest(f"{_field((*path, key))}: number out of range")
        if isinstance(value, dict):
            for key in value:
                if not key.isascii():
                    try:
                        key.encode("utf-8")
                    except UnicodeEncodeError:
                        raise InvalidRequest(f"{_field(path)}: invalid key (a lone UTF-16 surrogate)") from None


def load_json(raw: bytes) -> Any:
    """A request body as JSON, as strict as llama-server's parser (nlohmann::json) and stricter: invalid
    UTF-8, NaN/Infinity, lone surrogates, numbers out of range, duplicate keys (which parsers disagree
    on: a proxy may read the first, the server the last) and deep nesting are 400s naming the field."""
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidRequest(f"invalid JSON in request body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"invalid JSON in request body: {exc}") from None
    _check_values(value)
    return value


def read_json(request: Request) -> dict[str, Any]:
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    body = load_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def query_param(request: Request, name: str) -> str | None:
    """The last value of a query parameter, or of a form field (Twisted parsed both into request.args); None
    when absent or empty."""
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    return (values[-1].decode("utf-8", "replace") or None) if values else None


def send_json(request: Request, obj: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json_bytes(obj)


def handler(fn: Handler) -> Callable[..., Awaitable[Any]]:
    """Wrap an async route: an error listed in api/errors.py's table becomes
    llama-server's error body; anything else is logged and becomes a 500
    (never a dropped socket). A route cancelled because its client left answers nothing."""

    @functools.wraps(fn)
    async def wrapper(request: Request, *args: Any, **kw: Any) -> Any:
        if request.method == b"POST" and request.getHeader(b"x-conversation-id"):
            from llamatwist.api.stream_sessions import run_detached  # it builds on this module

            return await run_detached(request, lambda: answer(request, *args, **kw))
        return await answer(request, *args, **kw)

    async def answer(request: Request, *args: Any, **kw: Any) -> Any:
        try:
            return await fn(request, *args, **kw)
        except CancelledError:
            if getattr(request, "_disconnected", False):  # Klein cancels a route whose client left
                return None
            log.exception("%s cancelled", fn.__name__)
            return send_error(request, ServerError("internal server error"))
        except REPORTED as err:
            return send_error(request, err)
        except Exception:
            log.exception("unhandled error in %s", fn.__name__)
            return send_error(request, ServerError("internal server error"))

    return wrapper
