# -*- test-case-name: tests.test_lazy_grammar -*-
"""Lazy grammars (``grammar_lazy`` with ``grammar_triggers``), as llama.cpp's lazy grammar sampler.

Output is free until a trigger appears: a trigger token, or a regular expression found in the text so far
(a trigger word is an escaped pattern; a full pattern must match the whole text). The grammar then applies
from where the trigger starts — the start of the pattern's first capturing group that matched, else of the
whole match — so the trigger text itself is the grammar's first input, replayed into it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from llamatwist.constrain.base import Constraint, ConstraintError, ConstraintFactory

__all__ = ["LazyConstraint", "LazyFactory", "LazyTriggers"]


@dataclass(frozen=True)
class LazyTriggers:
    patterns: tuple[str, ...] = ()  # searched in the text so far; ^...$ ones must match all of it
    tokens: frozenset[int] = frozenset()

    def compiled(self) -> list[tuple[re.Pattern[str], bool]]:
        out = []
        for p in self.patterns:
            try:
                out.append((re.compile(p, re.DOTALL), p.startswith("^") and p.endswith("$")))
            except re.error as exc:
                raise ConstraintError(f"invalid grammar trigger pattern {p!r}: {exc}") from None
        return out


def _start(match: re.Match[str]) -> int:
    """llama.cpp: from the first capturing group that matched something, else the whole match."""
    for i in range(1, (match.re.groups or 0) + 1):
        if match.group(i):
            return match.start(i)
    return match.start()


class LazyConstraint:
    """One slot: free until triggered, then the inner grammar."""

    def __init__(self, factory: LazyFactory, inner: Constraint) -> None:
        self._f = factory
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.awaiting = True
        self._text = ""
        self.inner.reset()

    def fill_mask(self, logits: npt.NDArray[np.float32]) -> None:
        if not self.awaiting:
            self.inner.fill_mask(logits)

    def allowed_mask(self) -> npt.NDArray[np.bool_]:
        if self.awaiting:
            return np.ones(self._f.n_vocab, dtype=np.bool_)
        return self.inner.allowed_mask()

    def accept(self, token: int) -> None:
        if not self.awaiting:
            self.inner.accept(token)
            return
        if token in self._f.triggers.tokens:
            self.awaiting = False
            self.inner.accept(token)
            return
        self._text += self._f.pieces[token].decode("utf-8", "replace")
        for pattern, full in self._f.patterns:
            match = pattern.fullmatch(self._text) if full else pattern.search(self._text)
            if match is not None:
                self.awaiting = False
                for t in self._f.tokenize(self._text[_start(match):].encode("utf-8")):
                    self.inner.accept(t)  # the trigger text is the grammar's first input
                self._text = ""
                return

    def is_finished(self) -> bool:
        return not self.awaiting and self.inner.is_finished()

    def is_accepting(self) -> bool:
        return self.awaiting or self.inner.is_accepting()


class LazyFactory:
    """A :class:`ConstraintFactory` that makes ``inner`` lazy."""

    def __init__(self, inner: ConstraintFactory, triggers: LazyTriggers, pieces: Sequence[bytes], n_vocab: int,
                 tokenize: Callable[[bytes], list[int]]) -> None:
        if not triggers.patterns and not triggers.tokens:
            raise ConstraintError("no triggers set for lazy grammar")
        self.inner = inner
        self.triggers = triggers
        self.patterns = triggers.compiled()
        self.pieces = pieces
        self.n_vocab = n_vocab
        self.tokenize = tokenize
        self.description = f"lazy+{inner.description}"
        self.warnings = list(inner.warnings)

    def new(self) -> LazyConstraint:
        return LazyConstraint(self, self.inner.new())
