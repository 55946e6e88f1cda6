# -*- test-case-name: tests.test_ollama -*-
"""Ollama's API, for the clients that speak only it (Open WebUI's Ollama connection, editors' plugins,
LangChain's ChatOllama, the ``ollama`` Python and JavaScript libraries): ``/api/chat``, ``/api/generate``,
``/api/embed`` and ``/api/embeddings``, ``/api/tags``, ``/api/ps``, ``/api/show`` and ``/api/version``.

Requests are translated (request.py) and run through the same pipeline as the OpenAI routes; a reply streams
(Ollama's default) as newline-delimited JSON objects, the last with ``done: true`` and the counts and
durations. Every error on ``/api/`` has Ollama's body, ``{"error": "message"}``, with the status llama-server's
routes give it; one after the stream began is a last ``{"error": ...}`` line. A request's ``keep_alive`` sets how
long the model stays loaded once idle (the server sleeps as with --sleep-idle-seconds); store.py answers the
model-store routes (pull, delete, create, ...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.constraints import apply_constraint
from llamatwist.api.embeddings import POOLING_NONE, embed_prompts, read_dimensions
from llamatwist.api.errors import REPORTED, InvalidRequest, register_error_shape
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.infill import InfillRequest, infill_tokens
from llamatwist.api.ollama import store
from llamatwist.api.ollama.request import FOREVER, chat_body, embed_inputs, generate_body, is_raw, read_keep_alive
from llamatwist.api.ollama.response import (
    created_at,
    error_shape,
    expires_at,
    final_fields,
    logprobs_json,
    message_json,
    model_details,
    model_entry,
    model_info,
    modified_at,
    tool_calls_json,
)
from llamatwist.api.ollama.stream import NDJSONStream
from llamatwist.api.openai.chat import prepare_chat
from llamatwist.api.openai.tools import MessageStream
from llamatwist.api.params import parse_completion
from llamatwist.api.pipeline import check_prompt, run_tasks, tokenize_prompts
from llamatwist.chat.toolcalls import ChatSyntax
from llamatwist.runtime import FinalResult, GenerationParams, LoadedModel, PartialResult, TokenProbs

__all__ = ["register"]

PATH = b"/api"


@dataclasses.dataclass
class _Reply:
    """One reply as Ollama objects: ``shape`` puts a piece of content, thinking and tool calls in the
    route's object (a chat ``message`` or a generate ``response``)."""

    model: str
    syntax: ChatSyntax | None
    shape: Callable[[dict[str, Any]], dict[str, Any]]
    top_n: int  # token log probabilities to show: -1 none
    load_ns: Callable[[], int] = lambda: 0  # the model's load this reply waited for (EngineService.load_timer)
    t0: int = dataclasses.field(default_factory=time.monotonic_ns)

    def __post_init__(self) -> None:
        self.text = MessageStream(self.syntax)
        self.probs: list[TokenProbs] = []  # not yet sent
        self.n_calls_sent = 0

    def _object(self, message: dict[str, Any], done: bool) -> dict[str, Any]:
        out = {"model": self.model, "created_at": created_at(), **self.shape(message), "done": done}
        if self.top_n >= 0 and self.probs:
            out["logprobs"] = logprobs_json(self.probs, self.top_n)
            self.probs = []
        return out

    def _piece(self, deltas: list[dict[str, Any]], final: bool) -> dict[str, Any] | None:
        """A streamed message piece: the text of ``deltas``, and the tool calls completed since the last piece
        (as Ollama sends each call once it is whole: one is, once the next begins or the reply ends)."""
        piece = _pieces(deltas)
        calls = self.text.message.tool_calls
        end = len(calls) if final else len(calls) - 1
        if end > self.n_calls_sent:
            piece["tool_calls"] = tool_calls_json(calls[self.n_calls_sent:end], self.n_calls_sent)
            self.n_calls_sent = end
        return piece if piece["content"] or "thinking" in piece or "tool_calls" in piece else None

    def chunk(self, r: PartialResult) -> dict[str, Any] | None:
        """The object for a streamed piece; None while the parser holds text back."""
        self.probs.extend(r.probs)
        piece = self._piece(self.text.feed(r.content), final=False)
        return self._object(piece, False) if piece is not None else None

    def last(self, r: FinalResult, stream: bool) -> list[dict[str, Any]]:
        """The reply's last objects: streamed, the rest of its text and tool calls, then the counts."""
        msg, deltas = self.text.finish(r.content)
        if not stream:
            self.probs = list(r.probs)
            return [{**self._object(message_json(msg), True), **self._final(r)}]
        piece = self._piece(deltas, final=True)
        out = [] if piece is None else [self._object(piece, False)]
        end = self._object({"role": "assistant", "content": ""}, True)
        out.append({**end, **self._final(r)})
        return out

    def _final(self, r: FinalResult) -> dict[str, Any]:
        return final_fields(r, time.monotonic_ns() - self.t0, self.load_ns())


def _pieces(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI deltas joined into one Ollama message piece (content, thinking)."""
    out: dict[str, Any] = {"role": "assistant", "content": "".join(d.get("content") or "" for d in deltas)}
    thinking = "".join(d.get("reasoning_content") or "" for d in deltas)
    if thinking:
        out["thinking"] = thinking
    return out


def _chat_shape(message: dict[str, Any]) -> dict[str, Any]:
    return {"message": message}


def _generate_shape(message: dict[str, Any]) -> dict[str, Any]:
    out = {"response": message.get("content") or ""}
    if message.get("thinking"):
        out["thinking"] = message["thinking"]
    return out


def _model(body: dict[str, Any], ctx: ApiContext) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else ctx.model_alias


def _top_n(body: dict[str, Any]) -> int:
    """A translated body's top log probabilities to show (-1: none asked for)."""
    return int(body["top_logprobs"]) if body.get("logprobs") else -1


async def _run(ctx: ApiContext, request: Request, reply: _Reply, prompt: list[int], params: GenerationParams,
               extra: Callable[[FinalResult], dict[str, Any]] | None = None) -> Any:
    """Run one reply and answer it, streamed or whole; ``extra`` adds fields to the last object."""
    if not params.stream:
        try:
            r = (await run_tasks(ctx, request, [prompt], params))[0]
        except CancelledError:
            return b""
        last = reply.last(r, stream=False)[0]
        return send_json(request, {**last, **(extra(r) if extra else {})})
    out = NDJSONStream(request)

    def partial(index: int, r: PartialResult) -> None:
        chunk = reply.chunk(r)
        if chunk is not None:
            out.send(chunk)

    def final(index: int, r: FinalResult) -> None:
        objects = reply.last(r, stream=True)
        objects[-1].update(extra(r) if extra else {})
        for obj in objects:
            out.send(obj)

    try:
        await run_tasks(ctx, request, [prompt], params, on_partial=partial, on_final=final)
    except CancelledError:
        return b""
    except REPORTED as err:
        out.send_error(err)
    return b""


async def _load_or_unload(ctx: ApiContext, body: dict[str, Any], keep: float | None,
                          shape: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Ollama's answer to a request with nothing to generate: with ``keep_alive`` 0 the model is unloaded (the
    server sleeps until the next request), else it is loaded (woken if asleep) and kept as ``keep_alive`` says,
    or as the server's default without one."""
    # before waking: a sleeping server takes it without loading, and does not fall asleep again on waking
    ctx.engine.set_keep_alive(ctx.engine.default_keep_alive() if keep is None else _engine_seconds(keep))
    if keep != 0:
        await ctx.engine.wake()
    return {"model": _model(body, ctx), "created_at": created_at(), **shape({"role": "assistant", "content": ""}),
            "done": True, "done_reason": "unload" if keep == 0 else "load"}


def _engine_seconds(keep: float) -> float | None:
    return None if keep == FOREVER else keep


def _keep(ctx: ApiContext, keep: float | None) -> None:
    """A request's ``keep_alive``, once it has run: how long the model stays loaded from now on (the server's
    default when it sends none: a task restores it)."""
    if keep is not None:
        ctx.engine.set_keep_alive(_engine_seconds(keep))


def _context(body: dict[str, Any]) -> list[int]:
    """``/api/generate``'s ``context``: the token ids an earlier reply returned, continued from."""
    value = body.get("context")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                              for t in value):
        raise InvalidRequest("'context' must be an array of token ids")
    return value


async def _untemplated(ctx: ApiContext, loaded: LoadedModel, raw: dict[str, Any], body: dict[str, Any],
                       suffix: str) -> tuple[list[int], GenerationParams]:
    """A generate request's prompt without the chat template: raw, or with a ``suffix`` the prefix of a
    fill-in-the-middle laid out as ``/infill`` does."""
    fields = {k: v for k, v in body.items() if k not in ("messages", "logprobs", "top_logprobs")}
    if body.get("logprobs"):
        fields["n_probs"] = max(_top_n(body), 1)
    prompt = raw.get("prompt") or ""
    req = parse_completion({**fields, "prompt": prompt}, ctx.config.sampling)
    params = await apply_constraint(ctx, fields, req.params)
    if not suffix:
        return (await tokenize_prompts(ctx, loaded, req.prompts))[0], params
    fim = ctx.engine.fim_tokens()
    if fim.missing():
        raise InvalidRequest(f"{_model(raw, ctx)} does not support insert (the model has no fill-in-the-middle "
                             f"tokens: {fim.missing().strip()})")
    return await infill_tokens(ctx, loaded, fim, InfillRequest(prompt, suffix, [], ""), params.n_predict), params


def _details(loaded: LoadedModel) -> dict[str, Any]:
    return model_details(loaded.metadata.get("general.architecture", ""), loaded.info.n_params, loaded.info.ftype)


def register(app: Klein, ctx: ApiContext) -> None:
    register_error_shape(PATH, error_shape)
    store.register(app, ctx)

    @app.route("/api/chat", methods=["POST"])
    @handler
    async def chat(request: Request) -> Any:
        loaded = ctx.require_generation()
        load_ns = ctx.engine.load_timer()  # before anything can wake the model (media tokenization does)
        raw = read_json(request)
        body = chat_body(raw)
        keep = read_keep_alive(raw)
        if not body["messages"]:
            return send_json(request, await _load_or_unload(ctx, raw, keep, _chat_shape))
        prepared = await prepare_chat(ctx, loaded, body)
        reply = _Reply(_model(raw, ctx), prepared.syntax, _chat_shape, _top_n(body), load_ns)
        try:
            return await _run(ctx, request, reply, prepared.prompts[0], prepared.req.params)
        finally:
            _keep(ctx, keep)

    @app.route("/api/generate", methods=["POST"])
    @handler
    async def generate(request: Request) -> Any:
        loaded = ctx.require_generation()
        load_ns = ctx.engine.load_timer()
        raw = read_json(request)
        body = generate_body(raw)
        keep = read_keep_alive(raw)
        context = _context(raw)
        suffix = raw.get("suffix") or ""
        if not isinstance(suffix, str):
            raise InvalidRequest("'suffix' must be a string")
        if not raw.get("prompt") and not raw.get("images") and not suffix and not context:
            return send_json(request, await _load_or_unload(ctx, raw, keep, _generate_shape))
        syntax: ChatSyntax | None = None
        if suffix or is_raw(raw):
            prompt, params = await _untemplated(ctx, loaded, raw, body, suffix)
        else:
            prepared = await prepare_chat(ctx, loaded, body)
            prompt, params, syntax = prepared.prompts[0], prepared.req.params, prepared.syntax
        if context:
            # the earlier exchange, then this prompt without a second BOS
            prompt = [*context, *(prompt[1:] if prompt and prompt[0] == loaded.bos else prompt)]
            check_prompt(ctx, loaded, prompt)
        params = dataclasses.replace(params, return_tokens=True)
        reply = _Reply(_model(raw, ctx), syntax, _generate_shape, _top_n(body), load_ns)

        def with_context(r: FinalResult) -> dict[str, Any]:
            return {"context": [*prompt, *r.tokens]}

        try:
            return await _run(ctx, request, reply, prompt, params, with_context)
        finally:
            _keep(ctx, keep)

    @app.route("/api/embed", methods=["POST"])
    @app.route("/api/embeddings", methods=["POST"])
    @handler
    async def embed(request: Request) -> Any:
        loaded = ctx.require_embeddings()
        t0, load_ns = time.monotonic_ns(), ctx.engine.load_timer()
        legacy = request.path.rstrip(b"/").endswith(b"/embeddings")  # the older form: one prompt, one vector
        body = read_json(request)
        texts = embed_inputs(body, legacy)
        keep = read_keep_alive(body)
        if loaded.pooling == POOLING_NONE:
            raise InvalidRequest("Ollama's embeddings are pooled: this server's pooling is 'none'")
        try:  # Ollama's embeddings are unit vectors (L2)
            embedded = await embed_prompts(ctx, request, loaded, [[t] for t in texts], read_dimensions(body), 2)
        except CancelledError:
            return b""
        finally:
            _keep(ctx, keep)
        vectors = [v[0] for v in embedded.vectors]
        if legacy:
            return send_json(request, {"embedding": vectors[0]})
        return send_json(request, {"model": _model(body, ctx), "embeddings": vectors,
                                   "total_duration": time.monotonic_ns() - t0, "load_duration": load_ns(),
                                   "prompt_eval_count": embedded.n_tokens})

    @app.route("/api/tags", methods=["GET"])
    @handler
    async def tags(request: Request) -> Any:
        loaded = ctx.require_ready()
        return send_json(request, {"models": [model_entry(ctx.model_alias, ctx.model_path, _details(loaded))]})

    @app.route("/api/ps", methods=["GET"])
    @handler
    async def ps(request: Request) -> Any:
        loaded = ctx.require_ready()
        if ctx.engine.sleeping:  # unloaded (--sleep-idle-seconds, keep_alive): loaded again by the next request
            return send_json(request, {"models": []})
        entry = model_entry(ctx.model_alias, ctx.model_path, _details(loaded))
        return send_json(request, {"models": [{**entry, "expires_at": expires_at(ctx.engine.unload_at(),
                                                                                 ctx.engine.keep_alive()),
                                               "size_vram": 0, "context_length": loaded.n_ctx_slot}]})

    @app.route("/api/show", methods=["POST"])
    @handler
    async def show(request: Request) -> Any:
        loaded = ctx.require_ready()
        read_json(request)  # the model it names is this server's, whatever its name (as on the other routes)
        fmt = ctx.chat_formatter
        caps = ["embedding"] if ctx.embedding_mode else ["completion"]
        if fmt is not None and not ctx.embedding_mode:
            caps += ["tools"]  # every template calls tools: one that shows none gets the generic format
            caps += ["thinking"] if fmt.may_think else []
            caps += [] if ctx.engine.fim_tokens().missing() else ["insert"]
        caps += ["vision"] if loaded.vision else []
        caps += ["audio"] if loaded.audio else []
        return send_json(request, {
            "modelfile": f"FROM {ctx.model_path}\n",
            # as a Modelfile's PARAMETER lines: the context a request gets here (clients size prompts by it)
            "parameters": f"num_ctx {loaded.n_ctx_slot}",
            "template": fmt.source if fmt is not None else (loaded.chat_template or ""),
            "details": _details(loaded),
            "model_info": model_info(loaded.metadata, loaded.info.n_params),
            "capabilities": caps,
            "modified_at": modified_at(ctx.model_path),
        })
