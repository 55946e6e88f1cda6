"""Constrained decoding: GBNF grammars and JSON schemas (llguidance backend).

No dependency on the engine, the runtime or cffi: the engine builds a
:class:`TokenizerInfo` from plain data once per model, compiles a
:class:`ConstraintFactory` per request and asks it for one :class:`Constraint`
per slot.
"""

from llamatwist.constrain.base import (
    Constraint,
    ConstraintError,
    ConstraintFactory,
    TokenizerInfo,
)
from llamatwist.constrain.llg import LLGConstraint, LLGFactory, compile_constraint, fill_masks, lltokenizer

__all__ = [
    "Constraint",
    "ConstraintError",
    "ConstraintFactory",
    "LLGConstraint",
    "LLGFactory",
    "TokenizerInfo",
    "compile_constraint",
    "fill_masks",
    "lltokenizer",
]
