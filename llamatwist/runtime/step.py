# -*- test-case-name: tests.test_server -*-
"""One decode step: plan -> build one batch -> llama_decode -> hand each slot its outputs.

- `Step.plan` decides what every slot feeds this step and returns it as plain data (`StepPlan`): the
  pending token of each generating slot (shifting or ending a slot whose context is full), then prompt
  chunks in slot order while the batch has room (an embedding input goes whole or waits).
- `Step.build` fills the reused ``llama_batch`` from the plan and notes where each slot's output is.
- `Step.run` records the batch's tokens as each slot's KV, calls ``llama_decode`` (giving the parked
  prefixes back and retrying once when the KV cache is full) and hands each slot with an output in the
  batch its result: `Sampling` for generating slots, `EmbeddingOutput` for embedding inputs.

Where the next capabilities plug in, so that they stay phases with plain data between them:

- Speculative decoding (`speculative.py`): `plan` asks for draft tokens to follow a generating slot's pending
  token (`SlotFeed.draft`, within the room the batch has); `build` adds them after it, each an output; the
  output phase verifies them (`Sampling.verify`: keeps the longest prefix the target's samples agree with)
  and `_drop_rejected` ``seq_rm``-s the rest. Recurrent memory cannot be cut part-way: `run` keeps the
  sequence's state from before the batch, and a rejection restores it; the accepted tokens are then fed
  again before the pending token in the next step (`Slot.replay`), as llama-server's checkpoint replay.
- Per-request LoRA: adapters are per context, so one ``llama_decode`` runs one adapter set: `plan` picks
  the set this step runs (`StepPlan.adapters`; with several in use they take turns step by step) and
  feeds only the slots that use it; `run` applies it before ``llama_decode`` when it differs from the last
  step's. The prefix cache is keyed by the set (`PrefixCache.attach`'s tag).
- Media (--mmproj): a prompt's image or audio chunk cannot share a token batch, so `plan` picks at most one
  slot whose prompt has reached a media chunk (`StepPlan.media`) and cuts other prompt chunks before theirs;
  `run` encodes it and decodes its embeddings into that slot's sequence (libmtmd) before the step's batch,
  so the other slots keep generating in the same step. A draft model as wide as the target gets a copy of the
  chunk's embeddings (`Drafters.media`) to read at its placeholders; a draft head follows the chunk's rows as
  they are decoded (`DraftHead.media`).
- Room in one KV pool shared by every slot: a batch that finds none even after `free_cells` sends its prompts
  back to the queue (`take_requeued`) or, with generations alone, suspends the youngest (`Slot.suspend`); `plan`
  resumes it when its tokens fit (`_resume`), decoding them as a prompt without output, then its pending token.

"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from llamatwist.engine.batch import Batch
from llamatwist.engine.context import Context
from llamatwist.engine.errors import DecodeError
from llamatwist.engine.mtmd import MediaSpan, Projector
from llamatwist.runtime.adapters import set_scales
from llamatwist.runtime.context_shift import ContextShift
from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.draft_head import DraftHead, Segment
from llamatwist.runtime.embedding import EmbeddingOutput
from llamatwist.runtime.errors import DecodeFailed, KVCacheFull
from llamatwist.runtime.ngram_cache import NgramCacheDrafter
from llamatwist.runtime.outputs import Outputs
from llamatwist.runtime.prefix_cache import PrefixCache
from llamatwist.runtime.sampling import Sampling
from llamatwist.runtime.slot import Slot, SlotState, free_cells, room_for, untracked_cells
from llamatwist.runtime.speculative import Drafters, DraftModel
from llamatwist.runtime.task import CompletionTask

if TYPE_CHECKING:
    from llamatwist.engine.model import LoraAdapter

__all__ = ["MAX_REQUEUES", "SPEC_MAX_GENERATING", "AdapterSet", "SlotFeed", "Step", "StepPlan"]

# Speculative decoding pays while a step's batch is small (decoding is memory-bound); with this many slots
# generating at once the batch is compute-bound and drafts are not drafted (bench/speculative.py: 8 clients).
SPEC_MAX_GENERATING = 5

# A prompt goes back to the queue for room in a shared KV pool at most this often; then it fails with a 503.
MAX_REQUEUES = 8

log = logging.getLogger(__name__)

# LoRA scales by adapter id; () = no adapters loaded
AdapterSet = tuple[float, ...]


@dataclass(slots=True)
class SlotFeed:
    """What one slot feeds a step."""

    slot: Slot
    tokens: Sequence[int]  # a generating slot's pending token (after its replay), or a chunk of its prompt
    pos: int  # position of tokens[0] in the slot's sequence
    output: bool  # logits (or an embedding) for the last token
    all_outputs: bool = False  # every token is an output (embeddings of each token)
    draft: Sequence[int] = ()  # speculative decoding: drafted tokens after the pending one (none yet)


@dataclass(slots=True)
class StepPlan:
    """One step's work, in batch order: generating slots first, then prompt chunks."""

    feeds: list[SlotFeed] = field(default_factory=list)
    adapters: AdapterSet = ()  # the LoRA scales every slot of this step runs with
    media: tuple[Slot, MediaSpan] | None = None  # a media chunk evaluated before the batch


class Step:
    def __init__(
        self,
        ctx: Context,
        batch: Batch,
        slots: list[Slot],
        cache: PrefixCache,
        shift: ContextShift,
        sampling: Sampling,
        embeddings: EmbeddingOutput,
        metrics: Metrics,
        outputs: Outputs,
        drafter: DraftModel | None = None,
        loras: Sequence[LoraAdapter] = (),
        active: AdapterSet = (),
        projector: Projector | None = None,
        lookup: NgramCacheDrafter | None = None,
        rollback: bool = False,
        head: DraftHead | None = None,
    ) -> None:
        self._ctx = ctx
        self._head = head  # draft-mtp's NextN head or draft-eagle3's draft: it follows every decode
        self._rollback = rollback  # the memory cannot be cut part-way: drafts need the state kept
        self._projector = projector
        self._media: tuple[Slot, MediaSpan] | None = None
        self._loras = loras  # adapters are per context: one set per llama_decode
        self._active = active  # the scales the context runs with now
        self._last_set: AdapterSet = active
        self._step_set: AdapterSet = active
        self._drafts = Drafters(drafter, lookup, head)  # every type's drafts (draft models, ngram-cache's files)
        self._batch = batch
        self._slots = slots
        self._cache = cache
        self._shift = shift
        self._sampling = sampling
        self._embeddings = embeddings
        self._metrics = metrics
        self._outputs = outputs
        self._prompt_fed: list[Slot] = []  # slots that fed a prompt chunk into the current batch
        self._prompt_start: dict[int, int] = {}  # slot id -> where its chunk in the current batch starts
        self._fed: set[int] = set()  # ids of the slots in the current batch
        self._segments: list[Segment] = []  # the current batch's runs of tokens, per slot, in batch order
        self._requeued: list[CompletionTask] = []  # prompts that found no room this step: back to the queue

    # -- plan ----------------------------------------------------------------
    def plan(self) -> StepPlan:
        plan = StepPlan(adapters=self._choose_set())
        feeds = plan.feeds
        for slot in self._slots:
            if slot.busy and slot.adapter_set != plan.adapters:
                continue  # another adapter set's turn
            if slot.state is SlotState.GENERATING:
                if slot.n_cells + 1 >= slot.n_ctx and not self._shift.shift(slot):
                    # the context is full and cannot shift: the slot ends, truncated
                    slot.truncated = True
                    slot.pending_token = -1
                    self._outputs.finish(slot, "limit", time.perf_counter())
                    continue
                feeds.append(SlotFeed(slot, (*slot.replay, slot.pending_token), len(slot.cache), True))
        room = self._batch.capacity - sum(len(feed.tokens) for feed in feeds)
        # Outputs: one per slot (its next token, or its prompt's last) leaves this many for drafts; past the
        # context's n_outputs_max libllama aborts the process.
        draft_outputs = self._ctx.n_outputs_max - len(self._slots)
        if len(feeds) >= SPEC_MAX_GENERATING:
            draft_outputs = 0  # the batch already fills the compute: verifying drafts would cost more than it saves
        for feed in feeds:  # drafts take what room the generating slots leave, before prompt chunks
            if min(room, draft_outputs) <= 0:
                break
            feed.draft = self._draft(feed.slot, min(room, draft_outputs))
            room -= len(feed.draft)
            draft_outputs -= len(feed.draft)
        now = time.perf_counter()
        for slot in self._slots:
            if slot.state is not SlotState.PROMPT or slot.adapter_set != plan.adapters:
                continue
            assert slot.task is not None
            if slot.suspended and not self._resume(slot):
                continue
            prompt = slot.source
            media_end = len(prompt)
            for span in slot.task.media:
                if span.start == slot.n_fed:  # its media chunk is next: one per step, outside the batch
                    if plan.media is None:
                        plan.media = (slot, span)
                    media_end = -1
                    break
                if span.start > slot.n_fed:
                    media_end = span.start  # the text before it goes in the batch
                    break
            if media_end < 0 or room == 0:
                continue
            limit = slot.task.params.t_max_prompt_ms
            if limit > 0 and (now - slot.t_start) * 1e3 > limit and not slot.task.embed and slot.resume is None:
                # the prompt took too long (t_max_prompt_ms, which llama-server reserves but does not apply)
                slot.t_prompt_done = now
                self._outputs.finish(slot, "limit", now)
                continue
            if slot.task.embed:
                # Embeddings pool over the whole input: it goes in one batch, every token an output.
                if len(prompt) <= room:
                    feeds.append(SlotFeed(slot, prompt, 0, True, all_outputs=True))
                    room -= len(prompt)
                continue
            end = min(slot.n_fed + room, media_end)
            if self._cache.checkpoints is not None:
                end = self._cache.checkpoints.split(slot.n_fed, end, len(prompt))
            chunk = prompt[slot.n_fed : end]
            # a resume's last token is not an output: the slot's pending token (sampled before) comes next
            last = slot.n_fed + len(chunk) == len(prompt) and slot.resume is None
            feeds.append(SlotFeed(slot, chunk, slot.n_fed, last))
            room -= len(chunk)
        return plan

    def _resume(self, slot: Slot) -> bool:
        """Whether a suspended generation starts decoding its tokens again (`room_for`); it reuses what the prefix
        cache holds of them."""
        assert slot.resume is not None and slot.task is not None
        if not room_for(self._slots, len(slot.resume) + 1, self._cache.n_cells):
            return False
        slot.suspended = False
        n = 0
        if slot.task.params.cache_prompt:
            n = self._cache.attach(slot.id, (), slot.resume, tag=slot.adapter_set,
                                   boundary=slot.task.media_boundary).n_reused
        slot.cache[:] = slot.resume[:n]
        slot.n_fed = n
        log.info("slot %d: task %d goes on: %d tokens to decode again, %d cached", slot.id, slot.task.id,
                 len(slot.resume) - n, n)
        return True

    def _choose_set(self) -> AdapterSet:
        """The adapter set this step runs: the only one in use, else the next after the last step's in a
        fixed order, so that every set gets its turn (slots of one set batch together)."""
        sets = sorted({s.adapter_set for s in self._slots if s.busy})
        if not sets:
            return self._last_set
        if len(sets) > 1:
            later = [s for s in sets if s > self._last_set]
            chosen = later[0] if later else sets[0]
        else:
            chosen = sets[0]
        self._last_set = chosen
        return chosen

    def _draft(self, slot: Slot, room: int) -> list[int]:
        """Draft tokens to verify after the slot's pending token (speculative decoding), within the batch's
        ``room``, the context and the slot's remaining tokens; [] when it does not speculate."""
        task = slot.task
        assert task is not None
        spec = task.params.speculative
        if spec is None or not spec.active or slot.spec_budget <= 0:
            return []
        n_max = min(slot.spec_budget, room, slot.n_ctx - slot.n_cells - 3)
        limit = self._sampling.limit(task.params.n_predict)
        n_left = limit - len(slot.generated) - 1 if limit >= 0 else n_max  # tokens the request may still take
        if min(n_max, n_left) <= 0 or n_max < spec.n_min:
            return []
        history = [*task.prompt, *slot.generated[:-1]] if slot.generated else list(task.prompt)
        pos = len(slot.cache) + len(slot.replay)  # the pending token's (the cache is shorter after a shift)
        return self._drafts.draft(slot.id, task, task.prompt, spec, history, slot.pending_token, n_max, pos,
                                  head_ready=not slot.replay, n_left=n_left)

    # -- build ---------------------------------------------------------------
    def build(self, plan: StepPlan) -> bool:
        """Fill the batch; False when it is empty."""
        batch = self._batch
        batch.clear()
        self._prompt_fed.clear()
        self._step_set = plan.adapters
        self._media = plan.media
        self._fed = {feed.slot.id for feed in plan.feeds}
        if self._head is not None:
            self._segments = [Segment(f.slot.id, f.pos, [*f.tokens, *f.draft]) for f in plan.feeds]
        for slot in self._slots:
            slot.i_batch = -1
        for feed in plan.feeds:
            slot = feed.slot
            if slot.state is SlotState.GENERATING:
                pos = feed.pos + len(feed.tokens) - 1  # the pending token's, after any replay
                if len(feed.tokens) > 1:
                    batch.add_sequence(feed.tokens[:-1], feed.pos, slot.id, False)
                slot.i_batch = batch.add(feed.tokens[-1], pos, slot.id, True)
                for k, token in enumerate(feed.draft, 1):  # each with logits: the verification samples there
                    batch.add(token, pos + k, slot.id, True)
                slot.draft = list(feed.draft)
                continue
            if _wants_progress(slot) and slot.n_fed == slot.n_cached:
                self._outputs.progress(slot, time.perf_counter())  # the start: what the cache held
            idx = batch.add_sequence(feed.tokens, feed.pos, slot.id, feed.output, all_outputs=feed.all_outputs)
            self._prompt_start[slot.id] = feed.pos
            slot.n_fed = feed.pos + len(feed.tokens)
            self._prompt_fed.append(slot)
            if feed.output:
                slot.i_batch = idx
        return batch.n_tokens > 0 or self._media is not None

    # -- decode, then outputs --------------------------------------------------
    def run(self) -> None:
        if self._loras and self._step_set != self._active:
            set_scales(self._ctx, list(self._loras), self._step_set)
            self._active = self._step_set
        if self._media is not None:
            self._eval_media(*self._media)
            if self._batch.n_tokens == 0:
                return
        busy = [s for s in self._slots if s.busy and s.id in self._fed]
        # where each slot's tokens of this batch begin: if the batch finds no room, the KV cache holds this much
        before = {s.id: len(s.cache) for s in busy}
        self._enter_batch(busy)
        if not self._decode(busy, before):
            return
        if self._head is not None:
            self._head.process(self._segments)
        cache = self._cache
        for slot in busy:
            # prompt prefixes are shareable as soon as they are in KV (slots the batch had no room for
            # are unchanged: no need to re-register them)
            if (slot.state is SlotState.PROMPT and slot.task is not None and not slot.task.embed
                    and cache.tree.length(slot.id) != len(slot.cache)):
                cache.update(slot.id, slot.cache)
        m = self._metrics
        m.n_decode_total += 1
        m.n_busy_slots_total += len(busy)
        now = time.perf_counter()
        for slot in self._prompt_fed:
            if slot.resume is not None and slot.n_fed == len(slot.resume):
                slot.resumed()
            elif _wants_progress(slot):
                self._outputs.progress(slot, now)
        self._sample_all(busy, now)

    def _enter_batch(self, busy: list[Slot]) -> None:
        """Record the batch's tokens in each slot's sequence (they are in the KV cache once decoded) and make
        room in the prefix cache for them."""
        for slot in busy:
            if slot.state is SlotState.GENERATING:
                if self._rollback and slot.draft:
                    slot.spec_state = (len(slot.cache), self._ctx.partial_state(slot.id))
                slot.cache += slot.replay
                slot.replay = []
                slot.cache.append(slot.pending_token)
            else:
                slot.cache[len(slot.cache):] = slot.source[len(slot.cache) : slot.n_fed]
        cache = self._cache
        # draft tokens hold cells too until the verification removes the rejected ones
        cache.make_room(0, untracked_cells(self._slots, cache.tree.length))
        self._checkpoint()

    def _decode(self, busy: list[Slot], before: dict[int, int]) -> bool:
        """Decode the batch, giving back cached cells while the KV cache has no room; False when it failed
        (the slots it touched are dealt with)."""
        try:
            while True:
                try:
                    self._ctx.decode(self._batch)
                    return True
                except DecodeError as exc:
                    if exc.code != 1 or not self._give_back_cells():
                        raise
        except DecodeError as exc:
            self._decode_failed(busy, exc, before)
            return False

    def _sample_all(self, busy: list[Slot], now: float) -> None:
        """Each slot with logits in the batch: its embedding sent, its draft verified or its next token sampled."""
        rejected: list[Slot] = []  # cut once every slot has sampled: no state restore amid the logits' reads
        for slot in busy:
            if slot.i_batch < 0:
                continue
            assert slot.task is not None
            if slot.task.embed:
                self._embeddings.send(slot, now)
            elif slot.draft:
                if not self._verify(slot, now):
                    rejected.append(slot)
            else:
                self._sampling.sample(slot, now)
        for slot in rejected:
            self._drop_rejected(slot)

    def _verify(self, slot: Slot, now: float) -> bool:
        """Verify the slot's draft and size its next one; whether all of the draft was accepted."""
        draft, slot.draft = slot.draft, []
        accepted = self._sampling.verify(slot, draft, now)
        whole = accepted == len(draft)
        if whole:
            slot.spec_state = None
        self._drafts.accept(slot.id, accepted, len(draft))
        spec = slot.task.params.speculative if slot.task is not None else None  # None: the slot finished
        # longer drafts while they are taken, shorter when they are not (synthetic acceptance measures
        # full-length drafts, as llama-server's: its rates are per position of those)
        if spec is not None and not spec.synth_rates:
            slot.spec_budget = min(spec.limit, 2 * slot.spec_budget if whole else max(accepted + 1, spec.n_min, 1))
        return whole

    def _drop_rejected(self, slot: Slot) -> None:
        """Remove the draft tokens the verification rejected from the slot's sequence (the slot may have
        finished)."""
        kept, slot.spec_state = slot.spec_state, None
        if kept is None:
            self._ctx.seq_rm(slot.id, len(slot.cache), -1)
            return
        n, state = kept
        if not slot.busy and not slot.cache:
            return  # it finished and its sequence was dropped (cache_prompt off)
        if self._head is not None:
            self._head.rewind(slot.id)
        # back to the state before the batch, then the accepted tokens again, before the next one
        if not self._ctx.set_partial_state(slot.id, state):  # not expected: libllama wrote it
            log.error("slot %d: the state from before a draft could not be restored", slot.id)
            self._cache.drop(slot.id)
            slot.cache.clear()
            if slot.busy and slot.task is not None:
                self._outputs.fail(slot.task, DecodeFailed("the sequence's state could not be restored"))
                self._outputs.release(slot)
            return
        self._ctx.seq_rm(slot.id, n, -1)
        if slot.busy:
            slot.replay = slot.cache[n:]
        del slot.cache[n:]
        if not slot.busy:
            self._cache.update(slot.id, slot.cache)  # it finished: what its sequence now holds

    def _checkpoint(self) -> None:
        """Context checkpoints of the prompts about to be decoded (memory that cannot be cut part-way)."""
        checkpoints = self._cache.checkpoints
        if checkpoints is None:
            return
        for slot in self._prompt_fed:
            task = slot.task
            # not for embeddings (never reused), nor prompts with media (a checkpoint could end inside a chunk)
            if task is None or task.embed or task.media:
                continue
            checkpoints.before_batch(slot.id, task.id, self._prompt_start[slot.id], slot.n_fed, len(slot.source))

    def _eval_media(self, slot: Slot, span: MediaSpan) -> None:
        """Encode a media chunk and decode its embeddings into the slot's sequence (libmtmd's own decodes)."""
        task = slot.task
        assert task is not None and self._projector is not None
        cache = self._cache
        cache.make_room(span.chunk.n_tokens, untracked_cells(self._slots, cache.tree.length))
        # an M-RoPE image has more embeddings than positions: its draft reads zeros
        keep = not span.chunk.extra_cells and self._drafts.reads_media(task.params.speculative,
                                                                       self._projector.n_embd, task.prompt[span.start])
        head = self._head  # it follows every decode: the image's rows too
        while True:
            try:
                rows = self._projector.eval(self._ctx, span.chunk, span.start, slot.id, keep_rows=keep,
                                            on_rows=None if head is None else partial(head.media, slot.id))
                break
            except DecodeError as exc:
                self._ctx.seq_rm(slot.id, span.start, -1)  # the chunk's rows decoded before the failure
                if exc.code != 1 or not self._give_back_cells():
                    self._decode_failed([slot], exc)
                    return
        if rows is not None:
            self._drafts.media(task.prompt[span.start], rows)
        slot.n_fed = span.end
        slot.cache[len(slot.cache):] = task.prompt[len(slot.cache):span.end]
        cache.update(slot.id, slot.cache)
        if slot.resume is not None and slot.n_fed == len(slot.resume):
            slot.resumed()  # a generation stopped after one token of a prompt that ends with this chunk
        self._metrics.n_decode_total += 1
        if _wants_progress(slot):
            self._outputs.progress(slot, time.perf_counter())

    def _give_back_cells(self) -> bool:
        """Room for a decode that found none in the KV cache (`free_cells`); a purged slot's draft goes too."""
        freed, purged = free_cells(self._cache, self._slots, self._ctx.kv_unified)
        if purged >= 0:
            self._drafts.forget(purged)
        return freed

    def _decode_failed(self, busy: list[Slot], exc: DecodeError, before: dict[int, int] | None = None) -> None:
        """The batch's (or a media chunk's) tokens are not in the KV cache (``before``: how many tokens each slot's
        sequence held before them, when the batch had them in its cache list already).

        With a full KV cache (code 1), where every slot shares one pool and other tasks hold cells they give
        back as they end, nobody fails (llama-server fails every request of the batch with a 500):
        - prompts wait for room, back in the queue (`_requeue`), and the batch's generations feed their tokens
          again next step;
        - a batch of generations alone stops the youngest one that can start again (`_suspend`): it goes on
          once the others leave it room.
        Otherwise a prompt fails with a retryable 503 and a generation ends as if it hit its limit."""
        log.warning("llama_decode failed: %s", exc)
        log.debug("slots: %s", "; ".join(f"{s.id} {s.state.value}{' suspended' if s.suspended else ''} "
                                         f"{s.n_cells} cells{' in the batch' if s in busy else ''}"
                                         for s in self._slots if s.busy or s.cache))
        full = exc.code == 1
        prompts = [s for s in busy if s.state is not SlotState.GENERATING]
        shared = full and self._ctx.kv_unified
        victim = self._victim(busy) if shared and not prompts and before is not None else None
        for slot in busy:
            n = len(slot.cache) if before is None else before[slot.id]
            if slot.state is SlotState.GENERATING:
                if full and (prompts or victim):
                    slot.replay = slot.cache[n:-1]
                    slot.draft = []
                    slot.spec_state = None
            else:
                slot.n_fed = n
            del slot.cache[n:]
        if victim is not None:
            self._suspend(victim)
            return
        if full and prompts:
            busy = prompts
        others = any(s.busy and s not in prompts and s.n_cells for s in self._slots)
        wait = shared and (others or len(prompts) > 1)
        now = time.perf_counter()
        for slot in busy:
            task = slot.task
            assert task is not None
            if wait and slot.resume is not None:
                self._suspend(slot)
                continue
            if wait and slot in prompts and task.n_requeued < MAX_REQUEUES:
                self._requeue(slot)
                continue
            self._cache.drop(slot.id)
            slot.cache.clear()
            if full and slot.state is SlotState.GENERATING:
                slot.pending_token = -1
                self._outputs.finish(slot, "limit", now)
                continue
            if full:
                log.warning("slot %d: task %d finds no room in the KV cache%s: it fails", slot.id, task.id,
                            f" after {task.n_requeued} tries" if wait else " alone" if shared else " of its slot")
            self._outputs.fail(task, KVCacheFull() if full else DecodeFailed(str(exc)))
            self._outputs.release(slot)

    def _victim(self, busy: list[Slot]) -> Slot | None:
        """The generation to stop when a batch of generations finds no room: the one started last, while others
        hold cells; None otherwise. Decoding its tokens again (its media chunks encoded again) rebuilds all it
        had: a recurrent state or sliding window (with new context checkpoints) and a draft head's KV, which
        follows every target decode, a resume's too."""
        if not (len(busy) > 1 or any(s.busy and s not in busy and s.n_cells for s in self._slots)):
            return None
        return max(busy, key=lambda s: s.t_start)

    def _suspend(self, slot: Slot) -> None:
        """Empty the sequence of a generation (or of its resume) for the others' room; it waits, holding no cells,
        until its tokens fit again (`_resume`)."""
        assert slot.task is not None
        log.info("slot %d: task %d finds no room in the KV cache: it stops until other tasks leave room",
                 slot.id, slot.task.id)
        slot.suspend()  # its tokens are kept before its sequence goes
        self._cache.drop(slot.id)
        self._drafts.forget(slot.id)

    def _requeue(self, slot: Slot) -> None:
        """Free the slot of a prompt that found no room; its task waits in the queue (`take_requeued`) for the
        cells other tasks give back. What its prompt had in the KV cache stays there for it, as a finished
        prompt's does, where nothing else would keep a stale state (context checkpoints, embeddings)."""
        task = slot.task
        assert task is not None
        log.info("slot %d: task %d finds no room in the KV cache: it waits for other tasks to end", slot.id, task.id)
        if self._cache.checkpoints is not None or task.embed:
            self._cache.drop(slot.id)
            slot.cache.clear()
        self._outputs.release(slot)
        task.n_requeued += 1
        self._requeued.append(task)

    def take_requeued(self) -> list[CompletionTask]:
        """The tasks that left their slot this step to wait for room, in slot order."""
        tasks, self._requeued = self._requeued, []
        return tasks


def _wants_progress(slot: Slot) -> bool:
    task = slot.task
    return (task is not None and not task.embed and task.params.stream and task.params.return_progress
            and slot.resume is None)
