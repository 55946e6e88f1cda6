# -*- test-case-name: tests.test_openai -*-
"""OpenAI ``POST /v1/completions`` (``/completions`` is llama-server's native route)."""

from __future__ import annotations

import dataclasses
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.completion import final_json_fields, partial_json, prompt_texts
from llamatwist.api.constraints import apply_constraint
from llamatwist.api.errors import InvalidRequest
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.openai.protocol import (
    completion_id,
    completion_logprobs,
    envelope,
    final_envelope,
    finish_reason,
    parse_stream_options,
    usage,
)
from llamatwist.api.openai.streaming import stream_oai
from llamatwist.api.params import (
    optional,
    parse_chat_format,
    parse_completion,
    parse_reasoning_format,
    parse_verbose,
    read_n_probs,
    refuse_response_fields,
)
from llamatwist.api.pipeline import expand, run_tasks, tokenize_prompts
from llamatwist.api.prompt_log import log_prompt
from llamatwist.api.streaming import SSEStream, partial_extras
from llamatwist.runtime import FinalResult, PartialResult

__all__ = ["register"]


def _logprobs_option(body: dict[str, Any]) -> int:
    lp = body.get("logprobs")
    return 0 if lp is None else read_n_probs("logprobs", lp)


def _ignored_options(body: dict[str, Any]) -> None:
    """OpenAI's ``best_of`` and ``suffix``: the pinned llama-server takes and ignores them (each prompt gets
    ``n`` completions, the text has no suffix), so clients that always send them work; only their form is
    checked."""
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1):
        raise InvalidRequest("'best_of' must be an integer >= 1")
    if body.get("suffix") is not None and not isinstance(body["suffix"], str):
        raise InvalidRequest("'suffix' must be a string")


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/v1/completions", methods=["POST"])
    @handler
    async def completions(request: Request) -> Any:
        loaded = ctx.require_generation()
        body = read_json(request)
        _ignored_options(body)
        refuse_response_fields(body)
        # accepted as llama-server does; the OpenAI text completion shows neither (its text is the raw output)
        parse_chat_format(body)
        parse_reasoning_format(body, ctx.config.reasoning_format)
        verbose = parse_verbose(body, ctx.config.verbose)
        echo = optional(body, "echo", False)
        if not isinstance(echo, bool):
            raise InvalidRequest("'echo' must be a boolean")
        top_n = _logprobs_option(body)
        if top_n and body.get("n_probs") is None:
            body = {**body, "n_probs": max(top_n, 1)}
        req = parse_completion(body, ctx.config.sampling, loaded.n_slots)
        req = dataclasses.replace(req, params=await apply_constraint(ctx, body, req.params))
        stream_opts = parse_stream_options(body, req.params.stream)
        await log_prompt(ctx, body.get("prompt"))
        prompts = expand(await tokenize_prompts(ctx, loaded, req.prompts), req.n_cmpl)
        texts = await prompt_texts(ctx, prompts) if echo or verbose else []

        def echoed(index: int) -> str:
            return texts[index] if echo else ""

        cid = completion_id("cmpl-")
        model = ctx.model_alias

        def logprobs(r: FinalResult | PartialResult, index: int) -> Any:
            if not top_n or not r.probs:
                return None
            return completion_logprobs(r.probs, top_n, len(echoed(index)))

        if not req.params.stream:
            try:
                results = await run_tasks(ctx, request, prompts, req.params)
            except CancelledError:
                return b""
            choices = [
                {
                    "text": echoed(i) + r.content,
                    "index": i,
                    "logprobs": logprobs(r, i),
                    "finish_reason": finish_reason(r.stop_type),
                }
                for i, r in enumerate(results)
            ]
            out = final_envelope("text_completion", cid, model, choices, results, req.n_cmpl)
            if verbose:
                out["__verbose"] = final_json_fields(ctx, results[-1], len(results) - 1, req.params, texts[-1])
            return send_json(request, out)

        sse = SSEStream(request, req.params.sse_ping_interval)
        sent: set[int] = set()  # choices whose prompt went out

        def text_chunk(index: int, text: str, lp: Any, reason: str | None) -> dict[str, Any]:
            if echo and index not in sent:
                sent.add(index)
                text = echoed(index) + text
            return envelope("text_completion", cid, model,
                            [{"text": text, "index": index, "logprobs": lp, "finish_reason": reason}])

        def partial(index: int, r: PartialResult) -> None:
            chunk = {**text_chunk(index, r.content, logprobs(r, index), None), **partial_extras(r)}
            if verbose:
                chunk["__verbose"] = partial_json(r, index, req.params)
            sse.send(chunk)

        def final(index: int, r: FinalResult) -> None:
            chunk = text_chunk(index, "", None, finish_reason(r.stop_type))
            chunk["usage"] = usage([r], 1)  # llama-server's last chunk of each choice carries its usage
            chunk["timings"] = r.timings.to_json()
            if verbose:
                chunk["__verbose"] = final_json_fields(ctx, r, index, req.params, texts[index])
            sse.send(chunk)

        tail = ("text_completion", cid, model, req.n_cmpl, stream_opts.include_usage)
        return await stream_oai(ctx, request, sse, prompts, req.params, partial, final, tail)
