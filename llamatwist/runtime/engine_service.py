# -*- test-case-name: tests.test_server -*-
"""EngineService: the decode thread's front on the reactor, and the HTTP side's only way to the model.

A Twisted service that starts the decode thread (which loads the model), tracks readiness, forwards
tasks, cancellations and slot actions, and runs tokenization off the reactor thread.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed

from llamatwist.constrain import TokenizerInfo
from llamatwist.engine.errors import EngineError
from llamatwist.engine.model import FimTokens, Model
from llamatwist.engine.mtmd import ProjectorError
from llamatwist.media import MEDIA_MARKER, MediaInput
from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.errors import ShuttingDown
from llamatwist.runtime.loading import EngineSpec, LoadedModel
from llamatwist.runtime.loop import DecodeLoop
from llamatwist.runtime.slot import SlotInfo
from llamatwist.runtime.task import (
    CompletionTask,
    EmbeddingResult,
    ErrorResult,
    FinalResult,
    PromptTokens,
    Result,
    SlotAction,
    SlotActionResult,
)

__all__ = ["EngineService", "EngineState"]

log = logging.getLogger(__name__)

PromptPart = str | int
T = TypeVar("T")


class EngineState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class EngineService(Service):
    name = "engine"  # type: ignore[assignment]  # Service declares None

    def __init__(self, spec: EngineSpec, reactor: Any, on_failed: Callable[[str], None]) -> None:
        self._reactor = reactor
        self._on_failed_cb = on_failed
        self.state = EngineState.LOADING
        self.loaded: LoadedModel | None = None
        # Called on the reactor when the model is loaded, before the engine
        # reports ready; a hook raising EngineError fails the start-up.
        self.ready_hooks: list[Callable[[LoadedModel], None]] = []
        self._constraint_tokenizer: TokenizerInfo | None = None
        # Tasks submitted and not yet ended, for a drain to wait on; those a drain ended itself get
        # nothing more (their error already went out).
        self._active: dict[int, CompletionTask] = {}
        self._ended: set[int] = set()
        self.sleeping = False  # --sleep-idle-seconds: the model is unloaded until the next task
        self._wakers: list[Deferred[None]] = []
        self._loop = DecodeLoop(spec, self._deliver, self._ready_from_thread, self._failed_from_thread,
                                self._sleep_from_thread)

    # -- service lifecycle ---------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._loop.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        # Joining the decode thread can take one decode step: do it off-reactor.
        d: Deferred[None] = threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._loop.stop)
        d.addCallback(lambda _: log.info("engine stopped, model freed"))
        return d

    def drain(self, timeout: float) -> Deferred[None]:
        """Fires once no task is in flight; after `timeout` seconds the tasks left end with an error."""
        deadline = self._reactor.seconds() + timeout
        done: Deferred[None] = Deferred()
        if self._active:
            log.info("draining: waiting up to %gs for %d request(s)", timeout, len(self._active))

        def check() -> None:
            if self._active and self._reactor.seconds() < deadline:
                self._reactor.callLater(0.05, check)
                return
            if not self._active:
                done.callback(None)
                return
            n = self.end_all("the server is shutting down")
            log.warning("draining: %d request(s) still running after %gs ended with an error", n, timeout)
            # Give the error events a moment to reach the clients before connections close.
            self._reactor.callLater(0.2, done.callback, None)

        check()
        return done

    def end_all(self, reason: str) -> int:
        """End every task in flight now: its client gets an error, the decode loop drops it."""
        tasks = list(self._active.values())
        self._active.clear()
        for task in tasks:
            self._ended.add(task.id)
            self._loop.cancel(task.id)
            task.sink(ErrorResult(task.id, ShuttingDown(reason)))
        return len(tasks)

    # -- decode thread -> reactor --------------------------------------
    def _deliver(self, items: list[tuple[Callable[[Result], None], Result]]) -> None:
        self._reactor.callFromThread(self._dispatch, items)

    def _dispatch(self, items: list[tuple[Callable[[Result], None], Result]]) -> None:
        for sink, result in items:
            task_id = getattr(result, "task_id", -1)
            if task_id in self._ended:
                continue
            if isinstance(result, (FinalResult, ErrorResult, EmbeddingResult)):
                self._active.pop(task_id, None)
            sink(result)

    def _ready_from_thread(self, loaded: LoadedModel) -> None:
        self._reactor.callFromThread(self._set_ready, loaded)

    def _sleep_from_thread(self, sleeping: bool) -> None:
        self._reactor.callFromThread(self._set_sleeping, sleeping)

    def _set_sleeping(self, sleeping: bool) -> None:
        self.sleeping = sleeping
        if not sleeping:
            waiting, self._wakers = self._wakers, []
            for d in waiting:
                d.callback(None)

    def _failed_from_thread(self, message: str) -> None:
        self._reactor.callFromThread(self._set_failed, message)

    def _set_ready(self, loaded: LoadedModel) -> None:
        if self.state is EngineState.READY:  # woken up: the same model, loaded again
            self.loaded = loaded
            return
        try:
            for hook in self.ready_hooks:
                hook(loaded)
        except EngineError as exc:
            self._set_failed(str(exc))
            return
        self.loaded = loaded
        self.state = EngineState.READY
        log.info(
            "model loaded: %s, n_ctx %d, %d slots of %d tokens",
            loaded.info.desc, loaded.n_ctx, loaded.n_slots, loaded.n_ctx_slot,
        )

    def _set_failed(self, message: str) -> None:
        self.state = EngineState.FAILED
        self._on_failed_cb(message)

    # -- reactor-side API ----------------------------------------------
    def _with_model(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(model, *args)`` while the model cannot be swapped (thread pool or reactor)."""
        with self._loop.guard.reading():
            model = self._loop.model
            assert model is not None
            return fn(model, *args)

    def submit(self, task: CompletionTask) -> None:
        self._active[task.id] = task
        self._loop.submit(task)

    def cancel(self, task_id: int) -> None:
        self._active.pop(task_id, None)
        self._loop.cancel(task_id)

    def slot_action(self, id_slot: int, action: str, path: Path | None) -> Deferred[dict[str, object]]:
        """Save, restore or erase a slot on the decode thread; fires with the JSON body, or fails with a
        TaskError (llamatwist.runtime.errors)."""
        d: Deferred[dict[str, object]] = Deferred()

        def sink(result: Result) -> None:
            if isinstance(result, SlotActionResult):
                d.callback(result.body)
            elif isinstance(result, ErrorResult):
                d.errback(result.error)

        self._loop.slot_action(SlotAction(id_slot, action, path, sink))
        return d

    def set_lora_scales(self, scales: tuple[float, ...]) -> Deferred[None]:
        """Server-wide LoRA scales by adapter id for the tasks started from now on."""
        d: Deferred[None] = Deferred()
        self._loop.set_lora_scales(scales, lambda: self._reactor.callFromThread(d.callback, None))
        return d

    def wake(self) -> Deferred[None]:
        """Fires once the model is loaded: now, or when a sleeping server has loaded it again."""
        if not self.sleeping:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._wakers.append(d)
        self._loop.wake()
        return d

    def set_keep_alive(self, seconds: float | None) -> None:
        """How long the model stays loaded once idle (None: for ever, 0: it sleeps now if idle), until the
        next task restores --sleep-idle-seconds (Ollama's keep_alive: the last request's holds)."""
        self._loop.set_keep_alive(seconds)

    def unload_at(self) -> float | None:
        """When the idle model is due to sleep (``time.time()``); None when it is busy, asleep or kept."""
        return self._loop.unload_at

    def load_timer(self) -> Callable[[], int]:
        """Called later: how long a load after a sleep took (ns) if one ended since now, else 0 (what a request
        that woke the model waited for it: Ollama's ``load_duration``)."""
        mark = self._loop.n_loads
        return lambda: self._loop.last_load_ns if self._loop.n_loads != mark else 0

    def keep_alive(self) -> float | None:
        return self._loop.keep_alive

    def default_keep_alive(self) -> float | None:
        """--sleep-idle-seconds (None: never)."""
        return self._loop.default_keep_alive()

    def lora_scales(self) -> tuple[float, ...]:
        return self._loop.lora_scales

    def slots(self) -> tuple[SlotInfo, ...]:
        return self._loop.slot_infos

    def metrics(self) -> Metrics:
        return self._loop.metrics

    def in_pool(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn`` in the reactor's thread pool: request work that is not model
        work (template rendering, grammar compilation) must not stall the reactor."""
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args, **kwargs)

    def tokenize(self, prompt: Sequence[PromptPart], add_special: bool, parse_special: bool) -> Deferred[list[int]]:
        """Tokenize a (possibly mixed) prompt in the thread pool: big inputs
        must not stall the reactor, and libllama's vocab is read-only."""
        return self.in_pool(self._with_model, tokenize_mixed, list(prompt), add_special, parse_special)

    def tokenize_media(self, prompt: Sequence[str | MediaInput], add_special: bool,
                       parse_special: bool) -> Deferred[PromptTokens]:
        """Tokenize a prompt with media through the projector (libmtmd) in the thread pool; the projector is
        unloaded while the server sleeps, so this wakes it first."""
        if self.sleeping:
            return self.wake().addCallback(lambda _: self.tokenize_media(prompt, add_special, parse_special))
        return self.in_pool(self._with_model, self._tokenize_media, list(prompt), add_special, parse_special)

    def _tokenize_media(self, model: Model, prompt: list[str | MediaInput], add_special: bool,
                        parse_special: bool) -> PromptTokens:
        projector = self._loop.projector
        if projector is None:
            raise ProjectorError("media input needs a multimodal projector: this server was started without "
                                 "--mmproj")
        tokens, spans = projector.tokenize(prompt, add_special, parse_special)
        return PromptTokens(tokens, tuple(spans))

    def detokenize(self, tokens: Sequence[int]) -> Deferred[str]:
        """The text of ``tokens``; a media chunk's placeholder ids (negative) read as one media marker."""
        return self.in_pool(self._with_model, detokenize_with_media, list(tokens))

    def rerank_prompt(self, query: str, document: str) -> Deferred[list[int]]:
        return self.in_pool(self._with_model, rerank_tokens, query, document)

    def vocab_call(self, fn: Callable[[Callable[[str], list[int]]], T]) -> Deferred[T]:
        """Run ``fn(tokenize)`` in the thread pool; ``tokenize`` takes text
        without special tokens (for prompt assembly such as FIM)."""
        return self.in_pool(self._with_model, lambda model: fn(lambda text: model.vocab.tokenize(text, False, False)))

    def fim_tokens(self) -> FimTokens:
        return self._with_model(lambda model: model.vocab.fim())

    def constraint_tokenizer(self) -> Deferred[TokenizerInfo]:
        """The vocabulary as llguidance needs it, built once (about 0.3 s) in the thread pool."""
        if self._constraint_tokenizer is not None:
            return succeed(self._constraint_tokenizer)

        def keep(info: TokenizerInfo) -> TokenizerInfo:
            self._constraint_tokenizer = info  # two concurrent first requests may both build it; harmless
            return info

        # its tokenize goes to the model loaded when it is called: a sleeping server frees the one it was built on
        return self.in_pool(self._with_model, constraint_tokenizer, self._tokenize_bytes).addCallback(keep)

    def _tokenize_bytes(self, data: bytes) -> list[int]:
        return self._with_model(lambda model: model.vocab.tokenize(data.decode("utf-8", "replace"), False, False))

    def token_piece(self, token: int, special: bool = True) -> bytes:
        return self._with_model(lambda model: model.vocab.token_to_piece(token, special=special))

    def valid_token(self, token: int) -> bool:
        return self._with_model(lambda model: model.vocab.is_valid(token))


def constraint_tokenizer(model: Model, tokenize: Callable[[bytes], list[int]]) -> TokenizerInfo:
    """The model's vocabulary as plain data (``tokenize`` must not hold the model: it outlives a sleep)."""
    vocab = model.vocab
    n = vocab.n_tokens
    return TokenizerInfo.from_attrs(
        [vocab.token_to_piece(i, special=True) for i in range(n)],
        [vocab.token_attr(i) for i in range(n)],
        [i for i in range(n) if vocab.is_eog(i)],
        tokenize,
        bos_id=vocab.bos if vocab.bos >= 0 else None,
        n_vocab=n,
    )


def detokenize_with_media(model: Model, tokens: list[int]) -> str:
    if all(t >= 0 for t in tokens):
        return model.vocab.detokenize(tokens)
    out: list[str] = []
    run: list[int] = []
    for i, t in enumerate(tokens):
        if t >= 0:
            run.append(t)
        elif i == 0 or tokens[i - 1] >= 0:  # a media chunk starts
            out += [model.vocab.detokenize(run), MEDIA_MARKER]
            run = []
    out.append(model.vocab.detokenize(run))
    return "".join(out)


def rerank_tokens(model: Model, query: str, document: str) -> list[int]:
    """The model's rerank template, else [BOS] query [EOS] [SEP] doc [EOS] (llama-server's layout)."""
    template = model.chat_template("rerank")
    vocab = model.vocab
    if template is not None:
        text = template.replace("{query}", query).replace("{document}", document)
        return vocab.tokenize(text, False, True)
    eos = vocab.eos if vocab.eos >= 0 else vocab.sep
    out = [vocab.bos] if vocab.add_bos else []
    out += vocab.tokenize(query, False, False)
    if vocab.add_eos:
        out.append(eos)
    if vocab.add_sep:
        out.append(vocab.sep)
    out += vocab.tokenize(document, False, False)
    if vocab.add_eos:
        out.append(eos)
    return out


def tokenize_mixed(model: Model, prompt: list[PromptPart], add_special: bool, parse_special: bool) -> list[int]:
    """Strings are tokenized (special tokens added only at the very start),
    token ids are taken as they are."""
    out: list[int] = []
    for i, part in enumerate(prompt):
        if isinstance(part, str):
            out.extend(model.vocab.tokenize(part, add_special and i == 0, parse_special))
        else:
            out.append(part)
    return out
