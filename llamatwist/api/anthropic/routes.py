# -*- test-case-name: tests.test_anthropic -*-
"""The Anthropic routes: translate, run through the chat pipeline, translate back (JSON or SSE).

A stream is Anthropic's event sequence, each as ``event: NAME`` + ``data: {...}``: ``message_start`` (with
the first token, as llama-server: headers, and so an error's status, wait for it) and a ``ping``, the content
block events, ``message_delta`` (stop reason, usage) and ``message_stop``; an error after the start is an
``error`` event in Anthropic's shape. The answer to every error on these paths, whatever layer raises it, is
Anthropic's body (registered with api/errors.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.anthropic.request import to_chat_body
from llamatwist.api.anthropic.response import (
    BlockStream,
    Event,
    error_shape,
    message_id,
    message_json,
    stop_fields,
    usage_json,
)
from llamatwist.api.errors import REPORTED, answer, register_error_shape
from llamatwist.api.http import ApiContext, handler, json_bytes, read_json, send_json
from llamatwist.api.openai.chat import count_chat_tokens, prepare_chat
from llamatwist.api.openai.tools import MessageStream
from llamatwist.api.pipeline import run_tasks
from llamatwist.api.streaming import SSEStream
from llamatwist.chat.toolcalls import ChatSyntax
from llamatwist.runtime import FinalResult, GenerationParams, PartialResult

__all__ = ["register"]

PATH = b"/v1/messages"


async def _stream(
    ctx: ApiContext, request: Request, prompts: list[list[int]], params: GenerationParams,
    syntax: ChatSyntax | None, stops: tuple[str, ...],
) -> bytes:
    sse = SSEStream(request, params.sse_ping_interval)
    mid, model = message_id(), ctx.model_alias
    text, blocks = MessageStream(syntax), BlockStream()
    begun = False  # message_start sent (a ':' keep-alive comment may have started the response before it)
    cached = 0  # the prompt's tokens found in the cache, from the first progress event

    def send(events: list[Event]) -> None:
        for name, data in events:
            sse.send_raw(b"event: " + name.encode() + b"\ndata: " + json_bytes(data) + b"\n\n")

    def start(n_prompt: int) -> None:
        nonlocal begun
        if begun:
            return
        begun = True
        usage = {"cache_read_input_tokens": cached, "input_tokens": n_prompt - cached, "output_tokens": 0}
        message: dict[str, Any] = {"id": mid, "type": "message", "role": "assistant", "content": [], "model": model,
                                   "stop_reason": None, "stop_sequence": None, "usage": usage}
        send([("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})])

    def partial(index: int, r: PartialResult) -> None:
        nonlocal cached
        if r.progress is not None:  # asked for below; not an Anthropic event
            cached = cached or r.progress.cache
            return
        start(r.n_prompt_tokens)
        send(blocks.feed(text.feed(r.content)))

    def final(index: int, r: FinalResult) -> None:
        nonlocal cached
        cached = r.n_cached
        start(r.n_prompt_tokens)
        msg, deltas = text.finish(r.content)
        delta = {"type": "message_delta", "delta": stop_fields(r, msg, stops), "usage": usage_json(r)}
        send([*blocks.feed(deltas), *blocks.close(), ("message_delta", delta), ("message_stop", {"type": "message_stop"})])

    # the runtime's first prompt-progress event says how much of the prompt the cache held, which
    # message_start's usage reports as llama-server's does (from the task's first token)
    params = dataclasses.replace(params, return_progress=True)
    try:
        await run_tasks(ctx, request, prompts, params, on_partial=partial, on_final=final)
    except CancelledError:
        return b""
    except REPORTED as err:
        if not sse.started:
            sse.send_error(err)  # a plain JSON error with its status (Anthropic's shape: registered below)
        else:
            send([("error", error_shape(answer(err)))])
    return b""


def register(app: Klein, ctx: ApiContext) -> None:
    register_error_shape(PATH, error_shape)

    @app.route("/v1/messages", methods=["POST"])
    @handler
    async def messages(request: Request) -> Any:
        loaded = ctx.require_generation()
        body = to_chat_body(read_json(request))
        prepared = await prepare_chat(ctx, loaded, body)
        params, stops = prepared.req.params, tuple(body.get("stop") or ())
        if params.stream:
            return await _stream(ctx, request, prepared.prompts, params, prepared.syntax, stops)
        try:
            results = await run_tasks(ctx, request, prepared.prompts, params)
        except CancelledError:
            return b""
        r = results[0]
        msg = MessageStream(prepared.syntax).finish(r.content)[0]
        return send_json(request, message_json(message_id(), ctx.model_alias, msg, r, stops))

    @app.route("/v1/messages/count_tokens", methods=["POST"])
    @handler
    async def count_tokens(request: Request) -> Any:
        """The prompt tokens of the request: what the chat route's usage.prompt_tokens would say."""
        loaded = ctx.require_generation()
        n_tokens = await count_chat_tokens(ctx, loaded, to_chat_body(read_json(request), count_only=True))
        return send_json(request, {"input_tokens": n_tokens})
