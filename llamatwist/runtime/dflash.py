# -*- test-case-name: tests.test_speculative_dflash -*-
"""``--spec-type draft-dflash``: block drafts from a DFlash draft model (``-md``), which reads the target's
hidden states.

A DFlash draft drafts a whole block in one decode. Its KV cache holds, at the target's positions, the target's
hidden states at the input of some of its layers (the draft's ``target_layers``) side by side, projected
(``fc``) and written in as each layer's keys and values. A draft decodes ``[pending token, MASK, MASK, ...]``
at the pending token's position on, with attention both ways, and reads a token at every MASK. As
llama-server's driver (common_speculative_impl_draft_dflash):

- after every target decode, `DFlashDrafter.process` writes the batch's hidden states into the draft's KV
  cache at the batch's positions, which the target's KV edits then keep in step (`Context.mirror_memory`);
- `DFlashDrafter.draft` decodes the block (``n_max`` MASKs, at most the trained block size less one), takes
  the top token at each MASK (top-10 probabilities), stops below ``p_min``, and removes the block's cells.

The output never changes: the target verifies every draft.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from llamatwist.engine.batch import Batch
from llamatwist.engine.context import Context
from llamatwist.engine.errors import DecodeError
from llamatwist.engine.model import Model
from llamatwist.runtime.draft_head import Segment, continue_at, layer_reader_problem, top_token

__all__ = ["DFlashDrafter", "dflash_problem"]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 16  # llama-server's when the draft does not say (dflash.block_size)


def dflash_problem(draft: Model, target: Model) -> str | None:
    """Why ``draft`` cannot draft for ``target`` with draft-dflash (None: it can)."""
    meta = draft.metadata()
    if meta.get("general.architecture") != "dflash" or not draft.target_layer_ids():
        return "it is not a DFlash draft model"
    if meta.get("dflash.selector_rank"):
        # llama-server reads its drafts from a selector lattice instead of the logits
        return "it is a DFlash2 draft (a selector head), which llamatwist does not run"
    if draft.vocab.mask < 0:
        return "its vocabulary has no MASK token"
    return layer_reader_problem(draft, target, target.info().n_layer - 1)  # layer inputs only


class DFlashDrafter:
    """The DFlash draft's context beside the target's, one sequence per target sequence (decode thread only)."""

    def __init__(self, target: Context, model: Model, ctx: Context) -> None:
        self.target = target
        self.model = model
        self.ctx = ctx
        self.layers = model.target_layer_ids()
        meta = model.metadata()
        self.block_size = int(meta.get("dflash.block_size") or DEFAULT_BLOCK_SIZE)
        self.mask = model.vocab.mask
        self._inject = Batch(ctx.n_ubatch, len(self.layers) * target.n_embd, tokens=False)
        self._batch = Batch(self.block_size)
        target.set_layer_inputs(self.layers)
        ctx.set_causal_attn(meta.get("dflash.attention.causal") == "true")
        target.mirror_memory(ctx)

    @property
    def n_max(self) -> int:
        """The most tokens one block drafts: its MASKs."""
        return self.block_size - 1

    def close(self) -> None:
        self.target.mirror_memory(None)
        self.ctx.close()
        self.model.close()

    def process(self, segments: Sequence[Segment]) -> None:
        """Write a target decode's hidden states (its batch was ``segments``, in order) into the draft's KV
        cache at the batch's positions."""
        n_rows = sum(len(s.tokens) for s in segments)
        if n_rows == 0:
            return
        inject = self._inject
        rows = inject.states
        assert rows is not None
        try:
            features = np.concatenate([self.target.layer_inputs(lid, n_rows) for lid in self.layers], axis=1)
            row = 0
            for seg in segments:
                continue_at(self.ctx, seg.seq, seg.pos)
                for i in range(0, len(seg.tokens), inject.capacity):
                    n = min(inject.capacity, len(seg.tokens) - i)
                    inject.clear()
                    inject.add_rows(seg.pos + i, n, seg.seq, outputs=False)  # keys and values only
                    rows[:n] = features[row + i : row + i + n]
                    self.ctx.decode(inject)
                row += len(seg.tokens)
        except DecodeError as exc:  # the drafts only get worse; the target's output is unaffected
            log.warning("DFlash draft: following the target's batch failed: %s", exc)

    def draft(self, seq: int, token: int, pos: int, n_max: int, p_min: float) -> list[int]:
        """Up to ``n_max`` tokens to follow ``token``, the slot's pending token at ``pos``: one block."""
        n_max = min(n_max, self.n_max)
        if n_max <= 0 or pos + n_max >= self.ctx.n_ctx:
            return []
        batch = self._batch
        batch.clear()
        batch.add(token, pos, seq, True)
        for i in range(1, n_max + 1):
            batch.add(self.mask, pos + i, seq, True)
        out: list[int] = []
        try:
            continue_at(self.ctx, seq, pos)
            self.ctx.decode(batch)
            for i in range(1, n_max + 1):
                top, p = top_token(self.ctx.logits_view(i))
                if p < p_min:
                    break
                out.append(top)
        except DecodeError as exc:
            log.warning("DFlash draft: draft decode failed: %s", exc)
        self.ctx.seq_rm(seq, pos, -1)  # the block's cells: the target's batch brings those positions' states
        return out

    def accept(self, seq: int, n_accepted: int, n_draft: int) -> None:
        """Nothing to carry: the verified batch's states are in the cache, the rejected ones go with the
        target's cells."""

    def rewind(self, seq: int) -> None:
        """Nothing to carry: the accepted tokens' states come again with the batch that feeds them again."""

