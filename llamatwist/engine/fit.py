# -*- test-case-name: tests.test_fit -*-
"""``--fit``: the context size and GPU layers a model is given when the user leaves them unset, chosen so
that model, caches and compute buffers fit the memory there is (llama.cpp's common_fit_params).

`measure` loads the model with ``no_alloc`` (metadata only, allocations simulated) under given settings and
reads libllama's memory breakdown per device; `fit` is the search over those measurements, a pure function
of a ``measure`` callable so that its arithmetic is tested without models.

As llama-server: an unset context (``-c 0``) becomes the training context per sequence stream (each slot
of a non-unified KV cache gets the whole training context); if the projected use then leaves less than the
target margin (``-fitt``, 1024 MiB) free, the context shrinks, linearly between its maximum and ``-fitc``
per stream, rounded down to 256 per stream; on a GPU, if that is not enough, fewer layers are offloaded.
Without a GPU the host's total memory is the budget. Differences: layers are only moved whole and only
for one GPU (llama.cpp also moves parts of layers and MoE experts, and splits across several GPUs); a
draft model is not measured alongside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from llamatwist.engine.context import Context, ContextParams
from llamatwist.engine.errors import EngineError
from llamatwist.engine.model import Model, Placement
from llamatwist.native.binding import ffi, lib

__all__ = ["DEFAULT_MARGIN_MIB", "DEFAULT_MIN_CTX", "FitRequest", "Fitted", "Measured", "Usage", "fit", "measure"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MARGIN_MIB = 1024  # -fitt
DEFAULT_MIN_CTX = 4096  # -fitc
_CTX_ALIGN = 256  # contexts are rounded down to this, per stream (llama.cpp: for the CUDA backend)
_MAX_BUFFER_TYPES = 64


@dataclass(frozen=True)
class Usage:
    """One device's (or the host's) memory: what it has, and what the model would take of it."""

    name: str
    free: int  # bytes
    total: int
    model: int  # weights
    context: int  # KV cache / recurrent state
    compute: int  # compute buffers

    @property
    def used(self) -> int:
        return self.model + self.context + self.compute


@dataclass(frozen=True)
class Measured:
    devices: tuple[Usage, ...]  # the GPUs the model would use, in order
    host: Usage
    n_layer: int  # the model's layers (-ngl counts one more: the output layer)
    n_ctx_train: int


@dataclass(frozen=True)
class FitRequest:
    n_ctx: int  # 0: unset, fit chooses
    n_gpu_layers: int  # -1: unset, fit may lower it
    n_streams: int  # KV cache streams: 1 when unified, else the slots
    margins_mib: tuple[int, ...] = (DEFAULT_MARGIN_MIB,)  # per device; one value is for all
    n_ctx_min: int = DEFAULT_MIN_CTX  # per stream; negative: the whole context was asked for (-c 0), never less


@dataclass(frozen=True)
class Fitted:
    n_ctx: int
    n_gpu_layers: int
    ok: bool  # False: no settings are projected to fit (the load goes ahead with these)
    notes: tuple[str, ...]  # what was decided, for the log


#: (n_ctx, n_gpu_layers) -> the projected memory use under those settings
Measure = Callable[[int, int], Measured]


def fit(measure: Measure, request: FitRequest) -> Fitted:
    """The settings to load with (llama.cpp's common_params_fit_impl, whole layers on one GPU)."""
    notes: list[str] = []
    n_ctx, ngl = request.n_ctx, request.n_gpu_layers
    streams = max(request.n_streams, 1)
    full = measure(n_ctx, ngl)
    n_ctx_max = full.n_ctx_train * streams
    n_ctx_min = request.n_ctx_min * streams
    auto = n_ctx == 0
    if auto:
        n_ctx = n_ctx_max
        if streams > 1:  # the first measurement had the training context for all streams together
            full = measure(n_ctx, ngl)
    devs = full.devices
    margins = [_margin(request.margins_mib, i) for i in range(max(len(devs), 1))]

    def done(ok: bool, note: str | None = None) -> Fitted:
        if note:
            notes.append(note)
        return Fitted(n_ctx, ngl, ok, tuple(notes))

    if devs:
        if all(d.free - d.used >= m for d, m in zip(devs, margins, strict=True)):
            return done(True, _leaves(devs, margins))
        budget = sum(d.free for d in devs)
        used = sum(d.used for d in devs)
    else:
        budget, used = full.host.total, full.host.used
        if budget - used >= margins[0]:
            return done(True, _leaves((full.host,), margins))
    notes.append(f"projected to use {used // MIB} MiB of {budget // MIB} MiB "
                 f"({'device' if devs else 'system'} memory), {sum(margins) // MIB} MiB to be left free")

    target = budget - sum(margins)  # what the model may use
    if not auto:
        notes.append(f"context size set by the user to {n_ctx}: not changed")
    elif request.n_ctx_min < 0:
        notes.append(f"the full context size {n_ctx_max} was asked for (-c 0): not changed")
    elif n_ctx_max <= n_ctx_min:
        notes.append(f"the model's context size {n_ctx_max} is at most the minimum {n_ctx_min}: not changed")
    else:
        if len(devs) > 1:  # only whole layers move between devices: about half a layer wasted on each
            target -= (len(devs) + 1) * sum(d.model for d in devs) // max(min(_all_layers(ngl, full), full.n_layer), 1) // 2
        at_min = measure(n_ctx_min, ngl)
        used_min = sum(d.used for d in at_min.devices) if devs else at_min.host.used
        if target > used_min:
            n_ctx = n_ctx_min + (n_ctx_max - n_ctx_min) * (target - used_min) // max(used - used_min, 1)
            n_ctx = max(n_ctx - n_ctx % (_CTX_ALIGN * streams), n_ctx_min)
            notes.append(f"context size reduced from {n_ctx_max} to {n_ctx}")
            if len(devs) <= 1:
                return done(True)
        else:
            n_ctx = n_ctx_min
            notes.append(f"context size reduced from {n_ctx_max} to the minimum {n_ctx} (-fitc), still too large")

    if not devs:
        return done(False, "was unable to fit the model into system memory by reducing the context")
    if ngl >= 0:
        return done(False, f"-ngl set by the user to {ngl}: not changed")
    if len(devs) > 1:
        return done(False, "fitting layers across several GPUs is not supported: set -ngl and -ts")
    # The most layers (the output layer last) whose memory leaves the margin free on the device.
    lo, hi = 0, full.n_layer + 1  # lo fits (nothing offloaded: assumed), hi did not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        dev = measure(n_ctx, mid).devices[0]
        if dev.free - dev.used >= margins[0]:
            lo = mid
        else:
            hi = mid
    ngl = lo
    return done(True, f"{lo}/{full.n_layer + 1} layers offloaded to {devs[0].name}")


def _margin(margins_mib: tuple[int, ...], i: int) -> int:
    if len(margins_mib) == 1:
        return margins_mib[0] * MIB
    return (margins_mib[i] if i < len(margins_mib) else DEFAULT_MARGIN_MIB) * MIB


def _all_layers(ngl: int, measured: Measured) -> int:
    return ngl if ngl >= 0 else measured.n_layer + 1


def _leaves(where: tuple[Usage, ...], margins: list[int]) -> str:
    parts = [f"{u.name}: {u.used // MIB} MiB used, {(u.free - u.used) // MIB} MiB left (target {m // MIB})"
             for u, m in zip(where, margins, strict=False)]
    return "fits, no changes needed; " + "; ".join(parts)


def measure(path: str, *, context: ContextParams, n_gpu_layers: int, placement: Placement | None = None,
            kv_overrides: tuple[tuple[str, str, str], ...] = (), load_mtp: bool = False) -> Measured:
    """The memory the model and a context with these settings would take, per device and on the host
    (``load_mtp``: with its multi-token-prediction layers' weights, which draft-mtp loads).

    Loads the model's metadata only (``no_alloc``): no weights are read, no buffers allocated.
    """
    model = Model(path, n_gpu_layers=n_gpu_layers, placement=placement, kv_overrides=kv_overrides,
                  no_alloc=True, load_mtp=load_mtp)
    try:
        ctx = Context(model, context)
        try:
            rows = ffi.new("struct llamatwist_buffer_use[]", _MAX_BUFFER_TYPES)
            n = lib.llamatwist_memory_breakdown(ctx.ptr, rows, _MAX_BUFFER_TYPES)
            if n > _MAX_BUFFER_TYPES:
                raise EngineError(f"{n} buffer types in the memory breakdown, at most {_MAX_BUFFER_TYPES} read")
            m = model.ptr
            devs = [lib.llamatwist_model_get_device(m, i) for i in range(lib.llamatwist_model_n_devices(m))]
            per = [[0, 0, 0] for _ in devs]
            host = [0, 0, 0]
            for row in rows[0:n]:
                if lib.ggml_backend_buft_is_host(row.buft):
                    into = host
                else:
                    dev = lib.ggml_backend_buft_get_device(row.buft)
                    into = next((per[i] for i, d in enumerate(devs) if d == dev), None)  # type: ignore[arg-type]
                    if into is None:
                        continue
                into[0] += row.model
                into[1] += row.context
                into[2] += row.compute
            usages = tuple(_usage(d, *p) for d, p in zip(devs, per, strict=True))
            cpu = lib.ggml_backend_dev_by_type(lib.GGML_BACKEND_DEVICE_TYPE_CPU)
            free, total = _memory(cpu)
            return Measured(devices=usages, host=Usage("host", free, total, *host),
                            n_layer=int(lib.llama_model_n_layer(m)), n_ctx_train=int(lib.llama_model_n_ctx_train(m)))
        finally:
            ctx.close()
    finally:
        model.close()


def _memory(dev: object) -> tuple[int, int]:
    free, total = ffi.new("size_t *"), ffi.new("size_t *")
    lib.ggml_backend_dev_memory(dev, free, total)
    return int(free[0]), int(total[0])


def _usage(dev: object, model: int, context: int, compute: int) -> Usage:
    free, total = _memory(dev)
    if free == total == 0 and lib.ggml_backend_dev_type(dev) not in (lib.GGML_BACKEND_DEVICE_TYPE_GPU,
                                                                      lib.GGML_BACKEND_DEVICE_TYPE_IGPU):
        # An accelerator that reports no memory (BLAS) works in host memory; a GPU that does not is not used.
        free, total = _memory(lib.ggml_backend_dev_by_type(lib.GGML_BACKEND_DEVICE_TYPE_CPU))
    return Usage(ffi.string(lib.ggml_backend_dev_name(dev)).decode(), free, total, model, context, compute)
