# -*- test-case-name: tests.test_speculative_prediction -*-
"""OpenAI's Predicted Outputs as speculative drafts: a request's ``prediction`` is text the reply is expected
to repeat for the most part (a file with a few edits), so where the reply's last tokens occur in it, the
tokens after them there are the draft. The slot's sampler verifies every draft token as for the other types,
so the reply is the one it would have been without a prediction; only its speed changes.

The reply is followed along the prediction: after an edit the reply's latest tokens (up to `MATCH` of them,
the longest that occur) are looked up again, and of their occurrences the one nearest past where the reply
last was is taken, so a common token re-aligns it with the right place rather than an earlier one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["MATCH", "Prediction"]

MATCH = 8  # the longest tail of the reply matched in the prediction
_WINDOW = 32  # occurrences of a bigram weighed on each side of where the reply was


class Prediction:
    """One task's prediction: its bigrams indexed once (a few ms for thousands of tokens: this runs on the decode
    thread), and where in it the reply is (decode thread only)."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = list(tokens)
        self._ends: dict[tuple[int, int], list[int]] = {}  # bigram -> the positions just after its occurrences
        for end in range(2, len(self.tokens) + 1):
            self._ends.setdefault((self.tokens[end - 2], self.tokens[end - 1]), []).append(end)
        self._at = 0  # where the reply is believed to be in the prediction
        self._drafted_from = -1  # where the last draft began (-1: none)

    def draft(self, reply: Sequence[int], sampled: int, n_max: int) -> list[int]:
        """At most ``n_max`` tokens of the prediction after the reply so far (``reply``, then the pending
        ``sampled`` token); [] where its tail occurs nowhere in the prediction."""
        end = self._place(reply, sampled)
        self._drafted_from = end
        return [] if end < 0 else self.tokens[end : end + n_max]

    def accept(self, n_accepted: int) -> None:
        """``n_accepted`` tokens of the last draft were taken: the reply is that far into the prediction."""
        if self._drafted_from >= 0:
            self._at = self._drafted_from + n_accepted

    def _place(self, reply: Sequence[int], sampled: int) -> int:
        """Where in the prediction the reply goes on (-1: nowhere): after the longest occurrence of its tail
        (2 to `MATCH` tokens), the one nearest past where the reply was among equals; else after its last token
        alone, only if that is the one the prediction has next (one token is too common to place it by)."""
        ends = self._ends.get((reply[-1], sampled)) if reply else None
        if ends:
            i = bisect_left(ends, self._at)
            near = ends[max(0, i - _WINDOW) : i + _WINDOW]  # a bigram met everywhere: the ones around suffice
            tail = [*reply[len(reply) - (MATCH - 1) :], sampled]
            best, best_len = -1, 0
            for end in sorted(near, key=lambda e: (e < self._at, abs(e - self._at))):
                n = 2
                while n < len(tail) and end - n > 0 and self.tokens[end - n - 1] == tail[-n - 1]:
                    n += 1
                if n > best_len:
                    best, best_len = end, n
            return best
        if self._at < len(self.tokens) and self.tokens[self._at] == sampled:
            return self._at + 1
        return -1
