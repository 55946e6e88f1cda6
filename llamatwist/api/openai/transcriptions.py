# -*- test-case-name: tests.test_transcriptions -*-
"""OpenAI ``POST /v1/audio/transcriptions`` (also ``/audio/transcriptions``), as llama-server's.

A multipart form (``file``, and ``model``, ``prompt``, ``language``, ``response_format``, ``stream``,
``temperature``, ``max_tokens``) becomes a chat request: the prompt (default ``Transcribe audio to text``;
LFM2's templates get its ASR system message instead), `` (language: X)`` when given, and the audio. The answer
is ``{"type": "transcript.text.done", "text", "usage"}``; a stream sends ``transcript.text.delta`` events, then
that one, then ``[DONE]``. It needs a projector that takes audio (501 otherwise); only ``json`` answers.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.errors import REPORTED, InvalidRequest, NotSupported
from llamatwist.api.http import ApiContext, handler, send_json
from llamatwist.api.openai.chat import prepare_chat
from llamatwist.api.openai.tools import MessageStream
from llamatwist.api.pipeline import run_tasks
from llamatwist.api.streaming import SSEStream
from llamatwist.runtime import FinalResult, PartialResult

__all__ = ["register", "to_chat_body"]

_ASR_USER = "Transcribe audio to text"
_LFM2_SYSTEM = "Perform ASR."


def is_lfm2_template(source: str) -> bool:
    """llama.cpp's test: LFM2's templates list tools between these tokens."""
    return "<|tool_list_start|>" in source and "<|tool_list_end|>" in source


def form_fields(request: Request) -> tuple[dict[str, str], bytes | None]:
    """The text fields of a multipart form, and its ``file``."""
    args: Mapping[bytes, list[bytes]] = request.args or {}
    fields: dict[str, str] = {}
    audio: bytes | None = None
    for key, values in args.items():
        if not values:
            continue
        name = key.decode("utf-8", "replace")
        if name == "file":
            audio = values[-1]
            continue
        try:
            fields[name] = values[-1].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"form field '{name}' is not UTF-8 text") from None
    return fields, audio


def _number(fields: Mapping[str, str], name: str, kind: type) -> Any:
    try:
        return kind(fields[name])
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a number, got {fields[name]!r}") from None


def to_chat_body(fields: Mapping[str, str], audio: bytes | None, template_source: str) -> dict[str, Any]:
    """The chat request a transcription is (pure)."""
    if not audio:
        raise InvalidRequest("No input file found for transcription")
    if fields.get("response_format", "json") != "json":
        raise InvalidRequest("Only 'json' response_format is supported for transcription")
    system, user = ("", _ASR_USER) if not is_lfm2_template(template_source) else (_LFM2_SYSTEM, "")
    prompt = fields.get("prompt") or user
    if fields.get("language"):
        prompt += f" (language: {fields['language']})"
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}] if prompt else []
    parts.append({"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode("ascii")}})
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": parts})
    body: dict[str, Any] = {"messages": messages, "stream": fields.get("stream", "false") == "true"}
    if "max_tokens" in fields:
        body["max_tokens"] = _number(fields, "max_tokens", int)
    if "temperature" in fields:
        body["temperature"] = _number(fields, "temperature", float)
    return body


def _usage(r: FinalResult) -> dict[str, Any]:
    return {"type": "tokens", "input_tokens": r.n_prompt_tokens, "output_tokens": r.n_decoded,
            "total_tokens": r.n_prompt_tokens + r.n_decoded, "input_tokens_details": {"cached_tokens": r.n_cached}}


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/v1/audio/transcriptions", methods=["POST"])
    @app.route("/audio/transcriptions", methods=["POST"])
    @handler
    async def transcriptions(request: Request) -> Any:
        loaded = ctx.require_generation()
        if not loaded.audio:
            raise NotSupported("The current model does not support audio input.")
        fields, audio = form_fields(request)
        body = to_chat_body(fields, audio, ctx.chat.source)
        prepared = await prepare_chat(ctx, loaded, body)
        if not prepared.req.params.stream:
            try:
                results = await run_tasks(ctx, request, prepared.prompts, prepared.req.params)
            except CancelledError:
                return b""
            r = results[0]
            text = MessageStream(prepared.syntax).finish(r.content)[0].content or ""
            return send_json(request, {"type": "transcript.text.done", "text": text, "usage": _usage(r)})

        sse = SSEStream(request, prepared.req.params.sse_ping_interval)
        stream = MessageStream(prepared.syntax)

        def send_text(deltas: list[dict[str, Any]]) -> None:
            for delta in deltas:
                if delta.get("content"):
                    sse.send({"type": "transcript.text.delta", "delta": delta["content"]})

        def partial(index: int, r: PartialResult) -> None:
            if r.progress is None:
                send_text(stream.feed(r.content))

        def final(index: int, r: FinalResult) -> None:
            msg, deltas = stream.finish(r.content)
            send_text(deltas)
            sse.send({"type": "transcript.text.done", "text": msg.content or "", "usage": _usage(r)})

        try:
            await run_tasks(ctx, request, prepared.prompts, prepared.req.params, on_partial=partial, on_final=final)
        except CancelledError:
            return b""
        except REPORTED as err:
            sse.send_error(err)
            return b""
        sse.send_raw(b"data: [DONE]\n\n")
        return b""
