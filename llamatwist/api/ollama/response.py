# -*- test-case-name: tests.test_ollama -*-
"""Ollama's response objects (pure functions): chunks and the final object with its counts and durations (in
nanoseconds), messages with ``thinking`` and ``tool_calls`` (arguments as objects), token log probabilities,
and the model entries of ``/api/tags``, ``/api/ps`` and ``/api/show``."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from llamatwist.api.completion import probs_json
from llamatwist.chat.toolcalls import ParsedMessage, ToolCallOut
from llamatwist.runtime import FinalResult, TokenProbs

__all__ = [
    "NEVER_EXPIRES",
    "OLLAMA_VERSION",
    "created_at",
    "done_reason",
    "error_shape",
    "expires_at",
    "final_fields",
    "logprobs_json",
    "message_json",
    "model_details",
    "model_entry",
    "model_info",
    "modified_at",
    "tool_calls_json",
]

# the Ollama API version these routes follow (clients such as Open WebUI ask /api/version)
OLLAMA_VERSION = "0.12.0"
_MS = 1_000_000  # nanoseconds per millisecond


def created_at() -> str:
    """Ollama's timestamp: RFC 3339 in UTC."""
    return _timestamp(time.time())


# /api/ps's "expires_at" of a model never unloaded for idleness (Ollama's for a negative keep_alive)
NEVER_EXPIRES = "2318-01-01T00:00:00Z"


def expires_at(unload_at: float | None, keep_alive: float | None) -> str:
    """When a loaded model is due to be unloaded: the idle deadline, else (busy) its keep-alive from now."""
    if unload_at is None:
        if keep_alive is None:
            return NEVER_EXPIRES
        unload_at = time.time() + keep_alive
    return _timestamp(unload_at)


def error_shape(answer: Any) -> dict[str, Any]:
    """Ollama's error body: the message as a string (its clients read ``error`` as the text)."""
    return {"error": answer.message}


def done_reason(r: FinalResult) -> str:
    return "length" if r.stop_type == "limit" else "stop"


def final_fields(r: FinalResult, total_ns: int, load_ns: int = 0) -> dict[str, Any]:
    """What Ollama's last object of a reply adds: why it ended, its token counts and durations (``load_ns``: the
    model's load the request waited for, after a sleep)."""
    return {
        "done": True,
        "done_reason": done_reason(r),
        "total_duration": total_ns,
        "load_duration": load_ns,
        "prompt_eval_count": r.n_prompt_tokens,
        "prompt_eval_duration": round(r.timings.prompt_ms * _MS),
        "eval_count": r.n_decoded,
        "eval_duration": round(r.timings.predicted_ms * _MS),
    }


def message_json(msg: ParsedMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": msg.content}
    if msg.reasoning_content:
        out["thinking"] = msg.reasoning_content
    if msg.tool_calls:
        out["tool_calls"] = tool_calls_json(msg.tool_calls)
    return out


def tool_calls_json(calls: Sequence[ToolCallOut], start: int = 0) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments as an object), indexed in the reply from ``start``."""
    return [{"function": {"index": i, "name": c.name, "arguments": _arguments(c.arguments)}}
            for i, c in enumerate(calls, start)]


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:  # a model's malformed arguments: passed on as the text it wrote
        return text


def logprobs_json(probs: Sequence[TokenProbs], top_n: int) -> list[dict[str, Any]]:
    return [{"token": e["token"], "logprob": e["logprob"],
             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"]} for t in e["top_logprobs"][:top_n]]}
            for e in probs_json(probs)]


def model_details(arch: str, n_params: int, ftype: str) -> dict[str, Any]:
    """Ollama's ``details`` of a GGUF model."""
    size = f"{n_params / 1e9:.1f}B" if n_params >= 1e9 else f"{n_params / 1e6:.0f}M" if n_params else ""
    return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch] if arch else None,
            "parameter_size": size, "quantization_level": ftype}


def model_entry(name: str, path: str, details: dict[str, Any]) -> dict[str, Any]:
    """One model of ``/api/tags`` and ``/api/ps``: its digest is of its path, size and time, not of its bytes
    (hashing gigabytes per listing would stall it)."""
    size, mtime = _file(path)
    digest = hashlib.sha256(f"{path}:{size}:{mtime}".encode()).hexdigest()
    return {"name": name, "model": name, "modified_at": _timestamp(mtime), "size": size, "digest": digest,
            "details": details}


def modified_at(path: str) -> str:
    """When the model's file last changed, as Ollama writes times."""
    return _timestamp(_file(path)[1])


def _file(path: str) -> tuple[int, float]:
    try:
        st = os.stat(path)
    except OSError:  # a model the router has not downloaded yet
        return 0, 0.0
    return st.st_size, st.st_mtime


def _timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def model_info(metadata: dict[str, str], n_params: int) -> dict[str, Any]:
    """``/api/show``'s ``model_info``: the GGUF's metadata, numbers as numbers, without the tokenizer's
    vocabulary arrays (Ollama leaves them out unless asked to be verbose)."""
    out: dict[str, Any] = {"general.parameter_count": n_params}
    for key, value in sorted(metadata.items()):
        if key.startswith("tokenizer.ggml.") and key not in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
            continue
        if key == "tokenizer.chat_template":
            continue  # shown as the template
        out[key] = _number(value)
    return out


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
