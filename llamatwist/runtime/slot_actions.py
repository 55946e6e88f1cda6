# -*- test-case-name: tests.test_slot_persistence -*-
"""Slot save, restore and erase (``POST /slots/{id}?action=...``).

They run on the decode thread between steps: only it may touch the KV cache, and the file I/O
briefly pauses decoding, as in llama-server. An action on a busy slot waits until the slot is free (llama-server
defers it the same way). A failure is a TaskError in an ErrorResult.
"""

from __future__ import annotations

import time
from pathlib import Path

from llamatwist.engine.context import Context
from llamatwist.runtime.errors import InvalidSlot, SlotFileError, SlotFileUnwritable, TaskError
from llamatwist.runtime.outputs import Outputs
from llamatwist.runtime.prefix_cache import PrefixCache
from llamatwist.runtime.slot import Slot, free_cells, untracked_cells
from llamatwist.runtime.slotfile import SlotFile, read_slot_file, write_slot_file
from llamatwist.runtime.task import ErrorResult, SlotAction, SlotActionResult

__all__ = ["SlotActions"]


class SlotActions:
    def __init__(self, ctx: Context, cache: PrefixCache, slots: list[Slot], model_id: str, outputs: Outputs) -> None:
        self._ctx = ctx
        self._cache = cache
        self._slots = slots
        self._model_id = model_id  # what a slot file must match to be restored here
        self._outputs = outputs
        self.deferred: list[SlotAction] = []  # actions waiting for their slot to finish its task

    def apply(self, act: SlotAction) -> None:
        if 0 <= act.id_slot < len(self._slots) and (
                self._slots[act.id_slot].busy or any(d.id_slot == act.id_slot for d in self.deferred)):
            self.deferred.append(act)  # in order behind the slot's earlier actions
            return
        try:
            body = self._apply(act)
        except TaskError as exc:
            self._outputs.emit(act.sink, ErrorResult(-1, exc))
            return
        self._outputs.emit(act.sink, SlotActionResult(body))

    def _apply(self, act: SlotAction) -> dict[str, object]:
        if not 0 <= act.id_slot < len(self._slots):
            raise InvalidSlot(act.id_slot)
        slot = self._slots[act.id_slot]
        if act.action == "erase":
            return self._erase(slot)
        assert act.path is not None
        if act.action == "save":
            return self._save(slot, act.path)
        return self._restore(slot, act.path)

    def retry(self) -> None:
        """Run the deferred actions whose slot is free now (between steps)."""
        if not self.deferred:
            return
        waiting, self.deferred = self.deferred, []
        for act in waiting:
            self.apply(act)

    def _erase(self, slot: Slot) -> dict[str, object]:
        n = len(slot.cache)
        self._cache.drop(slot.id)
        slot.cache.clear()
        return {"id_slot": slot.id, "n_erased": n}

    def _save(self, slot: Slot, path: Path) -> dict[str, object]:
        t0 = time.perf_counter()
        tokens = list(slot.cache)
        try:
            n_written = write_slot_file(path, SlotFile(self._model_id, tokens, self._ctx.seq_state(slot.id),
                                                       self._cache.tag(slot.id)))
        except OSError as exc:
            raise SlotFileUnwritable(path.name, exc.strerror) from None
        return {
            "id_slot": slot.id, "filename": path.name, "n_saved": len(tokens), "n_written": n_written,
            "timings": {"save_ms": (time.perf_counter() - t0) * 1e3},
        }

    def _restore(self, slot: Slot, path: Path) -> dict[str, object]:
        t0 = time.perf_counter()
        saved = read_slot_file(path, self._model_id)
        if len(saved.tokens) >= slot.n_ctx:
            raise SlotFileError(f"{path.name} holds {len(saved.tokens)} tokens; slot {slot.id} has {slot.n_ctx}")
        self._cache.drop(slot.id)
        slot.cache.clear()
        # in a shared KV pool the cells may be held by parked prefixes: give those back first
        self._cache.make_room(len(saved.tokens), untracked_cells(self._slots, self._cache.tree.length))
        while not self._ctx.set_seq_state(slot.id, saved.state):
            if not free_cells(self._cache, self._slots, self._ctx.kv_unified)[0]:
                raise SlotFileError(f"{path.name} does not fit this slot's context")
        slot.cache[:] = saved.tokens
        self._cache.update(slot.id, slot.cache, tag=saved.adapters)  # reused only under the same LoRA set
        return {
            "id_slot": slot.id, "filename": path.name, "n_restored": len(saved.tokens),
            "n_read": len(saved.state), "timings": {"restore_ms": (time.perf_counter() - t0) * 1e3},
        }
