# -*- test-case-name: tests.test_speculative_dflash,tests.test_speculative_dspark -*-
"""``--spec-type draft-dflash`` and ``draft-dspark``: block drafts from a DFlash draft model (``-md``), which reads
the target's hidden states.

A DFlash draft drafts a whole block in one decode. Its KV cache holds, at the target's positions, the target's
hidden states at the input of some of its layers (the draft's ``target_layers``) side by side, projected
(``fc``) and written in as each layer's keys and values. A draft decodes ``[pending token, MASK, MASK, ...]``
at the pending token's position on, with attention both ways, and reads a token at every MASK. As
llama-server's driver (common_speculative_impl_draft_dflash):

- after every target decode, `DFlashDrafter.process` writes the batch's hidden states into the draft's KV
  cache at the batch's positions, which the target's KV edits then keep in step (`Context.mirror_memory`);
- `DFlashDrafter.draft` decodes the block (``n_max`` MASKs, at most the trained block size less one), takes
  the top token at each MASK (top-10 probabilities), stops below ``p_min``, and removes the block's cells.

Two kinds of draft change how a block is read (`BlockKind`); libllama's graph does their extra parts:

- DSpark (``draft-dspark``, a draft with a Markov head): the graph adds to each row's logits a bias from the
  token the row before chose, so a block is a chain. The pending token's own row drafts too
  (``dflash.sample_from_anchor``, the default): a block of ``n`` rows drafts ``n`` tokens. Its confidence
  head, when it has one, scores each row; a draft stops below ``p_min`` of that score.
- DFlash2 (a draft with a selector head, ``dflash.selector_rank``): the graph outputs, instead of logits,
  each row's top candidates with a score for each pair of them and the row before's; a draft walks that
  lattice, each row taking the best-scored successor of the row before's choice.

The output never changes: the target verifies every draft.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import gguf
import numpy as np
import numpy.typing as npt

from llamatwist.engine.batch import Batch
from llamatwist.engine.context import Context
from llamatwist.engine.errors import DecodeError
from llamatwist.engine.model import Model
from llamatwist.runtime.draft_head import Segment, continue_at, layer_reader_problem, top_token

__all__ = ["BlockKind", "DFlashDrafter", "block_kind"]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 16  # llama-server's when the draft does not say (dflash.block_size)


@dataclass(frozen=True)
class BlockKind:
    """How a DFlash draft's block is laid out and read."""

    block_size: int  # rows of a block the draft was trained on
    causal: bool = False  # dflash.attention.causal: a block's rows attend backwards only
    dspark: bool = False  # draft-dspark: stop on the confidence head's score only, not on the top probability
    anchor_first: bool = False  # DSpark: the pending token's row drafts too (a block of n rows drafts n)
    confidence: bool = False  # DSpark: a confidence head, whose score stops a draft below p_min
    selector_top_k: int = 0  # DFlash2: candidates per row of the selector lattice (0: read the logits)

    @property
    def n_max(self) -> int:
        """The most tokens one block drafts."""
        return self.block_size if self.anchor_first else self.block_size - 1


def block_kind(draft: Model, target: Model, spec_type: str, p_min: float) -> BlockKind | str:
    """How ``draft`` drafts for ``target`` under ``spec_type`` (draft-dflash or draft-dspark), or why it cannot;
    ``p_min``: the server's (a DSpark draft with no confidence head takes none, as llama-server)."""
    meta = draft.metadata()
    if meta.get("general.architecture") != "dflash" or not draft.target_layer_ids():
        return "it is not a DFlash draft model"
    if draft.vocab.mask < 0:
        return "its vocabulary has no MASK token"
    problem = layer_reader_problem(draft, target, target.info().n_layer - 1)  # layer inputs only
    if problem:
        return problem
    tensors = {t.name for t in gguf.GGUFReader(draft.path).tensors}
    markov = "markov_w1.weight" in tensors
    if markov and "dflash.block_size" not in meta:  # libllama's Markov head asserts on it
        return "it has a Markov head but no dflash.block_size, which the head needs"
    block_size = int(meta.get("dflash.block_size") or DEFAULT_BLOCK_SIZE)
    top_k = int(meta.get("dflash.selector_top_k") or 0)
    causal = meta.get("dflash.attention.causal") == "true"
    if spec_type == "draft-dflash":
        return BlockKind(block_size, causal, selector_top_k=top_k)
    if not markov:
        return "it is not a DSpark draft model (it has no Markov head): start the server with --spec-type draft-dflash"
    confidence = "conf_proj.weight" in tensors and meta.get("dflash.has_confidence_head", "true") == "true"
    if p_min > 0.0 and not confidence:
        return "it has no confidence head: please set --spec-draft-p-min 0"
    return BlockKind(block_size, causal, dspark=True, anchor_first=meta.get("dflash.sample_from_anchor", "true") == "true",
                     confidence=confidence, selector_top_k=top_k)


class DFlashDrafter:
    """The DFlash draft's context beside the target's, one sequence per target sequence (decode thread only)."""

    def __init__(self, target: Context, model: Model, ctx: Context, kind: BlockKind) -> None:
        self.target = target
        self.model = model
        self.ctx = ctx
        self.kind = kind
        self.layers = model.target_layer_ids()
        self.mask = model.vocab.mask
        self._inject = Batch(ctx.n_ubatch, len(self.layers) * target.n_embd, tokens=False)
        self._batch = Batch(kind.block_size)
        target.set_layer_inputs(self.layers)
        ctx.set_causal_attn(kind.causal)
        if kind.selector_top_k:  # the lattice comes out as the NextN state of every row (there are no logits)
            ctx.set_nextn_outputs(True, every_token=True)
        elif kind.confidence:  # the confidence, in column 0 of each output row's NextN state
            ctx.set_nextn_outputs(True, every_token=False)
        target.mirror_memory(ctx)

    @property
    def n_max(self) -> int:
        """The most tokens one block drafts."""
        return self.kind.n_max

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
        try:
            features = self._features(n_rows)
            row = 0
            for seg in segments:
                self._inject_rows(seg.seq, seg.pos, features[row : row + len(seg.tokens)])
                row += len(seg.tokens)
        except DecodeError as exc:  # the drafts only get worse; the target's output is unaffected
            log.warning("DFlash draft: following the target's batch failed: %s", exc)

    def media(self, seq: int, pos: int, n: int) -> None:
        """The hidden states of a media chunk's rows, as a batch's (llama-server's DFlash injects them too)."""
        try:
            self._inject_rows(seq, pos, self._features(n))
        except DecodeError as exc:
            log.warning("DFlash draft: following the target's media failed: %s", exc)

    def _features(self, n_rows: int) -> npt.NDArray[np.float32]:
        """The last target decode's first ``n_rows`` rows of the layers the draft reads, side by side."""
        return np.concatenate([self.target.layer_inputs(lid, n_rows) for lid in self.layers], axis=1)

    def _inject_rows(self, seq: int, pos: int, features: npt.NDArray[np.float32]) -> None:
        inject = self._inject
        rows = inject.states
        assert rows is not None
        continue_at(self.ctx, seq, pos)
        for i in range(0, len(features), inject.capacity):
            n = min(inject.capacity, len(features) - i)
            inject.clear()
            inject.add_rows(pos + i, n, seq, outputs=False)  # keys and values only
            rows[:n] = features[i : i + n]
            self.ctx.decode(inject)

    def draft(self, seq: int, token: int, pos: int, n_max: int, p_min: float) -> list[int]:
        """Up to ``n_max`` tokens to follow ``token``, the slot's pending token at ``pos``: one block."""
        n_max = min(n_max, self.n_max)
        first = 0 if self.kind.anchor_first else 1  # the block's first row that drafts
        n_rows = n_max + first
        if n_max <= 0 or pos + n_rows > self.ctx.n_ctx:
            return []
        logits = not self.kind.selector_top_k
        batch = self._batch
        batch.clear()
        batch.add(token, pos, seq, logits)
        for i in range(1, n_rows):
            batch.add(self.mask, pos + i, seq, logits)
        out: list[int] = []
        try:
            continue_at(self.ctx, seq, pos)
            self.ctx.decode(batch)
            if self.kind.selector_top_k:
                out = self._walk(n_rows, p_min)
            else:
                conf = self.ctx.nextn_states(n_rows)[:, 0] if self.kind.confidence and p_min > 0.0 else None
                for i in range(first, n_rows):
                    if conf is not None and conf[i] < p_min:
                        break
                    top, p = top_token(self.ctx.logits_view(i))
                    if not self.kind.dspark and p < p_min:
                        break
                    out.append(top)
        except DecodeError as exc:
            log.warning("DFlash draft: draft decode failed: %s", exc)
        self.ctx.seq_rm(seq, pos, -1)  # the block's cells: the target's batch brings those positions' states
        return out

    def _walk(self, n_rows: int, p_min: float) -> list[int]:
        """DFlash2: the tokens of the best path through the last decode's selector lattice. Row i holds its
        ``k`` candidate tokens, then for each candidate of row i-1 (the pending token for row 1) the ``k``
        candidates' scores."""
        k = self.kind.selector_top_k
        lattice = self.ctx.nextn_states(n_rows)
        out: list[int] = []
        prev = 0
        for i in range(1, n_rows):
            scores = lattice[i, k + prev * k : k + (prev + 1) * k].astype(np.float64)
            prev = int(np.argmax(scores))
            if p_min > 0.0 and 1.0 / np.exp(scores - scores[prev]).sum() < p_min:
                break
            out.append(int(lattice[i, prev]))
        return out

    def accept(self, seq: int, n_accepted: int, n_draft: int) -> None:
        """Nothing to carry: the verified batch's states are in the cache, the rejected ones go with the
        target's cells."""

    def rewind(self, seq: int) -> None:
        """Nothing to carry: the accepted tokens' states come again with the batch that feeds them again."""

