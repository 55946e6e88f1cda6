# -*- test-case-name: tests.test_reasoning -*-
"""A token budget for the thinking block (``--reasoning-budget``), as llama.cpp's reasoning-budget sampler.

The constraint watches the generated tokens for the thinking start sequence, counts the tokens inside the
block and, when the budget runs out, forces the budget message followed by the end tag, one token per step.
State machine (common/reasoning-budget.cpp): IDLE → COUNTING → (WAITING_UTF8) → FORCING → DONE; a new start
tag after DONE re-arms it with a fresh budget.

It wraps an optional inner constraint (a grammar or JSON schema, e.g. the tool-call schema), which applies
only outside the thinking block — while IDLE or DONE — like llama.cpp's lazy tool grammars: the inner
grammar describes the answer, not the thoughts.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from llamatwist.constrain.base import Constraint, ConstraintFactory

__all__ = ["BudgetState", "ReasoningBudget", "ReasoningBudgetConstraint", "ReasoningBudgetFactory",
           "ReasoningSwitch", "utf8_is_complete"]

_NEG_INF = np.float32(-np.inf)


class BudgetState(enum.Enum):
    IDLE = "idle"  # waiting for the start sequence
    COUNTING = "counting"  # inside the block, counting down
    WAITING_UTF8 = "waiting_utf8"  # budget spent, letting a multi-byte character finish
    FORCING = "forcing"  # writing message + end tag
    DONE = "done"  # the block is closed


def utf8_is_complete(data: bytes) -> bool:
    """True when ``data`` does not end inside a multi-byte UTF-8 sequence (llama.cpp's common_utf8_is_complete)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): how long is its sequence?
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return back >= need
    return True


@dataclass(frozen=True)
class ReasoningBudget:
    """Token ids of the markers (tokenized with special tokens parsed) and the budget.

    ``forced``: the budget message followed by the first end tag. ``budget`` < 0 is unlimited (the block is
    still tracked, so an inner constraint is suspended while thinking). ``prefill``: the tokens of the
    template's generation prompt, fed before generation so that a prompt which already opened the block
    starts in COUNTING. ``pieces[t]``: the bytes of token ``t``, for the UTF-8 boundary check.
    """

    start: tuple[int, ...]
    ends: tuple[tuple[int, ...], ...]
    forced: tuple[int, ...]
    budget: int
    pieces: Sequence[bytes]
    n_vocab: int
    prefill: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.start or not self.ends or not all(self.ends) or not self.forced:
            raise ValueError("the start tag, end tags and forced sequence must not be empty")


class ReasoningSwitch:
    """Ends a running thinking block from outside the decode thread (``reasoning_control``, POST
    /v1/chat/completions/control): each `end` forces the budget message and end tag on the next token of every
    constraint counting inside a block then, as llama.cpp's common_reasoning_budget_force (one not counting
    ignores it). A counter, not a flag: the decode thread reads it, the reactor only increments it."""

    def __init__(self) -> None:
        self.presses = 0

    def end(self) -> None:
        self.presses += 1


class _SequenceMatcher:
    """Which of a few token sequences ends at the latest token (the longest one); forgets on a match."""

    def __init__(self, seqs: Sequence[tuple[int, ...]]) -> None:
        self.seqs = list(dict.fromkeys(s for s in seqs if s))
        self._max = max(len(s) for s in self.seqs)
        self._window: list[int] = []

    def advance(self, token: int) -> int:
        window = self._window
        window.append(token)
        if len(window) > self._max:
            del window[0]
        best, best_len = -1, 0
        for i, seq in enumerate(self.seqs):
            n = len(seq)
            if n > best_len and n <= len(window) and tuple(window[-n:]) == seq:
                best, best_len = i, n
        if best >= 0:
            window.clear()
        return best

    def reset(self) -> None:
        self._window.clear()


class ReasoningBudgetConstraint:
    """One slot's budget state, plus the inner constraint it guards (if any)."""

    def __init__(self, spec: ReasoningBudget, inner: Constraint | None, switch: ReasoningSwitch | None = None) -> None:
        self.spec = spec
        self.inner = inner
        self._switch = switch
        self._presses = switch.presses if switch is not None else 0
        self.state = BudgetState.IDLE
        self._start = _SequenceMatcher([spec.start])
        self._end = _SequenceMatcher(spec.ends)
        self.reset()

    def _poll_switch(self) -> None:
        switch = self._switch
        if switch is None or switch.presses == self._presses:
            return
        self._presses = switch.presses
        if self.state is BudgetState.COUNTING:
            self.state, self.force_pos = BudgetState.FORCING, 0
            self._end.reset()

    # -- state machine (llama.cpp's common_reasoning_budget_accept) --------
    def _enter_block(self) -> None:
        self.remaining = self.spec.budget
        self._end.reset()
        self.state = BudgetState.FORCING if self.spec.budget == 0 else BudgetState.COUNTING
        self.force_pos = 0

    def _advance(self, token: int) -> None:
        state = self.state
        if state in (BudgetState.IDLE, BudgetState.DONE):
            if self._start.advance(token) >= 0:
                self._enter_block()
        elif state in (BudgetState.COUNTING, BudgetState.WAITING_UTF8):
            if self._end.advance(token) >= 0:
                self.state = BudgetState.DONE  # the model closed the block itself
                return
            pieces = self.spec.pieces
            complete = utf8_is_complete(pieces[token]) if 0 <= token < len(pieces) else True
            if state is BudgetState.COUNTING:
                if self.spec.budget < 0:
                    return
                self.remaining -= 1
                if self.remaining > 0:
                    return
            if complete:
                self.state, self.force_pos = BudgetState.FORCING, 0
                self._end.reset()
            elif state is BudgetState.COUNTING:
                self.state = BudgetState.WAITING_UTF8
                self._end.reset()
        elif state is BudgetState.FORCING:
            # an end tag also closes the block: prefill tokens (a prompt that opened and closed the block)
            # are not the forced ones
            closed = self._end.advance(token) >= 0
            if token == self.spec.forced[self.force_pos]:
                self.force_pos += 1
            if closed or self.force_pos >= len(self.spec.forced):
                self.state = BudgetState.DONE
                self._start.reset()

    @property
    def _inner_active(self) -> bool:
        return self.inner is not None and self.state in (BudgetState.IDLE, BudgetState.DONE)

    # -- Constraint protocol ------------------------------------------------
    def fill_mask(self, logits: npt.NDArray[np.float32]) -> None:
        self._poll_switch()
        if self.state is BudgetState.FORCING:
            forced = self.spec.forced[self.force_pos]
            keep = logits[forced]
            logits.fill(_NEG_INF)
            logits[forced] = keep if np.isfinite(keep) else np.float32(0.0)  # forced even if masked before
        elif self._inner_active:
            assert self.inner is not None
            self.inner.fill_mask(logits)

    def allowed_mask(self) -> npt.NDArray[np.bool_]:
        self._poll_switch()
        if self.state is BudgetState.FORCING:
            mask = np.zeros(self.spec.n_vocab, dtype=np.bool_)
            mask[self.spec.forced[self.force_pos]] = True
            return mask
        if self._inner_active:
            assert self.inner is not None
            return self.inner.allowed_mask()
        return np.ones(self.spec.n_vocab, dtype=np.bool_)

    def accept(self, token: int) -> None:
        to_inner = self._inner_active  # decided before the token moves the state, as llama.cpp does
        self._advance(token)
        if to_inner:
            assert self.inner is not None
            self.inner.accept(token)

    def is_finished(self) -> bool:
        return self._inner_active and self.inner is not None and self.inner.is_finished()

    def is_accepting(self) -> bool:
        if self.inner is None:
            return self.state is not BudgetState.FORCING
        return self._inner_active and self.inner.is_accepting()

    def reset(self) -> None:
        self.state = BudgetState.IDLE
        self.remaining = self.spec.budget
        self.force_pos = 0
        self._start.reset()
        self._end.reset()
        if self.inner is not None:
            self.inner.reset()
        for token in self.spec.prefill:
            self._advance(token)


class ReasoningBudgetFactory:
    """A :class:`ConstraintFactory` giving each slot a fresh budget around an optional inner constraint."""

    def __init__(self, spec: ReasoningBudget, inner: ConstraintFactory | None = None,
                 switch: ReasoningSwitch | None = None) -> None:
        self.spec = spec
        self.inner = inner
        self.switch = switch
        self.description = "reasoning_budget" + (f"+{inner.description}" if inner is not None else "")
        self.warnings: list[str] = list(inner.warnings) if inner is not None else []

    def new(self) -> ReasoningBudgetConstraint:
        return ReasoningBudgetConstraint(self.spec, self.inner.new() if self.inner is not None else None, self.switch)
