# -*- test-case-name: tests.test_speculative -*-
"""Speculative decoding: drafts for a generating slot, verified by the target in the step's one batch.

A step feeds a speculating slot its pending token followed by draft tokens, each with logits; the slot's own
sampler chain then samples position by position (`Sampling.sample` per position) and keeps going while its
sample equals the next draft token — exactly the tokens plain decoding would have produced, one sampler call
per token, so greedy output (and a seeded sampler's) is unchanged. The rejected tail is removed from the KV
sequence.

Drafts come from:

- ``ngram-simple`` (llama.cpp's common_ngram_simple_draft): the last ``size_n`` tokens of the slot's prompt
  and output, looked up backwards in that history; the ``size_m`` tokens that followed the match are the draft.
- ``ngram-mod`` (`ngram_mod.py`): chained lookups in one hash table of n-grams shared by every slot.
- ``ngram-map-k`` / ``ngram-map-k4v`` (`ngram_map.py`): lookups in a per-slot map of the n-grams met, with
  what was accepted after them.
- ``ngram-cache`` (`ngram_cache.py`): llama-lookup's n-gram counts, of the slot's context and of the -lcs/-lcd
  files.
- ``draft-mtp`` (`mtp.py`): the model's own multi-token-prediction head, in an MTP context that follows
  every target decode.
- ``draft-eagle3`` (`eagle3.py`), ``draft-dflash`` and ``draft-dspark`` (`dflash.py`): EAGLE-3, DFlash
  (DFlash2 too) and DSpark draft models (``-md``), which read the target's hidden states and follow every
  target decode too.
- ``draft-simple``: a small draft model of the same vocabulary, greedy, stopping below ``p_min``
  (`DraftModel`). Its KV for a slot follows the target's tokens: before drafting, whatever differs from the
  slot's tokens is removed and re-evaluated, so the prefix cache, slot restores and context shifts of the
  target never need to know about it. A recurrent draft model cannot cut its drafted tokens away: its state
  from before the draft is restored instead.

Several types may be combined (``--spec-type ngram-mod,draft-simple``): `Drafters` asks them in llama.cpp's
order of preference (`DRAFT_ORDER`) and the first with a draft drafts; its acceptance goes back to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llamatwist.runtime.ngram_cache import NgramCacheDrafter
from llamatwist.runtime.ngram_map import NgramMap
from llamatwist.runtime.ngram_mod import NgramModDrafter
from llamatwist.sampling_defaults import DRAFT_ORDER, SPEC_TYPES, SpecParams

if TYPE_CHECKING:
    from llamatwist.engine.context import Context
    from llamatwist.engine.model import Model
    from llamatwist.runtime.draft_head import DraftHead

__all__ = ["SPEC_TYPES", "DraftModel", "Drafters", "SpecParams", "ngram_simple_draft"]

log = logging.getLogger(__name__)

HEAD_TYPES = ("draft-mtp", "draft-eagle3", "draft-dflash", "draft-dspark")  # the types whose drafter follows the target's decodes (DraftHead)

def ngram_simple_draft(tokens: Sequence[int], sampled: int, size_n: int, size_m: int) -> list[int]:
    """Prompt lookup: the tokens that followed the latest earlier occurrence of the last ``size_n`` tokens
    (``tokens`` then ``sampled``), at most ``size_m`` of them; [] when there is none, or when fewer than
    ``size_n`` would follow (llama.cpp's rules)."""
    n = len(tokens)
    if n <= size_n + size_m + 1:
        return []
    pattern = [*tokens[n - size_n + 1 :], sampled]
    first = pattern[0]
    for j in range(n - size_n - 1, 0, -1):  # backwards, skipping where we are
        if tokens[j] == first and list(tokens[j : j + size_n]) == pattern:
            start = j + size_n
            take = min(size_m, n - start)
            return list(tokens[start : start + take]) if take >= size_n else []
    return []


class DraftModel:
    """A draft model's context with one sequence per slot (decode thread only)."""

    def __init__(self, model: Model, ctx: Context, n_batch: int) -> None:
        from llamatwist.engine.batch import Batch

        self.model = model
        self.ctx = ctx
        self._batch = Batch(n_batch)
        self._n_batch = n_batch
        self._seqs: dict[int, list[int]] = {}  # slot id -> tokens in its draft sequence
        self._recurrent = model.has_recurrent_state()  # its sequences cannot be cut part-way

    def close(self) -> None:
        self.ctx.close()
        self.model.close()

    def _sync(self, seq: int, tokens: Sequence[int]) -> None:
        """Make the draft sequence hold ``tokens[:-1]`` (the last one is fed by the first draft step)."""
        have = self._seqs.setdefault(seq, [])
        want = tokens[:-1]
        common = 0
        limit = min(len(have), len(want))
        while common < limit and have[common] == want[common]:
            common += 1
        if common < len(have):
            if not self.ctx.seq_rm(seq, common, -1):  # recurrent: only from the start again
                self.ctx.seq_rm(seq, -1, -1)
                common = 0
            del have[common:]
        while len(have) < len(want):
            chunk = want[len(have) : len(have) + self._n_batch]
            self._batch.clear()
            self._batch.add_sequence(chunk, len(have), seq, False)
            self.ctx.decode(self._batch)
            have.extend(chunk)

    def draft(self, seq: int, tokens: Sequence[int], n_max: int, p_min: float) -> list[int]:
        """Up to ``n_max`` greedy draft tokens after ``tokens`` (the slot's whole history, its pending token
        last); drafting stops where the draft model's top probability falls below ``p_min``."""
        import numpy as np

        if n_max <= 0 or len(tokens) + n_max >= self.ctx.n_ctx:
            return []
        self._sync(seq, tokens)
        have = self._seqs[seq]
        kept: tuple[int, bytes] | None = None  # recurrent: the state after the pending token
        out: list[int] = []
        last = tokens[-1]
        for _ in range(n_max):
            self._batch.clear()
            idx = self._batch.add(last, len(have), seq, True)
            self.ctx.decode(self._batch)
            have.append(last)
            if self._recurrent and kept is None:
                kept = (len(have), self.ctx.partial_state(seq))
            logits = self.ctx.logits(idx)
            top = int(np.argmax(logits))
            z = np.exp(logits - logits[top])
            if float(1.0 / z.sum()) < p_min:
                break
            out.append(top)
            last = top
        if kept is not None and len(have) > kept[0]:  # drafted tokens cannot be cut away: back to the state
            self.ctx.set_partial_state(seq, kept[1])
            self.ctx.seq_rm(seq, kept[0], -1)
            del have[kept[0]:]
        return out

    def forget(self, seq: int) -> None:
        if self._seqs.pop(seq, None):
            self.ctx.seq_rm(seq, 0, -1)


@dataclass(slots=True)
class _SlotDrafts:
    task: object  # the task whose generation began (a new one begins the n-gram stores again)
    maps: dict[str, NgramMap] = field(default_factory=dict)  # ngram-map-k / -k4v, kept across tasks
    last: str | None = None  # the type of the slot's last draft


class Drafters:
    """The drafts of every slot, from the types its request uses (decode thread only)."""

    def __init__(self, model: DraftModel | None, lookup: NgramCacheDrafter | None = None,
                 head: DraftHead | None = None) -> None:
        self.model = model
        self.head = head  # draft-mtp's, draft-eagle3's, draft-dflash's or draft-dspark's: the server runs one
        self.lookup = lookup if lookup is not None else NgramCacheDrafter({}, {})
        self._mod: NgramModDrafter | None = None  # made when a request first uses ngram-mod
        self._slots: dict[int, _SlotDrafts] = {}

    def draft(self, seq: int, task: object, prompt: Sequence[int], spec: SpecParams, history: Sequence[int],
              sampled: int, n_max: int, pos: int = -1, head_ready: bool = True) -> list[int]:
        """At most ``n_max`` draft tokens after ``history`` and ``sampled`` (the slot's pending token, at ``pos``
        in its sequence: after a context shift, not ``len(history)``); ``prompt`` is the task's, its n-grams
        learnt when the task first drafts (llama.cpp's begin). ``head_ready`` False: tokens before the pending
        one are yet to be decoded (a rolled-back draft's accepted tokens, fed again with it), so the draft head,
        which follows decodes, cannot draft this step (llama-server's replay step drafts nothing either)."""
        state = self._begin(seq, task, prompt, spec)
        state.last = None
        for kind in DRAFT_ORDER:
            if kind not in spec.types or (kind in HEAD_TYPES and not head_ready):
                continue
            draft = self._draft_one(kind, seq, state, spec, history, sampled, n_max,
                                    pos if pos >= 0 else len(history))[:n_max]
            if draft:
                state.last = kind
                if kind == "ngram-mod" and self._mod is not None:
                    self._mod.drafted(seq, len(draft))
                return draft
        return []

    def accept(self, seq: int, n_accepted: int, n_draft: int = 0) -> None:
        """``n_accepted`` of the ``n_draft`` tokens of the slot's last draft were taken: the type that drafted
        it learns (and the draft head, which followed the verification whatever drafted)."""
        if self.head is not None:
            self.head.accept(seq, n_accepted, n_draft)
        state = self._slots.get(seq)
        if state is None or state.last is None:
            return
        if state.last == "ngram-mod" and self._mod is not None:
            self._mod.accept(seq, n_accepted)
        elif state.last in state.maps:
            state.maps[state.last].accept(n_accepted)

    def _begin(self, seq: int, task: object, prompt: Sequence[int], spec: SpecParams) -> _SlotDrafts:
        state = self._slots.get(seq)
        if state is not None and state.task is task:
            return state
        if state is None:
            state = self._slots[seq] = _SlotDrafts(task)
        state.task = task
        types = spec.types
        if "ngram-mod" in types:
            if self._mod is None:
                self._mod = NgramModDrafter(spec.mod_n_match, spec.mod_n_min, spec.mod_n_max)
            self._mod.begin(seq, prompt)
        for kind, size_n, size_m, hits in (
            ("ngram-map-k", spec.map_k_size_n, spec.map_k_size_m, spec.map_k_min_hits),
            ("ngram-map-k4v", spec.map_k4v_size_n, spec.map_k4v_size_m, spec.map_k4v_min_hits),
        ):
            if kind in types:
                if kind not in state.maps:
                    state.maps[kind] = NgramMap(size_n, size_m, kind == "ngram-map-k", hits)
                state.maps[kind].begin(prompt)
        return state

    def _draft_one(self, kind: str, seq: int, state: _SlotDrafts, spec: SpecParams, history: Sequence[int],
                   sampled: int, n_max: int, pos: int) -> list[int]:
        if kind == "ngram-simple":
            return ngram_simple_draft(history, sampled, spec.ngram_size_n, spec.ngram_size_m)
        if kind == "ngram-mod":
            return self._mod.draft(seq, history, sampled) if self._mod is not None else []
        if kind == "ngram-cache":
            return self.lookup.draft(seq, history, sampled)
        if kind in state.maps:
            return state.maps[kind].draft(history, sampled)
        if kind == "draft-simple" and self.model is not None:
            return self.model.draft(seq, [*history, sampled], min(n_max, spec.n_max), spec.p_min)
        if kind in HEAD_TYPES and self.head is not None:
            return self.head.draft(seq, sampled, pos, min(n_max, spec.n_max), spec.p_min)
        return []
