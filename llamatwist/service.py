# -*- test-case-name: tests.test_server -*-
"""``make_service``: the whole server as one Twisted MultiService.

Children start in order (engine, then HTTP) and stop in reverse. The HTTP
port is bound at once, so /health answers 503 while the model loads.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from twisted.application import internet
from twisted.application.service import MultiService
from twisted.web.server import Site

from llamatwist.api.app import build_app
from llamatwist.api.http import ApiContext
from llamatwist.config import ServerConfig
from llamatwist.engine.context import ContextParams
from llamatwist.errors import StartupError
from llamatwist.runtime.scheduler import EngineSpec
from llamatwist.runtime.service import EngineService

__all__ = ["ServerService", "make_service"]

log = logging.getLogger("llamatwist")


class ServerService(MultiService):
    """Holds ``exit_code`` (non-zero after a failed model load)."""

    exit_code = 0


def _threads(n: int) -> int:
    return n if n > 0 else max(1, os.cpu_count() or 1)


def _check_model_file(path: str) -> None:
    if not os.path.exists(path):
        raise StartupError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise StartupError(f"model path is a directory, not a GGUF file: {path}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise StartupError(f"cannot read model file {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise StartupError(f"not a GGUF file: {path}")


def engine_spec(config: ServerConfig, model_path: str) -> EngineSpec:
    n_threads = _threads(config.n_threads)
    n_batch = config.n_batch
    return EngineSpec(
        model_path=model_path,
        n_gpu_layers=config.n_gpu_layers,
        context=ContextParams(
            n_ctx=config.n_ctx,
            n_batch=n_batch,
            n_ubatch=min(config.n_ubatch, n_batch),
            n_seq_max=config.n_parallel,
            n_threads=n_threads,
            n_threads_batch=_threads(config.n_threads_batch) if config.n_threads_batch > 0 else n_threads,
            kv_unified=config.kv_unified,
        ),
        n_slots=config.n_parallel,
        cont_batching=config.cont_batching,
        n_predict=config.sampling.n_predict,
        warmup=config.warmup,
    )


def make_service(config: ServerConfig, reactor: Any = None) -> ServerService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    model_path = config.model
    if model_path is None:
        from llamatwist.models import ensure_default_model

        model_path = str(ensure_default_model())
    _check_model_file(model_path)

    top = ServerService()

    def on_failed(message: str) -> None:
        log.error("error: %s", message)
        top.exit_code = 1
        if reactor.running:
            reactor.stop()

    engine = EngineService(engine_spec(config, model_path), reactor, on_failed)
    engine.setServiceParent(top)
    ctx = ApiContext(config=config, engine=engine, model_path=model_path)
    site = Site(build_app(ctx).resource())
    site.displayTracebacks = False
    http = internet.TCPServer(config.port, site, interface=config.host)
    http.setName("http")
    http.setServiceParent(top)
    log.info("llamatwist listening on http://%s:%d", config.host, config.port)
    return top
