# -*- test-case-name: tests.test_anthropic -*-
"""An Anthropic Messages request, validated and translated into the OpenAI chat body that
``/v1/chat/completions`` takes (pure functions, no I/O).

As llama-server's ``server_chat_convert_anthropic_to_oai``: ``system`` becomes a system message, text
blocks become text parts, ``tool_use`` blocks an assistant's ``tool_calls``, ``tool_result`` blocks ``tool``
messages, ``thinking`` blocks ``reasoning_content``, ``tools``/``tool_choice``/``stop_sequences``/
``thinking`` their chat counterparts, ``image`` blocks (base64 or url sources, in user messages and tool
results) ``image_url`` parts; llama.cpp's own generation fields (``ignore_eos``, ``min_p``, ``seed``, ...)
pass through as on the other generation routes. Unlike llama-server, a client's mistake is a 400 naming the field
(``messages.1.content.0.type: ...``, Anthropic's style) instead of being passed on or dropped; as llama-server
(and its documentation), ``model`` may be left out and ``max_tokens`` defaults to 4096, which Anthropic itself
requires; ``tool_choice`` ``{"type": "tool"}`` forces the named
tool (llama-server: any tool); and a user message's tool results come before its text, in the order Anthropic
requires them to be written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.params import FIELDS

__all__ = ["to_chat_body"]

DEFAULT_MAX_TOKENS = 4096  # llama-server's, for a request without max_tokens

# passed through unchanged: llama-server's temperature, top_p, top_k, stream and chat_template_kwargs, and here
# every other generation field of the params table (ignore_eos, seed, min_p, cache_prompt, ...) and lora, as
# on the other generation routes; not the ones Anthropic's own fields set (max_tokens, stop_sequences) nor
# token probabilities, which an Anthropic message has no place for
_OWN = frozenset({"n_predict", "max_completion_tokens", "max_tokens", "stop", "n_probs", "logprobs",
                  "post_sampling_probs"})
_PASSED = (*(n for f in FIELDS for n in f.names if n not in _OWN), "chat_template_kwargs", "lora")
_DOCUMENT = "document input is not supported: PDF and text documents are not read by this server"
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_USER_BLOCKS = ("text", "image", "document", "tool_result")
_ASSISTANT_BLOCKS = ("text", "tool_use", "thinking", "redacted_thinking")


def _bad(where: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {message}")


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _bad(where, "Input should be a valid string")
    return v


def _block_type(block: Any, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(block, dict):
        raise _bad(where, "Input should be a valid dictionary or object")
    kind = block.get("type")
    if kind == "document":
        raise _bad(where, _DOCUMENT)
    if kind not in allowed:
        raise _bad(f"{where}.type", f"Input tag {kind!r} found using 'type' does not match any of the expected "
                                     f"tags: {', '.join(repr(a) for a in allowed)}")
    return str(kind)


def _text(block: dict[str, Any], where: str) -> str:
    return _str(block.get("text"), f"{where}.text")


def _system(system: Any) -> str:
    """A string, or text blocks joined as llama-server joins them."""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _bad("system", "Input should be a valid string or a list of text blocks")
    return "".join(_text(b, f"system.{i}") for i, b in enumerate(system)
                   if _block_type(b, f"system.{i}", ("text",)))


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    """An image block as the chat route's ``image_url`` part (llama-server's translation): a base64 source
    as a data: URI, a url source as its URL."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{where}.source", "Field required (an object with type 'base64' or 'url')")
    kind = source.get("type")
    if kind == "base64":
        media_type = _str(source.get("media_type"), f"{where}.source.media_type")
        if media_type not in _IMAGE_TYPES:
            raise _bad(f"{where}.source.media_type", f"Input should be {', '.join(repr(t) for t in _IMAGE_TYPES)}")
        url = f"data:{media_type};base64,{_str(source.get('data'), f'{where}.source.data')}"
    elif kind == "url":
        url = _str(source.get("url"), f"{where}.source.url")
    else:
        raise _bad(f"{where}.source.type", "Input should be 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    """Text blocks joined; with images, the chat parts (text and image_url), as llama-server sends them."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(where, "Input should be a valid string or a list of blocks")
    parts = [_image(b, at) if _block_type(b, at, ("text", "image")) == "image" else {"type": "text", "text": _text(b, at)}
             for i, b in enumerate(content) for at in (f"{where}.{i}",)]
    if any(p["type"] == "image_url" for p in parts):
        return parts
    return "".join(p["text"] for p in parts)


def _user(msg: dict[str, Any], where: str, calls: Mapping[str, str]) -> list[dict[str, Any]]:
    """A user message: its tool results as ``tool`` messages (each answering a ``tool_use`` of the previous
    assistant message, as Anthropic requires), then its text."""
    content = msg["content"]
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.content.{i}"
        kind = _block_type(block, at, _USER_BLOCKS)
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
            continue
        if kind == "image":
            parts.append(_image(block, at))
            continue
        call_id = _str(block.get("tool_use_id"), f"{at}.tool_use_id")
        if call_id not in calls:
            raise _bad(at, f"unexpected tool_use_id found in tool_result blocks: {call_id}. Each tool_result "
                           "block must have a corresponding tool_use block in the previous message.")
        if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
            raise _bad(f"{at}.is_error", "Input should be a valid boolean")
        out.append({"role": "tool", "tool_call_id": call_id, "name": calls[call_id],
                    "content": _tool_result_content(block.get("content"), f"{at}.content")})
    if not content:
        raise _bad(f"{where}.content", "List should have at least 1 item")
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(msg: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """An assistant message and its tool calls (id -> name)."""
    content = msg["content"]
    if isinstance(content, str):
        return {"role": "assistant", "content": content}, {}
    text, reasoning = "", ""
    calls: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, block in enumerate(content):
        at = f"{where}.content.{i}"
        kind = _block_type(block, at, _ASSISTANT_BLOCKS)
        if kind == "text":
            text += _text(block, at)
        elif kind == "thinking":
            reasoning += _str(block.get("thinking"), f"{at}.thinking")
        elif kind == "tool_use":
            call_id = _str(block.get("id"), f"{at}.id")
            name = _str(block.get("name"), f"{at}.name")
            args = block.get("input")
            if not isinstance(args, dict):
                raise _bad(f"{at}.input", "Input should be a valid dictionary")
            names[call_id] = name
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}})
        # redacted_thinking: encrypted by Anthropic, nothing a local model can read
    out: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        out["tool_calls"] = calls
    if reasoning:
        out["reasoning_content"] = reasoning
    return out, names


def _messages(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        raise _bad("messages", "Field required")
    if not isinstance(messages, list):
        raise _bad("messages", "Input should be a valid list")
    if not messages:
        raise _bad("messages", "at least one message is required")
    out: list[dict[str, Any]] = []
    calls: dict[str, str] = {}  # the tool calls of the previous message
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(msg, dict):
            raise _bad(where, "Input should be a valid dictionary")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise _bad(f"{where}.role", "Input should be 'user' or 'assistant'")
        if "content" not in msg:
            raise _bad(f"{where}.content", "Field required")
        if not isinstance(msg["content"], (str, list)):
            raise _bad(f"{where}.content", "Input should be a valid string or a list of content blocks")
        if role == "user":
            out += _user(msg, where, calls)
            calls = {}
        else:
            converted, calls = _assistant(msg, where)
            out.append(converted)
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "Input should be a valid list")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _bad(where, "Input should be a valid dictionary")
        if tool.get("type", "custom") != "custom":
            raise _bad(f"{where}.type", f"server tool {tool.get('type')!r} is not supported; define a custom "
                                        "tool with an input_schema")
        name = _str(tool.get("name"), f"{where}.name")
        if not name.strip():
            raise _bad(f"{where}.name", "String should have at least 1 character")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _bad(f"{where}.input_schema", "Field required (a JSON schema object)")
        if schema.get("type") != "object":
            raise _bad(f"{where}.input_schema.type", "Input should be 'object'")
        fn: dict[str, Any] = {"name": name, "parameters": schema}
        if tool.get("description") is not None:
            fn["description"] = _str(tool["description"], f"{where}.description")
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, body: dict[str, Any]) -> None:
    """``auto``/``any``/``tool``/``none`` as the chat route's tool_choice; ``disable_parallel_tool_use``
    as parallel_tool_calls (Anthropic allows parallel calls unless it is set)."""
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise _bad("tool_choice", "Input should be an object with type 'auto', 'any', 'tool' or 'none'")
    if kind == "tool":
        body["tool_choice"] = {"type": "function",
                               "function": {"name": _str(choice.get("name"), "tool_choice.name")}}
    else:
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        if not isinstance(disable, bool):
            raise _bad("tool_choice.disable_parallel_tool_use", "Input should be a valid boolean")
        body["parallel_tool_calls"] = not disable


def _thinking(thinking: Any, body: dict[str, Any]) -> None:
    """``enabled`` with a budget: the reasoning budget; ``disabled``: the template is asked not to think."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "disabled", "adaptive"):
        raise _bad("thinking", "Input should be an object with type 'enabled', 'disabled' or 'adaptive'")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise _bad("thinking.budget_tokens", "Input should be a non-negative integer")
        body["thinking_budget_tokens"] = budget
    elif kind == "disabled":
        kwargs = body.get("chat_template_kwargs")
        body["chat_template_kwargs"] = {**(kwargs if isinstance(kwargs, dict) else {}), "enable_thinking": False}


def to_chat_body(body: Mapping[str, Any], count_only: bool = False) -> dict[str, Any]:
    """The OpenAI chat body for an Anthropic Messages body (``count_only``: a count_tokens body, which has
    no max_tokens)."""
    if body.get("model") is not None:
        _str(body["model"], "model")
    out: dict[str, Any] = {key: body[key] for key in _PASSED if key in body}
    system = body.get("system")
    messages = _messages(body.get("messages"))
    out["messages"] = ([{"role": "system", "content": _system(system)}] if system is not None else []) + messages
    if body.get("tools") is not None:
        out["tools"] = _tools(body["tools"])
    _tool_choice(body.get("tool_choice"), out)
    if body.get("thinking") is not None:
        _thinking(body["thinking"], out)
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and isinstance(metadata.get("user_id"), (str, type(None)))):
        raise _bad("metadata", "Input should be an object with an optional string user_id")
    if count_only:
        return out
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens", "Input should be an integer greater than or equal to 1")
    out["max_tokens"] = max_tokens
    stops = body.get("stop_sequences")
    if stops is not None:
        if not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
            raise _bad("stop_sequences", "Input should be a valid list of strings")
        out["stop"] = stops
    if out.get("stream") is not None and not isinstance(out["stream"], bool):
        raise _bad("stream", "Input should be a valid boolean")
    return out
