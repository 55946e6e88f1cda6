# -*- test-case-name: tests.test_speculative_mtp -*-
"""``--spec-type draft-mtp``: drafts from the model's own multi-token-prediction (NextN) head.

Models such as GLM-4.5, Qwen3.5, DeepSeek-V3 and MiMo ship one or more NextN blocks after the trunk: given
the target's final hidden state ``h[p]`` at position p and the token ``x[p+1]``, a block predicts
``x[p+2]``. llama.cpp runs them in a second context of type MTP over the same model (its own KV cache, the
NextN layers only). As llama-server's driver (common_speculative_impl_draft_mtp):

- after every target decode, `MtpDrafter.process` runs the batch's tokens through the head, each paired
  with the target's hidden state of the token before it (a sequence's first token with the state kept from
  its previous batch), so the head's KV cache follows the target's;
- `MtpDrafter.draft` feeds the slot's pending token with the state before it, takes the head's top token
  (top-10 probabilities, stopping below ``p_min``) and feeds it back with the head's own output state, up
  to ``n_max`` tokens;
- `MtpDrafter.accept` keeps, of the verified batch's states, that of the last accepted token for the next
  batch's first.

Models with several heads (Step-3.5) chain them: draft step i runs head i, each head keeping its own KV for
the prompt (``process`` runs the batch once per head).

A separate MTP draft model (``-md``) runs in an MTP context of its own beside the target's. A Gemma 4 assistant
is one: it has no KV cache, its layers attending over the target's (``shared``), so ``process`` has nothing to
decode, its layers all run in one step, and every draft step sits at the pending token's position, as the
assistant was trained (llama-server's is_mem_shared).

The head's cells stay where the target's are: the target context repeats its KV edits (prefix cache, context
shift, rejected drafts) on the MTP context (`Context.mirror_memory`), and ``process`` first removes whatever
an earlier draft left from the batch's positions on. Where the head's inputs are not exact (a prefix reused
from the cache starts without the state of the token before it, as llama-server's does), drafts may be
taken less often; the output never changes, the target verifies every draft.
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
from llamatwist.runtime.draft_head import KEEP_ROWS, Segment, continue_at, draft_greedy

__all__ = ["MtpDrafter"]

log = logging.getLogger(__name__)


class MtpDrafter:
    """The NextN head's context beside the target's, one sequence per target sequence (decode thread only)."""

    def __init__(self, target: Context, ctx: Context, model: Model | None = None) -> None:
        """``model``: a separate MTP draft model's (-md), which this drafter owns; else ``ctx`` runs the target
        model's own NextN layers."""
        self.target = target
        self.ctx = ctx
        self.model = model
        self.shared = ctx.reads_memory_of(target)  # a Gemma 4 assistant: the target's KV cache is its
        self.n_heads = 1 if self.shared else max(1, ctx.model.n_nextn_layers())
        self.n_embd = ctx.model.n_embd_out()
        self._batch = Batch(ctx.n_batch, self.n_embd)
        n_seq = target.n_seq_max
        self._pending = np.zeros((n_seq, self.n_embd), dtype=np.float32)  # state of the token before the next
        self._before = np.zeros((n_seq, self.n_embd), dtype=np.float32)  # ... as it was before the last batch
        self._last: dict[int, npt.NDArray[np.float32]] = {}  # seq -> states of its last batch's final rows
        target.set_nextn_outputs(True, every_token=True)
        ctx.set_nextn_outputs(True, every_token=False)
        if not self.shared:
            target.mirror_memory(ctx)

    def close(self) -> None:
        self.target.mirror_memory(None)
        self.ctx.close()
        if self.model is not None:
            self.model.close()

    def process(self, segments: Sequence[Segment]) -> None:
        """Follow a target decode whose batch was ``segments``, in order: the head's KV gets the same tokens."""
        n_rows = sum(len(s.tokens) for s in segments)
        if n_rows == 0:
            return
        h = self.target.nextn_states(n_rows)
        batch = self._batch
        states = batch.states
        assert states is not None
        batch.clear()
        row = 0
        for seg in segments:
            n = len(seg.tokens)
            if not self.shared:  # a shared-cache head has nothing to decode: the target's decode wrote its cache
                first = batch.add_sequence(seg.tokens, seg.pos, seg.seq, False) - n + 1
                states[first] = self._pending[seg.seq]
                states[first + 1 : first + n] = h[row : row + n - 1]
            self._before[seg.seq] = self._pending[seg.seq]
            self._pending[seg.seq] = h[row + n - 1]
            self._last[seg.seq] = h[row + max(0, n - KEEP_ROWS) : row + n].copy()
            row += n
        if self.shared:
            return
        try:
            for head in range(self.n_heads):
                # what an earlier draft left there; with several heads, each rebuilds its own layer's cells
                for seg in segments:
                    continue_at(self.ctx, seg.seq, seg.pos)
                if self.n_heads > 1:
                    self.ctx.set_nextn_head(head)
                self.ctx.decode(batch)
        except DecodeError as exc:  # the drafts only get worse; the target's output is unaffected
            log.warning("MTP head: decode of the target's batch failed: %s", exc)
        finally:
            if self.n_heads > 1:
                self.ctx.set_nextn_head(0)

    def draft(self, seq: int, token: int, pos: int, n_max: int, p_min: float) -> list[int]:
        """Up to ``n_max`` tokens to follow ``token``, the slot's pending token at ``pos``."""
        if self.n_heads > 1:
            n_max = min(n_max, self.n_heads)
        if n_max <= 0 or pos + n_max >= self.ctx.n_ctx:
            return []
        batch = self._batch
        batch.clear()
        idx = batch.add_with_state(token, pos, seq, True, self._pending[seq])
        chained = self.n_heads > 1
        chain: list[tuple[int, npt.NDArray[np.float32]]] = [(token, self._pending[seq].copy())] if chained else []

        def before(step: int) -> None:
            # an earlier draft's cells; each chained head rebuilds its own (a shared-cache head has none)
            if not self.shared and (step == 0 or chained):
                continue_at(self.ctx, seq, pos)
            if chained:
                self.ctx.set_nextn_head(step)

        def feed(step: int, top: int, state: npt.NDArray[np.float32]) -> int:
            batch.clear()
            if not chained:  # a shared-cache head's every step sits at the pending token's position
                return batch.add_with_state(top, pos if self.shared else pos + step + 1, seq, True, state)
            chain.append((top, state))  # the next head sees the whole draft so far, with the states it made
            for k, (tok, st) in enumerate(chain):
                batch.add_with_state(tok, pos + k, seq, k == len(chain) - 1, st)
            return batch.n_tokens - 1

        try:
            return draft_greedy(self.ctx, batch, idx, n_max, p_min, feed, before, "MTP head")
        finally:
            if chained:
                self.ctx.set_nextn_head(0)

    def accept(self, seq: int, n_accepted: int, n_draft: int) -> None:
        """The target verified ``n_draft`` tokens after the pending one and took ``n_accepted``: the next batch
        starts after the last taken token, whose state is the next one's input."""
        rows = self._last.get(seq)
        if rows is None:
            return
        back = n_draft - n_accepted  # rows of rejected drafts at the end of the batch
        if 0 < back < len(rows):
            self._pending[seq] = rows[len(rows) - 1 - back]

    def rewind(self, seq: int) -> None:
        """The target went back to its state before the last batch (memory that cannot be cut part-way) and
        feeds the accepted tokens again: so does the head, from the state before that batch."""
        self._pending[seq] = self._before[seq]

    def media(self, seq: int, pos: int, n: int) -> None:
        """Nothing: the head takes a token beside each state; its sequence starts again after the media."""
