# -*- test-case-name: tests.test_speculative_ngram -*-
"""``--spec-type ngram-map-k`` and ``ngram-map-k4v`` (llama.cpp's common_ngram_map), one map per slot.

Both look up the slot's last ``size_n`` tokens (its pending token last) in its history — through a hash of
n-gram -> latest position (2^18 entries, collisions miss), then by scanning what the hash does not cover yet —
and remember each key n-gram they met (how often, and how many draft tokens were accepted after it):

- ``ngram-map-k`` drafts the ``size_m`` tokens after the latest earlier occurrence, no more than were
  accepted the last time this key drafted;
- ``ngram-map-k4v`` counts up to 4 different m-grams seen after the key and drafts only once the key has
  ``min_hits`` hits and its most frequent m-gram occurs at least twice as often as the others together.

As in llama.cpp, the draft is the tokens after the latest occurrence in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["NgramMap"]

MAX_VALUES = 4  # m-grams remembered per key
HASH_SIZE = 262144  # entries of the hash -> position map
_MAX_COUNT = 16380
_LCG = 2654435761
_M32 = 0xFFFFFFFF


def _hash(tokens: Sequence[int], start: int, n: int) -> int:
    h = 0
    for k in range(start, start + n):
        h = (h * _LCG + tokens[k]) & _M32  # uint32 arithmetic
    return h % HASH_SIZE


def _matches(tokens: Sequence[int], at: int, key: Sequence[int]) -> bool:
    return at + len(key) <= len(tokens) and all(tokens[at + k] == t for k, t in enumerate(key))


@dataclass(slots=True)
class _Value:
    idx: int = 0  # where the m-gram starts in the history (0: unused)
    num: int = 0  # its occurrences after the key
    n_accepted: int = -1  # tokens accepted when it last drafted


@dataclass(slots=True)
class _Key:
    idx: int  # where the key n-gram occurs in the history
    stat_idx: int = 0  # the values are counted up to here
    num: int = 0  # the key's hits
    values: list[_Value] = field(default_factory=list)


class NgramMap:
    """One slot's n-gram map (decode thread only)."""

    def __init__(self, size_n: int, size_m: int, key_only: bool, min_hits: int) -> None:
        self.n = size_n
        self.m = size_m
        self.key_only = key_only
        self.min_hits = min_hits
        self.keys: list[_Key] = []
        self.key_map = np.zeros(HASH_SIZE, dtype=np.int64)  # hash -> position of an n-gram (0: none)
        self.key_map_last = 0  # the hash covers n-grams up to this position
        self.size_last_begin = 0  # history length when the generation began
        self.idx_last_check = 0
        self._last: tuple[int, int] | None = None  # (key, value) of the last draft

    def begin(self, tokens: Sequence[int]) -> None:
        """A generation begins after ``tokens``: forget what lay beyond where the last one began when the
        history got shorter (a reasoning chat drops its old thinking blocks)."""
        size = len(tokens)
        cleanup = self.size_last_begin
        if cleanup > size:
            cleanup = size - self.n - self.m if size > self.n + self.m else 0
        if size < self.idx_last_check:
            stale = self.key_map >= max(cleanup, 1)
            self.key_map[stale] = 0
            self.key_map_last = cleanup - 1 if cleanup > 0 else 0
            kept: list[_Key] = []
            for key in self.keys:
                if key.idx >= cleanup:
                    continue
                if not self.key_only:
                    live = [v for v in key.values if v.idx == 0 or v.idx < cleanup]
                    live += [_Value() for _ in range(MAX_VALUES - len(live))]
                    key.values = live
                    if key.values[0].idx == 0:
                        continue
                kept.append(key)
            self.keys = kept
        self.idx_last_check = size
        self.size_last_begin = size

    def _fill_hash(self, tokens: Sequence[int], high: int, low: int) -> None:
        """Hash the n-grams at ``high`` down to ``low + 1``; a position already taken keeps its (later) n-gram."""
        if high <= low:
            return
        n = self.n
        pos = np.arange(high, low, -1, dtype=np.int64)
        toks = np.asarray(tokens[low + 1 : high + n], dtype=np.int64).astype(np.uint64)  # placeholders wrap
        h = np.zeros(len(pos), dtype=np.uint64)
        offsets = pos - (low + 1)
        for k in range(n):  # uint64 wraps mod 2^64, so mod 2^32 it is the uint32 hash
            h = h * np.uint64(_LCG) + toks[offsets + k]
        idx = ((h & np.uint64(_M32)) % np.uint64(HASH_SIZE)).astype(np.int64)
        uniq, first = np.unique(idx, return_index=True)  # the first (highest) position of each hash
        free = self.key_map[uniq] == 0
        self.key_map[uniq[free]] = pos[first[free]]

    def _scan(self, tokens: Sequence[int], key: Sequence[int], high: int, low: int) -> int:
        first = key[0]
        for j in range(high, low, -1):
            if tokens[j] == first and _matches(tokens, j, key):
                return j
        return 0

    def draft(self, tokens: Sequence[int], sampled: int) -> list[int]:
        self._last = None
        cur = len(tokens)
        n, m = self.n, self.m
        if cur < 2 * n + m:
            return []
        if self.idx_last_check > cur or self.size_last_begin > cur:
            self.begin(tokens)  # the history shrank outside a begin (llama.cpp aborts here)
        self.idx_last_check = cur
        key = [*tokens[cur - n + 1 :], sampled]
        match = 0
        found = int(self.key_map[_hash(key, 0, n)])
        if found != 0 and found < cur - n - m - 1 and _matches(tokens, found, key):
            match = found
        if match == 0 and self.size_last_begin > n + m + 1:
            match = self._scan(tokens, key, self.size_last_begin - n - m - 1, self.key_map_last)
        if match == 0:
            match = self._scan(tokens, key, cur - n - m - 1, max(self.size_last_begin, self.key_map_last))
        if self.size_last_begin > n + m + 1:
            self._fill_hash(tokens, self.size_last_begin - n - m - 1, self.key_map_last)
        self._fill_hash(tokens, cur - n - m - 1, max(self.size_last_begin, self.key_map_last))
        self.key_map_last = max(cur - n - m - 1, self.key_map_last)
        if match == 0:
            return []

        k_off = next((i for i, k in enumerate(self.keys) if _matches(tokens, k.idx, key)), len(self.keys))
        if k_off == len(self.keys):
            self.keys.append(_Key(match, values=[_Value(n_accepted=m) for _ in range(MAX_VALUES)]))
        entry = self.keys[k_off]
        entry.num = min(entry.num + 1, _MAX_COUNT)
        if self.key_only:
            self._last = (k_off, 0)
            return list(tokens[match + n : match + n + min(m, entry.values[0].n_accepted)])
        if entry.num < self.min_hits:
            return []
        for i in range(entry.stat_idx, match + 1):  # count the m-grams after each occurrence since the last time
            if tokens[i] != key[0] or not _matches(tokens, i, key):
                continue
            begin = i + n
            for v in entry.values:
                if v.idx == 0:
                    v.idx, v.num, v.n_accepted = begin, 0, m
                elif list(tokens[begin : begin + m]) != list(tokens[v.idx : v.idx + m]):
                    continue
                v.num = min(v.num + 1, _MAX_COUNT)
                break
        entry.stat_idx = match
        best = 0
        for i in range(1, MAX_VALUES):
            if entry.values[i].num > entry.values[best].num:
                best = i
        others = sum(value.num for i, value in enumerate(entry.values) if i != best)
        if others > 0 and entry.values[best].num < 2 * others:
            return []  # no m-gram stands out
        self._last = (k_off, best)
        return list(tokens[match + n : match + n + min(m, entry.values[best].n_accepted)])

    def accept(self, n_accepted: int) -> None:
        if self._last is not None:
            k, v = self._last
            self.keys[k].values[v].n_accepted = n_accepted
