# -*- test-case-name: tests.test_speculative_eagle3 -*-
"""``--spec-type draft-eagle3``: drafts from an EAGLE-3 draft model (``-md``), which reads the target's hidden
states.

An EAGLE-3 draft is one decoder layer. At position P it takes the token ``t[P+1]`` and ``g[P]``, its encoder's
projection (``fc``) of the target's hidden states at P at the input of three of the target's layers (the
draft's ``target_layers``). Its token embeddings and output matrix are usually the target's: its context is
made with the target's beside it (``ctx_other``). As llama-server's driver (common_speculative_impl_draft_eagle3):

- after every target decode, `Eagle3Drafter.process` encodes the batch's hidden states into ``g`` rows and
  decodes, for each run of a sequence's tokens, the pairs ``(t[k+1], g[k])`` at k's position. A run's last
  pair needs the token after it, which the next batch or the next draft brings: its ``g`` row waits
  (``pending``), and a next batch that starts right after it completes it first;
- `Eagle3Drafter.draft` decodes the pending pair with the slot's pending token (the target's last sample),
  then each drafted token with the draft's own output state, taking the top token (top-10 probabilities,
  stopping below ``p_min``), up to ``n_max`` tokens; then removes its drafted cells (the target's batch
  rewrites those positions);
- `Eagle3Drafter.accept` moves the pending pair back to the last accepted token's: the rows after it were
  drafts the target rejected.

The output never changes: the target verifies every draft.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from llamatwist.engine.batch import Batch
from llamatwist.engine.context import Context
from llamatwist.engine.errors import DecodeError
from llamatwist.engine.model import Model
from llamatwist.runtime.draft_head import KEEP_ROWS, Segment, continue_at, draft_greedy, layer_reader_problem

__all__ = ["Eagle3Drafter", "eagle3_problem"]

log = logging.getLogger(__name__)

N_TARGET_LAYERS = 3  # llama.cpp's EAGLE-3 reads exactly three of the target's layers


def eagle3_problem(draft: Model, target: Model) -> str | None:
    """Why ``draft`` cannot draft for ``target`` with draft-eagle3 (None: it can)."""
    layers = draft.target_layer_ids()
    if len(layers) != N_TARGET_LAYERS:
        return f"it is not an EAGLE-3 draft model (expected {N_TARGET_LAYERS} target layers, got {len(layers)})"
    # layer n_layer: the target's final state (the NextN one)
    return layer_reader_problem(draft, target, target.info().n_layer)


class Eagle3Drafter:
    """The EAGLE-3 draft's context beside the target's, one sequence per target sequence (decode thread only)."""

    def __init__(self, target: Context, model: Model, ctx: Context) -> None:
        self.target = target
        self.model = model
        self.ctx = ctx
        self.layers = model.target_layer_ids()
        self.n_embd = ctx.n_embd  # a g row's width
        self._enc = Batch(ctx.n_ubatch, len(self.layers) * target.n_embd, tokens=False)
        self._batch = Batch(ctx.n_batch, self.n_embd)
        n_seq = target.n_seq_max
        self._pending = np.zeros((n_seq, self.n_embd), dtype=np.float32)  # g of the pair that waits for a token
        self._pending_pos = np.full(n_seq, -1, dtype=np.int64)  # ... its position (-1: none yet)
        self._before: dict[int, tuple[int, npt.NDArray[np.float32]]] = {}  # the pending pair before the last batch
        self._last: dict[int, tuple[int, npt.NDArray[np.float32]]] = {}  # seq -> last pos, its last batch's g rows
        target.set_layer_inputs(self.layers)
        ctx.set_nextn_outputs(True, every_token=False)
        target.mirror_memory(ctx)

    def close(self) -> None:
        self.target.mirror_memory(None)
        self.ctx.close()
        self.model.close()

    def process(self, segments: Sequence[Segment]) -> None:
        """Follow a target decode whose batch was ``segments``, in order."""
        n_rows = sum(len(s.tokens) for s in segments)
        if n_rows == 0:
            return
        try:
            g = self._encode(n_rows)
            batch = self._batch
            states = batch.states
            assert states is not None
            batch.clear()
            row = 0
            for seg in segments:
                seq, n = seg.seq, len(seg.tokens)
                pending = int(self._pending_pos[seq])
                # the pair the last batch left waiting, completed by this run's first token
                if pending >= 0 and pending + 1 == seg.pos and pending > self.ctx.seq_pos_max(seq):
                    continue_at(self.ctx, seq, pending)
                    batch.add_with_state(seg.tokens[0], pending, seq, False, self._pending[seq])
                else:
                    continue_at(self.ctx, seq, seg.pos)
                if n > 1:
                    last = batch.add_sequence(seg.tokens[1:], seg.pos, seq, False)
                    states[last - n + 2 : last + 1] = g[row : row + n - 1]
                self._before[seq] = (pending, self._pending[seq].copy())
                self._pending_pos[seq] = seg.pos + n - 1
                self._pending[seq] = g[row + n - 1]
                self._last[seq] = (seg.pos + n - 1, g[row + max(0, n - KEEP_ROWS) : row + n].copy())
                row += n
            if batch.n_tokens:
                self.ctx.decode(batch)
        except DecodeError as exc:  # the drafts only get worse; the target's output is unaffected
            log.warning("EAGLE-3 draft: following the target's batch failed: %s", exc)

    def _encode(self, n_rows: int) -> npt.NDArray[np.float32]:
        """The g rows of the last target decode's first ``n_rows`` tokens: the target layers' hidden states side
        by side, through the draft's encoder, a micro-batch at a time."""
        features = np.concatenate([self.target.layer_inputs(lid, n_rows) for lid in self.layers], axis=1)
        g = np.empty((n_rows, self.n_embd), dtype=np.float32)
        enc = self._enc
        rows = enc.states
        assert rows is not None
        for i in range(0, n_rows, enc.capacity):
            n = min(enc.capacity, n_rows - i)
            enc.clear()
            # the encoder reads no positions: placeholders, as llama-server's
            enc.add_rows(self.ctx.seq_pos_max(0) + 1, n, 0, outputs=True)
            rows[:n] = features[i : i + n]
            self.ctx.encode(enc)
            g[i : i + n] = self.ctx.nextn_states(n)
        return g

    def draft(self, seq: int, token: int, pos: int, n_max: int, p_min: float) -> list[int]:
        """Up to ``n_max`` tokens to follow ``token``, the slot's pending token at ``pos``."""
        start = int(self._pending_pos[seq])
        if n_max <= 0 or start < 0 or pos + n_max >= self.ctx.n_ctx:
            return []
        batch = self._batch
        batch.clear()
        idx = batch.add_with_state(token, start, seq, True, self._pending[seq])

        def feed(step: int, top: int, state: npt.NDArray[np.float32]) -> int:
            batch.clear()
            return batch.add_with_state(top, start + step + 1, seq, True, state)

        continue_at(self.ctx, seq, start)
        out = draft_greedy(self.ctx, batch, idx, n_max, p_min, feed, what="EAGLE-3 draft")
        # the drafted tokens' cells: the target's batch brings those positions' true pairs
        self.ctx.seq_rm(seq, pos, -1)
        return out

    def accept(self, seq: int, n_accepted: int, n_draft: int) -> None:
        """The target verified ``n_draft`` tokens after the pending one and took ``n_accepted``: the pair that
        waits is the last accepted token's."""
        last = self._last.get(seq)
        if last is None:
            return
        pos, rows = last
        back = n_draft - n_accepted  # rows of rejected drafts at the end of the batch
        if 0 < back < len(rows):
            self._pending_pos[seq] = pos - back
            self._pending[seq] = rows[len(rows) - 1 - back]

    def rewind(self, seq: int) -> None:
        """The target went back to its state before the last batch (memory that cannot be cut part-way) and
        feeds the accepted tokens again: the pair that waited before that batch waits again."""
        before = self._before.get(seq)
        if before is not None:
            self._pending_pos[seq], self._pending[seq] = before

    def media(self, seq: int, pos: int, n: int) -> None:
        """Nothing: the draft takes a token beside each state; its sequence starts again after the media."""
