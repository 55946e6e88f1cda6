# -*- test-case-name: tests.test_ollama -*-
"""Ollama's model-store routes (``ollama pull``, ``rm``, ``cp``, ``create``, ``push``).

A server of one model has no store: ``/api/pull`` answers that the model is here (any name is this server's
model, as on the other routes, so a client that pulls before it chats goes on), and ``/api/create``,
``/api/copy``, ``/api/push``, ``/api/delete`` and ``/api/blobs/<digest>`` are refused with a 403 that says
where models come from. A router pulls and deletes for real, through the Hugging Face cache
(router/ollama.py), and refuses the rest with the same answers (`register_shared`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from klein import Klein
from twisted.web.server import Request

from llamatwist.api.errors import FeatureDisabled, InvalidRequest
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.ollama.response import OLLAMA_VERSION
from llamatwist.api.ollama.stream import NDJSONStream

__all__ = ["REFUSED", "answer_statuses", "pull_name", "register", "register_shared", "streams"]

_WHERE = ("models are the GGUF files this server was started with (-m, or a router's --models-dir, "
          "--models-preset and the Hugging Face cache)")
# route -> (methods, what is refused)
REFUSED: dict[str, tuple[tuple[str, ...], str]] = {
    "/api/create": (("POST",), "creating models"),
    "/api/copy": (("POST",), "copying models"),
    "/api/push": (("POST",), "pushing models"),
    "/api/blobs/<string:digest>": (("HEAD", "POST"), "uploading model files"),
    "/api/delete": (("DELETE",), "deleting models"),
}


def pull_name(body: Mapping[str, Any]) -> str:
    """The model a pull (or delete) names: ``model``, or ``name`` as older clients send it."""
    name = body.get("model", body.get("name"))
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("'model' must be a non-empty string")
    return name.strip()


def streams(body: Mapping[str, Any]) -> bool:
    value = body.get("stream", True)
    if not isinstance(value, bool):
        raise InvalidRequest("'stream' must be a boolean")
    return value


def answer_statuses(request: Request, stream: bool, statuses: Iterable[dict[str, Any]]) -> Any:
    """A store operation's progress objects: each a line when streamed, else the last alone."""
    if not stream:
        *_, last = statuses
        return send_json(request, last)
    out = NDJSONStream(request)
    for status in statuses:
        out.send(status)
    return b""


def register_shared(app: Klein, refused: Iterable[str]) -> None:
    """What a server of one model and a router answer alike: ``/api/version``, and the store routes ``refused``
    (a 403 in Ollama's shape that says why)."""

    @app.route("/api/version", methods=["GET"])
    @handler
    async def version(request: Request) -> Any:
        return send_json(request, {"version": OLLAMA_VERSION})

    for path in refused:
        methods, what = REFUSED[path]

        @app.route(path, methods=list(methods), endpoint=f"ollama_refused_{path}")
        @handler
        async def refuse(request: Request, what: str = what, **_: Any) -> Any:
            raise FeatureDisabled(f"{what} is not supported here: {_WHERE}")


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/api/pull", methods=["POST"])
    @handler
    async def pull(request: Request) -> Any:
        ctx.require_ready()
        body = read_json(request)
        pull_name(body)
        return answer_statuses(request, streams(body), [{"status": "pulling manifest"}, {"status": "success"}])

    register_shared(app, REFUSED)
