# -*- test-case-name: tests.test_ctx_checkpoints -*-
"""Context checkpoints (``-ctxcp``, ``-cms``): llama-server's way to reuse part of a slot's prompt when the
model's memory cannot be cut part-way.

A sliding-window attention cache keeps only the last ``n_swa`` positions (its cells are overwritten), and a
recurrent state holds only the last position, so cutting a slot's sequence back to a shorter common prefix
loses what the next token would attend to. Each slot therefore keeps up to ``n_max`` copies of that partial
state (``llama_state_seq_get_data_ext`` with the partial-only flag), taken just before a prompt batch is
decoded: near the end of the prompt (the prompt is split so that its last ``4 + n_ubatch`` and last 4
tokens are batches of their own) and, further back, no closer than ``min_step`` tokens to the previous one.
When a new prompt shares only part of the cached one, the newest checkpoint that still lies inside the
common prefix is restored and the prompt is recomputed from there; without one it is recomputed from 0.

Decode thread only; libllama calls go through :class:`StateOps` (a
:class:`~llamatwist.engine.context.Context` satisfies it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Checkpoint", "Checkpoints", "StateOps"]

log = logging.getLogger(__name__)

# How far from the prompt's end the last checkpoints are taken: 4 + n_ubatch, and 4 tokens (llama-server's
# offsets: a follow-up usually differs only in the last turn's closing tokens).
_TAIL_OFFSET = 4


class StateOps(Protocol):
    def seq_pos_min(self, seq_id: int) -> int: ...

    def seq_pos_max(self, seq_id: int) -> int: ...

    def partial_state(self, seq_id: int) -> bytes: ...

    def set_partial_state(self, seq_id: int, data: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    n_tokens: int  # prompt tokens in KV when it was taken
    pos_min: int  # the positions the partial memory held then
    pos_max: int
    data: bytes
    task_id: int  # the task that took it

    def describe(self) -> str:
        return (f"pos_min = {self.pos_min}, pos_max = {self.pos_max}, n_tokens = {self.n_tokens}, "
                f"size = {len(self.data) / 1024 / 1024:.3f} MiB")


class Checkpoints:
    """Every slot's checkpoints, oldest first. ``n_swa``: the sliding window (0 for recurrent memory or
    ``--swa-full``); ``n_max`` 0 takes none but still detects a lost window (then the prompt is recomputed)."""

    def __init__(self, state: StateOps, *, n_max: int, min_step: int, n_swa: int, n_batch: int,
                 n_ubatch: int) -> None:
        self._state = state
        self.n_max = n_max
        self.min_step = min_step
        self.n_swa = n_swa
        self._n_batch = n_batch
        self._n_ubatch = n_ubatch
        self._slots: dict[int, list[Checkpoint]] = {}

    def count(self, slot: int) -> int:
        return len(self._slots.get(slot, ()))

    def of(self, slot: int) -> tuple[Checkpoint, ...]:
        return tuple(self._slots.get(slot, ()))

    def clear(self, slot: int) -> None:
        self._slots.pop(slot, None)

    # -- reuse: when a new prompt shares n_past tokens with the slot's ---------------------------------
    def rewind(self, slot: int, n_past: int) -> int:
        """How many of the ``n_past`` common tokens the slot's memory can keep (at most ``n_past``, which is
        below the prompt's length): all while the memory still holds the window before them, else up to the
        newest usable checkpoint (restored here), else 0. Drops the checkpoints past the result."""
        if n_past > 0:
            pos_min_thold = max(0, n_past - self.n_swa)  # the oldest position the next token needs
            pos_min = self._state.seq_pos_min(slot)
            if pos_min >= pos_min_thold:
                n_past = self._restore(slot, n_past, pos_min_thold)
        kept = []
        for cp in self._slots.get(slot, ()):
            if cp.pos_max > n_past:
                log.debug("slot %d: erased invalidated context checkpoint (%s)", slot, cp.describe())
            else:
                kept.append(cp)
        self._slots[slot] = kept
        return n_past

    def _restore(self, slot: int, n_past: int, pos_min_thold: int) -> int:
        for cp in reversed(self._slots.get(slot, ())):
            # a checkpoint past the common prefix is useless; one that does not reach back to the window
            # before n_past would leave a gap
            if cp.pos_max > n_past or not (cp.pos_min < pos_min_thold or cp.pos_min == 0):
                continue
            if not self._state.set_partial_state(slot, cp.data):
                log.warning("slot %d: restoring context checkpoint failed (%s)", slot, cp.describe())
                break
            # the restored memory ends at pos_max: recompute from its last position, as llama-server does
            # (its pos_min/pos_max overstate what a sliding window covers)
            pos_next = min(n_past, max(cp.pos_min + 1, cp.pos_max))
            n_restored = min(pos_next, cp.n_tokens)
            log.info("slot %d: restored context checkpoint (%s, n_past = %d)", slot, cp.describe(), n_restored)
            return n_restored
        log.info("slot %d: forcing full prompt re-processing due to lack of cache data (likely due to SWA or "
                 "hybrid/recurrent memory)", slot)
        return 0

    # -- creation: while a prompt is processed ---------------------------------------------------------
    def split(self, n_fed: int, end: int, n_prompt: int) -> int:
        """Where a prompt chunk ``[n_fed, end)`` should end so that the prompt's last ``4 + n_ubatch`` and
        last 4 tokens are batches of their own (a checkpoint is taken before each)."""
        if self.n_max <= 0:
            return end
        for offset in (_TAIL_OFFSET + self._n_ubatch, _TAIL_OFFSET):
            cut = n_prompt - min(self._n_batch, offset)
            if n_fed < cut < end:
                return cut
        return end

    def before_batch(self, slot: int, task_id: int, n_start: int, n_end: int, n_prompt: int) -> None:
        """A prompt chunk ``[n_start, n_end)`` is about to be decoded into the slot's sequence: take a
        checkpoint of the memory as it is (the first ``n_start`` tokens) when llama-server would."""
        if self.n_max <= 0:
            return
        near_end = n_prompt < n_end + self._n_ubatch
        if n_end < n_prompt and not near_end:
            return  # ordinary mid-prompt batches take none
        cps = self._slots.setdefault(slot, [])
        if cps and not near_end and n_start <= cps[-1].n_tokens + self.min_step:
            return  # too close to the previous one
        pos_min = self._state.seq_pos_min(slot)
        if pos_min < 0:
            return  # nothing in memory yet
        self._create(slot, cps, task_id, n_start, pos_min, self._state.seq_pos_max(slot))

    def _create(self, slot: int, cps: list[Checkpoint], task_id: int, n_tokens: int, pos_min: int,
                pos_max: int) -> None:
        if len(cps) + 1 >= self.n_max:
            # full: first drop those within min_step of the one before (other tasks' only), so that the kept
            # ones spread over the prompt rather than crowd its end
            last = -1
            kept = []
            for cp in cps:
                if cp.task_id != task_id and last >= 0 and cp.n_tokens <= last + self.min_step:
                    log.debug("slot %d: erasing context checkpoint too close to an earlier one (%s)",
                              slot, cp.describe())
                    continue
                last = cp.n_tokens
                kept.append(cp)
            cps[:] = kept
        while len(cps) >= self.n_max:
            log.warning("slot %d: erasing old context checkpoint (%s)", slot, cps[0].describe())
            del cps[0]
        cps[:] = [cp for cp in cps if cp.n_tokens != n_tokens]  # superseded
        cp = Checkpoint(n_tokens, pos_min, pos_max, self._state.partial_state(slot), task_id)
        cps.append(cp)
        log.info("slot %d: created context checkpoint %d of %d (%s)", slot, len(cps), self.n_max, cp.describe())
