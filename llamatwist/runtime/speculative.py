# -*- test-case-name: tests.test_speculative -*-
"""Speculative decoding: drafts for a generating slot, verified by the target in the step's one batch.

A step feeds a speculating slot its pending token followed by draft tokens, each with logits; the slot's own
sampler chain then samples position by position (`Sampling.sample` per position) and keeps going while its
sample equals the next draft token — exactly the tokens plain decoding would have produced, one sampler call
per token, so greedy output (and a seeded sampler's) is unchanged. The rejected tail is removed from the KV
sequence.

Drafts come from:

- a request's ``prediction`` (`prediction.py`, OpenAI's Predicted Outputs): the predicted text after where the
  reply's latest tokens occur in it; it drafts first, whatever the server's types.
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
  from before the draft is restored instead. At a media chunk's placeholders it decodes embedding rows: the
  target's embeddings of the chunk (`DraftModel.media`, kept by content) when it is as wide, else zeros.

A prompt's history holds media placeholders (negative ids): drafts stop before them.

Several types may be combined (``--spec-type ngram-mod,draft-simple``): `Drafters` asks them in llama.cpp's
order of preference (`DRAFT_ORDER`) and the first with a draft drafts; its acceptance goes back to it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from llamatwist.runtime.ngram_cache import NgramCacheDrafter
from llamatwist.runtime.ngram_map import NgramMap
from llamatwist.runtime.ngram_mod import NgramModDrafter
from llamatwist.runtime.prediction import Prediction
from llamatwist.sampling_defaults import DRAFT_ORDER, PREDICTION, SPEC_TYPES, SpecParams

if TYPE_CHECKING:
    from llamatwist.engine.context import Context
    from llamatwist.engine.model import Model
    from llamatwist.runtime.draft_head import DraftHead

__all__ = ["SPEC_TYPES", "DraftModel", "Drafters", "SpecParams", "ngram_simple_draft"]

log = logging.getLogger(__name__)

MEDIA_ROWS_BYTES = 256 << 20  # the target's media embeddings a same-width draft model keeps to read

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


def _text_only(draft: list[int]) -> list[int]:
    """A draft up to the first media placeholder (a prompt's history holds them; they are not tokens)."""
    for i, token in enumerate(draft):
        if token < 0:
            return draft[:i]
    return draft


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
        self.n_embd = model.n_embd_inp()  # the width of the embeddings it reads at media positions
        self._sections = model.n_pos_per_embd()
        self._rows: Batch | None = None  # embedding rows for media positions: made at the first
        self._media: OrderedDict[int, npt.NDArray[np.float32]] = OrderedDict()  # chunk's first placeholder -> rows
        self._media_bytes = 0

    def close(self) -> None:
        self.ctx.close()
        self.model.close()

    def has_media(self, first: int) -> bool:
        return first in self._media

    def media(self, first: int, rows: npt.NDArray[np.float32]) -> None:
        """The target's embeddings of a media chunk whose positions' placeholders begin with ``first`` (a
        content hash: the same image anywhere, in any slot), one row of `n_embd` per position: what the draft
        reads there (as llama-server's draft-simple, when it is as wide as the target's input; zeros otherwise)."""
        self._media[first] = rows
        self._media_bytes += rows.nbytes
        while self._media_bytes > MEDIA_ROWS_BYTES and len(self._media) > 1:
            self._media_bytes -= self._media.popitem(last=False)[1].nbytes

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
            start = len(have)
            media = want[start] < 0  # a media chunk's placeholders: embedding rows, not tokens
            end = start + 1
            stop = len(want) if media else min(len(want), start + self._n_batch)
            while end < stop and (want[end] < 0) == media:
                end += 1
            if media:
                self._decode_rows(seq, want, start, end)
            else:
                self._batch.clear()
                self._batch.add_sequence(want[start:end], start, seq, False)
                self.ctx.decode(self._batch)
            have.extend(want[start:end])

    def _decode_rows(self, seq: int, want: Sequence[int], start: int, end: int) -> None:
        """Decode the media positions ``start:end`` of ``want``: the target's embeddings where `media` has
        them, zero rows elsewhere (llama-server's stand-in for embeddings the draft cannot read)."""
        from llamatwist.engine.batch import Batch

        rows = np.zeros((end - start, self.n_embd), dtype=np.float32)
        pos = start
        while pos < end:
            known = self._media.get(want[pos])
            n = 1 if known is None else min(len(known), end - pos)
            if known is not None:
                rows[pos - start : pos - start + n] = known[:n]
            pos += n
        if self._rows is None:
            self._rows = Batch(self._n_batch, self.n_embd, tokens=False)
        batch = self._rows
        assert batch.states is not None
        step = self._n_batch // self._sections
        for lo in range(0, end - start, step):
            n = min(step, end - start - lo)
            batch.clear()
            batch.add_rows(start + lo, n, seq, False)
            batch.states[:n] = rows[lo : lo + n]
            batch.spread_positions(self._sections)
            self.ctx.decode(batch)

    def draft(self, seq: int, tokens: Sequence[int], n_max: int, p_min: float) -> list[int]:
        """Up to ``n_max`` greedy draft tokens after ``tokens`` (the slot's whole history, its pending token
        last); drafting stops where the draft model's top probability falls below ``p_min``."""
        from llamatwist.engine.errors import DecodeError  # the engine layer: not for the parameter table's imports

        if n_max <= 0 or len(tokens) + n_max >= self.ctx.n_ctx:
            return []
        try:
            self._sync_in_room(seq, tokens)
        except DecodeError as exc:  # no draft this step; the target's output is unaffected
            log.warning("draft model: following slot %d failed: %s", seq, exc)
            self.forget(seq)
            return []
        have = self._seqs[seq]
        kept: tuple[int, bytes] | None = None  # recurrent: the state after the pending token
        out: list[int] = []
        last = tokens[-1]
        for _ in range(n_max):
            self._batch.clear()
            idx = self._batch.add(last, len(have), seq, True)
            try:
                self.ctx.decode(self._batch)
            except DecodeError as exc:
                log.warning("draft model: draft decode failed: %s", exc)
                break
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

    def _sync_in_room(self, seq: int, tokens: Sequence[int]) -> None:
        """`_sync`, making room when the draft's KV pool (one for every slot) is full: the other slots'
        sequences go (they are evaluated again when those slots draft)."""
        from llamatwist.engine.errors import DecodeError

        try:
            self._sync(seq, tokens)
        except DecodeError as exc:
            others = [s for s in self._seqs if s != seq and self._seqs[s]]
            if exc.code != 1 or not others:
                raise
            for other in others:
                self.forget(other)
            self._sync(seq, tokens)


@dataclass(slots=True)
class _SlotDrafts:
    task: object  # the task whose generation began (a new one begins the n-gram stores again)
    maps: dict[str, NgramMap] = field(default_factory=dict)  # ngram-map-k / -k4v, kept across tasks
    last: str | None = None  # the type of the slot's last draft
    prediction: Prediction | None = None  # the task's predicted output, indexed


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
              sampled: int, n_max: int, pos: int = -1, head_ready: bool = True, n_left: int | None = None) -> list[int]:
        """At most ``n_max`` draft tokens after ``history`` and ``sampled`` (the slot's pending token, at ``pos``
        in its sequence: after a context shift, not ``len(history)``), and at most ``n_left``, the tokens the
        request may still take; ``prompt`` is the task's, its n-grams learnt when the task first drafts
        (llama.cpp's begin). ``head_ready`` False: tokens before the pending one are yet to be decoded (a
        rolled-back draft's accepted tokens, fed again with it), so the draft head, which follows decodes,
        cannot draft this step (llama-server's replay step drafts nothing either).

        As llama-server's: a draft shorter than ``spec.n_min`` is none, and the next type tries; a draft model
        (draft-simple) drafts within the request's end before that check, the other types' drafts are cut there
        after it."""
        state = self._begin(seq, task, prompt, spec)
        state.last = None
        left = n_max if n_left is None else n_left
        for kind in DRAFT_ORDER:
            if kind not in spec.types or (kind in HEAD_TYPES and not head_ready):
                continue
            limit = min(n_max, left) if kind == "draft-simple" else n_max
            draft = _text_only(self._draft_one(kind, seq, state, spec, history, sampled, limit,
                                               pos if pos >= 0 else len(history), len(prompt))[:limit])
            if len(draft) < max(spec.n_min, 1):
                continue
            draft = draft[:left]
            if draft:
                state.last = kind
                if kind == "ngram-mod" and self._mod is not None:
                    self._mod.drafted(seq, len(draft))
                return draft
        return []

    def forget(self, seq: int) -> None:
        """The slot's sequence was emptied: the draft model's goes too (its cells are needed)."""
        if self.model is not None:
            self.model.forget(seq)

    def reads_media(self, spec: SpecParams | None, n_embd: int, first: int) -> bool:
        """Whether a request with ``spec`` needs the target's embeddings (``n_embd`` wide, one per position) of
        the media chunk whose placeholders begin with ``first`` kept: its draft model reads them (draft-simple,
        as wide as the target's input) and has not kept them yet."""
        return (self.model is not None and spec is not None and spec.active and "draft-simple" in spec.types
                and self.model.n_embd == n_embd and not self.model.has_media(first))

    def media(self, first: int, rows: npt.NDArray[np.float32]) -> None:
        """The target's embeddings of a media chunk (placeholders from ``first`` on), one per position."""
        if self.model is not None:
            self.model.media(first, rows)

    def accept(self, seq: int, n_accepted: int, n_draft: int = 0) -> None:
        """``n_accepted`` of the ``n_draft`` tokens of the slot's last draft were taken: the type that drafted
        it learns (and the draft head, which followed the verification whatever drafted)."""
        if self.head is not None:
            self.head.accept(seq, n_accepted, n_draft)
        state = self._slots.get(seq)
        if state is None or state.last is None:
            return
        if state.last == PREDICTION and state.prediction is not None:
            state.prediction.accept(n_accepted)
        elif state.last == "ngram-mod" and self._mod is not None:
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
        state.prediction = Prediction(spec.prediction) if spec.prediction else None
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
                   sampled: int, n_max: int, pos: int, n_prompt: int) -> list[int]:
        if kind == PREDICTION and state.prediction is not None:
            return state.prediction.draft(history[n_prompt:], sampled, n_max)
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
