# -*- test-case-name: tests.test_tools_api -*-
"""OpenAI's legacy function calling -- ``functions`` and ``function_call`` in a chat request, ``role:
"function"`` messages, an assistant's ``function_call`` -- which OpenAI deprecated for tools but still serves,
and older clients still send (llama-server ignores them: such a client got plain text). On the way in they
become tools, tool choice and tool messages; on the way out a reply's (first) tool call is the message's
``function_call``, and the finish reason ``function_call``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llamatwist.api.errors import InvalidRequest

__all__ = ["from_functions", "legacy_delta", "legacy_finish", "legacy_message"]


def from_functions(body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body with the legacy fields as tools, and whether the reply must be legacy-shaped (it defined
    ``functions``)."""
    functions, choice = body.get("functions"), body.get("function_call")
    messages = body.get("messages")
    history = isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("role") == "function" or m.get("function_call") is not None) for m in messages)
    if functions is None and choice is None and not history:
        return dict(body), False
    out = {k: v for k, v in body.items() if k not in ("functions", "function_call")}
    if functions is not None:
        if body.get("tools") is not None:
            raise InvalidRequest("'functions' and 'tools' cannot be used together: use tools")
        if not isinstance(functions, list):
            raise InvalidRequest("'functions' must be an array of function definitions")
        out["tools"] = [{"type": "function", "function": f} for f in functions]
        out["parallel_tool_calls"] = False  # a legacy reply holds one call
    if choice is not None:
        out["tool_choice"] = _tool_choice(choice)
    if history and isinstance(messages, list):
        out["messages"] = _messages(messages)
    return out, functions is not None


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto"):
        return choice
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("'function_call' must be 'none', 'auto' or {\"name\": FUNCTION}")


def _messages(messages: list[Any]) -> list[Any]:
    """Assistant ``function_call``s as tool calls with ids, ``function`` messages as the tool messages that
    answer the latest earlier call of their name."""
    out: list[Any] = []
    latest: dict[str, str] = {}  # function name -> the id given to its latest call
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            out.append(msg)
            continue
        call = msg.get("function_call")
        if msg.get("role") == "assistant" and call is not None:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise InvalidRequest(f"messages[{i}].function_call must be an object with a 'name'")
            call_id = f"call_{i}"
            latest[call["name"]] = call_id
            msg = {k: v for k, v in msg.items() if k != "function_call"}
            msg["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": call["name"], "arguments": call.get("arguments", "")}}]
        elif msg.get("role") == "function" and isinstance(msg.get("name"), str) and msg["name"] in latest:
            msg = {**msg, "role": "tool", "tool_call_id": latest[msg["name"]]}
        out.append(msg)  # a function message answering no call stays as it is: the template renders its role
    return out


def legacy_message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat ``message`` with its first tool call as ``function_call``."""
    calls = message.pop("tool_calls", None)
    if calls:
        message["function_call"] = dict(calls[0]["function"])
    return message


def legacy_delta(delta: dict[str, Any]) -> dict[str, Any]:
    """A streamed delta with the first tool call's pieces as ``function_call`` pieces."""
    calls = delta.pop("tool_calls", None)
    first = [c for c in calls or () if c.get("index", 0) == 0]
    if first:
        delta["function_call"] = dict(first[0].get("function", {}))
    return delta


def legacy_finish(reason: str) -> str:
    return "function_call" if reason == "tool_calls" else reason
