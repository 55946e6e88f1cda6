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
- ``draft-simple``: a small draft model of the same vocabulary, greedy, stopping below ``p_min``
  (`DraftModel`). Its KV for a slot follows the target's tokens: before drafting, whatever differs from the
  slot's tokens is removed and re-evaluated, so the prefix cache, slot restores and context shifts of the
  target never need to know about it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llamatwist.sampling_defaults import SPEC_TYPES, SpecParams

if TYPE_CHECKING:
    from llamatwist.engine.context import Context
    from llamatwist.engine.model import Model

__all__ = ["SPEC_TYPES", "DraftModel", "SpecParams", "ngram_simple_draft"]

log = logging.getLogger(__name__)

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
            self.ctx.seq_rm(seq, common, -1)
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
        out: list[int] = []
        last = tokens[-1]
        for _ in range(n_max):
            self._batch.clear()
            idx = self._batch.add(last, len(have), seq, True)
            self.ctx.decode(self._batch)
            have.append(last)
            logits = self.ctx.logits(idx)
            top = int(np.argmax(logits))
            z = np.exp(logits - logits[top])
            if float(1.0 / z.sum()) < p_min:
                break
            out.append(top)
            last = top
        return out

    def forget(self, seq: int) -> None:
        if self._seqs.pop(seq, None):
            self.ctx.seq_rm(seq, 0, -1)
