# -*- test-case-name: tests.test_server -*-
"""``POST /tokenize`` and ``POST /detokenize``."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.server import Request

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.params import parse_detokenize, parse_tokenize
from llamatwist.runtime import utf8_valid_prefix

__all__ = ["register"]


def piece_json(piece: bytes) -> str | list[int]:
    """A piece as text when it is whole UTF-8, else as its byte values."""
    if utf8_valid_prefix(piece) == len(piece):
        try:
            return piece.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return list(piece)


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/tokenize", methods=["POST"])
    @handler
    async def tokenize(request: Request) -> Any:
        ctx.require_ready()
        req = parse_tokenize(read_json(request))
        tokens = await ctx.engine.tokenize(req.content, req.add_special, req.parse_special)
        if not req.with_pieces:
            return send_json(request, {"tokens": tokens})
        return send_json(
            request, {"tokens": [{"id": t, "piece": piece_json(ctx.engine.token_piece(t))} for t in tokens]}
        )

    @app.route("/detokenize", methods=["POST"])
    @handler
    async def detokenize(request: Request) -> Any:
        ctx.require_ready()
        tokens = parse_detokenize(read_json(request))
        bad = [t for t in tokens if not ctx.engine.valid_token(t)]
        if bad:
            raise InvalidRequest(f"invalid token id {bad[0]}")
        return send_json(request, {"content": await ctx.engine.detokenize(tokens)})
