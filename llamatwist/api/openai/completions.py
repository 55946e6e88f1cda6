# -*- test-case-name: tests.test_openai -*-
"""OpenAI ``POST /v1/completions`` (``/completions`` is llama-server's native route)."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.completion import final_json_fields, partial_json, prompt_texts
from llamatwist.api.constraints import apply_constraint
from llamatwist.api.errors import InvalidRequest
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.infill import InfillRequest, infill_tokens
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
    INT32_MAX,
    Prompt,
    optional,
    parse_chat_format,
    parse_completion,
    parse_reasoning_format,
    parse_verbose,
    read_int,
    read_n_probs,
    refuse_response_fields,
)
from llamatwist.api.pipeline import expand, run_tasks, tokenize_prompts
from llamatwist.api.prompt_log import log_prompt
from llamatwist.api.streaming import SSEStream, partial_extras
from llamatwist.engine.model import FimTokens
from llamatwist.runtime import FinalResult, LoadedModel, PartialResult

__all__ = ["mean_logprob", "parse_best_of", "pick_best", "register"]

log = logging.getLogger(__name__)


def _logprobs_option(body: dict[str, Any]) -> int:
    lp = body.get("logprobs")
    return 0 if lp is None else read_n_probs("logprobs", lp)


def parse_best_of(body: dict[str, Any], n: int, n_slots: int, stream: bool) -> int:
    """OpenAI's ``best_of``: candidates generated per prompt, of which the ``n`` best are returned; ``n`` to
    the slot count (as ``n``), and only ``n`` when streaming (the best is known only at the end)."""
    best_of = read_int("best_of", optional(body, "best_of", n), 1, INT32_MAX)
    if not n <= best_of <= n_slots:
        raise InvalidRequest(f"'best_of' must be from n ({n}) to the number of slots ({n_slots}), got {best_of}")
    if stream and best_of > n:
        raise InvalidRequest("'best_of' larger than 'n' cannot be streamed: the best completions are known "
                             "only when all are done")
    return best_of


def mean_logprob(result: FinalResult) -> float:
    """A completion's log probability per token, the ``best_of`` ranking (OpenAI's)."""
    if not result.probs:
        return 0.0
    return sum(math.log(max(p.prob, 1e-45)) for p in result.probs) / len(result.probs)


def pick_best(results: list[FinalResult], best_of: int, n: int) -> list[int]:
    """Indexes of the ``n`` best of each prompt's ``best_of`` candidates, best first, prompt by prompt."""
    picked: list[int] = []
    for start in range(0, len(results), best_of):
        group = range(start, start + best_of)
        picked += sorted(group, key=lambda i: -mean_logprob(results[i]))[:n]
    return picked


def parse_suffix(body: dict[str, Any]) -> str:
    suffix = optional(body, "suffix", "")
    if not isinstance(suffix, str):
        raise InvalidRequest("'suffix' must be a string")
    return suffix


async def fill_in_the_middle(ctx: ApiContext, loaded: LoadedModel, fim: FimTokens, prompts: list[Prompt],
                             suffix: str, n_predict: int) -> list[tuple[str, list[int]]]:
    """Each text prompt as the prefix before ``suffix``, laid out as ``/infill`` does: (prefix, tokens)."""
    out = []
    for prompt in prompts:
        if not all(isinstance(p, str) for p in prompt):
            raise InvalidRequest("'suffix' needs text prompts: token ids and media cannot be filled in the middle")
        prefix = "".join(p for p in prompt if isinstance(p, str))
        out.append((prefix, await infill_tokens(ctx, loaded, fim, InfillRequest(prefix, suffix, [], ""),
                                                n_predict)))
    return out


def register(app: Klein, ctx: ApiContext) -> None:
    suffix_ignored = False  # warned once per server: scripts that always send a suffix would flood the log

    @app.route("/v1/completions", methods=["POST"])
    @handler
    async def completions(request: Request) -> Any:
        nonlocal suffix_ignored
        loaded = ctx.require_generation()
        body = read_json(request)
        suffix = parse_suffix(body)
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
        best_of = parse_best_of(body, req.n_cmpl, loaded.n_slots, req.params.stream)
        params = await apply_constraint(ctx, body, req.params)
        if best_of > req.n_cmpl and not params.n_probs:
            params = dataclasses.replace(params, n_probs=1)  # the ranking needs each token's probability
        req = dataclasses.replace(req, params=params)
        stream_opts = parse_stream_options(body, req.params.stream)
        await log_prompt(ctx, body.get("prompt"))
        fim = ctx.engine.fim_tokens() if suffix else None
        if fim is not None and fim.missing():
            # llama-server ignores suffix on every model; here a FIM model fills the middle, others go on as it
            if not suffix_ignored:
                log.warning("'suffix' ignored: the model has no fill-in-the-middle tokens (%s)",
                            fim.missing().strip())
                suffix_ignored = True
            fim = None
        if fim is not None:
            filled = await fill_in_the_middle(ctx, loaded, fim, req.prompts, suffix, req.params.n_predict)
            prompts = expand([tokens for _, tokens in filled], best_of)
            echo_texts = expand([prefix for prefix, _ in filled], best_of)  # the client's text, not the layout
        else:
            prompts = expand(await tokenize_prompts(ctx, loaded, req.prompts), best_of)
        texts = await prompt_texts(ctx, prompts) if echo or verbose else []

        def echoed(index: int) -> str:
            if not echo:
                return ""
            return echo_texts[index] if fim is not None else texts[index]

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
            picked = pick_best(results, best_of, req.n_cmpl)
            choices = [
                {
                    "text": echoed(i) + results[i].content,
                    "index": k,
                    "logprobs": logprobs(results[i], i),
                    "finish_reason": finish_reason(results[i].stop_type),
                }
                for k, i in enumerate(picked)
            ]
            # usage counts every candidate's tokens, as OpenAI bills best_of
            out = final_envelope("text_completion", cid, model, choices, results, best_of)
            if verbose:
                last = picked[-1]
                out["__verbose"] = final_json_fields(ctx, results[last], len(picked) - 1, req.params, texts[last])
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
