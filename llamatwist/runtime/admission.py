# -*- test-case-name: tests.test_shared_cache -*-
"""Admission: waiting tasks into free slots (decode thread only).

Tasks wait in FIFO order. A task whose prompt found no room in the shared KV pool comes back first and waits
until it fits beside what the busy slots hold. A task takes the slot it names (``id_slot``), else the idle slot whose old
content shares most of its prompt (``-sps``), else the least recently used one; a prompt that a slot
is already prefilling waits for that prefill to land in the shared cache. Starting a task copies in
the longest cached prefix of its prompt held by any sequence.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from llamatwist.engine.model import Model
from llamatwist.engine.sampling import Sampler
from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.errors import ContextExceeded, InputTooLarge
from llamatwist.runtime.loading import EngineSpec
from llamatwist.runtime.outputs import Outputs
from llamatwist.runtime.prefix_cache import PrefixCache, common_prefix
from llamatwist.runtime.slot import Slot, SlotState, room_for
from llamatwist.runtime.task import CompletionTask

__all__ = ["DEFER_MIN_TOKENS", "Admission"]

# A prompt waits for an in-flight prefill when it would share this many more tokens.
DEFER_MIN_TOKENS = 64

log = logging.getLogger(__name__)


class Admission:
    def __init__(
        self,
        spec: EngineSpec,
        model: Model,
        n_ubatch: int,
        slots: list[Slot],
        cache: PrefixCache,
        metrics: Metrics,
        outputs: Outputs,
        adapter_set: Callable[[CompletionTask], tuple[float, ...]] = lambda task: (),
    ) -> None:
        self._spec = spec
        self._adapter_set = adapter_set  # the LoRA scales a task runs with (its own, else the server's)
        self._model = model
        self._n_ubatch = n_ubatch
        self._slots = slots
        self._cache = cache
        self._metrics = metrics
        self._outputs = outputs
        self.waiting: deque[CompletionTask] = deque()

    def submit(self, task: CompletionTask) -> None:
        self.waiting.append(task)

    def requeue(self, tasks: list[CompletionTask]) -> None:
        """Tasks whose prompts found no room in the KV cache: first in the queue again, in their order."""
        self.waiting.extendleft(reversed(tasks))

    def cancel(self, task_id: int) -> bool:
        """Drop a waiting task; False when it is not waiting."""
        for task in list(self.waiting):
            if task.id == task_id:
                self.waiting.remove(task)
                return True
        return False

    def admit(self) -> None:
        """Start waiting tasks on free slots, in order."""
        if not self._spec.cont_batching and any(s.state is SlotState.GENERATING for s in self._slots):
            return  # -nocb: new prompts wait until the running batch finishes
        if any(s.suspended for s in self._slots):
            return  # a generation waits for room: new prompts would take it
        deferred: deque[CompletionTask] = deque()
        while self.waiting:
            task = self.waiting.popleft()
            if not self._has_room(task):
                deferred.append(task)
                break  # FIFO: later tasks would take the cells it waits for
            if self._prefix_in_flight(task):
                deferred.append(task)
                continue
            slot = self._choose_slot(task)
            if slot is None:
                deferred.append(task)
                if task.params.id_slot < 0:
                    break  # no free slot at all: FIFO order is kept
                continue
            self._start(slot, task)
        deferred.extend(self.waiting)
        self.waiting = deferred

    def _has_room(self, task: CompletionTask) -> bool:
        """Whether a task that found no room in the KV cache before may start again: alone, or when its prompt fits
        beside the cells the busy slots hold and their prompts will (idle slots and parked prefixes give theirs
        back when asked)."""
        return not task.n_requeued or room_for(self._slots, len(task.prompt) + task.extra_cells(), self._cache.n_cells)

    def _prefix_in_flight(self, task: CompletionTask) -> bool:
        """Whether a slot is still prefilling a prompt that shares clearly more
        with this one than the cache holds now: waiting for it to land beats
        computing the same prefix twice (8 clients with one system prompt)."""
        if not self._cache.shared or not task.params.cache_prompt or task.embed:
            return False
        planned = max((common_prefix(s.task.prompt, task.prompt) for s in self._slots
                       if s.state is SlotState.PROMPT and s.task is not None and not s.task.embed), default=0)
        if planned < DEFER_MIN_TOKENS:
            return False
        held, _ = self._cache.tree.match(task.prompt)
        return planned - held >= DEFER_MIN_TOKENS

    def _choose_slot(self, task: CompletionTask) -> Slot | None:
        free = [s for s in self._slots if not s.busy]
        if task.params.id_slot >= 0:  # past the last slot it wraps around, as llama-server's get_slot_by_id
            return next((s for s in free if s.id == task.params.id_slot % len(self._slots)), None)
        if not free:
            return None
        sps = self._spec.slot_prompt_similarity
        if task.params.cache_prompt and sps > 0 and task.prompt:
            # llama-server's -sps: the idle slot whose own content shares the largest
            # fraction of the prompt, above the threshold
            best, best_sim = None, sps
            for s in free:
                sim = common_prefix(s.cache, task.prompt) / len(task.prompt)
                if sim > best_sim:
                    best, best_sim = s, sim
            if best is not None:
                return best
        return min(free, key=lambda s: s.last_used)  # least recently used

    def _start(self, slot: Slot, task: CompletionTask) -> None:
        n_prompt = len(task.prompt)
        if task.embed and n_prompt > self._n_ubatch:
            # The whole input must be pooled in one physical batch.
            self._outputs.fail(task, InputTooLarge(n_prompt, self._n_ubatch))
            return
        if n_prompt + task.extra_cells() >= slot.n_ctx:
            self._outputs.fail(task, ContextExceeded(n_prompt + task.extra_cells(), slot.n_ctx))
            return
        slot.adapter_set = self._adapter_set(task)
        if task.params.cache_prompt and not task.embed:
            # KV computed under another adapter set is never reused: the cache is keyed by the set
            n_reuse = self._cache.attach(slot.id, slot.cache, task.prompt,
                                         0 if task.media else task.params.n_cache_reuse,  # media chunks cannot shift
                                         tag=slot.adapter_set, boundary=task.media_boundary).n_reused
        else:
            self._cache.drop(slot.id, () if task.embed else slot.cache)
            n_reuse = 0
        slot.start(task, None if task.embed else Sampler(self._model, task.params.sampler, slot.n_ctx), n_reuse)
        self._metrics.prompt_tokens_cached_total += n_reuse
        log.info("slot %d | task %d | processing task: %d prompt tokens, %d reused", slot.id, task.id, n_prompt,
                 n_reuse)
