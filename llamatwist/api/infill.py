# -*- test-case-name: tests.test_infill -*-
"""``POST /infill``: fill-in-the-middle with the model's FIM tokens."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.completion import final_json_fields, prompt_texts, stream_native
from llamatwist.api.constraints import apply_constraint
from llamatwist.api.errors import InvalidRequest
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.params import generation_params, optional, parse_output_options
from llamatwist.api.pipeline import run_tasks
from llamatwist.api.prompt_log import log_prompt
from llamatwist.engine.model import FimTokens
from llamatwist.runtime import ContextExceeded, LoadedModel

__all__ = ["InfillRequest", "format_infill", "infill_tokens", "parse_infill", "register"]

# "\n\n--- snippet ---\n\n": separates extra chunks for models without FIM_SEP
CHUNK_SEPARATOR = "\n\n--- snippet ---\n\n"


@dataclass(frozen=True)
class InfillRequest:
    prefix: str
    suffix: str
    extra: list[tuple[str, str]]  # (filename, text)
    prompt: str


def parse_infill(body: Mapping[str, Any]) -> InfillRequest:
    prompt = optional(body, "prompt", "")
    if not isinstance(prompt, str):
        raise InvalidRequest('"prompt" must be a string')
    for field in ("input_prefix", "input_suffix"):
        if field not in body:
            raise InvalidRequest(f'"{field}" is required')
        if not isinstance(body[field], str):
            raise InvalidRequest(f'"{field}" must be a string')
    extra = optional(body, "input_extra", [])
    if not isinstance(extra, list):
        raise InvalidRequest('"input_extra" must be an array of {"filename": string, "text": string}')
    chunks = []
    for chunk in extra:
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise InvalidRequest('extra_context chunk must contain a "text" field with a string value')
        filename = chunk.get("filename", "tmp")
        if not isinstance(filename, str):
            raise InvalidRequest('extra_context chunk\'s "filename" field must be a string')
        chunks.append((filename, chunk["text"]))
    return InfillRequest(body["input_prefix"], body["input_suffix"], chunks, prompt)


def format_infill(
    tokenize: Callable[[str], list[int]],
    fim: FimTokens,
    req: InfillRequest,
    *,
    n_batch: int,
    n_predict: int,
    n_ctx: int,
    spm_infill: bool,
) -> list[int]:
    """llama-server's repo-level FIM layout:
    [FIM_REP]myproject\\n [FIM_SEP]file\\n chunk ... [FIM_SEP]filename\\n [FIM_PRE]prefix[FIM_SUF]suffix[FIM_MID]
    (suffix first with --spm-infill); prefix:suffix kept at 3:1 of a batch, extra chunks fill the rest."""
    extra: list[int] = []
    if fim.rep >= 0:
        extra += [fim.rep, *tokenize("myproject\n")]
    for filename, text in req.extra:
        if fim.sep >= 0:
            extra += [fim.sep, *tokenize(filename + "\n")]
        else:
            extra += tokenize(CHUNK_SEPARATOR)
        extra += tokenize(text)
    if fim.sep >= 0:
        extra += [fim.sep, *tokenize("filename\n")]

    prefix = tokenize(req.prefix)
    suffix = tokenize(req.suffix)
    prompt = tokenize(req.prompt) if req.prompt else []
    n_prefix_take = min(len(prefix), 3 * (n_batch // 4))
    n_suffix_take = min(len(suffix), max(0, n_batch // 4 - (2 + len(prompt))))
    n_extra_take = min(max(0, n_ctx - n_batch - 2 * n_predict), len(extra))

    prefix_part = [fim.pre, *prefix[len(prefix) - n_prefix_take :], *prompt]
    suffix_part = [fim.suf, *suffix[:n_suffix_take]]
    first, second = (suffix_part, prefix_part) if spm_infill else (prefix_part, suffix_part)
    head = [fim.bos] if fim.add_bos else []
    return extra[len(extra) - n_extra_take :] + head + first + second + [fim.mid]


async def infill_tokens(ctx: ApiContext, loaded: LoadedModel, fim: FimTokens, req: InfillRequest,
                        n_predict: int) -> list[int]:
    """The request laid out for this model and server (batch, context, ``--spm-infill``), checked against
    the slot's context."""
    tokens = await ctx.engine.vocab_call(
        lambda tokenize: format_infill(
            tokenize, fim, req, n_batch=loaded.n_batch, n_predict=max(n_predict, 0),
            n_ctx=loaded.n_ctx_slot, spm_infill=ctx.config.spm_infill,
        )
    )
    if len(tokens) >= loaded.n_ctx_slot:
        raise ContextExceeded(len(tokens), loaded.n_ctx_slot)
    return tokens


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/infill", methods=["POST"])
    @handler
    async def infill(request: Request) -> Any:
        loaded = ctx.require_generation()
        fim = ctx.engine.fim_tokens()
        if fim.missing():
            # llama-server answers 501 here; a request to a model without FIM tokens is a client error.
            raise InvalidRequest(f"Infill is not supported by this model: {fim.missing().strip()}")
        body = read_json(request)
        req = parse_infill(body)
        params = await apply_constraint(ctx, body, generation_params(body, ctx.config.sampling))
        options = parse_output_options(body, ctx.config.reasoning_format)
        params = options.echoed_by(params)
        tokens = await infill_tokens(ctx, loaded, fim, req, params.n_predict)
        await log_prompt(ctx, tokens)  # llama-server logs the assembled infill prompt: its token ids
        if not params.stream:
            try:
                results = await run_tasks(ctx, request, [tokens], params)
            except CancelledError:
                return b""
            prompt = (await prompt_texts(ctx, [tokens]))[0]
            return send_json(request, final_json_fields(ctx, results[0], 0, params, prompt, options))
        return await stream_native(ctx, request, [tokens], params, options)
