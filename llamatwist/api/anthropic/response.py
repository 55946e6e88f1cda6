# -*- test-case-name: tests.test_anthropic -*-
"""Anthropic Messages responses from the chat pipeline's results (pure functions, no I/O): the ``message``
object, its stream events, and the error body.

Field names follow llama-server's ``to_json_anthropic`` / ``to_json_anthropic_stream`` (thinking blocks carry
an empty ``signature``; usage has ``input_tokens`` without the cached prefix, ``cache_read_input_tokens``,
``output_tokens``). The stream differs in one way, where Anthropic's own order wins: each content block is
closed (``content_block_stop``) before the next one starts, and blocks are numbered in the order they start.
"""

from __future__ import annotations

import json
from typing import Any

from llamatwist.api.errors import ErrorAnswer
from llamatwist.api.openai.protocol import random_id
from llamatwist.chat.toolcalls import ParsedMessage
from llamatwist.runtime import FinalResult

__all__ = ["BlockStream", "Event", "error_shape", "message_id", "message_json", "stop_fields", "usage_json"]

# Anthropic's error type for each status; others: invalid_request_error (4xx), api_error (5xx)
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error",
    529: "overloaded_error",
}

Event = tuple[str, dict[str, Any]]  # (event name, data)


def error_shape(a: ErrorAnswer) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message", "code", ...}}`` for an answer of the error table:
    Anthropic's shape, with llama-server's ``code`` and extra fields (e.g. ``n_ctx``) beside them, so a client
    of either finds what it reads."""
    kind = _ERROR_TYPES.get(a.status, "invalid_request_error" if a.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": a.message, "code": a.status, **a.extra}}


def message_id() -> str:
    return "msg_" + random_id()


def stop_fields(r: FinalResult, msg: ParsedMessage, stop_sequences: tuple[str, ...]) -> dict[str, Any]:
    """``stop_reason`` and ``stop_sequence``: a client's own stop sequence is ``stop_sequence`` (a stop the
    tool-call format adds ends the turn), an end of generation ``end_turn`` or ``tool_use``, the token limit
    ``max_tokens``."""
    if r.stop_type == "word" and r.stopping_word in stop_sequences:
        return {"stop_reason": "stop_sequence", "stop_sequence": r.stopping_word}
    if r.stop_type in ("eos", "word"):
        return {"stop_reason": "tool_use" if msg.tool_calls else "end_turn", "stop_sequence": None}
    return {"stop_reason": "max_tokens", "stop_sequence": None}


def usage_json(r: FinalResult) -> dict[str, int]:
    return {"cache_read_input_tokens": r.n_cached, "input_tokens": r.n_prompt_tokens - r.n_cached,
            "output_tokens": r.n_decoded}


def _tool_input(arguments: str) -> Any:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def message_json(
    mid: str, model: str, msg: ParsedMessage, r: FinalResult, stop_sequences: tuple[str, ...]
) -> dict[str, Any]:
    """The whole ``message``: thinking, then text, then tool_use blocks (llama-server's order)."""
    content: list[dict[str, Any]] = []
    if msg.reasoning_content:
        content.append({"type": "thinking", "thinking": msg.reasoning_content, "signature": ""})
    if msg.content:
        content.append({"type": "text", "text": msg.content})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
                for c in msg.tool_calls]
    return {"id": mid, "type": "message", "role": "assistant", "content": content, "model": model,
            **stop_fields(r, msg, stop_sequences), "usage": usage_json(r)}


class BlockStream:
    """OpenAI chat deltas (``llamatwist.chat.toolcalls.message_deltas``) in, Anthropic content block events
    out: a block starts when the kind of delta changes (thinking, text, or one tool call) and the open one
    stops first."""

    def __init__(self) -> None:
        self._count = 0  # blocks started
        self._open: tuple[str, int] | None = None  # ("thinking" | "text" | "tool", call index)
        self._calls: dict[int, tuple[str, str]] = {}  # call index -> (id, name)

    def _switch(self, key: tuple[str, int], block: dict[str, Any]) -> list[Event]:
        if self._open == key:
            return []
        events = self.close()
        self._open = key
        self._count += 1
        return [*events, ("content_block_start",
                          {"type": "content_block_start", "index": self._count - 1, "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return "content_block_delta", {"type": "content_block_delta", "index": self._count - 1, "delta": delta}

    def feed(self, deltas: list[dict[str, Any]]) -> list[Event]:
        events: list[Event] = []
        for d in deltas:
            if d.get("reasoning_content"):
                events += self._switch(("thinking", 0), {"type": "thinking", "thinking": "", "signature": ""})
                events.append(self._delta({"type": "thinking_delta", "thinking": d["reasoning_content"]}))
            if d.get("content"):
                events += self._switch(("text", 0), {"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": d["content"]}))
            for call in d.get("tool_calls") or ():
                index = call["index"]
                fn = call.get("function") or {}
                if "id" in call:  # a call's header: its id and name
                    self._calls[index] = (call["id"], fn.get("name", ""))
                cid, name = self._calls.get(index, ("", ""))
                events += self._switch(("tool", index), {"type": "tool_use", "id": cid, "name": name, "input": {}})
                if fn.get("arguments"):
                    events.append(self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]}))
        return events

    def close(self) -> list[Event]:
        """Stop the open block (a thinking block gets its empty signature first, as Anthropic requires)."""
        if self._open is None:
            return []
        events: list[Event] = []
        if self._open[0] == "thinking":
            events.append(self._delta({"type": "signature_delta", "signature": ""}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": self._count - 1}))
        self._open = None
        return events
