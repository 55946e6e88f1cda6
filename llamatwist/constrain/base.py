"""The backend-agnostic interface of constrained decoding.

A :class:`ConstraintFactory` is compiled once per request (grammar or JSON
schema, against a model's :class:`TokenizerInfo`); each generating slot gets
its own :class:`Constraint` from :meth:`ConstraintFactory.new`.  Per decoded
token the engine calls :meth:`Constraint.fill_mask` on that slot's logits row
before sampling, then :meth:`Constraint.accept` with the sampled token.

This module depends on nothing but numpy: the engine hands it plain data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "LLAMA_TOKEN_ATTR_CONTROL",
    "LLAMA_TOKEN_ATTR_USER_DEFINED",
    "Constraint",
    "ConstraintError",
    "ConstraintFactory",
    "TokenizerInfo",
]

# llama_token_attr bit flags (llama.h)
LLAMA_TOKEN_ATTR_CONTROL = 1 << 3
LLAMA_TOKEN_ATTR_USER_DEFINED = 1 << 4


class ConstraintError(ValueError):
    """A grammar that does not parse, an unsupported JSON-schema feature, or a
    token the constraint does not allow.  The message is meant for the client
    (the server maps it to HTTP 400 when raised while compiling)."""


@dataclass(frozen=True, eq=False)
class TokenizerInfo:
    """A model's vocabulary as plain data; build it once per model.

    ``tokens[i]`` is the byte string of token ``i`` (``llama_token_to_piece``
    with ``special=True``); ``eog_ids`` the end-of-generation tokens (all of
    them are allowed wherever the grammar may end); ``special_ids`` the control
    tokens, which the grammar text can never produce (a literal ``"<|im_end|>"``
    in a grammar matches the characters, not the control token);
    ``tokenize(data)`` tokenizes bytes without adding or parsing special tokens.
    ``n_vocab`` is the length of a logits row (defaults to ``len(tokens)``).
    """

    tokens: Sequence[bytes]
    eog_ids: Sequence[int]
    tokenize: Callable[[bytes], list[int]]
    special_ids: frozenset[int] = frozenset()
    bos_id: int | None = None
    n_vocab: int = 0
    # backend caches (e.g. the llguidance tokenizer), filled lazily
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.n_vocab:
            object.__setattr__(self, "n_vocab", len(self.tokens))
        if self.n_vocab < len(self.tokens):
            raise ValueError(f"n_vocab {self.n_vocab} < number of tokens {len(self.tokens)}")
        if not self.eog_ids:
            raise ValueError("at least one end-of-generation token is needed")

    @classmethod
    def from_attrs(
        cls,
        tokens: Sequence[bytes],
        attrs: Sequence[int],
        eog_ids: Sequence[int],
        tokenize: Callable[[bytes], list[int]],
        *,
        bos_id: int | None = None,
        n_vocab: int = 0,
    ) -> TokenizerInfo:
        """Build from ``llama_vocab_get_attr`` flags: CONTROL tokens, and
        USER_DEFINED tokens that look like ``<...>``, are special (the rule
        llguidance's own llama.cpp glue uses)."""
        special = frozenset(
            i for i, (piece, attr) in enumerate(zip(tokens, attrs))
            if attr & LLAMA_TOKEN_ATTR_CONTROL
            or (attr & LLAMA_TOKEN_ATTR_USER_DEFINED and piece.startswith(b"<") and piece.endswith(b">"))
        )
        return cls(tokens=tokens, eog_ids=list(eog_ids), tokenize=tokenize, special_ids=special,
                   bos_id=bos_id, n_vocab=n_vocab)

    def control_tokens(self) -> dict[str, int]:
        """Text -> id of the special tokens: a grammar must name these (``<[id]>``), it cannot spell them."""
        found = self.cache.get("control_tokens")
        if found is None:
            found = self.cache["control_tokens"] = {
                self.tokens[i].decode("utf-8", "replace"): i for i in sorted(self.special_ids)
            }
        return dict(found)


@runtime_checkable
class Constraint(Protocol):
    """The grammar state of one generation (one slot).  Not thread-safe: use
    it from one thread at a time (the engine's)."""

    def fill_mask(self, logits: npt.NDArray[np.float32]) -> None:
        """Set the logits of disallowed tokens to ``-inf`` in place."""

    def allowed_mask(self) -> npt.NDArray[np.bool_]:
        """The allowed tokens in the current state, as a bool array of ``n_vocab``."""

    def accept(self, token: int) -> None:
        """Advance past the sampled ``token``; :class:`ConstraintError` if not allowed."""

    def is_finished(self) -> bool:
        """True when the grammar is complete: only an end-of-generation token may follow."""

    def is_accepting(self) -> bool:
        """True when the output so far is a complete match (generation may stop here)."""

    def reset(self) -> None:
        """Back to the initial state."""


class ConstraintFactory(Protocol):
    """A compiled grammar; cheap to instantiate per slot."""

    description: str
    warnings: list[str]

    def new(self) -> Constraint:
        """A fresh constraint in the initial state."""
