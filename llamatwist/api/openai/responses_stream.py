# -*- test-case-name: tests.test_responses -*-
"""A Responses API reply from the chat pipeline's output (pure, no I/O): its output items and its stream
events.

`OutputBuilder` takes the OpenAI chat deltas of a reply (``llamatwist.chat.toolcalls.message_deltas``, as
`MessageStream` gives them) and builds the ``output`` items — ``reasoning``, ``message`` (one
``output_text`` part), ``function_call`` — with the events that stream them. A whole reply is the same deltas
fed at once, so a JSON response and a stream agree item for item. Field names follow llama-server's
``to_json_oaicompat_resp``/``_stream`` (``rs_``/``msg_``/``fc_`` ids, ``reasoning_text`` content, usage with
``input_tokens_details.cached_tokens``); where llama-server leaves OpenAI's stream short, OpenAI's shape wins:
every event has ``sequence_number`` and ``output_index`` (and ``content_index`` for parts), an item is done
(``output_text.done``, ``content_part.done``, ``function_call_arguments.done``, ``output_item.done``) before
the next one is added, and a reply cut by ``max_output_tokens`` is ``incomplete``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from llamatwist.api.errors import ErrorAnswer
from llamatwist.api.openai.protocol import random_id
from llamatwist.runtime import FinalResult

__all__ = ["Event", "OutputBuilder", "finish_fields", "response_id", "usage_json"]

Event = tuple[str, dict[str, Any]]  # (event name = its "type", data)


def response_id() -> str:
    return "resp_" + random_id()


def usage_json(r: FinalResult) -> dict[str, Any]:
    return {"input_tokens": r.n_prompt_tokens, "output_tokens": r.n_decoded,
            "total_tokens": r.n_prompt_tokens + r.n_decoded, "input_tokens_details": {"cached_tokens": r.n_cached}}


def finish_fields(r: FinalResult) -> dict[str, Any]:
    """``status``, ``incomplete_details`` and ``completed_at``: a reply cut by the token limit is incomplete."""
    if r.stop_type in ("eos", "word"):
        return {"status": "completed", "incomplete_details": None, "completed_at": int(time.time())}
    return {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "completed_at": None}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class OutputBuilder:
    """Chat deltas in; output items and Responses events out, numbered from ``sequence_number``."""

    def __init__(self) -> None:
        self.output: list[dict[str, Any]] = []  # the items, in the order they were added
        self.sequence_number = 0
        self._open: tuple[str, int] | None = None  # ("reasoning" | "message" | "call", call index)
        self._calls: dict[int, dict[str, Any]] = {}  # call index -> its function_call item

    def event(self, kind: str, **data: Any) -> Event:
        out = {"type": kind, "sequence_number": self.sequence_number, **data}
        self.sequence_number += 1
        return kind, out

    def _item(self) -> dict[str, Any]:
        return self.output[-1]

    def _at(self) -> dict[str, Any]:
        return {"item_id": self._item()["id"], "output_index": len(self.output) - 1}

    def _add(self, key: tuple[str, int], new: Callable[[], dict[str, Any]]) -> list[Event]:
        """Open the item of ``key`` (made by ``new``) unless it is the open one."""
        if self._open == key:
            return []
        events = self.close()
        self._open = key
        item = new()
        self.output.append(item)
        added = self.event("response.output_item.added", output_index=len(self.output) - 1, item=copy.deepcopy(item))
        events.append(added)
        if item["type"] == "message":
            events.append(self.event("response.content_part.added", **self._at(), content_index=0,
                                     part=_text_part("")))
        return events

    def feed(self, deltas: list[dict[str, Any]]) -> list[Event]:
        events: list[Event] = []
        for d in deltas:
            if d.get("reasoning_content"):
                events += self._add(("reasoning", 0), lambda: {
                    "id": "rs_" + random_id(), "type": "reasoning", "summary": [], "content": [],
                    "encrypted_content": "", "status": "in_progress"})
                item = self._item()
                if not item["content"]:
                    item["content"].append({"type": "reasoning_text", "text": ""})
                item["content"][0]["text"] += d["reasoning_content"]
                events.append(self.event("response.reasoning_text.delta", **self._at(), content_index=0,
                                         delta=d["reasoning_content"]))
            if d.get("content"):
                events += self._add(("message", 0), lambda: {
                    "id": "msg_" + random_id(), "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []})
                item = self._item()
                if not item["content"]:
                    item["content"].append(_text_part(""))
                item["content"][0]["text"] += d["content"]
                events.append(self.event("response.output_text.delta", **self._at(), content_index=0,
                                         delta=d["content"], logprobs=[]))
            for call in d.get("tool_calls") or ():
                index, fn = call["index"], call.get("function") or {}
                if index not in self._calls:  # a call's first delta has its id and name
                    self._calls[index] = {"id": "fc_" + call.get("id", ""), "type": "function_call",
                                          "status": "in_progress", "arguments": "",
                                          "call_id": "call_" + call.get("id", ""),
                                          "name": fn.get("name", "")}
                events += self._add(("call", index), partial(self._calls.__getitem__, index))
                if fn.get("arguments"):
                    self._item()["arguments"] += fn["arguments"]
                    events.append(self.event("response.function_call_arguments.delta", **self._at(),
                                             delta=fn["arguments"]))
        return events

    def close(self) -> list[Event]:
        """Finish the open item: its done events, then ``output_item.done`` with the whole item."""
        if self._open is None:
            return []
        item, at, events = self._item(), self._at(), []
        if item["type"] == "reasoning":
            text = item["content"][0]["text"] if item["content"] else ""
            events.append(self.event("response.reasoning_text.done", **at, content_index=0, text=text))
        elif item["type"] == "message":
            part = item["content"][0] if item["content"] else _text_part("")
            events.append(self.event("response.output_text.done", **at, content_index=0, text=part["text"],
                                     logprobs=[]))
            events.append(self.event("response.content_part.done", **at, content_index=0, part=dict(part)))
        else:
            events.append(self.event("response.function_call_arguments.done", **at, name=item["name"],
                                     arguments=item["arguments"]))
        item["status"] = "completed"
        events.append(self.event("response.output_item.done", output_index=at["output_index"], item=item))
        self._open = None
        return events

    def error(self, a: ErrorAnswer) -> Event:
        """OpenAI's ``error`` event, for a failure after the stream has started."""
        return self.event("error", code=a.type, message=a.message, param=None)
