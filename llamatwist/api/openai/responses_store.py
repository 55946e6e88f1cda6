# -*- test-case-name: tests.test_responses -*-
"""The responses kept for ``previous_response_id`` and ``GET``/``DELETE /v1/responses/{id}``: a bounded
in-memory LRU (lost on restart).

Each entry holds the response object as it was answered, the request's own input items (each with an id, as
OpenAI's input-items list shows them) and the conversation a follow-up continues, already as Responses input
items: the request's input (with its history) followed by the response's output items. The oldest entry goes
when the store is full (``--responses-store-size``, 256 by default; 0 keeps nothing).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llamatwist.api.openai.protocol import random_id

__all__ = ["ResponseStore", "StoredResponse", "with_ids"]

# OpenAI's id prefixes for input items
_PREFIX = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    input: tuple[dict[str, Any], ...]
    conversation: tuple[dict[str, Any], ...]


def with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as the input-items list shows them: each with an id, a message's string content as one
    text part."""
    out = []
    for item in items:
        kind = item.get("type", "message")
        shown = {"id": _PREFIX.get(kind, "item_") + random_id(), "type": kind, **item}
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            shown["content"] = [{"type": part, "text": item["content"]}]
        out.append(shown)
    return out


class ResponseStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, response_id: str, entry: StoredResponse) -> None:
        if self.capacity <= 0:
            return
        self._items[response_id] = entry
        self._items.move_to_end(response_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None when unknown (never stored, evicted or deleted); a hit makes it the
        most recently used."""
        entry = self._items.get(response_id)
        if entry is not None:
            self._items.move_to_end(response_id)
        return entry

    def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None
