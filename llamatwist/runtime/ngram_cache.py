# -*- test-case-name: tests.test_speculative_ngram -*-
"""``--spec-type ngram-cache`` (llama.cpp's common/ngram-cache.cpp, the lookup decoding of llama-lookup).

Three caches of n-gram -> {next token: count}: the slot's own context (1- to 4-grams, learnt as it drafts), and
the files of ``-lcd`` (dynamic) and ``-lcs`` (static, 2-grams; made by llama-lookup-create), both read once at
start-up and not written back (llama-server's pinned code does not save them either). A draft of up to 8
tokens grows one token at a time: the context's n-grams first (longest first, lax thresholds), then the dynamic
cache's (strict thresholds), each count weighted by the static cache; then the static cache alone.

File format (llama.cpp's common_ngram_cache_save): records of the n-gram as 4 int32 (-1 pads), an int32 count
of following tokens, then that many (int32 token, int32 count) pairs; native byte order (little-endian here).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["NGRAM_MAX", "NgramCacheDrafter", "load_cache", "update_cache"]

NGRAM_MIN = 1
NGRAM_MAX = 4
NGRAM_STATIC = 2
N_DRAFT = 8  # llama.cpp's fixed draft length for this type
NULL = -1  # LLAMA_TOKEN_NULL
_LAX = ((2, 2, 1, 1), (66, 50, 50, 50))  # min sample size, min percent, by n-gram size
_STRICT = ((4, 3, 2, 2), (75, 66, 66, 66))

Ngram = tuple[int, int, int, int]
Cache = dict[Ngram, dict[int, int]]


def _ngram(tokens: Sequence[int]) -> Ngram:
    padded = (*tokens, NULL, NULL, NULL, NULL)
    return (padded[0], padded[1], padded[2], padded[3])


def load_cache(path: str) -> Cache:
    """A lookup cache file; OSError when unreadable, ValueError when malformed."""
    with open(path, "rb") as f:
        data = f.read()
    cache: Cache = {}
    pos = 0
    while pos < len(data):
        if pos + 20 > len(data):
            raise ValueError(f"{path}: truncated record at byte {pos}")
        *ngram, n = struct.unpack_from("<5i", data, pos)
        pos += 20
        if n <= 0 or pos + 8 * n > len(data):
            raise ValueError(f"{path}: bad token count {n} at byte {pos - 4}")
        pairs = struct.unpack_from(f"<{2 * n}i", data, pos)
        pos += 8 * n
        counts = dict(zip(pairs[::2], pairs[1::2], strict=True))
        if min(counts.values()) <= 0:
            raise ValueError(f"{path}: a count below 1 near byte {pos}")
        cache[_ngram(ngram)] = counts
    return cache


def update_cache(cache: Cache, tokens: Sequence[int], n_new: int) -> None:
    """Count the token after each 1- to 4-gram among the last ``n_new`` tokens (common_ngram_cache_update)."""
    size = len(tokens)
    for n in range(NGRAM_MIN, NGRAM_MAX + 1):
        for i in range(max(size - n_new, n), size):
            part = cache.setdefault(_ngram(tokens[i - n : i]), {})
            part[tokens[i]] = part.get(tokens[i], 0) + 1


def _try_static(static: Cache, ngram: Ngram) -> int:
    part = static.get(ngram)
    if part is None:
        return NULL
    best, best_count, total = NULL, 0, 0
    for token, count in part.items():
        if count > best_count:
            best, best_count = token, count
        total += count
    if total < _LAX[0][NGRAM_STATIC - 1] or 100 * best_count < _LAX[1][NGRAM_STATIC - 1] * total:
        return NULL
    return best


def _try_primary(primary: Cache, ngrams: list[Ngram], part_static: dict[int, int],
                 thresholds: tuple[tuple[int, ...], tuple[int, ...]]) -> int:
    min_size, min_percent = thresholds
    for i in range(len(ngrams) - 1, -1, -1):  # the longest n-gram first
        part = primary.get(ngrams[i])
        if part is None:
            continue
        best, best_primary, best_static, total = NULL, 0, 0, 0
        for token, count in part.items():
            weight = 100 * part_static[token] if token in part_static else 1
            if count * weight > best_primary * best_static:
                best, best_primary, best_static = token, count, weight
            total += count
        if total < min_size[i] or 100 * best_primary < min_percent[i] * total:
            continue
        return best
    return NULL


def draft_from_caches(inp: Sequence[int], n_draft: int, context: Cache, dynamic: Cache, static: Cache) -> list[int]:
    """common_ngram_cache_draft: up to ``n_draft`` tokens after ``inp`` (whose last token is the sampled one)."""
    if len(inp) < NGRAM_STATIC:
        return []
    seq = list(inp)
    out: list[int] = []
    while len(out) < n_draft:
        part_static = static.get(_ngram(seq[-NGRAM_STATIC:]), {})
        ngrams = [_ngram(seq[-n:]) for n in range(NGRAM_MIN, NGRAM_MAX + 1)]
        token = _try_primary(context, ngrams, part_static, _LAX)
        if token == NULL:
            token = _try_primary(dynamic, ngrams, part_static, _STRICT)
        if token == NULL:
            token = _try_static(static, _ngram(seq[-NGRAM_STATIC:]))
        if token == NULL:
            break
        seq.append(token)
        out.append(token)
    return out


@dataclass(slots=True)
class _SeqCache:
    size: int = 0  # history length the context cache has seen (+1: the sampled token)
    context: Cache = field(default_factory=dict)


class NgramCacheDrafter:
    """ngram-cache for every slot; the files' caches are shared (read only)."""

    def __init__(self, static: Cache, dynamic: Cache) -> None:
        self.static = static
        self.dynamic = dynamic
        self._seqs: dict[int, _SeqCache] = {}

    def draft(self, seq: int, history: Sequence[int], sampled: int) -> list[int]:
        info = self._seqs.setdefault(seq, _SeqCache())
        if info.size < len(history) + 1:
            # as llama.cpp: only the new tokens (and the sampled one) are counted, n-grams across the seam not
            new = [*history[info.size :], sampled]
            update_cache(info.context, new, len(new))
            info.size = len(history) + 1
        return draft_from_caches([*history, sampled], N_DRAFT, info.context, self.dynamic, self.static)
