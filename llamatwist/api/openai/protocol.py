# -*- test-case-name: tests.test_openai -*-
"""OpenAI request options and response pieces: no I/O, no server state (ids are random, and
envelopes carry the current time). Streams are run by api/openai/streaming.py."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llamatwist import __version__
from llamatwist.api.completion import probs_json
from llamatwist.api.errors import InvalidRequest
from llamatwist.runtime import FinalResult, TokenProbs

__all__ = [
    "SYSTEM_FINGERPRINT",
    "StreamOptions",
    "chat_logprobs",
    "completion_id",
    "completion_logprobs",
    "envelope",
    "final_envelope",
    "finish_reason",
    "parse_stream_options",
    "random_id",
    "usage",
]

SYSTEM_FINGERPRINT = f"llamatwist-{__version__}"
_ALNUM = string.ascii_letters + string.digits


def random_id() -> str:
    """32 random letters and digits, as llama-server's random_string (completion and tool-call ids)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(32))


def completion_id(prefix: str) -> str:
    return prefix + random_id()


def finish_reason(stop_type: str, tool_calls: bool = False) -> str:
    if stop_type in ("eos", "word"):
        return "tool_calls" if tool_calls else "stop"
    return "length"


def usage(results: Sequence[FinalResult], n_cmpl: int, prediction: bool = False) -> dict[str, Any]:
    """Token counts; a prompt shared by ``n_cmpl`` choices counts once. With a ``prediction``, how many
    drafted tokens the model took and how many it did not (OpenAI's accepted and rejected prediction tokens)."""
    prompt = sum(r.n_prompt_tokens for r in results[::n_cmpl])
    completion = sum(r.n_decoded for r in results)
    cached = sum(r.n_cached for r in results[::n_cmpl])
    out: dict[str, Any] = {
        "completion_tokens": completion,
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    if prediction:
        accepted = sum(r.timings.draft_n_accepted for r in results)
        out["completion_tokens_details"] = {"accepted_prediction_tokens": accepted,
                                            "rejected_prediction_tokens": sum(r.timings.draft_n for r in results)
                                            - accepted}
    return out


def envelope(object_: str, id_: str, model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "choices": choices,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "object": object_,
        "id": id_,
    }


def final_envelope(object_: str, id_: str, model: str, choices: list[dict[str, Any]],
                   results: Sequence[FinalResult], n_cmpl: int, prediction: bool = False) -> dict[str, Any]:
    """A whole (not streamed) reply: its choices, usage, and the last result's timings, as llama-server's."""
    out = envelope(object_, id_, model, choices)
    out["usage"] = usage(results, n_cmpl, prediction)
    out["timings"] = results[-1].timings.to_json()
    return out


@dataclass(frozen=True)
class StreamOptions:
    include_usage: bool = False


def parse_stream_options(body: Mapping[str, Any], stream: bool) -> StreamOptions:
    opts = body.get("stream_options")
    if opts is None:
        return StreamOptions()
    if not isinstance(opts, dict):
        raise InvalidRequest("'stream_options' must be an object")
    include = opts.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidRequest("'stream_options.include_usage' must be a boolean")
    # OpenAI refuses stream_options without stream; llama-server ignores them there, so a client written for
    # it may send them on every request
    return StreamOptions(include_usage=include and stream)


def chat_logprobs(probs: Sequence[TokenProbs], top_n: int) -> dict[str, Any]:
    entries = probs_json(probs)
    for e in entries:
        e["top_logprobs"] = e["top_logprobs"][:top_n]
    return {"content": entries}


def completion_logprobs(probs: Sequence[TokenProbs], top_n: int, offset: int) -> dict[str, Any]:
    """OpenAI's legacy completions shape, plus llama-server's ``content`` list."""
    entries = probs_json(probs)
    text_offset = []
    pos = offset
    for tp in probs:
        text_offset.append(pos)
        pos += len(tp.token)
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"][:top_n]} for e in entries],
        "text_offset": text_offset,
        "content": entries,
    }
