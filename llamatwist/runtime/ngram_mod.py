# -*- test-case-name: tests.test_speculative_ngram -*-
"""``--spec-type ngram-mod`` (llama.cpp's common_ngram_mod and its speculative implementation).

One hash table shared by every slot maps the hash of an ``n_match``-token n-gram to the token that last followed
it. A draft starts from the slot's last ``n_match`` tokens (its pending token last) and chains lookups, one
token at a time, up to ``n_max`` tokens; a chain that breaks before ``n_min`` tokens is no draft. The table
learns each slot's prompt when its generation begins and the slot's history in chunks of 32 tokens as it
grows; it is cleared when a quarter of it is in use at a slot's start, and after 5 drafts in a row of which
less than a quarter was accepted (the text changed: the old n-grams mislead).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NgramMod", "NgramModDrafter"]

log = logging.getLogger(__name__)

_MUL = 6364136223846793005  # llama.cpp's multiplier (Knuth's MMIX LCG)
_M64 = (1 << 64) - 1
EMPTY = -1
TABLE_SIZE = 4 * 1024 * 1024  # llama.cpp's size: 16 MiB of int32
_CHUNK = 32  # history is added once this many tokens are new
_F_RESET = 0.25  # occupancy that clears the table at a slot's start
_LOW_ACCEPT = 0.25  # a draft less accepted than this is a low one
_LOW_STREAK = 5  # this many low drafts in a row clear the table


class NgramMod:
    """The hash table: n-gram hash -> the token after it (EMPTY: none), the last writer winning."""

    def __init__(self, n: int, size: int = TABLE_SIZE) -> None:
        self.n = n
        self.entries = np.full(size, EMPTY, dtype=np.int32)
        self.used = 0

    def _index(self, ngram: Sequence[int]) -> int:
        h = 0
        for t in ngram:
            h = (h * _MUL + t) & _M64  # size_t arithmetic
        return h % len(self.entries)

    def get(self, ngram: Sequence[int]) -> int:
        return int(self.entries[self._index(ngram)])

    def add(self, tokens: Sequence[int], start: int, stop: int) -> None:
        """Add the n-grams starting at ``start`` .. ``stop - 1``, each mapped to the token after it (in order,
        as llama.cpp's loop: a later n-gram of the same hash wins)."""
        if stop <= start:
            return
        n = self.n
        # int64 first: a media placeholder (negative) wraps as a size_t would, where uint64 would refuse it
        toks = np.asarray(tokens[start : stop + n], dtype=np.int64).astype(np.uint64)
        count = stop - start
        h = np.zeros(count, dtype=np.uint64)
        mul = np.uint64(_MUL)
        for k in range(n):  # the same polynomial, vectorized; uint64 wraps as size_t does
            h = h * mul + toks[k : k + count]
        idx = (h % np.uint64(len(self.entries))).astype(np.int64)
        nxt = toks[n : n + count].astype(np.int32)
        # keep the last n-gram of each index (fancy assignment leaves duplicates' order unspecified)
        rev = idx[::-1]
        uniq, first = np.unique(rev, return_index=True)
        last = count - 1 - first
        self.used += int(np.count_nonzero(self.entries[uniq] == EMPTY))
        self.entries[uniq] = nxt[last]

    def reset(self) -> None:
        self.entries.fill(EMPTY)
        self.used = 0

    @property
    def occupancy(self) -> float:
        return self.used / len(self.entries)


@dataclass(slots=True)
class _SeqInfo:
    i_last: int = 0  # history before this index is in the table
    n_draft_last: int = 0  # length of the last draft (0: none)
    n_low: int = 0  # low-acceptance drafts in a row


class NgramModDrafter:
    """ngram-mod for every slot of a server (decode thread only)."""

    def __init__(self, n_match: int, n_min: int, n_max: int, size: int = TABLE_SIZE) -> None:
        self.mod = NgramMod(n_match, size)
        self.n_min = n_min
        self.n_max = n_max
        self._seqs: dict[int, _SeqInfo] = {}
        if n_match < 16:
            log.warning("ngram_mod n_match=%d is too small - poor quality is possible, "
                        "see: https://github.com/ggml-org/llama.cpp/pull/19164", n_match)

    def begin(self, seq: int, prompt: Sequence[int]) -> None:
        """A slot starts generating after ``prompt``: its n-grams go in the table."""
        info = self._seqs[seq] = _SeqInfo()
        n = self.mod.n
        if len(prompt) < n:
            return
        self.mod.add(prompt, 0, len(prompt) - n)
        info.i_last = len(prompt) - n
        if self.mod.occupancy > _F_RESET:
            log.warning("ngram_mod occupancy %.2f exceeds threshold (%.2f) - resetting", self.mod.occupancy, _F_RESET)
            self.mod.reset()

    def draft(self, seq: int, history: Sequence[int], sampled: int) -> list[int]:
        """The chained draft after ``history`` and ``sampled``; [] when it breaks before ``n_min`` tokens."""
        info = self._seqs.setdefault(seq, _SeqInfo())
        info.n_draft_last = 0
        n = self.mod.n
        cur = len(history)
        if cur < n:
            return []
        if info.i_last + _CHUNK < cur:
            self.mod.add(history, info.i_last, cur - n)
            info.i_last = cur - n
        window = [*history[cur - n + 1 :], sampled]
        out: list[int] = []
        for i in range(self.n_max):
            token = self.mod.get(window[i : i + n])
            if token == EMPTY:
                if i < self.n_min:
                    return []
                break
            window.append(token)
            out.append(token)
        return out

    def drafted(self, seq: int, n: int) -> None:
        """The draft's length as verified (after the step's own limits: its acceptance is judged on that)."""
        self._seqs[seq].n_draft_last = n

    def accept(self, seq: int, n_accepted: int) -> None:
        info = self._seqs.get(seq)
        if info is None or info.n_draft_last <= 0:
            return
        if n_accepted / info.n_draft_last < _LOW_ACCEPT:
            info.n_low += 1
            if info.n_low >= _LOW_STREAK:
                log.debug("low acceptance streak (%d) - resetting ngram_mod", info.n_low)
                self.mod.reset()
                info.n_low = 0
                info.i_last = 0
        else:
            info.n_low = 0
