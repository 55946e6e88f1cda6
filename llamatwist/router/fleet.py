# -*- test-case-name: tests.test_router -*-
"""The router's model servers: one child ``llamatwist`` process per loaded model, on the reactor.

A model is ``unloaded``, ``loading`` (its process started, /health not yet 200) or ``loaded``. Requests
load a model on demand (`ensure_ready`); with ``--models-max`` models running, the least recently used
idle one is stopped first, and a request waits while every running model is busy. An unload sends SIGTERM
(the child drains its requests) and SIGKILL after the model's ``stop-timeout``. A child that exits on its
own is ``unloaded`` again, marked ``failed`` with its exit status when it was not asked to stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import treq
from twisted.internet import defer, protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from llamatwist.api.errors import InvalidRequest, NotFound, ServerError, Unavailable
from llamatwist.cli.startup import ROUTER_CHILD_ENV
from llamatwist.router.catalog import CHILD_HOST, ModelEntry, child_args, child_env
from llamatwist.router.proxy import quiet_pool

__all__ = ["Fleet", "Instance"]

log = logging.getLogger("llamatwist.router")

UNLOADED = "unloaded"
LOADING = "loading"
LOADED = "loaded"
_POLL_S = 0.2  # how often a loading child's /health is asked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((CHILD_HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    entry: ModelEntry
    status: str = UNLOADED
    port: int = 0
    args: list[str] = field(default_factory=list)
    process: Any = None  # IProcessTransport while running
    stopping: bool = False
    failed: bool = False
    exit_code: int = 0
    last_used: float = 0.0
    requests: int = 0  # proxied requests in flight
    sleeping: bool = False  # a loaded server that freed its model (--sleep-idle-seconds), as its /props said
    info: dict[str, Any] = field(default_factory=dict)  # the child's own /v1/models entry

    @property
    def running(self) -> bool:
        return self.status != UNLOADED

    def status_json(self) -> dict[str, Any]:
        value = "sleeping" if self.status == LOADED and self.sleeping else self.status
        out: dict[str, Any] = {"value": value, "args": self.args}
        if self.entry.preset:
            out["preset"] = "\n".join(f"{k} = {v}" for k, v in self.entry.preset.items())
        if self.failed:
            out["failed"] = True
            out["exit_code"] = self.exit_code
        return out


class _ChildOutput(protocol.ProcessProtocol):
    """Logs the child's output line by line under its model's name; reports its exit."""

    def __init__(self, name: str, ended: Callable[[int], None]) -> None:
        self._name = name
        self._ended = ended
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            log.info("[%s] %s", self._name, line.decode("utf-8", "replace").rstrip())

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if self._buffer:
            self.outReceived(b"\n")
        code = getattr(reason.value, "exitCode", None)
        signalled = getattr(reason.value, "signal", None)
        self._ended(code if code is not None else -(signalled or 1))


class Fleet:
    def __init__(self, catalog: Mapping[str, ModelEntry], argv: Sequence[str], models_max: int, reactor: Any,
                 environ: Mapping[str, str] | None = None) -> None:
        self.instances = {name: Instance(entry) for name, entry in catalog.items()}
        self._aliases = {alias: name for name, entry in catalog.items() for alias in entry.aliases}
        self._argv = list(argv)
        self.models_max = models_max
        self._reactor = reactor
        self._env = child_env(os.environ if environ is None else environ)
        self._changed: list[defer.Deferred[None]] = []
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # /models/sse
        self.stopped = False
        self._pool: HTTPConnectionPool = quiet_pool(reactor)

    def reload(self, catalog: Mapping[str, ModelEntry]) -> defer.Deferred[Any]:
        """GET /models?reload=1, as llama-server: a running model whose entry changed or went is stopped; models
        not running take their new entries; new ones are added (none is started). Fires once the stopped ones
        have exited."""
        stopping = []
        for name, inst in list(self.instances.items()):
            entry = catalog.get(name)
            if entry == inst.entry:
                continue
            if inst.running:
                log.info("reload: stopping model %s (its entry %s)", name, "went" if entry is None else "changed")
                stopping.append(self.unload(inst))
            if entry is None:
                if not inst.running:
                    del self.instances[name]
            else:
                inst.entry = entry
                inst.failed, inst.exit_code = False, 0
        for name, entry in catalog.items():
            if name not in self.instances:
                self.instances[name] = Instance(entry)
        self._aliases = {alias: name for name, entry in catalog.items() for alias in entry.aliases}

        def settled(_: Any) -> None:
            for name in [n for n in self.instances if n not in catalog and not self.instances[n].running]:
                del self.instances[name]
            for listener in list(self.listeners):
                listener({"model": "*", "event": "models_reload", "data": {}})

        return defer.gatherResults(stopping).addCallback(settled)

    # --- lookups -------------------------------------------------------------------------------------------

    def find(self, name: str) -> Instance | None:
        """A model by name or alias."""
        inst = self.instances.get(name)
        if inst is None and name in self._aliases:
            inst = self.instances[self._aliases[name]]
        return inst

    def _running(self) -> int:
        return sum(i.running for i in self.instances.values())

    def _has_room(self) -> bool:
        return self.models_max <= 0 or self._running() < self.models_max

    def _victim(self, keep: str) -> Instance | None:
        """The least recently used loaded model with no request in flight."""
        idle = [i for i in self.instances.values()
                if i.status == LOADED and not i.stopping and i.requests == 0 and i.entry.name != keep]
        return min(idle, key=lambda i: i.last_used, default=None)

    # --- changes -------------------------------------------------------------------------------------------

    def _wait_change(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._changed.append(d)
        return d

    def changed(self) -> None:
        """Wake the requests waiting for a model or for room (a request ended, a model came or went)."""
        waiting, self._changed = self._changed, []
        for d in waiting:
            if not d.called:  # a waiter cancelled meanwhile (its client left) is done already
                d.callback(None)

    def _notify(self, inst: Instance, event: str = "model_status") -> None:
        self.changed()
        data: dict[str, Any] = {"status": inst.status}
        if inst.failed:
            data.update(failed=True, exit_code=inst.exit_code)
        message = {"model": inst.entry.name, "event": event, "data": data}
        for listener in list(self.listeners):
            listener(message)

    # --- loading -------------------------------------------------------------------------------------------

    def spawn(self, inst: Instance) -> None:
        """Start `inst`'s server (the caller made room)."""
        inst.port = _free_port()
        inst.args = [sys.executable, "-m", "llamatwist", *child_args(inst.entry, self._argv, inst.port)]
        inst.status, inst.stopping, inst.failed, inst.exit_code = LOADING, False, False, 0
        inst.info, inst.last_used, inst.sleeping = {}, time.monotonic(), False
        # the child stops when this process is gone (cli.startup.stop_with_parent)
        env = {**self._env, "LLAMATWIST_DRAIN_TIMEOUT": str(inst.entry.stop_timeout), ROUTER_CHILD_ENV: "1"}
        log.info("starting model %s on port %d: %s", inst.entry.name, inst.port, " ".join(inst.args[3:]))
        output = _ChildOutput(inst.entry.name, lambda code: self._exited(inst, process, code))
        process = self._reactor.spawnProcess(output, sys.executable, inst.args, env=env, path=os.getcwd())
        inst.process = process
        self._notify(inst)
        defer.ensureDeferred(self._watch_ready(inst, process))

    async def _watch_ready(self, inst: Instance, process: Any) -> None:
        base = f"http://{CHILD_HOST}:{inst.port}"
        while inst.process is process and inst.status == LOADING:
            try:
                response = await treq.get(base + "/health", timeout=5, pool=self._pool)
                ready = response.code == 200
                await response.content()
                if ready:
                    models = await treq.get(base + "/v1/models", timeout=10, pool=self._pool)
                    body = json.loads(await models.content())
                    if inst.process is process and inst.status == LOADING:
                        inst.info = (body.get("data") or [{}])[0]
                        inst.status = LOADED
                        log.info("model %s loaded", inst.entry.name)
                        self._notify(inst)
                    return
            except Exception as exc:  # noqa: BLE001  # not listening yet, or gone: the exit is reported apart
                log.debug("model %s not ready yet: %s", inst.entry.name, exc)
            await deferLater(self._reactor, _POLL_S, lambda: None)

    async def check_sleep(self) -> None:
        """Ask each loaded server whether it sleeps (/props is_sleeping), for /models' status."""
        async def ask(inst: Instance) -> None:
            try:
                response = await treq.get(f"http://{CHILD_HOST}:{inst.port}/props", pool=self._pool, timeout=2)
                inst.sleeping = bool((await response.json()).get("is_sleeping"))
            except Exception as exc:  # noqa: BLE001  # busy or going away: the last answer stands
                log.debug("model %s: no /props answer: %s", inst.entry.name, exc)

        loaded = [i for i in self.instances.values() if i.status == LOADED and not i.stopping]
        await defer.gatherResults([defer.Deferred.fromCoroutine(ask(i)) for i in loaded])

    def _exited(self, inst: Instance, process: Any, code: int) -> None:
        if inst.process is not process:
            return
        asked = inst.stopping
        inst.process, inst.status, inst.stopping = None, UNLOADED, False
        inst.failed, inst.exit_code = (not asked and code != 0), code
        if inst.failed:
            log.error("model %s exited with status %d", inst.entry.name, code)
        else:
            log.info("model %s unloaded", inst.entry.name)
        self._notify(inst)

    async def load(self, inst: Instance) -> None:
        """POST /models/load: start `inst`, stopping the least recently used idle model when full."""
        if not self._has_room():
            victim = self._victim(inst.entry.name)
            if victim is not None:
                await self.unload(victim)
        if inst.running:
            return
        if not self._has_room():
            raise Unavailable("model limit reached, try again later")
        self.spawn(inst)

    async def ensure_ready(self, inst: Instance, cancelled: Callable[[], bool]) -> None:
        """Wait until `inst` is loaded, loading it (and making room) when it is not."""
        saw_loading = False
        while True:
            if self.stopped:
                raise Unavailable("the server is shutting down")
            if cancelled():
                raise InvalidRequest(f"request cancelled while waiting for model {inst.entry.name}")
            if inst.status == LOADED and not inst.stopping:
                return
            saw_loading = saw_loading or inst.status == LOADING
            if inst.status == UNLOADED:
                if saw_loading and inst.failed:
                    raise ServerError(f"model {inst.entry.name} failed to load (exit status {inst.exit_code})")
                if saw_loading:
                    raise Unavailable(f"model {inst.entry.name} was unloaded while it loaded")
                if self._has_room():
                    self.spawn(inst)
                    continue
                victim = self._victim(inst.entry.name)
                if victim is not None:
                    self.unload(victim)
            await self._wait_change()

    # --- stopping ------------------------------------------------------------------------------------------

    def unload(self, inst: Instance) -> defer.Deferred[None]:
        """Stop `inst`'s server; fires once it has exited."""
        done: defer.Deferred[None] = defer.ensureDeferred(self._until_unloaded(inst))
        process = inst.process
        if process is None or inst.stopping:
            return done
        inst.stopping = True
        if inst.status == LOADING:  # nothing to drain: as llama-server, a loading model is killed
            self._signal(process, signal.SIGKILL)
            return done
        log.info("stopping model %s", inst.entry.name)
        self._signal(process, signal.SIGTERM)
        kill = self._reactor.callLater(inst.entry.stop_timeout, self._signal, process, signal.SIGKILL)
        done.addBoth(lambda result: (kill.cancel() if kill.active() else None, result)[1])
        self._notify(inst)
        return done

    async def remove(self, inst: Instance) -> None:
        """Take `inst` out of the catalog (DELETE /models), once its server (if any) has exited."""
        if inst.running:
            await self.unload(inst)
        name = inst.entry.name
        if self.instances.get(name) is inst:
            del self.instances[name]
            self._aliases = {a: n for a, n in self._aliases.items() if n != name}
        self.changed()
        for listener in list(self.listeners):
            listener({"model": name, "event": "model_remove", "data": {}})

    async def _until_unloaded(self, inst: Instance) -> None:
        while inst.status != UNLOADED:
            await self._wait_change()

    @staticmethod
    def _signal(process: Any, number: int) -> None:
        with contextlib.suppress(Exception):  # already gone
            process.signalProcess(number)

    def stop_all(self) -> defer.Deferred[Any]:
        self.stopped = True
        return defer.gatherResults([self.unload(i) for i in self.instances.values() if i.running])

    def require(self, name: Any) -> Instance:
        """A request's model (400 when it names none this router serves, as llama-server)."""
        if not isinstance(name, str) or not name:
            raise InvalidRequest("model name is missing from the request")
        inst = self.find(name)
        if inst is None:
            raise InvalidRequest(f"model '{name}' not found")
        return inst

    def known(self, name: Any) -> Instance:
        """/models/load and /models/unload's model (404 when unknown, as llama-server)."""
        inst = self.find(name) if isinstance(name, str) else None
        if inst is None:
            raise NotFound("model is not found")
        return inst
