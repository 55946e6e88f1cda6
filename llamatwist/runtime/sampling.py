# -*- test-case-name: tests.test_sampling -*-
"""A generating slot's next token: constraint mask, sampler chain, token probabilities, stop checks.

Called by the step for every slot whose logits are in the batch. A slot that stops (end of
generation, a stop string, its token limit or its context, a finished grammar) ends here; otherwise
its token is pending, to be decoded in the next step. Streaming tasks get a PartialResult per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llamatwist.engine.context import Context
from llamatwist.engine.model import Vocab
from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.outputs import Outputs, slot_timings
from llamatwist.runtime.slot import Slot, SlotState
from llamatwist.runtime.task import PartialResult, TokenProbs, TopProb

__all__ = ["Sampling", "post_sampling_probs", "token_probs"]


class Sampling:
    def __init__(
        self, ctx: Context, vocab: Vocab, n_predict: int, can_shift: bool, metrics: Metrics, outputs: Outputs,
        special: bool = False,
    ) -> None:
        self._ctx = ctx
        self._vocab = vocab
        self._n_predict = n_predict  # -n: the limit of a task that sets none; -1 = none
        self._can_shift = can_shift
        self._metrics = metrics
        self._outputs = outputs
        self._special = special  # -sp: control tokens are written as their text

    def limit(self, n_predict: int) -> int:
        """A task's token limit (-1: none): its own, else -n's, which (as in the pinned llama-server) is a
        default and not a cap."""
        return n_predict if n_predict >= 0 else self._n_predict

    def sample(self, slot: Slot, now: float, idx: int = -1, forced: int | None = None) -> int:
        """Sample the slot's next token from the logits at batch index ``idx`` (default: the slot's); the
        token, or -1 when the slot stopped (then it has ended). A ``forced`` token (a synthetically accepted
        draft token) is taken instead of the one drawn, and does not advance the constraint (llama-server's)."""
        task = slot.task
        assert task is not None
        params = task.params
        if slot.state is SlotState.PROMPT:
            self._prompt_done(slot, now)
        token, is_eog, piece, probs = self._draw(slot, slot.i_batch if idx < 0 else idx, forced)
        slot.t_last = now
        slot.generated.append(token)
        n_decoded = len(slot.generated)
        metrics = self._metrics
        metrics.tokens_predicted_total += 1
        metrics.n_tokens_max = max(metrics.n_tokens_max, slot.cells(len(slot.cache)))  # the cells, as llama-server
        slot.probs.extend(probs)
        stop_type = self._stop_type(slot, piece, is_eog, n_decoded, now)
        if stop_type == "none":
            slot.pending_token = token
        if params.stream and (stop_type == "none" or not is_eog):
            # As llama-server: every generated token is a partial; the final
            # event only carries the stop state and statistics.
            content = slot.text.take(final=stop_type != "none")
            self._outputs.emit(task.sink, PartialResult(
                task.id, slot.id, content, [token], n_decoded, slot.cells(len(task.prompt)), probs,
                timings=slot_timings(slot, now) if params.timings_per_token else None,
            ))
        if stop_type != "none":
            self._outputs.finish(slot, stop_type, now)
            return -1
        return token

    def _prompt_done(self, slot: Slot, now: float) -> None:
        """The slot's first sample: its prompt is processed, and counted."""
        assert slot.task is not None
        slot.state = SlotState.GENERATING
        slot.t_prompt_done = now
        n_processed = slot.cells(len(slot.task.prompt)) - slot.cells(slot.n_cached)
        self._metrics.prompt_tokens_total += n_processed
        self._metrics.prompt_seconds_total += now - slot.t_start

    def _draw(self, slot: Slot, i_batch: int, forced: int | None) -> tuple[int, bool, bytes, list[TokenProbs]]:
        """The token drawn at ``i_batch`` (or the forced one), accepted by the slot's constraint: the token,
        whether it ends generation, its text (none if it does) and its probabilities (if asked for)."""
        assert slot.task is not None and slot.sampler is not None
        params = slot.task.params
        ctx, vocab = self._ctx, self._vocab
        if slot.constraint is not None:
            # Disallowed tokens get -inf in libllama's own logits row, so the
            # unchanged sampler chain only ever draws allowed tokens.
            slot.constraint.fill_mask(ctx.logits_view(i_batch))
        post = params.n_probs > 0 and params.sampler.post_sampling_probs
        # the row as the model gave it, read before the chain changes it
        logits = ctx.logits(i_batch) if params.n_probs > 0 and not post else None
        p_token = 0.0
        post_top: list[tuple[int, float]] = []
        if post or forced is not None:
            # a forced token is what the chain's history (penalties) records, as llama-server's
            token, p_token, post_top = slot.sampler.sample_probs(ctx, i_batch, params.n_probs if post else 0,
                                                                 forced=forced)
        else:
            token = slot.sampler.sample(ctx, i_batch)
        is_eog = vocab.is_eog(token)
        if slot.constraint is not None and not is_eog and forced is None:
            slot.constraint.accept(token)
        special = self._special or token in params.preserved_tokens
        piece = b"" if is_eog else vocab.token_to_piece(token, special=special)
        if post:
            probs = [post_sampling_probs(vocab, token, piece, p_token, post_top, self._special)]
        elif logits is not None:
            probs = [token_probs(vocab, token, piece, logits, params.n_probs, self._special)]
        else:
            probs = []
        return token, is_eog, piece, probs

    def _stop_type(self, slot: Slot, piece: bytes, is_eog: bool, n_decoded: int, now: float) -> str:
        """Why the slot stops after this token (llama-server's stop types), or "none"."""
        assert slot.task is not None
        params = slot.task.params
        if is_eog and not params.sampler.ignore_eos:
            return "eos"
        slot.text.feed(piece)
        if slot.text.stop is not None:
            return "word"
        if params.n_indent > 0 and _under_indented(slot, params.n_indent):
            return "limit"
        if params.t_max_predict_ms > 0 and b"\n" in piece and (now - slot.t_prompt_done) * 1e3 > params.t_max_predict_ms:
            return "limit"  # as llama-server: past the time limit, stop at a newline
        limit = self.limit(params.n_predict)
        if limit >= 0 and n_decoded >= limit:
            return "limit"
        if slot.n_cells + 1 >= slot.n_ctx and not self._can_shift:
            slot.truncated = True
            return "limit"
        if slot.constraint is not None and slot.constraint.is_finished():
            return "eos"  # the grammar is complete: only end-of-generation could follow
        return "none"

    def verify(self, slot: Slot, draft: Sequence[int], now: float) -> int:
        """Sample at the pending token's position, then at each draft token's while the samples equal the
        draft (speculative decoding; with --spec-synth-*, while random draws accept the draft); the number of
        draft tokens accepted. Accepted tokens are in the KV already and in ``slot.cache``; the rejected rest is
        left to the caller to remove."""
        accepted = 0
        rng = slot.synth_rng
        spec = slot.task.params.speculative if slot.task is not None else None
        synth = spec.synth_probs if spec is not None else ()
        # counted first: a sample below may end the task, and its timings must include this draft
        slot.n_draft += len(draft)
        slot.n_draft_steps += 1
        for j in range(len(draft) + 1):
            if rng is not None and j < len(draft):
                # --spec-synth-*: position j is taken at random (never an end of generation), not by match
                take = j < len(synth) and rng.random() < synth[j] and not self._vocab.is_eog(draft[j])
                token = self.sample(slot, now, slot.i_batch + j, draft[j] if take else None)
                if token < 0 or not take:
                    break
            else:
                token = self.sample(slot, now, slot.i_batch + j)
                if token < 0 or j == len(draft) or token != draft[j]:
                    break
            slot.cache.append(token)  # decoded in this batch: the sample that follows comes from its logits
            slot.pending_token = -1
            accepted += 1
            slot.n_draft_accepted += 1
        m = self._metrics
        m.draft_tokens_total += len(draft)
        m.draft_accepted_total += accepted
        m.drafts_total += 1
        per_pos = m.accepted_per_pos
        n_pos = max(len(draft), spec.limit if spec is not None else 0)
        if len(per_pos) < n_pos:
            per_pos.extend([0] * (n_pos - len(per_pos)))
        for i in range(accepted):
            per_pos[i] += 1
        return accepted


def _under_indented(slot: Slot, n_indent: int) -> bool:
    """llama-server's n_indent: after the first line, a line whose first character comes after fewer than
    ``n_indent`` spaces or tabs ends the completion, cut before that character."""
    text = slot.text.text
    start = text.rfind("\n") + 1
    if start == 0:
        return False
    pos = start
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos < len(text) and pos - start < n_indent:
        slot.text.cut(pos)
        return True
    return False


def post_sampling_probs(vocab: Vocab, token: int, piece: bytes, p_token: float,
                        top: list[tuple[int, float]], special: bool = False) -> TokenProbs:
    """Probabilities after the sampler chain (post_sampling_probs)."""
    tops = []
    for t, p in top:
        b = vocab.token_to_piece(t, special=special)
        tops.append(TopProb(t, b.decode("utf-8", "replace"), list(b), p))
    return TokenProbs(token, piece.decode("utf-8", "replace"), list(piece), p_token, tops)


def token_probs(vocab: Vocab, token: int, piece: bytes, logits: Any, n: int, special: bool = False) -> TokenProbs:
    """The softmax of the raw logits: the drawn token's probability and the top ``n``."""
    z = logits - logits.max()
    p = np.exp(z)
    p /= p.sum()
    n = min(n, len(p))
    top = np.argpartition(-p, n - 1)[:n]
    top = top[np.argsort(-p[top])]
    tops = []
    for t in top.tolist():
        b = vocab.token_to_piece(t, special=special)
        tops.append(TopProb(t, b.decode("utf-8", "replace"), list(b), float(p[t])))
    return TokenProbs(token, piece.decode("utf-8", "replace"), list(piece), float(p[token]), tops)
