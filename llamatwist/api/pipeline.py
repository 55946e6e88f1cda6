# -*- test-case-name: tests.test_server -*-
"""The generation pipeline shared by every completion-style route:
tokenize and validate prompts, submit tasks, collect or stream results,
cancel on disconnect."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred, gatherResults
from twisted.web.server import Request

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.http import ApiContext
from llamatwist.api.lora import check_lora_ids
from llamatwist.api.params import Prompt
from llamatwist.api.stream_sessions import SESSIONS
from llamatwist.api.streaming import on_disconnect
from llamatwist.engine.mtmd import ProjectorError
from llamatwist.media import EncodedMedia, MediaError, MediaInput, decode_media
from llamatwist.runtime import (
    CompletionTask,
    ContextExceeded,
    EmbeddingResult,
    ErrorResult,
    FinalResult,
    GenerationParams,
    InputTooLarge,
    LoadedModel,
    PartialResult,
    PromptTokens,
    Result,
)

__all__ = ["check_prompt", "expand", "run_embeddings", "run_tasks", "tokenize_prompts"]

T = TypeVar("T")


def expand(prompts: list[T], n_cmpl: int) -> list[T]:
    """Each prompt ``n_cmpl`` times; result index = prompt index * n_cmpl + k."""
    return [p for p in prompts for _ in range(n_cmpl)]


NO_PROJECTOR = ("media input (multimodal_data, image_url, input_audio or input_video parts) needs a multimodal "
                "projector: this server was started without --mmproj")


async def tokenize_prompts(
    ctx: ApiContext, loaded: LoadedModel, prompts: list[Prompt], add_special: bool = True, embed: bool = False
) -> list[list[int]]:
    """Tokenize every prompt and check it (`check_prompt`)."""
    out = []
    for prompt in prompts:
        if any(isinstance(p, (EncodedMedia, MediaInput)) for p in prompt):
            tokens: list[int] = await _tokenize_media(ctx, loaded, prompt, add_special)
        else:
            tokens = await ctx.engine.tokenize([p for p in prompt if isinstance(p, (str, int))], add_special, True)
        check_prompt(ctx, loaded, tokens, embed)
        out.append(tokens)
    return out


def check_prompt(ctx: ApiContext, loaded: LoadedModel, tokens: list[int], embed: bool = False) -> None:
    """A prompt's tokens are the vocabulary's and fit a slot (``embed``: first the micro-batch, which an
    embedding's prompt must fit whole, as llama-server checks it)."""
    if not tokens:
        raise InvalidRequest("the prompt is empty after tokenization")
    media = bool(getattr(tokens, "media", ()))  # placeholder ids (negative) stand for media positions
    if not all((media and t < 0) or ctx.engine.valid_token(t) for t in tokens):
        raise InvalidRequest("Prompt contains invalid tokens")
    if embed and len(tokens) > loaded.n_ubatch:
        raise InputTooLarge(len(tokens), loaded.n_ubatch)
    if len(tokens) >= loaded.n_ctx_slot:
        raise ContextExceeded(len(tokens), loaded.n_ctx_slot)


async def _tokenize_media(ctx: ApiContext, loaded: LoadedModel, prompt: Prompt, add_special: bool) -> PromptTokens:
    """A prompt with media: each file decoded in the thread pool, then text and media through the projector."""
    if not (loaded.vision or loaded.audio):
        raise InvalidRequest(NO_PROJECTOR)
    parts: list[str | MediaInput] = []
    for p in prompt:
        if isinstance(p, int):
            raise InvalidRequest("a prompt with media must be text: token ids cannot be mixed with media")
        try:
            parts.append(await ctx.engine.in_pool(decode_media, p.data) if isinstance(p, EncodedMedia) else p)
        except MediaError as exc:
            raise InvalidRequest(str(exc)) from None
    if not isinstance(parts[-1], str) or not parts[-1]:
        raise InvalidRequest("a prompt must have text after its last media item (where generation starts)")
    try:
        return await ctx.engine.tokenize_media(parts, add_special, True)
    except ProjectorError as exc:
        raise InvalidRequest(str(exc)) from None


def run_tasks(
    ctx: ApiContext,
    request: Request,
    prompts: list[list[int]],
    params: GenerationParams,
    on_partial: Any = None,
    on_final: Any = None,
) -> Deferred[list[FinalResult]]:
    """Submit one generation task per prompt; fires with the final results in
    order. A client disconnect cancels every task (their slots free next step)."""
    return _run(ctx, request, prompts, params, FinalResult, on_partial, on_final, embed=False)


def run_embeddings(ctx: ApiContext, request: Request, prompts: list[list[int]]) -> Deferred[list[EmbeddingResult]]:
    """One embedding (or rank score) task per prompt; same lifecycle as run_tasks."""
    return _run(ctx, request, prompts, GenerationParams(cache_prompt=False), EmbeddingResult, None, None, embed=True)


def _run(
    ctx: ApiContext,
    request: Request,
    prompts: list[list[int]],
    params: GenerationParams,
    final_type: type[FinalResult | EmbeddingResult],
    on_partial: Any,
    on_final: Any,
    embed: bool,
) -> Deferred[Any]:
    if params.lora is not None:
        check_lora_ids(params.lora, len(ctx.require_ready().loras))
    tasks: list[CompletionTask] = []
    finals: list[Deferred[Any]] = []
    metrics = None if embed else ctx.request_metrics
    first_seen = False  # the request's first token came (its time counted once, whatever its choices)

    def observe(result: PartialResult | FinalResult) -> None:
        nonlocal first_seen
        assert metrics is not None
        if not first_seen and (isinstance(result, FinalResult) or result.tokens or result.content):
            first_seen = True
            metrics.first_token(request)
        if isinstance(result, FinalResult):
            metrics.finished(result.n_prompt_tokens, result.n_decoded)

    for index, tokens in enumerate(prompts):
        d: Deferred[Any] = Deferred()

        def sink(result: Result, d: Deferred[Any] = d, index: int = index) -> None:
            if d.called:
                return
            if metrics is not None and isinstance(result, (PartialResult, FinalResult)):
                observe(result)
            if isinstance(result, PartialResult):
                if on_partial is not None:
                    on_partial(index, result)
            elif isinstance(result, final_type):
                if on_final is not None:
                    on_final(index, result)
                d.callback(result)
            elif isinstance(result, ErrorResult):
                d.errback(result.error)

        task = CompletionTask(tokens, params, sink, embed=embed)
        tasks.append(task)
        finals.append(d)

    def cancel_all() -> None:
        for t in tasks:
            ctx.engine.cancel(t.id)
        for d in finals:
            if not d.called:
                d.cancel()

    session = SESSIONS.of(request)
    if session is not None:  # a resumable stream goes on without its client: DELETE /v1/stream stops it
        session.on_cancel.append(cancel_all)
    else:
        on_disconnect(request, cancel_all)
    for t in tasks:
        ctx.engine.submit(t)
    return gatherResults(finals, consumeErrors=True).addErrback(_first_error)


def _first_error(failure: Any) -> Any:
    # gatherResults wraps the failure; surface the task's own error.
    return failure.value.subFailure if hasattr(failure.value, "subFailure") else failure
