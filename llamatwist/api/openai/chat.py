# -*- test-case-name: tests.test_openai,tests.test_tools_api,tests.test_reasoning -*-
"""OpenAI ``POST /v1/chat/completions`` (also ``/chat/completions``) and ``POST /apply-template``.

With ``tools`` (or a template that thinks) a request goes through ``llamatwist.chat.toolcalls``: its plan
constrains the output (the generic format's JSON schema, or a native format's grammar) and adds the format's
instructions to the system message; the output is parsed into ``content``, ``reasoning_content`` and
``tool_calls`` — re-parsed on every streamed token so the deltas follow the text.

Media parts (``image_url``, ``input_audio``, ``input_video``/``video_url``) become media markers in the rendered prompt
(``chat.messages.extract_media``); their sources load meanwhile (``media.load``: data: URIs, file:// under
--media-path, http(s), base64; decoded in the thread pool) and the prompt is split at the markers for the
projector. A source that cannot be used is a 400 naming the part (413 past a size limit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, FirstError, gatherResults
from twisted.web.server import Request

from llamatwist.api.chatformat import ChatFormatter
from llamatwist.api.completion import final_json_fields, prompt_texts
from llamatwist.api.constraints import apply_constraint, constraint_spec, with_reasoning_budget
from llamatwist.api.errors import InvalidRequest, PayloadTooLarge
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.openai.functions import from_functions, legacy_delta, legacy_finish, legacy_message
from llamatwist.api.openai.protocol import (
    StreamOptions,
    chat_logprobs,
    completion_id,
    envelope,
    final_envelope,
    finish_reason,
    parse_stream_options,
)
from llamatwist.api.openai.streaming import stream_oai
from llamatwist.api.openai.tools import (
    MessageStream,
    ToolRequest,
    check_tool_history,
    message_json,
    parse_reasoning_format,
    parse_tool_request,
)
from llamatwist.api.params import (
    Prompt,
    generation_params,
    optional,
    parse_chat_format,
    parse_n_cmpl,
    parse_verbose,
    parser_settings,
    read_budget_tokens,
    read_n_probs,
    refuse_response_fields,
)
from llamatwist.api.pipeline import expand, run_tasks, tokenize_prompts
from llamatwist.api.prompt_log import log_prompt
from llamatwist.api.streaming import SSEStream, partial_extras
from llamatwist.chat import RenderedChat
from llamatwist.chat.messages import MediaRef, extract_media
from llamatwist.chat.toolcalls import ChatSyntax, ToolPlan, forced_call_grammar, plan_tools, polyfill_history
from llamatwist.config import SamplingDefaults
from llamatwist.constrain.reasoning_budget import ReasoningSwitch
from llamatwist.constrain.spec import ConstraintSpec
from llamatwist.media import MediaError, MediaInput, split_at_markers
from llamatwist.media.load import MediaTooLarge, load_media
from llamatwist.runtime import FinalResult, GenerationParams, LoadedModel, PartialResult, TokenProbs

__all__ = ["ChatPrompt", "ChatRequest", "PreparedChat", "build_prompt", "count_chat_tokens", "load_chat_media",
           "parse_chat", "parse_prediction", "prepare_chat", "register"]

@dataclass(frozen=True)
class ChatRequest:
    params: GenerationParams
    n_cmpl: int
    top_logprobs: int  # 0 = no logprobs
    stream_options: StreamOptions
    tools: ToolRequest = field(default_factory=ToolRequest)
    reasoning_format: str = "auto"
    reasoning_budget: int | None = None  # None: the server's --reasoning-budget
    reasoning_budget_message: str | None = None
    reasoning_control: bool = False  # the thinking block can be ended at runtime (POST .../control)
    prediction: str = ""  # OpenAI's predicted output: speculative drafts from it ("" none)
    legacy_functions: bool = False  # the request defined ``functions``: the reply's call is a function_call


def _budget_fields(body: Mapping[str, Any]) -> tuple[int | None, str | None]:
    name = "reasoning_budget_tokens" if body.get("reasoning_budget_tokens") is not None else "thinking_budget_tokens"
    budget = None if body.get(name) is None else read_budget_tokens(name, body[name])
    message = body.get("reasoning_budget_message")
    if message is not None and not isinstance(message, str):
        raise InvalidRequest("'reasoning_budget_message' must be a string")
    return (None if budget == -1 else budget), message


def parse_prediction(body: Mapping[str, Any]) -> str:
    """OpenAI's Predicted Outputs: ``{"type": "content", "content": text or text parts}``."""
    value = body.get("prediction")
    if value is None:
        return ""
    if not isinstance(value, dict) or value.get("type") != "content":
        raise InvalidRequest("'prediction' must be an object with type 'content' and the predicted 'content'")
    content = value.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(
            p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise InvalidRequest("'prediction.content' must be a string or an array of text parts")


def parse_chat(
    body: Mapping[str, Any], defaults: SamplingDefaults, n_slots: int, reasoning_format: str = "auto"
) -> ChatRequest:
    # messages are validated by the chat template layer (llamatwist.chat) when rendered;
    # an empty list is refused here, as OpenAI does
    if body.get("messages") == []:
        raise InvalidRequest("'messages' must not be empty")
    tools = parse_tool_request(body)
    check_tool_history(body.get("messages"))
    refuse_response_fields(body)
    # llama-server's chat replaces a request's chat_format with its template's own; here too the template
    # picks the output parser, so only the value's form is checked
    parse_chat_format(body)
    if tools.active and body.get("grammar") is not None:
        raise InvalidRequest("Cannot use custom grammar constraints with tools.")
    logprobs = optional(body, "logprobs", False)
    if not isinstance(logprobs, bool):
        raise InvalidRequest("'logprobs' must be a boolean")
    if logprobs and tools.tools and body.get("stream"):
        raise InvalidRequest("logprobs is not supported with tools + stream")
    top = body.get("top_logprobs")
    if top is not None:
        if not logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be set to true")
        # OpenAI allows up to 20, llama-server any number (capped at the vocabulary)
        top = read_n_probs("top_logprobs", top)
    top_n = (20 if top is None else top) if logprobs else 0
    if logprobs and body.get("n_probs") is None:
        # the sampled token's own logprob needs at least one candidate
        body = {**body, "n_probs": max(top_n, 1)}
    params = generation_params(body, defaults)
    budget, budget_message = _budget_fields(body)
    control = optional(body, "reasoning_control", False)
    if not isinstance(control, bool):
        raise InvalidRequest("'reasoning_control' must be a boolean")
    return ChatRequest(
        params=params,
        n_cmpl=parse_n_cmpl(body, n_slots),
        top_logprobs=top_n if logprobs else -1,
        stream_options=parse_stream_options(body, params.stream),
        tools=tools,
        reasoning_format=parse_reasoning_format(body, reasoning_format),
        reasoning_budget=budget,
        reasoning_budget_message=budget_message,
        reasoning_control=control,
        prediction=parse_prediction(body),
    )


def _plan(
    fmt: ChatFormatter, body: Mapping[str, Any], req: ChatRequest, generation_prompt: str = ""
) -> ToolPlan | None:
    """The tool/reasoning plan, or None when the output is plain content (no tools, a template that does
    not think nor has its leading whitespace skipped, --skip-chat-parsing): then nothing is parsed.

    None also means no tool-call grammar (tool_choice "required" forces nothing), no format instructions
    and no reasoning budget: with --skip-chat-parsing llama-server renders the template as it is and
    parses with a pure content parser, which has no thinking tags."""
    if fmt.skip_parsing or not fmt.is_jinja or not (req.tools.tools or fmt.may_think or fmt.parses_plain):
        return None
    schema = None
    if req.tools.active:  # a response_format schema becomes the generic format's "response"
        spec = constraint_spec(body, ConstraintSpec())
        schema = {"type": "object"} if spec.json_object else spec.json_schema
    try:
        return plan_tools(
            fmt.source, req.tools.tools,
            tool_choice=req.tools.tool_choice,
            parallel_tool_calls=req.tools.parallel_tool_calls,
            reasoning_format=req.reasoning_format,
            enable_thinking=fmt.enable_thinking(body),
            generation_prompt=generation_prompt,
            stream=req.params.stream,
            json_schema=schema,
            think_spacing=fmt.think_spacing,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _history(body: Mapping[str, Any], plan: ToolPlan | None) -> Any:
    """The messages to render: tool calls and results rewritten as text for a template that shows none
    (malformed messages are left to the chat layer's checks)."""
    messages = body.get("messages")
    if plan is None or not plan.polyfill_history or not isinstance(messages, list):
        return None
    return polyfill_history(messages) if all(isinstance(m, dict) for m in messages) else None


async def _tokens(ctx: ApiContext, text: str) -> tuple[int, ...]:
    return tuple(await ctx.engine.tokenize([text], False, True)) if text else ()


async def _with_budget(
    ctx: ApiContext,
    fmt: ChatFormatter,
    req: ChatRequest,
    params: GenerationParams,
    tags: tuple[str, str],
    generation_prompt: str,
) -> tuple[GenerationParams, ReasoningSwitch | None]:
    """``params`` with the reasoning budget around its constraint, when the template has a thinking
    block and either the budget is limited, a constraint must be suspended while thinking or the request
    asks for ``reasoning_control`` (then with the switch that ends its thinking). Whether the rendered prompt
    opened the block is read from its text, as the parser does: the tag's tokens inside the prompt need not be
    the tag's own tokenization."""
    budget = fmt.reasoning.budget if req.reasoning_budget is None else req.reasoning_budget
    control = req.reasoning_control and all(tags)
    if not all(tags) or (budget < 0 and params.constraint is None and not control):
        return params, None
    message = fmt.reasoning.budget_message if req.reasoning_budget_message is None else req.reasoning_budget_message
    switch = ReasoningSwitch() if control else None
    params = await with_reasoning_budget(ctx, params, tags[0], (tags[1],), message, budget, generation_prompt, switch)
    return params, switch


async def _plan_constraint(ctx: ApiContext, plan: ToolPlan, params: GenerationParams) -> GenerationParams:
    if plan.forced_call is not None:
        info = await ctx.engine.constraint_tokenizer()
        grammar = forced_call_grammar(plan.forced_call, info.control_tokens())
        return await apply_constraint(ctx, {"grammar": grammar}, params)
    if plan.json_schema is not None:
        return await apply_constraint(ctx, {"json_schema": plan.json_schema}, params)
    if plan.grammar:
        return await apply_constraint(ctx, {"grammar": plan.grammar}, params)
    return params


@dataclass(frozen=True)
class ChatPrompt:
    rendered: RenderedChat
    plan: ToolPlan | None  # planned with the rendered generation prompt
    thinking_tags: tuple[str, str]  # ("", "") when the template has no thinking block


def build_prompt(fmt: ChatFormatter, body: Mapping[str, Any], req: ChatRequest) -> ChatPrompt:
    """The prompt of a chat request (what /apply-template shows): the template rendered with the plan's
    tool instructions and, for a template that shows no tool calls, the history rewritten as text."""
    plan = _plan(fmt, body, req)
    tags = (plan.thinking_start_tag, plan.thinking_end_tag) if plan is not None else ("", "")
    rendered = fmt.render_chat(body, plan.system_prompt if plan is not None else "", tags, _history(body, plan))
    if plan is not None:
        # planned again with the generation prompt, which shows whether the template opened the thinking
        # block (the first plan gave what the rendering needed)
        plan = _plan(fmt, body, req, rendered.generation_prompt)
    return ChatPrompt(rendered, plan, tags)


def media_kinds(loaded: LoadedModel) -> frozenset[str]:
    """The media kinds the server's projector takes (none without --mmproj)."""
    return frozenset(k for k, on in (("image", loaded.vision), ("audio", loaded.audio), ("video", loaded.video))
                     if on)


def _media_error(ref: MediaRef, exc: MediaError) -> InvalidRequest | PayloadTooLarge:
    message = f"{ref.where}: {exc}"
    return PayloadTooLarge(message) if isinstance(exc, MediaTooLarge) else InvalidRequest(message)


async def _load_one(ctx: ApiContext, ref: MediaRef, kinds: frozenset[str]) -> MediaInput:
    try:
        media = await load_media(ref.url, ctx.config.media_path, ctx.engine.in_pool)
    except MediaError as exc:
        raise _media_error(ref, exc) from None
    if media.kind not in kinds:
        raise InvalidRequest(f"{ref.where}: the file is {media.kind}, which this server's multimodal projector "
                             "does not take")
    if media.kind != ref.kind:
        raise InvalidRequest(f"{ref.where}: the {ref.kind} part holds {media.kind}")
    return media


def mark_media(loaded: LoadedModel, body: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[MediaRef]]:
    """``body`` with its messages' media parts replaced by media markers, and their sources (a 400 for media
    this server cannot take)."""
    messages, refs = extract_media(body.get("messages"), media_kinds(loaded))
    return ({**body, "messages": messages} if refs else body), refs


async def load_chat_media(
    ctx: ApiContext, loaded: LoadedModel, body: Mapping[str, Any]
) -> tuple[Mapping[str, Any], list[MediaInput]]:
    """`mark_media`, then every source loaded and decoded (downloads at once; decoding in the thread pool)."""
    body, refs = mark_media(loaded, body)
    if not refs:
        return body, []
    kinds = media_kinds(loaded)
    loads = [Deferred.fromCoroutine(_load_one(ctx, ref, kinds)) for ref in refs]
    try:
        media: list[MediaInput] = await gatherResults(loads, consumeErrors=True)
    except FirstError as exc:
        exc.subFailure.raiseException()
    return body, media


def prompt_parts(prompt: str, media: list[MediaInput]) -> Prompt:
    """The rendered prompt with each media marker replaced by its media, in order."""
    if not media:
        return [prompt]
    try:
        return [*split_at_markers(prompt, media)]
    except MediaError as exc:  # a media marker typed in a message's text
        raise InvalidRequest(str(exc)) from None


@dataclass(frozen=True)
class PreparedChat:
    """A chat request ready to run: what every chat-shaped route family (OpenAI chat, Anthropic messages,
    ...) submits to the pipeline after translating its body into an OpenAI chat body."""

    req: ChatRequest  # its params carry the constraint, the plan's stops and the reasoning budget
    prompts: list[list[int]]  # one per choice (n_cmpl)
    syntax: ChatSyntax | None  # how to parse the output; None: plain content
    control: ReasoningSwitch | None = None  # ends the thinking block at runtime (reasoning_control)


def read_chat(ctx: ApiContext, loaded: LoadedModel, body: Mapping[str, Any]) -> tuple[dict[str, Any], ChatRequest]:
    """An OpenAI chat body with legacy ``functions`` read as tools, and its validated request."""
    body, legacy = from_functions(body)
    req = parse_chat(body, ctx.config.sampling, loaded.n_slots, ctx.chat.reasoning.format)
    return body, dataclasses.replace(req, legacy_functions=legacy)


async def prepare_chat(ctx: ApiContext, loaded: LoadedModel, body: Mapping[str, Any]) -> PreparedChat:
    """Validate, render (Jinja runs off the reactor), constrain and tokenize an OpenAI chat body."""
    fmt = ctx.chat
    body, req = read_chat(ctx, loaded, body)
    body, media = await load_chat_media(ctx, loaded, body)
    prompt = await ctx.engine.in_pool(build_prompt, fmt, body, req)
    rendered, plan = prompt.rendered, prompt.plan
    if plan is not None and req.tools.active:
        params = await _plan_constraint(ctx, plan, req.params)
    else:
        params = await apply_constraint(ctx, body, req.params)
    syntax: ChatSyntax | None = None
    if plan is not None:
        syntax = plan.syntax
        # the format's control tokens (<|python_tag|>, <tool_call>, ...) must reach the parser as text
        marks = [await _tokens(ctx, text) for text in plan.preserved_tokens]
        params = dataclasses.replace(
            params, stop=(*params.stop, *plan.additional_stops),
            preserved_tokens=params.preserved_tokens | {t[0] for t in marks if len(t) == 1})
    params, control = await _with_budget(ctx, fmt, req, params, prompt.thinking_tags, rendered.generation_prompt)
    # as llama-server names its parsers: a Jinja template's is "peg-native", a built-in one's plain content
    params = dataclasses.replace(params, parser_settings=parser_settings(
        "peg-native" if fmt.template.is_jinja else "Content-only", req.reasoning_format, params.stream,
        rendered.generation_prompt))
    if req.prediction:
        # no reply outgrows the slot's context: a longer prediction's tail could never be drafted
        predicted = tuple(await ctx.engine.tokenize([req.prediction], False, False))[: loaded.n_ctx_slot]
        params = dataclasses.replace(params, speculative=dataclasses.replace(
            params.speculative or ctx.config.sampling.speculative, prediction=predicted))
    await log_prompt(ctx, rendered.prompt)
    # The template's own BOS text is stripped when the vocab adds BOS, so add_special is right.
    tokens = await tokenize_prompts(ctx, loaded, [prompt_parts(rendered.prompt, media)])
    return PreparedChat(dataclasses.replace(req, params=params), expand(tokens, req.n_cmpl), syntax, control)


async def count_chat_tokens(ctx: ApiContext, loaded: LoadedModel, body: Mapping[str, Any]) -> int:
    """The prompt tokens an OpenAI chat body would use (its usage.prompt_tokens)."""
    body, req = read_chat(ctx, loaded, body)
    body, media = await load_chat_media(ctx, loaded, body)
    prompt = await ctx.engine.in_pool(build_prompt, ctx.chat, body, req)
    if media:  # the media's own tokens count, as in the chat route's usage
        return len((await tokenize_prompts(ctx, loaded, [prompt_parts(prompt.rendered.prompt, media)]))[0])
    return len(await ctx.engine.tokenize([prompt.rendered.prompt], True, True))


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/apply-template", methods=["POST"])
    @handler
    async def apply_template(request: Request) -> Any:
        loaded = ctx.require_ready()  # an embedding server renders its template too, as llama-server
        body, req = read_chat(ctx, loaded, read_json(request))
        # media parts show as their markers; the files themselves are not needed for the text
        marked = mark_media(loaded, body)[0]
        prompt = await ctx.engine.in_pool(build_prompt, ctx.chat, marked, req)
        return send_json(request, {"prompt": prompt.rendered.prompt})

    @app.route("/v1/chat/completions/input_tokens", methods=["POST"])
    @app.route("/chat/completions/input_tokens", methods=["POST"])
    @handler
    async def count_input_tokens(request: Request) -> Any:
        """The prompt tokens a chat request would use (its usage.prompt_tokens), in llama-server's shape."""
        loaded = ctx.require_generation()
        n_tokens = await count_chat_tokens(ctx, loaded, read_json(request))
        return send_json(request, {"input_tokens": n_tokens, "object": "response.input_tokens"})

    @app.route("/v1/chat/completions/control", methods=["POST"])
    @handler
    async def control(request: Request) -> Any:
        """llama-server's: end the thinking block of a running completion that asked for reasoning_control."""
        body = read_json(request)
        cid, action = body.get("id"), body.get("action")
        if not isinstance(cid, str) or not cid:
            raise InvalidRequest("missing completion id")
        if action != "reasoning_end":
            raise InvalidRequest("unknown control action")
        if cid not in ctx.live_completions:
            return send_json(request, {"success": False, "message": "no active completion for this id"})
        switch = ctx.live_completions[cid]
        if switch is None:
            return send_json(request, {"success": False,
                                       "message": "reasoning control not enabled for this completion"})
        switch.end()
        return send_json(request, {"success": True})

    @app.route("/v1/chat/completions", methods=["POST"])
    @app.route("/chat/completions", methods=["POST"])
    @handler
    async def chat_completions(request: Request) -> Any:
        loaded = ctx.require_generation()
        body = read_json(request)
        prepared = await prepare_chat(ctx, loaded, body)
        cid = completion_id("chatcmpl-")
        ctx.live_completions[cid] = prepared.control  # for .../control while it runs
        try:
            return await _answer_chat(request, body, prepared, cid)
        finally:
            del ctx.live_completions[cid]

    async def _answer_chat(request: Request, body: Mapping[str, Any], prepared: PreparedChat, cid: str) -> Any:
        req, prompts = prepared.req, prepared.prompts
        verbose = parse_verbose(body, ctx.config.verbose)
        texts = await prompt_texts(ctx, prompts) if verbose else None  # __verbose's prompt
        if not req.params.stream:
            try:
                results = await run_tasks(ctx, request, prompts, req.params)
            except CancelledError:
                return b""
            return send_json(request, _chat_completion(ctx, prepared, cid, results, texts))
        sse = SSEStream(request, req.params.sse_ping_interval)
        chunks = _ChatChunks(ctx, sse, prepared, cid, texts)
        tail = ("chat.completion.chunk", cid, ctx.model_alias, req.n_cmpl, req.stream_options.include_usage)
        return await stream_oai(ctx, request, sse, prompts, req.params, chunks.partial, chunks.final, tail)


def _logprobs(req: ChatRequest, probs: list[TokenProbs]) -> Any:
    """A choice's ``logprobs`` (None: not asked for, or no tokens)."""
    return chat_logprobs(probs, req.top_logprobs) if req.top_logprobs >= 0 and probs else None


def _chat_completion(ctx: ApiContext, prepared: PreparedChat, cid: str, results: list[FinalResult],
                     texts: list[str] | None) -> dict[str, Any]:
    """The ``chat.completion`` object of a request that did not stream (``texts``: the prompts, for
    ``__verbose``)."""
    req = prepared.req
    choices = []
    for i, r in enumerate(results):
        msg = MessageStream(prepared.syntax).finish(r.content)[0]
        choice: dict[str, Any] = {
            "finish_reason": finish_reason(r.stop_type, bool(msg.tool_calls)),
            "index": i,
            "message": message_json(msg),
        }
        if req.legacy_functions:
            choice["message"] = legacy_message(choice["message"])
            choice["finish_reason"] = legacy_finish(choice["finish_reason"])
        logprobs = _logprobs(req, r.probs)
        if logprobs is not None:
            choice["logprobs"] = logprobs
        choices.append(choice)
    out = final_envelope("chat.completion", cid, ctx.model_alias, choices, results, req.n_cmpl,
                         prediction=bool(req.prediction))
    if texts is not None:
        out["__verbose"] = final_json_fields(ctx, results[-1], len(results) - 1, req.params, texts[-1])
    return out


class _ChatChunks:
    """The ``chat.completion.chunk`` events of a streamed chat completion, per choice: the role first, then the
    parsed message's deltas as the tokens come, then the finish reason (``texts``: the prompts, for
    ``__verbose``)."""

    def __init__(self, ctx: ApiContext, sse: SSEStream, prepared: PreparedChat, cid: str,
                 texts: list[str] | None) -> None:
        self._ctx = ctx
        self._sse = sse
        self._req = prepared.req
        self._syntax = prepared.syntax
        self._cid = cid
        self._texts = texts
        self._streams: dict[int, MessageStream] = {}
        self._pending_probs: dict[int, list[TokenProbs]] = {}

    def _chunk(self, index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return envelope("chat.completion.chunk", self._cid, self._ctx.model_alias,
                        [{"finish_reason": reason, "index": index, "delta": delta}])

    def _started(self, index: int) -> MessageStream:
        stream = self._streams.get(index)
        if stream is None:
            # OpenAI's first delta carries the role
            stream = self._streams[index] = MessageStream(self._syntax)
            self._sse.send(self._chunk(index, {"role": "assistant", "content": None}))
        return stream

    def _delta_chunks(self, index: int, deltas: list[dict[str, Any]], probs: list[TokenProbs]) -> list[dict[str, Any]]:
        # token logprobs ride on the next chunk sent: a parser may hold text back (e.g. a tag prefix)
        waiting = self._pending_probs.setdefault(index, [])
        waiting.extend(probs)
        chunks = []
        for delta in deltas:
            chunk = self._chunk(index, legacy_delta(delta) if self._req.legacy_functions else delta)
            logprobs = _logprobs(self._req, waiting)
            if logprobs is not None:
                chunk["choices"][0]["logprobs"] = logprobs
            waiting.clear()
            chunks.append(chunk)
        return chunks

    def partial(self, index: int, r: PartialResult) -> None:
        if r.progress is not None:
            # prompt progress rides on an empty assistant delta, as llama-server sends it
            self._sse.send({**self._chunk(index, {"role": "assistant", "content": None}), **partial_extras(r)})
            return
        stream = self._started(index)
        chunks = self._delta_chunks(index, stream.feed(r.content), r.probs)
        if chunks:
            chunks[-1].update(partial_extras(r))  # as llama-server: on the last chunk of this token
        for chunk in chunks:
            self._sse.send(chunk)

    def final(self, index: int, r: FinalResult) -> None:
        stream = self._started(index)
        msg, deltas = stream.finish(r.content)
        chunks = self._delta_chunks(index, deltas, [])
        reason = finish_reason(r.stop_type, bool(msg.tool_calls))
        chunks.append(self._chunk(index, {}, legacy_finish(reason) if self._req.legacy_functions else reason))
        if not self._req.stream_options.include_usage:  # else on the usage chunk, the stream's last (stream_oai)
            chunks[-1]["timings"] = r.timings.to_json()
        if self._texts is not None:
            chunks[0]["__verbose"] = final_json_fields(self._ctx, r, index, self._req.params, self._texts[index])
        for chunk in chunks:
            self._sse.send(chunk)
