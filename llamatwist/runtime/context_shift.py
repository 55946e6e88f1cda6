# -*- test-case-name: tests.test_shared_cache -*-
"""Context shift (``--context-shift``): room for a generating slot whose context is full.

As llama-server: keep ``n_keep`` tokens, drop ``n_discard`` after them and slide the rest down. A
shift moves KV cells, and a cell has one position for every sequence holding it, so the moved cells
must be the slot's alone: parked prefixes and idle slots that share them give them up first.
"""

from __future__ import annotations

import logging

from llamatwist.engine.context import Context
from llamatwist.runtime.prefix_cache import PrefixCache
from llamatwist.runtime.slot import Slot

__all__ = ["ContextShift"]

log = logging.getLogger(__name__)


class ContextShift:
    def __init__(self, ctx: Context, cache: PrefixCache, slots: list[Slot], add_bos: bool, enabled: bool) -> None:
        self._ctx = ctx
        self._cache = cache
        self._slots = slots
        self._add_bos = add_bos
        self._enabled = enabled  # --context-shift, and the context can shift

    def shift(self, slot: Slot) -> bool:
        """Shift the slot's context; False when shifting is off or impossible (the
        slot must then end)."""
        task = slot.task
        assert task is not None
        n_keep = len(task.prompt) if task.params.n_keep < 0 else task.params.n_keep
        if self._add_bos:
            n_keep += 1  # as llama-server
        n_keep = min(slot.n_ctx - 4, n_keep)
        n_left = len(slot.cache) - n_keep
        n_discard = task.params.n_discard or n_left // 2
        n_discard = min(max(n_discard, 0), max(0, n_left - 1))
        if not (self._enabled and n_discard and self._unshare(slot, n_keep + n_discard)):
            return False
        log.warning("slot %d: context shift, n_keep = %d, n_left = %d, n_discard = %d",
                    slot.id, n_keep, n_left, n_discard)
        self._ctx.seq_rm(slot.id, n_keep, n_keep + n_discard)
        self._ctx.seq_add(slot.id, n_keep + n_discard, len(slot.cache), -n_discard)
        del slot.cache[n_keep : n_keep + n_discard]
        self._cache.update(slot.id, slot.cache)
        if self._cache.checkpoints is not None:
            self._cache.checkpoints.clear(slot.id)  # their positions moved
        slot.truncated = True
        return True

    def _unshare(self, slot: Slot, limit: int) -> bool:
        """Make the slot's cells from position ``limit`` on its own, by evicting
        parked prefixes and emptying idle slots that share them. False when a
        busy slot shares them."""
        cache = self._cache
        while True:
            n, holders = cache.tree.match(slot.cache, exclude=slot.id)
            if n <= limit:
                return True
            seq = min(holders)
            if cache.is_entry(seq):
                cache.evict(seq)
            elif seq < len(self._slots) and not self._slots[seq].busy:
                cache.drop(seq)
                self._slots[seq].cache.clear()
            else:
                return False
