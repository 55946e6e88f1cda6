"""The generic format: tool calling for any model, by constraining its whole reply to one JSON object.

The shapes and the instruction are llama.cpp's (``common_chat_params_init_generic``): either
``{"tool_call": {"name": ..., "arguments": {...}}}`` (``{"tool_calls": [...]}`` with parallel calls, each
call with an ``"id"``) or ``{"response": "..."}``. Each call alternative ties its ``name`` (a ``const``) to
that tool's parameter schema, so the arguments are valid for the tool named.

Parallel calls are bounded where llama.cpp leaves them open: its ``tool_calls`` array has ``minItems: 1`` and
no upper bound (and the ``id`` no maximum length), so the grammar lets a model that keeps writing ``, {``
add calls until the token limit, ending with ``finish_reason: "length"`` and no usable call. Here the array
takes at most ``max(len(tools), PARALLEL_CALLS_MIN_CAP)`` calls (every tool once, and at least 8) and an
``id`` at most ``CALL_ID_MAX_LENGTH`` characters, so the grammar itself closes the array and the object.
"""

from __future__ import annotations

import json
from typing import Any

from .scan import Broken, Scanner

__all__ = [
    "CALL_ID_MAX_LENGTH",
    "GENERIC_SYSTEM_PROMPT",
    "PARALLEL_CALLS_MIN_CAP",
    "generic_schema",
    "generic_system_prompt",
    "max_parallel_calls",
    "parse_generic",
    "polyfill_history",
]

GENERIC_SYSTEM_PROMPT = (
    "Respond in JSON format, either with `tool_call` (a request to call tools) or with `response` reply to the "
    "user's request"
)

# Bounds of a parallel-calls reply (see the module docstring); llama.cpp has neither.
PARALLEL_CALLS_MIN_CAP = 8
CALL_ID_MAX_LENGTH = 32  # as long as the ids llamatwist assigns itself (OpenAI's are 29)


def max_parallel_calls(n_tools: int) -> int:
    """How many calls one parallel generic reply may hold: each tool once, and at least 8."""
    return max(n_tools, PARALLEL_CALLS_MIN_CAP)


def generic_system_prompt(tools: list[dict[str, Any]], template_source: str) -> str:
    """llama.cpp's instruction, after the tool list when the template itself does not show ``tools`` (what
    minja's tool polyfill added for such templates)."""
    if "tools" in template_source:
        return GENERIC_SYSTEM_PROMPT
    listing = json.dumps(tools, indent=2, ensure_ascii=False)
    return (
        f"You can call any of the following tools to satisfy the user's requests: {listing}\n\n{GENERIC_SYSTEM_PROMPT}"
    )


def polyfill_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages rewritten for a template that knows no tool calls (``ToolPlan.polyfill_history``).

    An assistant message's ``tool_calls`` become its content in the generic format's own JSON (so the model
    sees its earlier calls the way it is asked to write them); a ``tool`` message becomes a ``user`` message
    holding ``{"tool_response": {"tool": ..., "tool_call_id": ..., "content": ...}}``, as minja's polyfill did.
    """
    out = []
    for msg in messages:
        role = msg.get("role")
        if role == "assistant" and msg.get("tool_calls"):
            calls = []
            for tc in msg["tool_calls"]:
                fn = tc.get("function") or {}
                args = fn.get("arguments", {})
                try:
                    args = json.loads(args) if isinstance(args, str) else args
                except ValueError:
                    pass
                calls.append(
                    {"name": fn.get("name", ""), "arguments": args, **({"id": tc["id"]} if tc.get("id") else {})}
                )
            shape = {"tool_calls": calls} if len(calls) > 1 else {"tool_call": calls[0]}
            text = msg.get("content") if isinstance(msg.get("content"), str) else ""
            msg = {k: v for k, v in msg.items() if k != "tool_calls"}
            msg["content"] = (text + "\n\n" if text else "") + json.dumps(shape, indent=2, ensure_ascii=False)
        elif role == "tool":
            response: dict[str, Any] = {}
            if msg.get("name"):
                response["tool"] = msg["name"]
            if msg.get("tool_call_id"):
                response["tool_call_id"] = msg["tool_call_id"]
            response["content"] = msg.get("content")
            msg = {"role": "user", "content": json.dumps({"tool_response": response}, indent=2, ensure_ascii=False)}
        out.append(msg)
    return out


def _call_schema(function: dict[str, Any], parallel: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required = ["name", "arguments"]
    if parallel:
        # llama.cpp lists "id" last; first here, so a streamed call is complete (id included) once named
        properties["id"] = {"type": "string", "minLength": 4, "maxLength": CALL_ID_MAX_LENGTH}
        required.insert(0, "id")
    properties["name"] = {"type": "string", "const": function["name"]}
    properties["arguments"] = function.get("parameters") or {"type": "object"}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if function.get("description"):
        schema["description"] = function["description"]
    return schema


def generic_schema(
    functions: list[dict[str, Any]], *, parallel: bool, required: bool, response_schema: Any = None
) -> dict[str, Any]:
    """The JSON schema of a generic-format reply. ``functions``: the tools' ``function`` objects."""
    calls = [_call_schema(f, parallel) for f in functions]
    one = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if parallel:
        tool_call: dict[str, Any] = {
            "type": "object",
            "properties": {
                "tool_calls": {"type": "array", "items": one, "minItems": 1, "maxItems": max_parallel_calls(len(calls))}
            },
            "required": ["tool_calls"],
        }
    else:
        tool_call = {"type": "object", "properties": {"tool_call": one}, "required": ["tool_call"]}
    if required:
        return tool_call
    response = {
        "type": "object",
        "properties": {"response": response_schema if response_schema is not None else {"type": "string"}},
        "required": ["response"],
    }
    return {"anyOf": [tool_call, response]}


def parse_generic(s: Scanner) -> None:
    s.reasoning_block()
    if not s.syntax.parse_tool_calls:
        s.add_content(s.rest())
        return
    node = s.json()
    if node.kind == "none":
        raise s.incomplete()
    if node.kind != "object":
        raise Broken
    if (calls := node.get("tool_calls")) is not None:
        s.calls_from_json(calls, "name", "arguments", "id")
    elif (call := node.get("tool_call")) is not None:
        s.call_from_object(call, "name", "arguments", "id")
    elif (response := node.get("response")) is not None:
        if response.kind == "string":
            s.add_content(response.string)  # a partial string streams as it grows
            if not node.complete and not s.partial:
                return  # a reply cut off by the token limit keeps its text (not the raw JSON) as content
        elif response.complete:
            s.add_content(json.dumps(response.value(), indent=2, ensure_ascii=False))
    if not node.complete:
        raise s.incomplete()
    s.skip_ws()
    if not s.at_end():
        raise Broken
    if not s.calls and node.get("response") is None:
        raise Broken
