# -*- test-case-name: tests.test_server -*-
"""The decode loop: the one thread that owns the model and the llama_context.

`DecodeLoop` takes commands from the reactor (submit, cancel, slot action, stop) and runs steps:

    drain commands -> Admission.admit -> Step.plan -> Step.build -> flush the previous step's
    results -> Step.run (llama_decode, then each slot's output) -> publish slot and counter snapshots

Each phase lives in its own module (admission.py, step.py, sampling.py, embedding.py,
context_shift.py, slot_actions.py, outputs.py); this one only owns the thread, the context and
the order of the phases. Results reach the reactor only through the ``deliver`` callable
(``reactor.callFromThread`` in the server), once per step.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from llamatwist.engine.context import Context
from llamatwist.engine.errors import EngineError
from llamatwist.engine.model import Model
from llamatwist.runtime.admission import Admission
from llamatwist.runtime.context_shift import ContextShift
from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.embedding import EmbeddingOutput
from llamatwist.runtime.errors import DecodeLoopCrashed
from llamatwist.runtime.loading import EngineSpec, LoadedModel, load
from llamatwist.runtime.outputs import Deliver, Outputs
from llamatwist.runtime.sampling import Sampling
from llamatwist.runtime.slot import Slot, SlotInfo
from llamatwist.runtime.slot_actions import SlotActions
from llamatwist.runtime.speculative import DraftModel
from llamatwist.runtime.step import Step
from llamatwist.runtime.task import CompletionTask, SlotAction

__all__ = ["DecodeLoop"]

log = logging.getLogger(__name__)


class DecodeLoop:
    def __init__(
        self,
        spec: EngineSpec,
        deliver: Deliver,
        on_ready: Callable[[LoadedModel], None],
        on_failed: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self._deliver = deliver
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._slots: list[Slot] = []
        self._thread = threading.Thread(target=self._run, name="llamatwist-decode", daemon=True)
        self.metrics = Metrics()
        self.slot_infos: tuple[SlotInfo, ...] = ()
        self.model: Model | None = None
        self.lora_scales: tuple[float, ...] = ()  # server-wide scales (POST /lora-adapters), by adapter id

    # -- called from the reactor thread ----------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, task: CompletionTask) -> None:
        self._commands.put(("submit", task))

    def cancel(self, task_id: int) -> None:
        self._commands.put(("cancel", task_id))

    def slot_action(self, action: SlotAction) -> None:
        self._commands.put(("slot", action))

    def set_lora_scales(self, scales: tuple[float, ...], done: Callable[[], None]) -> None:
        """New server-wide LoRA scales for the tasks started from now on (thread-safe ``done`` once set)."""
        self._commands.put(("lora", (scales, done)))

    def stop(self, timeout: float = 30.0) -> None:
        self._commands.put(("stop", None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- decode thread ---------------------------------------------------
    def _run(self) -> None:
        try:
            ctx = self._load()
        except EngineError as exc:
            self._on_failed(str(exc))
            return
        except Exception as exc:  # pragma: no cover - unexpected native failure
            log.exception("model load failed")
            self._on_failed(f"model load failed: {exc}")
            return
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug: fail every task rather than hang
            log.exception("decode loop crashed")
            for slot in self._slots:
                if slot.task:
                    self._outputs.fail(slot.task, DecodeLoopCrashed())
            for task in self._admission.waiting:
                self._outputs.fail(task, DecodeLoopCrashed())
            self._outputs.flush()
        finally:
            ctx.close()
            drafter: DraftModel | None = getattr(self, "_drafter", None)
            if drafter is not None:
                drafter.close()
            if self.model:
                self.model.close()

    def _load(self) -> Context:
        """Load the model, wire the phases of a step to it, report ready."""
        loaded = load(self.spec)
        model, ctx, cache, slots, metrics = loaded.model, loaded.ctx, loaded.cache, loaded.slots, self.metrics
        self.model = model
        self._lora_adapters = loaded.lora_adapters  # the context only borrows them: keep them alive
        self.lora_scales = tuple(info.scale for info in loaded.description.loras)
        self._ctx = ctx
        self._cache = cache
        self._slots = slots
        self._outputs = outputs = Outputs(self._deliver, metrics, cache)
        self._admission = Admission(self.spec, model, ctx.n_ubatch, slots, cache, metrics, outputs,
                                    self._wanted_lora)
        self._step = Step(
            ctx, loaded.batch, slots, cache,
            ContextShift(ctx, cache, slots, model.vocab.add_bos, loaded.can_shift),
            Sampling(ctx, model.vocab, self.spec.n_predict, loaded.can_shift, metrics, outputs, self.spec.special),
            EmbeddingOutput(ctx, cache, metrics, outputs),
            metrics, outputs, loaded.drafter, loaded.lora_adapters, self.lora_scales,
        )
        self._drafter = loaded.drafter
        self._slot_actions = SlotActions(ctx, cache, slots, loaded.model_id, outputs)
        self._publish()
        self._on_ready(loaded.description)
        return ctx

    def _loop(self) -> None:
        while True:
            active = any(s.busy for s in self._slots) or bool(self._admission.waiting)
            if not active:
                self._outputs.flush()
            if not self._drain(block=not active):
                self._outputs.flush()
                return
            self._admission.admit()
            has_work = self._step.build(self._step.plan())
            # Results of the previous step go out now, so the reactor writes
            # them while llama_decode runs without the GIL.
            self._outputs.flush()
            if has_work:
                self._step.run()
            self._publish()

    def _drain(self, block: bool) -> bool:
        """Apply queued commands; False when asked to stop."""
        while True:
            try:
                cmd, arg = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            if cmd == "stop":
                return False
            if cmd == "submit":
                self._admission.submit(arg)
            elif cmd == "cancel":
                self._cancel(arg)
            elif cmd == "slot":
                self._slot_actions.apply(arg)
            elif cmd == "lora":
                self.lora_scales, done = arg
                done()

    def _wanted_lora(self, task: CompletionTask) -> tuple[float, ...]:
        """The LoRA scales a task runs with: its own (ids it does not list at 0), else the server's."""
        if not self._lora_adapters:
            return ()
        if task.params.lora is None:
            return self.lora_scales
        scales = [0.0] * len(self._lora_adapters)  # ids a request does not list run at 0, as llama-server
        for lid, scale in task.params.lora:
            scales[lid] = scale
        return tuple(scales)

    def _cancel(self, task_id: int) -> None:
        if self._admission.cancel(task_id):
            return
        for slot in self._slots:
            if slot.task is not None and slot.task.id == task_id:
                log.debug("slot %d: task %d cancelled", slot.id, task_id)
                self._outputs.release(slot)
                return

    def _publish(self) -> None:
        self.slot_infos = tuple(s.info() for s in self._slots)
        self.metrics.requests_processing = sum(1 for s in self._slots if s.busy)
        self.metrics.requests_deferred = len(self._admission.waiting)
        self.metrics.cache_entries = self._cache.n_entries
        self.metrics.cache_cells = self._cache.tree.n_tokens
        self.metrics.cache_evictions_total = self._cache.n_evicted
