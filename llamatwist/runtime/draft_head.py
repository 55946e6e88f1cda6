# -*- test-case-name: tests.test_speculative_mtp,tests.test_speculative_eagle3,tests.test_speculative_dflash,tests.test_speculative_dspark -*-
"""What the draft heads that follow the target share: ``draft-mtp`` (`mtp.py`), ``draft-eagle3`` (`eagle3.py`),
``draft-dflash`` and ``draft-dspark`` (`dflash.py`).

All draft from the target's hidden states, so all run after every target decode (`DraftHead.process`,
given the batch as `Segment` runs) and keep their KV cache where the target's is: the target context repeats
its KV edits on theirs (`Context.mirror_memory`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from llamatwist.engine.errors import DecodeError

if TYPE_CHECKING:
    from llamatwist.engine.batch import Batch
    from llamatwist.engine.context import Context
    from llamatwist.engine.model import Model

__all__ = ["DRAFT_TOP_K", "KEEP_ROWS", "LAYER_INPUT_ARCHS", "DraftHead", "Segment", "continue_at", "draft_greedy",
           "layer_reader_problem", "top_token"]

log = logging.getLogger(__name__)

# The target architectures whose graphs hand out their layers' input hidden states in the pinned libllama (a
# graph that does not aborts the process at its first decode, llama-server with it);
# tests/test_speculative_eagle3.py derives the set from the pinned source.
LAYER_INPUT_ARCHS = frozenset({
    "bailingmoe3", "deepseek4", "gemma4", "gpt-oss", "hunyuan_vl", "lfm2", "llama", "mimo2", "minimax-01",
    "minimax-m2", "muse-glimmer", "nanbeige", "nemotron_h", "qwen3", "qwen35", "qwen35moe", "qwen3moe",
    "qwen3next", "qwen4exp",
})

KEEP_ROWS = 64  # states kept of a sequence's last batch rows: its pending token's and its drafts'

DRAFT_TOP_K = 10  # llama-server's draft sampler for all of them: top-k 10, its probabilities renormalized over those


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of one sequence's tokens in a target batch, in batch order."""

    seq: int
    pos: int  # position of tokens[0]
    tokens: Sequence[int]


class DraftHead(Protocol):
    """A draft model that follows every target decode (decode thread only)."""

    def process(self, segments: Sequence[Segment]) -> None:
        """Follow a target decode whose batch was ``segments``, in order."""

    def draft(self, seq: int, token: int, pos: int, n_max: int, p_min: float) -> list[int]:
        """Up to ``n_max`` tokens to follow ``token``, the slot's pending token at ``pos``."""

    def accept(self, seq: int, n_accepted: int, n_draft: int) -> None:
        """The target verified ``n_draft`` tokens after the pending one and took ``n_accepted``."""

    def rewind(self, seq: int) -> None:
        """The target went back to its state before the last batch and feeds its accepted tokens again."""

    def media(self, seq: int, pos: int, n: int) -> None:
        """The target just decoded ``n`` embedding rows of a media chunk at ``pos`` on (libmtmd's decode, not a
        step's batch)."""

    def close(self) -> None: ...


def top_token(logits: npt.NDArray[np.float32]) -> tuple[int, float]:
    """The top token and its probability among the top ``DRAFT_TOP_K`` (llama-server's draft sampler)."""
    k = min(DRAFT_TOP_K, len(logits))
    top_k = np.argpartition(logits, -k)[-k:]
    vals = logits[top_k].astype(np.float64)
    best = int(np.argmax(vals))
    z = np.exp(vals - vals[best]).sum()
    return int(top_k[best]), float(1.0 / z)


def continue_at(ctx: Context, seq: int, start: int) -> None:
    """Make the head's sequence end right before ``start``, where its next batch begins (libllama takes a
    sequence's positions only consecutively): cells from ``start`` on (an earlier draft's) go; a gap before it
    (a decode that failed) starts the sequence afresh, so that drafting goes on, if worse for a while."""
    top = ctx.seq_pos_max(seq)
    if top >= start:
        ctx.seq_rm(seq, start, -1)
    elif 0 <= top < start - 1:
        ctx.seq_rm(seq, -1, -1)


def draft_greedy(ctx: Context, batch: Batch, idx: int, n_max: int, p_min: float,
                 feed: Callable[[int, int, npt.NDArray[np.float32]], int],
                 before: Callable[[int], None] = lambda step: None, what: str = "draft head") -> list[int]:
    """A head's draft: decode ``batch`` (its output at ``idx``), take the top token, stop below ``p_min`` or at
    ``n_max`` tokens, else ``feed(step, token, the head's output state)`` refills the batch and says where the
    next output is; ``before(step)`` runs before each decode. A failed decode ends the draft where it is."""
    out: list[int] = []
    try:
        for step in range(n_max):
            before(step)
            ctx.decode(batch)
            top, p = top_token(ctx.logits_view(idx))
            if p < p_min:
                break
            out.append(top)
            if len(out) >= n_max:
                break
            idx = feed(step, top, ctx.nextn_state(idx))
    except DecodeError as exc:
        log.warning("%s: draft decode failed: %s", what, exc)
    return out


def layer_reader_problem(draft: Model, target: Model, last_layer: int) -> str | None:
    """Why ``draft``, which reads the hidden states of some of the target's layers (EAGLE-3, DFlash), cannot
    read ``target``'s (None: it can); ``last_layer``: the highest layer id it may read."""
    arch = target.metadata().get("general.architecture", "")
    if arch not in LAYER_INPUT_ARCHS:
        return (f"the target's architecture ({arch}) does not hand out its layers' hidden states in this libllama "
                f"(those that do: {', '.join(sorted(LAYER_INPUT_ARCHS))})")
    layers = draft.target_layer_ids()
    if max(layers) > last_layer:
        return f"it reads target layer {max(layers)}, but the target has {target.info().n_layer} layers"
    if draft.info().n_embd != target.info().n_embd:
        return f"its hidden size {draft.info().n_embd} differs from the target's {target.info().n_embd}"
    return None
