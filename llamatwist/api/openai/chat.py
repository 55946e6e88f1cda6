# -*- test-case-name: tests.test_openai -*-
"""OpenAI ``POST /v1/chat/completions`` (also ``/chat/completions``) and ``POST /apply-template``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.constraints import apply_constraint
from llamatwist.api.errors import InvalidRequest
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.openai.protocol import (
    StreamOptions,
    chat_logprobs,
    completion_id,
    envelope,
    finish_reason,
    parse_stream_options,
    stream_oai,
    usage,
)
from llamatwist.api.params import generation_params, parse_n_cmpl
from llamatwist.api.pipeline import expand, run_tasks, tokenize_prompts
from llamatwist.api.streaming import SSEStream
from llamatwist.config import SamplingDefaults
from llamatwist.runtime.task import FinalResult, GenerationParams, PartialResult

__all__ = ["ChatRequest", "parse_chat", "register"]


@dataclass(frozen=True)
class ChatRequest:
    params: GenerationParams
    n_cmpl: int
    top_logprobs: int  # 0 = no logprobs
    stream_options: StreamOptions


def parse_chat(body: Mapping[str, Any], defaults: SamplingDefaults, n_slots: int) -> ChatRequest:
    # messages are validated by the chat template layer (llamatwist.chat) when rendered;
    # an empty list is refused here, as OpenAI does
    if body.get("messages") == []:
        raise InvalidRequest("'messages' must not be empty")
    if body.get("tools"):
        raise InvalidRequest("tools are not supported yet")
    logprobs = body.get("logprobs", False)
    if logprobs is None:
        logprobs = False
    if not isinstance(logprobs, bool):
        raise InvalidRequest("'logprobs' must be a boolean")
    top = body.get("top_logprobs")
    if top is not None:
        if not logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be set to true")
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
            raise InvalidRequest("'top_logprobs' must be an integer between 0 and 20")
    top_n = (20 if top is None else top) if logprobs else 0
    if logprobs and body.get("n_probs") is None:
        # the sampled token's own logprob needs at least one candidate
        body = {**body, "n_probs": max(top_n, 1)}
    params = generation_params(body, defaults)
    return ChatRequest(
        params=params,
        n_cmpl=parse_n_cmpl(body, n_slots),
        top_logprobs=top_n if logprobs else -1,
        stream_options=parse_stream_options(body, params.stream),
    )


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/apply-template", methods=["POST"])
    @handler
    async def apply_template(request: Request) -> Any:
        ctx.require_generation()
        body = read_json(request)
        return send_json(request, {"prompt": ctx.chat.render(body)})

    @app.route("/v1/chat/completions", methods=["POST"])
    @app.route("/chat/completions", methods=["POST"])
    @handler
    async def chat_completions(request: Request) -> Any:
        loaded = ctx.require_generation()
        body = read_json(request)
        req = parse_chat(body, ctx.config.sampling, loaded.n_slots)
        req = dataclasses.replace(req, params=await apply_constraint(ctx, body, req.params))
        # Rendering comes after parameter checks, like llama-server. The template's own BOS
        # text is stripped when the vocab adds BOS, so add_special is right.
        tokens = await tokenize_prompts(ctx, loaded, [[ctx.chat.render(body)]])
        prompts = expand(tokens, req.n_cmpl)
        cid = completion_id("chatcmpl-")
        model = ctx.model_alias

        def logprobs(r: FinalResult | PartialResult) -> Any:
            return chat_logprobs(r.probs, req.top_logprobs) if req.top_logprobs >= 0 and r.probs else None

        if not req.params.stream:
            try:
                results = await run_tasks(ctx, request, prompts, req.params)
            except CancelledError:
                return b""
            choices = []
            for i, r in enumerate(results):
                choice: dict[str, Any] = {
                    "finish_reason": finish_reason(r.stop_type),
                    "index": i,
                    "message": {"role": "assistant", "content": r.content},
                }
                if logprobs(r) is not None:
                    choice["logprobs"] = logprobs(r)
                choices.append(choice)
            out = envelope("chat.completion", cid, model, choices)
            out["usage"] = usage(results, req.n_cmpl)
            out["timings"] = results[-1].timings.to_json()
            return send_json(request, out)

        sse = SSEStream(request)
        started: set[int] = set()

        def delta_chunk(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            return envelope("chat.completion.chunk", cid, model,
                            [{"finish_reason": reason, "index": index, "delta": delta}])

        def partial(index: int, r: PartialResult) -> None:
            if index not in started:
                # OpenAI's first delta carries the role
                started.add(index)
                sse.send(delta_chunk(index, {"role": "assistant", "content": None}))
            if r.content:
                chunk = delta_chunk(index, {"content": r.content})
                lp = logprobs(r)
                if lp is not None:
                    chunk["choices"][0]["logprobs"] = lp
                sse.send(chunk)

        def final(index: int, r: FinalResult) -> None:
            if index not in started:
                started.add(index)
                sse.send(delta_chunk(index, {"role": "assistant", "content": None}))
            chunk = delta_chunk(index, {}, finish_reason(r.stop_type))
            chunk["timings"] = r.timings.to_json()
            sse.send(chunk)

        tail = ("chat.completion.chunk", cid, model, req.n_cmpl, req.stream_options.include_usage)
        return await stream_oai(ctx, request, sse, prompts, req.params, partial, final, tail)
