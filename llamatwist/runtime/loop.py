# -*- test-case-name: tests.test_server -*-
"""The decode loop: the one thread that owns the model and the llama_context.

`DecodeLoop` takes commands from the reactor (submit, cancel, slot action, stop) and runs steps:

    drain commands -> Admission.admit -> Step.plan -> Step.build -> flush the previous step's
    results -> Step.run (llama_decode, then each slot's output) -> prompts that found no room in the
    KV cache back to the queue -> publish slot and counter snapshots

Each phase lives in its own module (admission.py, step.py, sampling.py, embedding.py,
context_shift.py, slot_actions.py, outputs.py); this one only owns the thread, the context and
the order of the phases. Results reach the reactor only through the ``deliver`` callable
(``reactor.callFromThread`` in the server), once per step.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from llamatwist.engine.context import Context
from llamatwist.engine.errors import EngineError
from llamatwist.engine.model import Model
from llamatwist.engine.mtmd import Projector
from llamatwist.runtime.admission import Admission
from llamatwist.runtime.context_shift import ContextShift
from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.draft_head import DraftHead
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

__all__ = ["DecodeLoop", "ModelGuard"]

log = logging.getLogger(__name__)

_LONGEST_WAIT = 3600.0  # seconds: a far sleep deadline is waited for in steps (a wait's timeout has a limit)


class ModelGuard:
    """Readers (tokenization in the thread pool, the reactor's vocab lookups) and the decode thread swapping
    the model (--sleep-idle-seconds) never overlap: a model is freed only once no reader holds it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    def wait_for_readers(self) -> None:
        """Block until every reader that may hold the previous model is done (new ones take the new one)."""
        with self._cond:
            self._cond.wait_for(lambda: self._readers == 0)


class DecodeLoop:
    def __init__(
        self,
        spec: EngineSpec,
        deliver: Deliver,
        on_ready: Callable[[LoadedModel], None],
        on_failed: Callable[[str], None],
        on_sleep: Callable[[bool], None] = lambda sleeping: None,
    ) -> None:
        self.spec = spec
        self._deliver = deliver
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._on_sleep = on_sleep
        self.guard = ModelGuard()
        self._drafter: DraftModel | None = None
        self._head: DraftHead | None = None  # draft-mtp's or draft-eagle3's
        self.projector: Projector | None = None  # --mmproj (tokenization in the pool reads it under the guard)
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._slots: list[Slot] = []
        self._thread = threading.Thread(target=self._run, name="llamatwist-decode", daemon=True)
        self.metrics = Metrics()
        self.slot_infos: tuple[SlotInfo, ...] = ()
        self.model: Model | None = None
        self.lora_scales: tuple[float, ...] = ()  # server-wide scales (POST /lora-adapters), by adapter id
        # how long the model stays loaded once idle (None: for ever): --sleep-idle-seconds, or the last
        # task's client's (Ollama's keep_alive)
        self.keep_alive: float | None = self.default_keep_alive()
        self.unload_at: float | None = None  # when an idle model is due to sleep (time.time()); None: not due
        self.n_loads = 0  # loads after a sleep, and how long the last took
        self.last_load_ns = 0

    # -- called from the reactor thread ----------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, task: CompletionTask) -> None:
        self._commands.put(("submit", task))

    def cancel(self, task_id: int) -> None:
        self._commands.put(("cancel", task_id))

    def slot_action(self, action: SlotAction) -> None:
        self._commands.put(("slot", action))

    def wake(self) -> None:
        """Load the model again if it sleeps (a no-op otherwise)."""
        self._commands.put(("wake", None))

    def set_lora_scales(self, scales: tuple[float, ...], done: Callable[[], None]) -> None:
        """New server-wide LoRA scales for the tasks started from now on (thread-safe ``done`` once set)."""
        self._commands.put(("lora", (scales, done)))

    def set_keep_alive(self, seconds: float | None) -> None:
        """How long the model stays loaded once idle, until the next task's submission restores the server's
        default (None: for ever; 0: it sleeps as soon as nothing runs)."""
        self._commands.put(("keep_alive", seconds))

    def default_keep_alive(self) -> float | None:
        return self.spec.sleep_idle_seconds if self.spec.sleep_idle_seconds > 0 else None

    def stop(self, timeout: float = 30.0) -> None:
        self._commands.put(("stop", None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- decode thread ---------------------------------------------------
    def _run(self) -> None:
        try:
            self._load()
        except EngineError as exc:
            self._on_failed(str(exc))
            return
        except Exception as exc:  # pragma: no cover - unexpected native failure
            log.exception("model load failed")
            self._on_failed(f"model load failed: {exc}")
            return
        try:
            self._loop()
        except Exception as exc:  # pragma: no cover - a bug: fail every task, then stop rather than hang
            log.exception("decode loop crashed")
            for slot in self._slots:
                if slot.task:
                    self._outputs.fail(slot.task, DecodeLoopCrashed())
            for task in self._admission.waiting:
                self._outputs.fail(task, DecodeLoopCrashed())
            self._outputs.flush()
            # nothing serves the queue now: exit non-zero (as llama-server aborts) so a supervisor restarts it
            self._on_failed(f"decode loop crashed: {exc}")
        finally:
            self._unload()
            if self.model:
                self.model.close()

    def _unload(self) -> None:
        """Free what a load made except ``self.model`` (the caller swaps or closes it)."""
        if self._head is not None:  # before the target context: it mirrors its KV edits there
            self._head.close()
            self._head = None
        self._ctx.close()
        if self._drafter is not None:
            self._drafter.close()
            self._drafter = None
        if self.projector is not None:
            self.projector.close()
            self.projector = None

    def _load(self, lora_scales: tuple[float, ...] | None = None) -> Context:
        """Load the model, wire the phases of a step to it, report ready (``lora_scales``: the server-wide
        scales to keep, when waking up)."""
        loaded = load(self.spec)
        model, ctx, cache, slots, metrics = loaded.model, loaded.ctx, loaded.cache, loaded.slots, self.metrics
        self.model = model
        self._lora_adapters = loaded.lora_adapters  # the context only borrows them: keep them alive
        applied = tuple(info.scale for info in loaded.description.loras)  # what the new context runs with
        self.lora_scales = lora_scales if lora_scales is not None else applied
        self._ctx = ctx
        self._cache = cache
        self._slots = slots
        self._outputs = outputs = Outputs(self._deliver, metrics, cache, lambda: ctx.perf().n_reused)
        self._admission = Admission(self.spec, model, ctx.n_ubatch, slots, cache, metrics, outputs,
                                    self._wanted_lora)
        self._step = Step(
            ctx, loaded.batch, slots, cache,
            ContextShift(ctx, cache, slots, model.vocab.add_bos, loaded.can_shift),
            Sampling(ctx, model.vocab, self.spec.n_predict, loaded.can_shift, metrics, outputs, self.spec.special),
            EmbeddingOutput(ctx, cache, metrics, outputs),
            metrics, outputs, loaded.drafter, loaded.lora_adapters, applied, loaded.projector,
            loaded.lookup, rollback=model.has_recurrent_state(), head=loaded.head,
        )
        self._drafter = loaded.drafter
        self._head = loaded.head
        self.projector = loaded.projector
        self._slot_actions = SlotActions(ctx, cache, slots, loaded.model_id, outputs)
        self._publish()
        self._on_ready(loaded.description)
        return ctx

    def _loop(self) -> None:
        last_work = time.monotonic()
        while True:
            active = (any(s.busy for s in self._slots) or bool(self._admission.waiting)
                      or bool(self._slot_actions.deferred))
            if not active:
                self._outputs.flush()
            idle_after = self.keep_alive
            timeout = None
            if not active and idle_after is not None:
                left = max(last_work + idle_after - time.monotonic(), 0.0)
                self.unload_at = time.time() + left
                timeout = min(left, _LONGEST_WAIT)
            else:
                self.unload_at = None
                last_work = time.monotonic()
            n_commands = self._drain(block=not active, timeout=timeout)
            if n_commands < 0:
                self._outputs.flush()
                return
            if n_commands:
                last_work = time.monotonic()
            elif idle_after is not None and not active and time.monotonic() >= last_work + idle_after:
                if not self._sleep():
                    return
                last_work = time.monotonic()
            self._slot_actions.retry()
            self._admission.admit()
            has_work = self._step.build(self._step.plan())
            # Results of the previous step go out now, so the reactor writes
            # them while llama_decode runs without the GIL.
            self._outputs.flush()
            if has_work:
                self._step.run()
                self._admission.requeue(self._step.take_requeued())
            self._publish()

    def _sleep(self) -> bool:
        """--sleep-idle-seconds or a client's keep_alive: free the context, the draft model and the weights, keeping a vocabulary-only
        model for tokenization; reload on the next command. False when asked to stop meanwhile."""
        log.info("server is entering sleeping state")
        self._cache.clear_entries()  # parked prefixes hold host memory; the context goes
        vocab_only = Model(self.spec.model_path, vocab_only=True, kv_overrides=self.spec.kv_overrides)
        full, self.model = self.model, vocab_only
        self.guard.wait_for_readers()
        self._unload()
        if full is not None:
            full.close()
        self.unload_at = None
        self._on_sleep(True)
        cmd, arg = self._commands.get()
        while cmd in ("cancel", "keep_alive"):  # nothing runs to cancel; a keep_alive applies once awake
            if cmd == "keep_alive":
                self.keep_alive = arg
            cmd, arg = self._commands.get()
        if cmd == "stop":
            return False
        log.info("server is exiting sleeping state")
        t0 = time.monotonic_ns()
        try:
            self._load(self.lora_scales)
        except EngineError as exc:  # the file changed or went away meanwhile: llama-server aborts here
            log.error("failed to reload the model after sleeping: %s", exc)
            if cmd == "submit":
                self._outputs.fail(arg, DecodeLoopCrashed())
                self._outputs.flush()
            self._on_failed(f"failed to reload the model after sleeping: {exc}")
            return False
        self.guard.wait_for_readers()
        vocab_only.close()
        self.last_load_ns = time.monotonic_ns() - t0
        self.n_loads += 1
        self._on_sleep(False)
        return self._apply(cmd, arg)

    def _drain(self, block: bool, timeout: float | None = None) -> int:
        """Apply queued commands; how many (-1 when asked to stop)."""
        n = 0
        while True:
            try:
                cmd, arg = self._commands.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return n
            block = False
            n += 1
            if not self._apply(cmd, arg):
                return -1

    def _apply(self, cmd: str, arg: Any) -> bool:
        """One command from the reactor; False for stop."""
        if cmd == "stop":
            return False
        if cmd == "submit":
            self.keep_alive = self.default_keep_alive()  # a client's keep_alive lasts until the next task
            self._admission.submit(arg)
        elif cmd == "cancel":
            self._cancel(arg)
        elif cmd == "slot":
            self._slot_actions.apply(arg)
        elif cmd == "lora":
            self.lora_scales, done = arg
            done()
        elif cmd == "keep_alive":
            self.keep_alive = arg
        return True

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
