"""OpenAI ``chat.completion.chunk`` deltas between two parses of a growing output.

llama.cpp's ``common_chat_msg_diff::compute_diffs`` + ``common_chat_msg_diff_to_json_oaicompat``, with two
differences: a new call's header (``id``, ``type``, ``name``, ``"arguments": ""``) is its own delta, as
OpenAI streams it, and a text that does not extend the previous one (a final parse that fell back to plain
content after a tool call was cut off) yields no delta for that field instead of an error: a stream can only
grow, and a server must not fail in the middle of one.
"""

from __future__ import annotations

from typing import Any

from .model import ParsedMessage, ToolCallOut

__all__ = ["message_deltas"]


def _grown(old: str, new: str) -> str:
    return new[len(old) :] if new.startswith(old) else ""


def _call_deltas(index: int, old: ToolCallOut | None, new: ToolCallOut) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if old is None or old.name != new.name or old.id != new.id:
        header = {"index": index, "id": new.id, "type": "function", "function": {"name": new.name, "arguments": ""}}
        out.append({"tool_calls": [header]})
    if args := _grown(old.arguments if old is not None else "", new.arguments):
        out.append({"tool_calls": [{"index": index, "function": {"arguments": args}}]})
    return out


def message_deltas(prev: ParsedMessage, cur: ParsedMessage) -> list[dict[str, Any]]:
    """The ``delta`` objects that take a client from ``prev`` to ``cur``, in order.

    ``id`` is the model's own id or ``""``: the API layer gives calls without one an id (once, when the call
    first appears) and must keep it for the later deltas of that index.
    """
    out: list[dict[str, Any]] = []
    if text := _grown(prev.reasoning_content, cur.reasoning_content):
        out.append({"reasoning_content": text})
    if text := _grown(prev.content, cur.content):
        out.append({"content": text})
    for i, call in enumerate(cur.tool_calls):
        out += _call_deltas(i, prev.tool_calls[i] if i < len(prev.tool_calls) else None, call)
    return out
