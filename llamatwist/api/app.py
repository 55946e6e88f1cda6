# -*- test-case-name: tests.test_server -*-
"""Explicit composition of the Klein app from the route modules."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed as WzMethodNotAllowed
from werkzeug.exceptions import NotFound as WzNotFound

from llamatwist.api import (
    anthropic,
    completion,
    embeddings,
    infill,
    info,
    lora,
    ollama,
    openapi,
    server_tools,
    stream_sessions,
    tokens,
    vertex,
    webui,
)
from llamatwist.api.errors import MethodNotAllowed, NotFound, send_error
from llamatwist.api.http import ApiContext
from llamatwist.api.openai import chat as oai_chat
from llamatwist.api.openai import completions as oai_completions
from llamatwist.api.openai import responses as oai_responses
from llamatwist.api.openai import transcriptions as oai_transcriptions

__all__ = ["add_error_handlers", "build_app"]


def build_app(ctx: ApiContext) -> Klein:
    app = Klein()
    for module in (info, completion, infill, tokens, oai_completions, oai_chat, embeddings, openapi, lora, anthropic,
                   oai_responses, oai_transcriptions, ollama):
        module.register(app, ctx)
    stream_sessions.register(app)
    server_tools.register(app, ctx.tools, ctx.config.ui_mcp_proxy)
    vertex.register(app, ctx.config.vertex, [path for _, path in openapi.OPERATIONS], ctx.config.api_prefix)
    webui.register(app, ctx.config)  # last: the UI never shadows an API route
    add_error_handlers(app)
    return app


def add_error_handlers(app: Klein) -> None:
    """A path no route serves and a method a route does not take: llama-server's 404 and 405 bodies."""

    @app.handle_errors(WzNotFound)
    def not_found(request: Request, failure: Any) -> bytes:
        return send_error(request, NotFound("File Not Found"))

    @app.handle_errors(WzMethodNotAllowed)
    def not_allowed(request: Request, failure: Any) -> bytes:
        return send_error(request, MethodNotAllowed(f"method {request.method.decode()} not allowed"))
