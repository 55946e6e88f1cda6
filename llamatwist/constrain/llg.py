"""The llguidance backend: GBNF (and Lark) grammars and JSON schemas.

llguidance (the engine llama.cpp and vLLM use) computes a token bitmask per
step in tens of microseconds; it releases the GIL while it does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import llguidance as llg
import numpy as np
import numpy.typing as npt
from llguidance.gbnf_to_lark import any_to_lark

from llamatwist.constrain.base import ConstraintError, TokenizerInfo
from llamatwist.constrain.schema import JSON_LAYOUT, closed_objects

__all__ = ["LLGConstraint", "LLGFactory", "compile_constraint", "fill_masks", "lltokenizer"]

_NEG_INF = np.float32(-np.inf)
_NEG_INF_BITS = np.uint32(0xFF800000)

# Never ignore a keyword llguidance does not implement: refuse the schema.
_JSON_OVERRIDES: Any = {"lenient": False}


class _Wrapper:
    """What ``llguidance.TokenizerWrapper`` reads from a tokenizer."""

    def __init__(self, info: TokenizerInfo) -> None:
        self.eos_token_id = int(info.eog_ids[0])
        self.bos_token_id = info.bos_id
        # special tokens are prefixed with 0xff so that grammar text never matches them
        self.tokens = [b"\xff" + t if i in info.special_ids else bytes(t) for i, t in enumerate(info.tokens)]
        self.special_token_ids = sorted(info.special_ids)
        self._tokenize = info.tokenize

    def __call__(self, data: bytes | str) -> list[int]:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return list(self._tokenize(data))


def lltokenizer(info: TokenizerInfo) -> Any:
    """The ``llguidance.LLTokenizer`` for ``info`` (built once, ~0.1-0.2 s, then cached)."""
    tok = info.cache.get("llg")
    if tok is None:
        tok = llg.LLTokenizer(
            llg.TokenizerWrapper(_Wrapper(info)),
            n_vocab=info.n_vocab,
            eos_token=[int(t) for t in info.eog_ids],
        )
        info.cache["llg"] = tok
    return tok


class LLGConstraint:
    """One slot's grammar state (an ``llguidance.LLMatcher``)."""

    def __init__(self, matcher: Any, n_vocab: int) -> None:
        self._m = matcher
        self.n_vocab = n_vocab
        self._words = (n_vocab + 31) // 32
        self._bitmask = np.zeros(self._words, dtype=np.int32)
        self._allowed = np.zeros(n_vocab, dtype=np.bool_)
        self._n_allowed = 0
        self._work = np.empty(n_vocab, dtype=np.uint32)
        self._fresh = False  # the bitmask matches the current state

    # -- masks ------------------------------------------------------------
    def _compute(self) -> None:
        if self._fresh:
            return
        m = self._m
        m.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        if m.is_error():
            raise ConstraintError(m.get_error())
        self._unpack()

    def _unpack(self) -> None:
        bits = np.unpackbits(self._bitmask.view(np.uint8), count=self.n_vocab, bitorder="little")
        self._allowed = bits.view(np.bool_)
        self._n_allowed = int(np.count_nonzero(self._allowed))
        self._fresh = True

    def bitmask(self) -> npt.NDArray[np.int32]:
        """The allowed tokens as llguidance's packed bitmask (bit ``t % 32`` of word ``t // 32``)."""
        self._compute()
        return self._bitmask

    def allowed_mask(self) -> npt.NDArray[np.bool_]:
        self._compute()
        return self._allowed

    def fill_mask(self, logits: npt.NDArray[np.float32]) -> None:
        self._compute()
        n = self.n_vocab
        if logits.shape[0] < n:
            raise ValueError(f"logits row has {logits.shape[0]} entries, the vocabulary {n}")
        if logits.shape[0] > n:
            logits[n:] = _NEG_INF
            logits = logits[:n]
        allowed = self._allowed
        n_allowed = self._n_allowed
        if n_allowed >= n:
            return
        if 16 * n_allowed <= n:
            # few allowed tokens: save them, fill, restore
            keep = np.flatnonzero(allowed)
            vals = logits[keep]
            logits.fill(_NEG_INF)
            logits[keep] = vals
        elif 16 * (n - n_allowed) <= n:
            logits[np.flatnonzero(~allowed)] = _NEG_INF
        else:
            # a mixed mask: branch-free bit operations on the float bits
            # (a boolean-masked write costs ~200 us here, this ~40 us)
            u = logits.view(np.uint32)
            w = self._work
            np.negative(allowed.view(np.uint8), out=w, dtype=np.uint32, casting="unsafe")  # allowed: all ones
            np.bitwise_and(u, w, out=u)
            np.invert(w, out=w)
            np.bitwise_and(w, _NEG_INF_BITS, out=w)
            np.bitwise_or(u, w, out=u)

    # -- state ------------------------------------------------------------
    def accept(self, token: int) -> None:
        m = self._m
        if not m.consume_token(int(token)):
            raise ConstraintError(f"token {token} rejected by the grammar: {m.get_error()}")
        self._fresh = False

    def is_finished(self) -> bool:
        return bool(self._m.is_stopped())

    def is_accepting(self) -> bool:
        return bool(self._m.is_accepting())

    def is_error(self) -> bool:
        return bool(self._m.is_error())

    def stop_reason(self) -> str:
        return str(self._m.stop_reason())

    def rollback(self, n_tokens: int) -> None:
        """Undo the last ``n_tokens`` accepted tokens (speculative decoding)."""
        if not self._m.rollback(n_tokens):
            raise ConstraintError(f"cannot roll back {n_tokens} tokens: {self._m.get_error()}")
        self._fresh = False

    def forced_bytes(self) -> bytes:
        """Bytes the grammar forces next (may be empty)."""
        return bytes(self._m.compute_ff_bytes())

    def reset(self) -> None:
        self._m.reset()
        self._fresh = False

    @property
    def matcher(self) -> Any:
        """The underlying ``llguidance.LLMatcher`` (e.g. for batched mask computation)."""
        return self._m


_executor: Any = None


def fill_masks(items: Sequence[tuple[LLGConstraint, npt.NDArray[np.float32]]]) -> None:
    """:meth:`LLGConstraint.fill_mask` for several slots of one batch, computing
    their masks in parallel on llguidance's thread pool (GIL released)."""
    global _executor
    stale = [c for c, _ in items if not c._fresh]
    if len(stale) > 1 and len({c.n_vocab for c in stale}) == 1:
        if _executor is None:
            _executor = llg.LLExecutor()
        words = stale[0]._words
        buf = np.zeros((len(stale), words), dtype=np.int32)
        _executor.unsafe_compute_mask_ptr([(c.matcher, i) for i, c in enumerate(stale)],
                                          buf.ctypes.data, words * 4, len(stale))
        for i, c in enumerate(stale):
            if c.matcher.is_error():
                raise ConstraintError(c.matcher.get_error())
            c._bitmask = buf[i]
            c._unpack()
    for c, logits in items:
        c.fill_mask(logits)


class LLGFactory:
    """A compiled, validated grammar; :meth:`new` copies the initial matcher."""

    def __init__(self, matcher: Any, n_vocab: int, description: str) -> None:
        self._proto = matcher
        self.n_vocab = n_vocab
        self.description = description
        self.warnings: list[str] = list(matcher.get_grammar_warnings())

    def new(self) -> LLGConstraint:
        return LLGConstraint(self._proto.deep_copy(), self.n_vocab)


def _gbnf_grammar(text: str) -> str:
    if not text.strip():
        raise ConstraintError("grammar is empty")
    try:
        lark = any_to_lark(text)  # llama.cpp GBNF; Lark syntax passes through
    except Exception as e:  # noqa: BLE001  # GbnfToLarkError, IndexError, ... from the converter
        raise ConstraintError(f"failed to parse grammar: {e}") from None
    return str(llg.LLMatcher.grammar_from_lark(lark))


def _json_grammar(schema: Any) -> str:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise ConstraintError(f"JSON schema is not valid JSON: {e}") from None
    if isinstance(schema, bool):
        if not schema:
            raise ConstraintError("JSON schema 'false' matches nothing")
        schema = {}
    if not isinstance(schema, dict):
        raise ConstraintError("JSON schema must be an object")
    try:
        # objects listing properties take no others unless the schema says so, as in llama.cpp
        return str(llg.LLMatcher.grammar_from_json_schema(closed_objects(schema), defaults=cast(Any, JSON_LAYOUT),
                                                          overrides=_JSON_OVERRIDES))
    except (ValueError, TypeError) as e:
        raise ConstraintError(f"invalid JSON schema: {e}") from None


def compile_constraint(
    *,
    grammar: str | None = None,
    json_schema: dict[str, Any] | bool | str | None = None,
    json_object: bool = False,
    tokenizer: TokenizerInfo,
) -> LLGFactory:
    """Compile exactly one of: a GBNF (or Lark) ``grammar``, a ``json_schema``,
    or ``json_object`` (any JSON object).  Raises :class:`ConstraintError` with
    the parse error or the unsupported schema feature."""
    given = [k for k, v in (("grammar", grammar), ("json_schema", json_schema)) if v is not None]
    if json_object:
        given.append("json_object")
    if len(given) != 1:
        raise ConstraintError("give exactly one of grammar, json_schema, json_object"
                              + (f" (got {', '.join(given)})" if given else ""))
    if grammar is not None:
        kind, g = "grammar", _gbnf_grammar(grammar)
    elif json_schema is not None:
        kind, g = "json_schema", _json_grammar(json_schema)
    else:
        kind, g = "json_object", _json_grammar({"type": "object"})
    tok = lltokenizer(tokenizer)
    matcher = llg.LLMatcher(tok, g, log_level=0)
    if matcher.is_error():
        msg = matcher.get_error()
        what = "grammar" if kind == "grammar" else "JSON schema"
        raise ConstraintError(f"unsupported or invalid {what}: {msg}")
    return LLGFactory(matcher, tokenizer.n_vocab, kind)
