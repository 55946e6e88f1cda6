# -*- test-case-name: tests.test_responses -*-
"""The responses kept for ``previous_response_id``: a bounded in-memory LRU (lost on restart).

Each entry is the conversation a follow-up continues, already as Responses input items: the request's own
input (with its history) followed by the response's output items. The oldest entry goes when the store is
full (``--responses-store-size``, 256 by default; 0 keeps nothing).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["ResponseStore"]


class ResponseStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[dict[str, Any], ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, response_id: str, items: list[dict[str, Any]]) -> None:
        if self.capacity <= 0:
            return
        self._items[response_id] = tuple(items)
        self._items.move_to_end(response_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        """The conversation up to and including that response, or None when unknown (never stored, or
        evicted); a hit makes it the most recently used."""
        items = self._items.get(response_id)
        if items is None:
            return None
        self._items.move_to_end(response_id)
        return list(items)
