# -*- test-case-name: tests.test_vertex -*-
"""Google Cloud Vertex AI custom containers, as llama-server's GCP compatibility (``AIP_MODE=PREDICTION``).

Vertex sets ``AIP_HTTP_PORT`` (the port to listen on: it beats ``--port``), ``AIP_HEALTH_ROUTE`` (``/health``
is served there too) and ``AIP_PREDICT_ROUTE`` (default ``/predict``); cli.environ.vertex_from_env reads them. A prediction request is
``{"instances": [{"@requestFormat": F, ...body}, ...]}`` (at most 128): each instance goes to the route F names,
either as a path (``/v1/chat/completions``) or in llama-server's camelCase form (the path without ``/v1``,
``chatCompletions``), never streamed; the answer is ``{"predictions": [...]}``, one answer body per instance
(an instance's error is its ``{"error": ...}``).

Each instance is a request to this server itself, over loopback, with the caller's headers: it passes the same
API key check and reaches the same route code a client would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

import treq
from klein import Klein
from twisted.internet import defer
from twisted.web.server import Request

from llamatwist.api.errors import InvalidRequest, error_body
from llamatwist.api.http import handler, load_json, send_json

__all__ = ["MAX_INSTANCES", "camel_name", "register"]

log = logging.getLogger(__name__)

MAX_INSTANCES: Final = 128
_FORWARDED: Final = (b"authorization", b"x-api-key")


def camel_name(path: str) -> str:
    """llama-server's alias of a route: ``/v1/chat/completions`` -> ``chatCompletions``."""
    text = path[3:] if path.startswith("/v1") and len(path) > 3 else path
    out, cap = [], False
    for ch in text.lstrip("/"):
        if ch == "{":  # a path parameter
            break
        if ch in "/-_":
            cap = True
        else:
            out.append(ch.upper() if cap else ch)
            cap = False
    return "".join(out)


def register(app: Klein, routes: tuple[str, str] | None, paths: Iterable[str], prefix: str = "") -> None:
    """Vertex's health and predict routes (``routes``: ServerConfig.vertex; None: not on Vertex); `paths` are
    the routes an instance may name."""
    if routes is None:
        return
    health_path, predict_path = routes
    known = list(dict.fromkeys(paths))
    aliases: dict[str, str] = {}
    for path in known:
        aliases.setdefault(camel_name(path), path)

    if health_path and health_path not in ("/health", "/v1/health"):
        @app.route(health_path, methods=["GET"])
        @handler
        async def vertex_health(request: Request) -> Any:  # Klein names endpoints after their functions
            code, body = await _relay(request, "GET", prefix + "/health", None)
            return send_json(request, body, code)

    @app.route(predict_path, methods=["POST"])
    @handler
    async def vertex_predict(request: Request) -> Any:
        raw = request.content.read() if request.content is not None else b""
        data = load_json(raw) if raw.strip() else None
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        instances = data.get("instances")
        if not isinstance(instances, list):
            raise InvalidRequest("request body must include an array field named instances")
        if len(instances) > MAX_INSTANCES:
            raise InvalidRequest(f"instances array exceeds maximum size of {MAX_INSTANCES}")
        answers = [defer.Deferred.fromCoroutine(_instance(request, item, aliases, known, prefix))
                   for item in instances]
        predictions = await defer.gatherResults(answers)
        return send_json(request, {"predictions": predictions})


def _error(message: str) -> dict[str, Any]:
    return error_body(InvalidRequest(message))


async def _instance(request: Request, item: Any, aliases: Mapping[str, str], known: list[str],
                    prefix: str) -> Any:
    if not isinstance(item, dict):
        return _error("each instance must be a JSON object")
    fmt = item.get("@requestFormat")
    if not isinstance(fmt, str):
        return _error("each instance must include a string @requestFormat")
    path = aliases.get(fmt) or (fmt if fmt in known else None)
    if path is None:
        return _error(f"no handler registered for @requestFormat: {fmt}")
    body = {k: v for k, v in item.items() if k != "@requestFormat"}
    if "stream" in body:
        log.warning("ignoring client-provided stream field in instance, streaming is not supported in predict route")
        body["stream"] = False
    try:
        return (await _relay(request, "POST", prefix + path, body))[1]
    except Exception as exc:  # noqa: BLE001  # loopback failed: that instance's error, the others stand
        return error_body(exc)


async def _relay(request: Request, method: str, path: str, body: Any) -> tuple[int, Any]:
    """`path` on this server, with the caller's key: the answer's status and body (parsed when it is JSON)."""
    host = request.getHost()
    address = "127.0.0.1" if host.host in ("0.0.0.0", "::", "") else host.host
    address = f"[{address}]" if ":" in address else address
    headers: dict[bytes | str, bytes | str] = {
        name: value for name in _FORWARDED if (value := request.getHeader(name)) is not None}
    response = await treq.request(method, f"http://{address}:{host.port}{path}", headers=headers,
                                  data=None if body is None else json.dumps(body).encode(), timeout=3600)
    content = await response.content()
    if not content:
        return response.code, None
    try:
        return response.code, json.loads(content)
    except ValueError:
        return response.code, content.decode("utf-8", "replace")
