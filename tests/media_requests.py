"""Requests the media tests (audio, video) send: a chat turn with media parts, a /completion with
multimodal_data, and a text's token count (to tell media tokens from text in timings.prompt_n)."""

from __future__ import annotations

from typing import Any

import requests

from tests.conftest import Server


def chat_with(srv: Server, parts: tuple[dict[str, Any], ...], text: str, **extra: Any) -> requests.Response:
    content = [*parts, {"type": "text", "text": text}]
    return srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": content}], "max_tokens": 6,
                                             "temperature": 0, "ignore_eos": True, **extra})


def complete(srv: Server, prompt: str, media: list[str], **extra: Any) -> requests.Response:
    return srv.post("/completion", {"prompt": {"prompt_string": prompt, "multimodal_data": media}, "n_predict": 6,
                                    "temperature": 0, **extra})


def text_tokens(srv: Server, text: str) -> int:
    return len(srv.post("/tokenize", {"content": text}).json()["tokens"])
