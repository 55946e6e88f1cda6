# -*- test-case-name: tests.test_server -*-
"""Native ``POST /completion`` (llama-server's own, not OpenAI's shape)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.web.server import Request

from llamatwist.api.constraints import apply_constraint, apply_reasoning_fields
from llamatwist.api.errors import REPORTED
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.params import OutputOptions, parse_completion, parse_output_options, project_fields
from llamatwist.api.pipeline import expand, run_tasks, tokenize_prompts
from llamatwist.api.prompt_log import log_prompt
from llamatwist.api.streaming import SSEStream, partial_extras
from llamatwist.runtime import FinalResult, GenerationParams, PartialResult, TokenProbs

__all__ = ["final_json_fields", "generation_settings", "partial_json", "probs_json", "prompt_texts", "register",
           "stream_native"]

FLOAT_LOWEST = -3.4028234663852886e38  # llama-server's log(0) stand-in (JSON has no -inf)


def _bias(b: float) -> float | None:
    return b if math.isfinite(b) else None  # JSON has no infinities; llama-server's writes null


def generation_settings(p: GenerationParams, seed: int, eog: Sequence[int] = ()) -> dict[str, Any]:
    """llama-server's generation_settings (the output parser's entries are ``p.parser_settings``);
    ``eog``: the model's end-of-generation tokens, listed as banned biases when ignore_eos (as llama-server)."""
    s = p.sampler
    banned = [{"bias": None, "token": t} for t in eog] if s.ignore_eos else []
    return {
        "seed": seed,
        "temperature": s.temperature,
        "dynatemp_range": s.dynatemp_range,
        "dynatemp_exponent": s.dynatemp_exponent,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "top_n_sigma": s.top_n_sigma,
        "xtc_probability": s.xtc_probability,
        "xtc_threshold": s.xtc_threshold,
        "typical_p": s.typical_p,
        "repeat_last_n": s.repeat_last_n,
        "repeat_penalty": s.repeat_penalty,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "dry_multiplier": s.dry_multiplier,
        "dry_base": s.dry_base,
        "dry_allowed_length": s.dry_allowed_length,
        "dry_penalty_last_n": s.dry_penalty_last_n,
        "dry_sequence_breakers": list(s.dry_sequence_breakers),
        "mirostat": s.mirostat,
        "mirostat_tau": s.mirostat_tau,
        "mirostat_eta": s.mirostat_eta,
        "adaptive_target": s.adaptive_target,
        "adaptive_decay": s.adaptive_decay,
        "stop": list(p.stop),
        "max_tokens": p.n_predict,
        "n_predict": p.n_predict,
        "n_keep": p.n_keep,
        "n_discard": p.n_discard,
        "ignore_eos": s.ignore_eos,
        "stream": p.stream,
        # by token id (api.constraints resolves text keys), as llama-server
        "logit_bias": [*({"bias": _bias(b), "token": t} for t, b in s.logit_bias), *banned],
        "n_probs": p.n_probs,
        "min_keep": s.min_keep,
        "grammar": p.grammar_text,
        "grammar_lazy": p.grammar_lazy,
        "grammar_triggers": [{"type": k, "value": v, **({"token": t} if k == 0 else {})}
                             for k, v, t in p.grammar_triggers],
        "preserved_tokens": sorted(p.preserved_tokens),
        **dict(p.parser_settings),
        "samplers": list(s.samplers),
        **_speculative_settings(p),
        "timings_per_token": p.timings_per_token,
        "post_sampling_probs": s.post_sampling_probs,
        "backend_sampling": s.backend_sampling,
        "lora": [{"id": i, "scale": scale} for i, scale in (p.lora or ())],
    }


def _speculative_settings(p: GenerationParams) -> dict[str, Any]:
    spec = p.speculative
    if spec is None:
        return {"speculative.types": "none"}
    out: dict[str, Any] = {"speculative.types": spec.type, "speculative.n_max": spec.n_max,
                           "speculative.n_min": spec.n_min, "speculative.p_min": spec.p_min}
    types = spec.types
    if "ngram-simple" in types:
        out |= {"speculative.ngram_size_n": spec.ngram_size_n, "speculative.ngram_size_m": spec.ngram_size_m}
    if "ngram-mod" in types:
        out |= {"speculative.ngram_mod.n_match": spec.mod_n_match, "speculative.ngram_mod.n_min": spec.mod_n_min,
                "speculative.ngram_mod.n_max": spec.mod_n_max}
    for kind, size_n, size_m, hits in (("k", spec.map_k_size_n, spec.map_k_size_m, spec.map_k_min_hits),
                                       ("k4v", spec.map_k4v_size_n, spec.map_k4v_size_m, spec.map_k4v_min_hits)):
        if f"ngram-map-{kind}" in types:
            out |= {f"speculative.ngram_map_{kind}.size_n": size_n, f"speculative.ngram_map_{kind}.size_m": size_m,
                    f"speculative.ngram_map_{kind}.min_hits": hits}
    return out


def _logprob(p: float) -> float:
    return math.log(p) if p > 0 else FLOAT_LOWEST


def probs_json(probs: Sequence[TokenProbs], post_sampling: bool = False) -> list[dict[str, Any]]:
    """llama-server's ``completion_probabilities``: log-probabilities, or with
    ``post_sampling`` (post_sampling_probs) plain probabilities under the keys
    ``prob`` and ``top_probs``."""
    if post_sampling:
        return [
            {
                "id": tp.id,
                "token": tp.token,
                "bytes": tp.bytes,
                "prob": tp.prob,
                "top_probs": [{"id": t.id, "token": t.token, "bytes": t.bytes, "prob": t.prob} for t in tp.top],
            }
            for tp in probs
        ]
    return [
        {
            "id": tp.id,
            "token": tp.token,
            "bytes": tp.bytes,
            "logprob": _logprob(tp.prob),
            "top_logprobs": [
                {"id": t.id, "token": t.token, "bytes": t.bytes, "logprob": _logprob(t.prob)} for t in tp.top
            ],
        }
        for tp in probs
    ]


def final_json_fields(
    ctx: ApiContext,
    r: FinalResult,
    index: int,
    params: GenerationParams,
    prompt_text: str,
    options: OutputOptions | None = None,
) -> dict[str, Any]:
    """The final result of a native completion (also /infill), projected on the request's
    ``response_fields`` when it has some."""
    out: dict[str, Any] = {
        "index": index,
        "content": r.content,
        "tokens": r.tokens,
        "id_slot": r.id_slot,
        "stop": True,
        "model": ctx.model_alias,
        "tokens_predicted": r.n_decoded,
        "tokens_evaluated": r.n_prompt_tokens,
        "generation_settings": generation_settings(params, r.seed, ctx.require_ready().eog),
        "prompt": prompt_text,
        "has_new_line": "\n" in r.content,
        "truncated": r.truncated,
        "stop_type": r.stop_type,
        "stopping_word": r.stopping_word,
        # the slot's cells: the last token sampled was never decoded
        "tokens_cached": r.n_prompt_tokens + max(r.n_decoded - 1, 0),
        "timings": r.timings.to_json(),
    }
    if not params.stream and r.probs:
        out["completion_probabilities"] = probs_json(r.probs, params.sampler.post_sampling_probs)
    if options is not None and options.response_fields:
        return project_fields(out, options.response_fields)
    return out


def partial_json(r: PartialResult, index: int, params: GenerationParams) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "index": index,
        "content": r.content,
        "tokens": r.tokens,  # always, as llama-server's partials (return_tokens fills the final result's)
        "stop": False,
        "id_slot": r.id_slot,
        "tokens_predicted": r.n_decoded,
        "tokens_evaluated": r.n_prompt_tokens,
    }
    chunk.update(partial_extras(r))
    if r.probs:
        chunk["completion_probabilities"] = probs_json(r.probs, params.sampler.post_sampling_probs)
    return chunk


async def stream_native(
    ctx: ApiContext,
    request: Request,
    prompts: list[list[int]],
    params: GenerationParams,
    options: OutputOptions | None = None,
) -> bytes:
    """llama-server's native SSE stream: a partial per token, then the final
    result per prompt (projected on ``response_fields``); no [DONE] terminator."""
    sse = SSEStream(request, params.sse_ping_interval)
    # each final result names its prompt: detokenized beside the generation, so the first token waits for nothing
    texts: Deferred[list[str]] = ensureDeferred(prompt_texts(ctx, prompts))

    def partial(index: int, r: PartialResult) -> None:
        sse.send(partial_json(r, index, params))

    def send_final(t: list[str], index: int, r: FinalResult) -> list[str]:
        sse.send(final_json_fields(ctx, r, index, params, t[index], options))
        return t

    def final(index: int, r: FinalResult) -> None:
        texts.addCallback(send_final, index, r)  # at once when the texts are there, else in order once they are

    error = None
    try:
        await run_tasks(ctx, request, prompts, params, on_partial=partial, on_final=final)
    except CancelledError:
        pass
    except REPORTED as err:
        error = err
    await texts  # the last finals go out first
    if error is not None:
        sse.send_error(error)
    return b""


async def prompt_texts(ctx: ApiContext, prompts: list[list[int]]) -> list[str]:
    """The prompts as text, special tokens written out (a final result's ``prompt``); each one once, however many
    completions (``n``) repeat it."""
    keys = [tuple(p) for p in prompts]
    texts: dict[tuple[int, ...], str] = {}
    for key, p in zip(keys, prompts):
        if key not in texts:
            texts[key] = await ctx.engine.detokenize(p)
    return [texts[key] for key in keys]


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/completion", methods=["POST"])
    @app.route("/completions", methods=["POST"])
    @handler
    async def completion(request: Request) -> Any:
        loaded = ctx.require_generation()
        body = read_json(request)
        req = parse_completion(body, ctx.config.sampling, loaded.n_slots)
        # chat_format and reasoning_format are echoed in generation_settings; as in llama-server, a native
        # completion's content is the raw text (its reasoning is not split out)
        options = parse_output_options(body, ctx.config.reasoning_format)
        await log_prompt(ctx, body.get("prompt"))
        prompts = expand(await tokenize_prompts(ctx, loaded, req.prompts), req.n_cmpl)
        params = options.echoed_by(await apply_reasoning_fields(ctx, body, await apply_constraint(ctx, body, req.params)))
        if params.stream:
            return await stream_native(ctx, request, prompts, params, options)
        try:
            results = await run_tasks(ctx, request, prompts, params)
        except CancelledError:
            return b""
        texts = await prompt_texts(ctx, prompts)
        out = [final_json_fields(ctx, r, i, params, texts[i], options) for i, r in enumerate(results)]
        return send_json(request, out[0] if len(out) == 1 else out)
