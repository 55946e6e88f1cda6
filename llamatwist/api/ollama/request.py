# -*- test-case-name: tests.test_ollama -*-
"""Ollama's request bodies (``/api/chat``, ``/api/generate``, ``/api/embed``), validated and translated into
the OpenAI chat and llama.cpp bodies the other routes take (pure functions, no I/O).

- ``options`` holds the sampling fields: Ollama's names (``num_predict``, ``num_keep``) become llama.cpp's, the
  ones both share (``temperature``, ``top_k``, ``min_p``, ``mirostat``, ``stop``, ``seed``, ...) pass as they
  are, with every other field of llama.cpp's params table; load-time options (``num_ctx``, ``num_gpu``,
  ``num_thread``, ...) are the server's, set by its flags, and like options Ollama no longer reads (``tfs_z``,
  ``penalize_newline``) or does not know, they are ignored, as Ollama ignores an unknown option.
- ``format``: ``"json"`` any JSON object, a JSON schema that schema.
- ``think``: ``false`` asks the template not to think; ``true`` or a level (``"low"``, ``"medium"``,
  ``"high"``: the template's ``reasoning_effort``) thinks, the thinking in the message's ``thinking``.
- ``tool_choice`` and ``parallel_tool_calls`` (not Ollama's) pass on as the chat route reads them.
- ``keep_alive`` (seconds, or a Go duration such as ``"5m"``; negative: for ever) is how long the model stays
  loaded once idle: ``read_keep_alive`` reads it, the routes hand it to the engine.
- messages: ``images`` (base64) become ``image_url`` parts; an assistant's ``tool_calls`` (arguments as an
  object) OpenAI's, with ids; a ``tool`` message answers the earliest unanswered call of its ``tool_name``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.params import FIELDS, read_n_probs

__all__ = ["FOREVER", "chat_body", "embed_inputs", "generate_body", "is_raw", "read_keep_alive", "sampling_fields"]

# Ollama's option names for llama.cpp's fields
_RENAMED = {"num_predict": "n_predict", "num_keep": "n_keep"}
# llama.cpp's own fields an Ollama client may put in options; not the ones the request itself sets
_OWN = frozenset({"stream", "n_probs", "logprobs", "max_tokens", "max_completion_tokens", "response_format"})
_OPTIONS = frozenset(n for f in FIELDS for n in f.names if n not in _OWN)
_THINK_LEVELS = ("low", "medium", "high")
# Go's time.ParseDuration units, in seconds
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_GO_DURATION = re.compile(f"(?:{_DURATION.pattern})+")
FOREVER = math.inf  # a negative keep_alive: the model is never unloaded for idleness
_LONGEST = 1e9  # seconds (31 years): longer is for ever (Go's durations end near 292 years)


def _obj(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{name}' must be an object")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"'{where}' must be a string")
    return value


def _bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be a boolean")
    return value


def read_keep_alive(body: Mapping[str, Any]) -> float | None:
    """A request's ``keep_alive`` in seconds (`FOREVER` for a negative one); None when it sends none. Ollama
    reads a number as seconds and a string as a Go duration (``"5m"``, ``"1h30m"``, ``"-1"``...); a string
    of digits alone is seconds here too (as Ollama's OLLAMA_KEEP_ALIVE reads it)."""
    value = body.get("keep_alive")
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration(value.strip())
    else:
        raise InvalidRequest("'keep_alive' must be a number of seconds or a duration such as \"5m\"")
    return FOREVER if seconds < 0 or seconds >= _LONGEST else seconds


def _duration(text: str) -> float:
    """Seconds of ``text``: a number, or a Go duration (one optional sign, then number-unit pairs)."""
    sign = -1.0 if text.startswith("-") else 1.0
    rest = text[1:] if text[:1] in ("+", "-") else text
    if rest.replace(".", "", 1).isdigit():
        return sign * float(rest)
    if not _GO_DURATION.fullmatch(rest):
        raise InvalidRequest(f"invalid keep_alive duration {json.dumps(text)}: expected seconds or a duration "
                             "such as \"5m\", \"1h30m\" or \"-1\"")
    return sign * sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(rest))


def sampling_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """llama.cpp's generation fields of a request: its ``options``, ``format``, ``think``, ``stream``
    (Ollama streams unless told not to) and ``logprobs``/``top_logprobs``."""
    out: dict[str, Any] = {}
    for name, value in _obj(body, "options").items():
        name = _RENAMED.get(name, name)
        if name in _OPTIONS and value is not None:
            out[name] = value
    if out.get("n_predict") == -2:  # Ollama's "fill the context": as far as the context goes
        out["n_predict"] = -1
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    elif fmt not in (None, ""):
        raise InvalidRequest(f"invalid format: {json.dumps(fmt)}: expected \"json\" or a JSON schema")
    think = body.get("think")
    if think is False:
        out["chat_template_kwargs"] = {"enable_thinking": False}
    elif think in _THINK_LEVELS:
        out["chat_template_kwargs"] = {"reasoning_effort": think}
    elif think not in (None, True):
        raise InvalidRequest(f"invalid think value: {json.dumps(think)} (must be a boolean or "
                             f"{', '.join(repr(t) for t in _THINK_LEVELS)})")
    out["stream"] = _bool(body, "stream", True)
    if _bool(body, "logprobs", False):  # the sampled tokens' own, and as many others as asked (none by default)
        out["logprobs"] = True
        out["top_logprobs"] = read_n_probs("top_logprobs", body.get("top_logprobs", 0))
    return out


def _images(msg: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    images = msg.get("images")
    if images is None:
        return []
    if not isinstance(images, list):
        raise InvalidRequest(f"'{where}.images' must be an array of base64 strings")
    # the media loader reads the bytes themselves to tell the format
    return [{"type": "image_url", "image_url": {"url": "data:image/*;base64," + _str(img, f"{where}.images.{i}")}}
            for i, img in enumerate(images)]


def _content(msg: Mapping[str, Any], where: str) -> str | list[dict[str, Any]]:
    content = msg.get("content")
    text = "" if content is None else _str(content, f"{where}.content")
    images = _images(msg, where)
    return [*images, {"type": "text", "text": text}] if images else text


def _calls(msg: Mapping[str, Any], where: str, n_before: int) -> list[dict[str, Any]]:
    calls = msg.get("tool_calls")
    if not isinstance(calls, list):
        raise InvalidRequest(f"'{where}.tool_calls' must be an array")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise InvalidRequest(f"'{where}.tool_calls.{i}' must be an object with a 'function'")
        args = fn.get("arguments", {})
        out.append({"id": f"call_{n_before + i}", "type": "function", "function": {
            "name": _str(fn.get("name"), f"{where}.tool_calls.{i}.function.name"),
            # Ollama sends the arguments as an object; OpenAI's are its JSON text
            "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}})
    return out


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array")
    out: list[dict[str, Any]] = []
    unanswered: list[dict[str, Any]] = []  # the calls of the assistant messages so far that no tool answered
    n_calls = 0
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(msg, dict):
            raise InvalidRequest(f"'{where}' must be an object")
        role = _str(msg.get("role"), f"{where}.role")
        item: dict[str, Any] = {"role": role, "content": _content(msg, where)}
        if role == "assistant":
            if msg.get("thinking"):
                item["reasoning_content"] = _str(msg["thinking"], f"{where}.thinking")
            if msg.get("tool_calls"):
                calls = _calls(msg, where, n_calls)
                n_calls += len(calls)
                unanswered.extend(calls)
                item["tool_calls"] = calls
        elif role == "tool":
            name = msg.get("tool_name") or msg.get("name")
            if name is not None:
                name = _str(name, f"{where}.tool_name")
                item["name"] = name
            call = next((c for c in unanswered if name is None or c["function"]["name"] == name), None)
            if call is not None:
                unanswered.remove(call)
                item["tool_call_id"] = call["id"]
        out.append(item)
    return out


def chat_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """An ``/api/chat`` body as the OpenAI chat body ``/v1/chat/completions`` takes."""
    out = {"messages": _messages(body.get("messages", [])), **sampling_fields(body)}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be an array")
        out["tools"] = tools
    # not Ollama's: llama.cpp's way to force a call (or none), for clients that want it
    for name in ("tool_choice", "parallel_tool_calls"):
        if body.get(name) is not None:
            out[name] = body[name]
    return out


def is_raw(body: Mapping[str, Any]) -> bool:
    """``raw``: the prompt goes to the model as it is, without the chat template."""
    return _bool(body, "raw", False)


def generate_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """An ``/api/generate`` body: raw, the ``/completion`` body of its prompt; otherwise the chat body of its
    ``system`` and its prompt as the user's message (the model's template lays them out, as Ollama's)."""
    prompt = _str(body.get("prompt", ""), "prompt")
    fields = sampling_fields(body)
    if body.get("images") and body.get("context"):
        raise InvalidRequest("'images' cannot be used with 'context': a reply's token ids hold no images")
    if is_raw(body):
        if body.get("images"):
            raise InvalidRequest("'images' cannot be used with 'raw': the prompt is not laid out by the template")
        return {"prompt": prompt, **fields}
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _str(body["system"], "system")})
    messages.append({"role": "user", "content": _content({"content": prompt, "images": body.get("images")}, "body")})
    return {"messages": messages, **fields}


def embed_inputs(body: Mapping[str, Any], legacy: bool) -> list[str]:
    """``/api/embed``'s ``input`` (a string or strings), or the legacy ``/api/embeddings``' ``prompt``."""
    if legacy:
        return [_str(body.get("prompt", ""), "prompt")]
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise InvalidRequest("'input' must be a string or a non-empty array of strings")
