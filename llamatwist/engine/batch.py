# -*- test-case-name: tests.test_engine -*-
"""A reusable ``llama_batch`` filled from Python lists (tokens, and for a draft head a state row per token)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from llamatwist.native.binding import ffi, lib

__all__ = ["Batch"]


def _free(b: Any, token: Any) -> None:
    b.embd = ffi.NULL  # the state rows are numpy's, not the batch's to free
    b.token = token
    lib.llama_batch_free(b)


class Batch:
    """Token batch with room for ``capacity`` tokens; one sequence id per token.

    ``n_state`` > 0: each token also carries a row of that many floats (`states`, filled by the caller) —
    a draft head's input beside the token, the target's hidden state (libllama takes a batch with both).
    ``tokens=False``: the rows alone (`add_rows`), an EAGLE-3 encoder's or a DFlash injection's input."""

    def __init__(self, capacity: int, n_state: int = 0, *, tokens: bool = True) -> None:
        self.capacity = capacity
        self._b = lib.llama_batch_init(capacity, 0, 1)
        weakref.finalize(self, _free, self._b, self._b.token)
        if not tokens:
            self._b.token = ffi.NULL
        self.states: npt.NDArray[np.float32] | None = None
        if n_state > 0:
            self.states = np.zeros((capacity, n_state), dtype=np.float32)
            self._b.embd = ffi.cast("float *", ffi.from_buffer(self.states))
        self.n_tokens = 0

    @property
    def native(self) -> Any:
        self._b.n_tokens = self.n_tokens
        return self._b

    @property
    def free(self) -> int:
        return self.capacity - self.n_tokens

    def clear(self) -> None:
        self.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        """Append one token; returns its index in the batch."""
        i = self.n_tokens
        if i >= self.capacity:
            raise OverflowError("batch is full")
        b = self._b
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = 1 if logits else 0
        self.n_tokens = i + 1
        return i

    def add_with_state(self, token: int, pos: int, seq_id: int, logits: bool, state: npt.ArrayLike) -> int:
        """Append one token with its state row (``n_state`` > 0); returns its index."""
        i = self.add(token, pos, seq_id, logits)
        assert self.states is not None
        self.states[i] = state
        return i

    def add_rows(self, pos0: int, n: int, seq_id: int, outputs: bool) -> int:
        """Append ``n`` state rows of one sequence at ``pos0`` on (a batch without tokens: fill `states` for
        them); returns the last one's index."""
        i = self._reserve(n)
        self._place(i, n, pos0, seq_id, [1 if outputs else 0] * n)
        return i + n - 1

    def spread_positions(self, sections: int) -> None:
        """Lay a rows-only batch's positions out for a model that takes ``sections`` positions per embedding
        (M-RoPE's 4, section-major; a row at p as a text token's (p, p, p, 0)); after its last `add_rows`, with
        ``sections`` times its rows within `capacity`."""
        n = self.n_tokens
        if sections <= 1:
            return
        if n * sections > self.capacity:
            raise OverflowError("batch is full")
        pos = self._b.pos
        first = list(pos[0:n])
        for j in range(1, sections):
            pos[j * n : (j + 1) * n] = first if j < 3 else [0] * n

    def add_sequence(
        self, tokens: Sequence[int], pos0: int, seq_id: int, logits_last: bool, all_outputs: bool = False
    ) -> int:
        """Append a run of tokens of one sequence; returns the last token's index.
        ``all_outputs`` marks every token as an output (per-token embeddings)."""
        n = len(tokens)
        i = self._reserve(n)
        self._b.token[i : i + n] = tokens
        outputs = [1 if all_outputs else 0] * n
        if logits_last and n:
            outputs[-1] = 1
        self._place(i, n, pos0, seq_id, outputs)
        return i + n - 1

    def _reserve(self, n: int) -> int:
        i = self.n_tokens
        if i + n > self.capacity:
            raise OverflowError("batch is full")
        return i

    def _place(self, i: int, n: int, pos0: int, seq_id: int, outputs: list[int]) -> None:
        """Positions, the sequence and output flags of entries i..i+n-1, which then count."""
        b = self._b
        b.pos[i : i + n] = range(pos0, pos0 + n)
        b.n_seq_id[i : i + n] = [1] * n
        b.logits[i : i + n] = outputs
        seq_ptrs = b.seq_id
        for k in range(i, i + n):
            seq_ptrs[k][0] = seq_id
        self.n_tokens = i + n
