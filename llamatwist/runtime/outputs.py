# -*- test-case-name: tests.test_server -*-
"""Results on their way to the reactor, and the end of a slot's task (decode thread only).

Results wait in an outbox and go to the reactor together, one wake-up per decode step. A task ends
in one of two ways: `finish` (its FinalResult) or `fail` (an ErrorResult naming a TaskError); either
way `release` frees its slot and leaves the slot's KV in the prefix cache when it may be reused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.errors import TaskError
from llamatwist.runtime.prefix_cache import PrefixCache
from llamatwist.runtime.slot import Slot
from llamatwist.runtime.task import (
    CompletionTask,
    ErrorResult,
    FinalResult,
    PartialResult,
    PromptProgress,
    Result,
    Timings,
)

__all__ = ["Deliver", "Outputs", "Sink", "slot_timings"]

log = logging.getLogger(__name__)

Sink = Callable[[Result], None]
# Hands a step's results to the reactor in one go (one wake-up per step).
Deliver = Callable[[list[tuple[Sink, Result]]], None]


class Outputs:
    def __init__(self, deliver: Deliver, metrics: Metrics, cache: PrefixCache,
                 graphs_reused: Callable[[], int]) -> None:
        self._deliver = deliver
        self._graphs_reused = graphs_reused  # the context's count so far (libllama's perf data)
        self._outbox: list[tuple[Sink, Result]] = []
        self._metrics = metrics
        self._cache = cache

    def emit(self, sink: Sink, result: Result) -> None:
        self._outbox.append((sink, result))

    def flush(self) -> None:
        if self._outbox:
            items, self._outbox = self._outbox, []
            self._deliver(items)

    def fail(self, task: CompletionTask, error: TaskError) -> None:
        self.emit(task.sink, ErrorResult(task.id, error))

    def finish(self, slot: Slot, stop_type: str, now: float) -> None:
        task = slot.task
        assert task is not None and slot.sampler is not None
        content = "" if task.params.stream else _full_text(slot)
        stop = slot.text.stop
        timings = slot_timings(slot, now)
        result = FinalResult(
            task_id=task.id,
            id_slot=slot.id,
            content=content,
            tokens=list(slot.generated) if task.params.return_tokens else [],
            n_decoded=len(slot.generated),
            n_prompt_tokens=slot.cells(len(task.prompt)),
            n_cached=slot.cells(slot.n_cached),
            stop_type=stop_type,
            stopping_word=stop.word if stop else "",
            truncated=slot.truncated,
            timings=timings,
            seed=slot.sampler.seed,
            probs=slot.probs,
        )
        if log.isEnabledFor(logging.INFO):  # the figures and the graph count are worked out only to be logged
            _log_timings(slot.id, task.id, timings, self._graphs_reused())
        if slot.n_draft:
            log.info("slot %d: draft acceptance = %.5f (%5d accepted / %5d generated), mean len = %5.2f", slot.id,
                     slot.n_draft_accepted / slot.n_draft, slot.n_draft_accepted, slot.n_draft,
                     1 + slot.n_draft_accepted / max(slot.n_draft_steps, 1))
        self.release(slot)
        self.emit(task.sink, result)

    def progress(self, slot: Slot, now: float) -> None:
        """A prompt-progress event for a streaming task that asked for them (return_progress)."""
        task = slot.task
        assert task is not None
        progress = PromptProgress(total=slot.cells(len(task.prompt)), cache=slot.cells(slot.n_cached),
                                  processed=slot.cells(slot.n_fed),
                                  time_ms=int((now - slot.t_start) * 1e3))
        timings = None
        if task.params.timings_per_token:  # the prompt so far, as llama-server's progress events carry them
            n = progress.processed - progress.cache
            timings = Timings(cache_n=progress.cache, prompt_n=n, prompt_ms=(now - slot.t_start) * 1e3 if n else 0.0,
                              predicted_n=0, predicted_ms=0.0)
        self.emit(task.sink, PartialResult(task.id, slot.id, "", [], 0, progress.total, [], timings=timings,
                                           progress=progress))

    def release(self, slot: Slot) -> None:
        if slot.task is not None:
            log.info("slot %d | task %d | stop processing: n_tokens = %d, truncated = %d", slot.id, slot.task.id,
                     slot.n_cells, slot.truncated)
        if slot.t_prompt_done:
            self._metrics.tokens_predicted_seconds_total += max(slot.t_last - slot.t_prompt_done, 0.0)
            self._metrics.predicted_steps_total += max(len(slot.generated) - 1, 0)
        if slot.task is not None and not slot.task.params.cache_prompt:
            # Nobody will reuse this KV; left in the shared cache, every later
            # decode would still attend over its cells.
            self._cache.drop(slot.id)
            slot.cache.clear()
        elif slot.task is not None and not slot.task.embed:
            self._cache.update(slot.id, slot.cache)
        slot.release()


def slot_timings(slot: Slot, now: float) -> Timings:
    """The task's timings so far (final, or per token with timings_per_token)."""
    assert slot.task is not None
    return Timings(
        cache_n=slot.cells(slot.n_cached),
        prompt_n=slot.cells(slot.n_fed) - slot.cells(slot.n_cached),  # all, unless t_max_prompt_ms stopped it
        prompt_ms=(slot.t_prompt_done - slot.t_start) * 1e3,
        predicted_n=len(slot.generated),
        predicted_ms=max(now - slot.t_prompt_done, 1e-6) * 1e3,
        draft_n=slot.n_draft,
        draft_n_accepted=slot.n_draft_accepted,
    )


def _log_timings(slot_id: int, task_id: int, timings: Timings, graphs_reused: int) -> None:
    """llama-server's per-task timing lines (print_timings), with the response's own figures."""
    t = timings.to_json()
    log.info("slot %d | task %d | prompt eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %8.2f tokens per "
             "second)", slot_id, task_id, t["prompt_ms"], t["prompt_n"], t["prompt_per_token_ms"],
             t["prompt_per_second"])
    log.info("slot %d | task %d |        eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %8.2f tokens per "
             "second)", slot_id, task_id, t["predicted_ms"], t["predicted_n"], t["predicted_per_token_ms"],
             t["predicted_per_second"])
    log.info("slot %d | task %d |       total time = %10.2f ms / %5d tokens", slot_id, task_id,
             t["prompt_ms"] + t["predicted_ms"], t["prompt_n"] + t["predicted_n"])
    log.info("slot %d | task %d |    graphs reused = %10d", slot_id, task_id, graphs_reused)


def _full_text(slot: Slot) -> str:
    slot.text.take(final=True)
    return slot.text.text
