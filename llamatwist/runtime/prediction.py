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

MATCH = 8  # the longest tail of the reply looked up in the prediction


class Prediction:
    """One task's prediction: its n-grams indexed once, and where in it the reply is (decode thread only)."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = list(tokens)
        self._ends: dict[tuple[int, ...], list[int]] = {}  # n-gram -> the positions just after its occurrences
        for n in range(1, MATCH + 1):
            for end in range(n, len(self.tokens) + 1):
                self._ends.setdefault(tuple(self.tokens[end - n : end]), []).append(end)
        self._at = 0  # where the reply is believed to be in the prediction
        self._drafted_from = -1  # where the last draft began (-1: none)

    def draft(self, reply: Sequence[int], sampled: int, n_max: int) -> list[int]:
        """At most ``n_max`` tokens of the prediction after the reply so far (``reply``, then the pending
        ``sampled`` token); [] where its tail occurs nowhere in the prediction."""
        tail = [*reply[len(reply) - (MATCH - 1) :], sampled]
        for n in range(len(tail), 0, -1):
            ends = self._ends.get(tuple(tail[len(tail) - n :]))
            if not ends:
                continue
            end = self._nearest(ends)
            # one token is too common to place the reply by, unless it is the one the prediction has next
            if n == 1 and end != self._at + 1:
                break
            self._drafted_from = end
            return self.tokens[end : end + n_max]
        self._drafted_from = -1
        return []

    def accept(self, n_accepted: int) -> None:
        """``n_accepted`` tokens of the last draft were taken: the reply is that far into the prediction."""
        if self._drafted_from >= 0:
            self._at = self._drafted_from + n_accepted

    def _nearest(self, ends: list[int]) -> int:
        """Of the occurrences' ends, the first at or past where the reply was, else the last before it."""
        i = bisect_left(ends, self._at)
        return ends[i] if i < len(ends) else ends[-1]
