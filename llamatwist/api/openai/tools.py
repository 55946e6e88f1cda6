# -*- test-case-name: tests.test_tools_api -*-
"""OpenAI function calling on the request/response side (pure functions, no I/O).

Request: ``tools``, ``tool_choice``, ``parallel_tool_calls`` and the tool-call history in ``messages`` are
validated here (400 naming the problem: llama-server answers some of these with a 500 or not at all).
Response: parsed messages (``llamatwist.chat.toolcalls``) become OpenAI ``message`` objects and stream
deltas, with tool-call ids assigned once per call and kept for the whole stream.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.openai.protocol import random_id
from llamatwist.chat.toolcalls import ChatSyntax, ParsedMessage, message_deltas, parse_output
from llamatwist.config import REASONING_FORMATS

__all__ = [
    "MessageStream",
    "ToolCallIds",
    "ToolRequest",
    "check_tool_history",
    "message_json",
    "parse_reasoning_format",
    "parse_tool_request",
    "parse_whole",
]

log = logging.getLogger(__name__)

_JSON_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_CHOICES = ("auto", "none", "required")


@dataclass(frozen=True)
class ToolRequest:
    tools: list[dict[str, Any]] | None = None  # None: no tools given
    tool_choice: str | dict[str, Any] = "auto"  # "auto" | "none" | "required" | a named function
    parallel_tool_calls: bool = False

    @property
    def active(self) -> bool:
        """Tool calls are possible (and parsed) for this request."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools or ()]


def _check_schema(schema: Any, where: str) -> None:
    """Structural checks of a JSON schema object; llguidance reports the rest when it compiles the tools."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{where} must be a JSON schema object")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if not all(isinstance(k, str) and k in _JSON_TYPES for k in kinds) or (isinstance(kind, list) and not kind):
        raise InvalidRequest(f"{where}.type must be one of {', '.join(sorted(_JSON_TYPES))} (or a list of them)")
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise InvalidRequest(f"{where}.properties must be an object")
        for name, sub in props.items():
            _check_schema(sub, f"{where}.properties.{name}")
    required = schema.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise InvalidRequest(f"{where}.required must be an array of strings")
    if "items" in schema and not isinstance(schema["items"], (dict, bool)):
        raise InvalidRequest(f"{where}.items must be a JSON schema object")


def _check_tool(tool: Any, i: int) -> dict[str, Any]:
    where = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise InvalidRequest(f"{where} must be an object")
    if tool.get("type") != "function":
        raise InvalidRequest(f"{where}.type must be 'function'")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise InvalidRequest(f"{where}.function must be an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest(f"{where}.function.name must be a non-empty string")
    if fn.get("description") is not None and not isinstance(fn["description"], str):
        raise InvalidRequest(f"{where}.function.description must be a string")
    params = fn.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise InvalidRequest(f"{where}.function.parameters must be a JSON schema object")
        if params.get("type", "object") != "object":
            raise InvalidRequest(f"{where}.function.parameters must describe an object (\"type\": \"object\")")
        _check_schema(params, f"{where}.function.parameters")
    return tool


def _check_tool_choice(choice: Any, names: list[str]) -> str | dict[str, Any]:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice not in _CHOICES:
            raise InvalidRequest(f"Invalid tool_choice: {choice}")
        if choice == "required" and not names:
            raise InvalidRequest("tool_choice 'required' needs a non-empty 'tools' list")
        return choice
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest("'tool_choice' must be 'auto', 'none', 'required' or "
                             "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if name not in names:
        raise InvalidRequest(f"tool_choice names an unknown function: {name!r}")
    return {"type": "function", "function": {"name": name}}


def parse_tool_request(body: Mapping[str, Any]) -> ToolRequest:
    """``tools``/``tool_choice``/``parallel_tool_calls`` of a chat request, validated."""
    raw = body.get("tools")
    tools: list[dict[str, Any]] | None = None
    if raw is not None:
        if not isinstance(raw, list):
            raise InvalidRequest("'tools' must be an array")
        tools = [_check_tool(t, i) for i, t in enumerate(raw)]
        names = [t["function"]["name"] for t in tools]
        dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if dup is not None:
            raise InvalidRequest(f"tools: function {dup!r} is defined twice")
    choice = _check_tool_choice(body.get("tool_choice"), [t["function"]["name"] for t in tools or ()])
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequest("'parallel_tool_calls' must be a boolean")
    return ToolRequest(tools=tools or None, tool_choice=choice, parallel_tool_calls=bool(parallel))


def check_tool_history(messages: Any) -> None:
    """Each ``role: tool`` message answers a call of an earlier assistant message (by ``tool_call_id``).

    The message shapes themselves are checked by the chat layer when it renders; this only looks at
    well-formed parts. A tool message without an id is accepted (templates that do not use ids).
    """
    if not isinstance(messages, list):
        return
    seen: set[str] = set()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        calls = msg.get("tool_calls")
        if msg.get("role") == "assistant" and isinstance(calls, list):
            seen.update(c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str))
        elif msg.get("role") == "tool":
            call_id = msg.get("tool_call_id")
            if call_id is None or call_id == "":
                continue
            if not isinstance(call_id, str):
                raise InvalidRequest(f"messages[{i}].tool_call_id must be a string")
            if call_id not in seen:
                raise InvalidRequest(f"messages[{i}].tool_call_id {call_id!r} does not match any earlier "
                                     "assistant tool call")


def parse_reasoning_format(body: Mapping[str, Any], default: str) -> str:
    value = body.get("reasoning_format")
    if value is None:
        return default
    if value not in REASONING_FORMATS:
        raise InvalidRequest(f"'reasoning_format' must be one of {', '.join(REASONING_FORMATS)}")
    return str(value)


def parse_whole(text: str, syntax: ChatSyntax) -> ParsedMessage:
    """The final parse of a whole response. An output the parser refuses (e.g. a tool call cut off by
    n_predict) is parsed as a partial one, and as plain content if that fails too: the client still gets
    what was generated, never a 500 after the tokens were spent."""
    for partial in (False, True):
        try:
            return parse_output(text, syntax, partial=partial)
        except Exception:  # any parser failure falls back to plainer output
            log.debug("parse_output(partial=%s) failed for %r", partial, text[:200], exc_info=True)
    return ParsedMessage(content=text)


class ToolCallIds:
    """Ids for the calls of one choice: the model's own id when its format has one (and no earlier call of
    the reply has it: a model may write the same id twice), else a random one, fixed per call index for the
    whole response (stream deltas and the final message agree)."""

    def __init__(self) -> None:
        self._ids: list[str] = []

    def fill(self, msg: ParsedMessage) -> ParsedMessage:
        if not msg.tool_calls:
            return msg
        calls = []
        for i, call in enumerate(msg.tool_calls):
            if i == len(self._ids):
                self._ids.append(call.id if call.id and call.id not in self._ids else random_id())
            calls.append(call if call.id == self._ids[i] else dataclasses.replace(call, id=self._ids[i]))
        return dataclasses.replace(msg, tool_calls=tuple(calls))


class MessageStream:
    """One choice's reply as it is generated: the text so far, re-parsed on every piece (``syntax`` None:
    plain content, no parsing), and the OpenAI deltas from the previous parse to the new one."""

    def __init__(self, syntax: ChatSyntax | None) -> None:
        self.syntax = syntax
        self.text = ""
        self.message = ParsedMessage()
        self._ids = ToolCallIds()

    def _update(self, new: ParsedMessage) -> list[dict[str, Any]]:
        new = self._ids.fill(new)
        deltas = message_deltas(self.message, new)
        self.message = new
        return deltas

    def feed(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        if self.syntax is None:
            self.message = ParsedMessage(content=self.text)
            return [{"content": piece}] if piece else []
        try:
            new = parse_output(self.text, self.syntax, partial=True)
        except Exception:  # an unparsable prefix: wait for more text
            log.debug("partial parse failed for %r", self.text[:200], exc_info=True)
            return []
        return self._update(new)

    def finish(self, piece: str = "") -> tuple[ParsedMessage, list[dict[str, Any]]]:
        """The final message and the deltas that complete the stream."""
        if self.syntax is None:
            deltas = self.feed(piece)
            return self.message, deltas
        self.text += piece
        deltas = self._update(parse_whole(self.text, self.syntax))
        return self.message, deltas


def message_json(msg: ParsedMessage) -> dict[str, Any]:
    """The OpenAI ``message`` of a choice: ``content`` null when the reply is only tool calls."""
    out: dict[str, Any] = {"role": "assistant", "content": msg.content or (None if msg.tool_calls else "")}
    if msg.reasoning_content:
        out["reasoning_content"] = msg.reasoning_content
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    return out
