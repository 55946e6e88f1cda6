# -*- test-case-name: tests.test_fit, tests.test_fit_params -*-
"""``--fit``: the context size, GPU layers, layer split and tensor placement a model is given when the user
leaves them unset, chosen so that model, caches and compute buffers fit the memory there is (llama.cpp's
common_fit_params, the same steps and the same arithmetic, so that both choose the same settings).

`measure` loads the model with ``no_alloc`` (metadata only, allocations simulated) under given settings and
reads libllama's memory breakdown per device; `fit` is the search over those measurements, a pure function
of a ``measure`` callable so that its arithmetic is tested without models.

As llama-server: an unset context (``-c 0``) becomes the training context per sequence stream (each slot
of a non-unified KV cache gets the whole training context); if the projected use then leaves less than the
target margin (``-fitt``, 1024 MiB per device) free, the context shrinks, linearly between its maximum and
``-fitc`` per stream, rounded down to 256 per stream. Where that is not enough on the GPUs (or with several
GPUs, whose shares must also be chosen), the layers are laid out from the last device back, each device
taking as many as leave its margin free: whole layers for a dense model; for a MoE model first every
offloaded layer without its expert tensors, which stay in system memory, then, where that leaves room,
layers made whole from the first device on, and part of one more layer (its attention, then up, then gate
projections), the rest overflowing to the next device or the CPU. The result is ``-ngl``, ``-ts`` (several
GPUs) and ``-ot`` rules, as ``llamatwist-fit-params`` prints them. Without a GPU the host's total memory is
the budget. A draft model (or an MTP context) is measured with the target, at its context size, and a
multimodal projector's memory is kept free beside the margins (``FitRequest.reserved``), as llama-server
does.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from llamatwist.engine.context import Context, ContextParams
from llamatwist.engine.errors import EngineError
from llamatwist.engine.model import Model, Placement
from llamatwist.native.binding import ffi, lib

__all__ = ["CPU_BUFFER", "DEFAULT_MARGIN_MIB", "DEFAULT_MIN_CTX", "Extra", "FitRequest", "Fitted", "Fraction",
           "Measured", "Trial", "Usage", "cli_args", "fit", "measure", "overflow_pattern"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MARGIN_MIB = 1024  # -fitt
DEFAULT_MIN_CTX = 4096  # -fitc
CPU_BUFFER = "CPU"  # the host's buffer type, where tensors overflow to
_CTX_ALIGN = 256  # contexts are rounded down to this, per stream (llama.cpp: for the CUDA backend)
_MAX_BUFFER_TYPES = 64
#: every MoE expert tensor (llama.cpp's pattern)
MOE_ALL = r"blk\.\d+\.ffn_(up|down|gate_up|gate)_(ch|)exps"


class Fraction(IntEnum):
    """What of a partially offloaded layer stays on its device; the rest overflows (common_layer_fraction_t)."""

    ATTN = 1  # attention
    UP = 2  # attention + up projection
    GATE = 3  # attention + up + gate
    MOE = 4  # everything but the sparse MoE experts


_OVERFLOWS = {  # the tensors of layer {il} that overflow
    Fraction.ATTN: r"blk\.{il}\.ffn_(gate|up|gate_up|down).*",
    Fraction.UP: r"blk\.{il}\.ffn_(gate|gate_up|down).*",
    Fraction.GATE: r"blk\.{il}\.ffn_down.*",
    Fraction.MOE: r"blk\.{il}\.ffn_(up|down|gate_up|gate)_(ch|)exps",
}


def overflow_pattern(il: int, fraction: Fraction) -> str:
    return _OVERFLOWS[fraction].format(il=il)


@dataclass(frozen=True)
class Usage:
    """One device's (or the host's) memory: what it has, and what the model would take of it."""

    name: str
    free: int  # bytes
    total: int
    model: int  # weights
    context: int  # KV cache / recurrent state
    compute: int  # compute buffers
    buffer: str = CPU_BUFFER  # the device's buffer type's name (-ot's), where a layer may overflow to

    @property
    def used(self) -> int:
        return self.model + self.context + self.compute


@dataclass(frozen=True)
class Measured:
    devices: tuple[Usage, ...]  # the GPUs the model would use, in order
    host: Usage
    n_layer: int  # the model's layers (-ngl counts one more: the output layer), its NextN layers with them
    n_ctx_train: int
    n_expert: int = 0  # experts per MoE layer (0: a dense model)


@dataclass(frozen=True)
class FitRequest:
    n_ctx: int  # 0: unset, fit chooses
    n_gpu_layers: int  # -1: unset, fit may lower it
    n_streams: int  # KV cache streams: 1 when unified, else the slots
    margins_mib: tuple[int, ...] = (DEFAULT_MARGIN_MIB,)  # per device; one value is for all
    n_ctx_min: int = DEFAULT_MIN_CTX  # per stream; negative: the whole context was asked for (-c 0), never less
    tensor_split: tuple[float, ...] = ()  # -ts as the user gave it
    overrides: tuple[tuple[str, str], ...] = ()  # -ot (pattern, buffer type) as the user gave them
    split_mode: str = "layer"  # -sm
    # bytes to leave free beside each margin, by the index in ggml's device list (llama-server's index): what a
    # multimodal projector will take there
    reserved: tuple[int, ...] = ()


@dataclass(frozen=True)
class Trial:
    """Settings to measure the memory of."""

    n_ctx: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...] = ()
    overrides: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Fitted:
    n_ctx: int
    n_gpu_layers: int
    ok: bool  # False: no settings are projected to fit (the load goes ahead with these)
    notes: tuple[str, ...]  # what was decided, for the log
    tensor_split: tuple[float, ...] = ()  # layers per device (several GPUs), else the request's
    overrides: tuple[tuple[str, str], ...] = ()  # tensors placed off their layer's device (MoE), else the request's


#: the projected memory use under a trial's settings
Measure = Callable[[Trial], Measured]


@dataclass(frozen=True)
class Extra:
    """A second model on the same devices, fitted with the target (llama.cpp's common_fit_extra_model): a draft
    model, or the target's own NextN layers' MTP context (``shares_model``: its weights are the target's)."""

    measure: Callable[[int], Measured]  # its memory at the target's context size
    shares_model: bool = False


@dataclass
class _Share:
    """One device's layers, counted from the model's end (llama.cpp's ngl_t)."""

    n_layer: int = 0
    n_part: int = 0  # of which partial: their expert tensors (or, for the first, ``overflow``'s) elsewhere
    overflow: Fraction = Fraction.MOE  # what the first partial layer keeps here

    @property
    def n_full(self) -> int:
        return self.n_layer - self.n_part


def _copy(shares: list[_Share]) -> list[_Share]:
    return [dataclasses.replace(s) for s in shares]


def _step(delta: int, target: int, low: int, high: int) -> int:
    """The false-position step between a fitting layout (``low`` bytes) and one that does not (``high``),
    at least 1 and short of ``delta``; computed as llama.cpp does (a negative quotient wraps to uint32)."""
    num, den = delta * (target - low), high - low
    q = abs(num) // abs(den) if den else 0
    if (num < 0) != (den < 0):
        q = -q
    return min(max(q % 2**32, 1), delta - 1)


@dataclass
class _State:
    """The settings as the fit has them so far."""

    n_ctx: int
    ngl: int
    split: tuple[float, ...]
    overrides: tuple[tuple[str, str], ...]


class _Abort(Exception):
    """No settings can be changed further (common_params_fit_exception)."""


def fit(measure: Measure, request: FitRequest, extra: Extra | None = None) -> Fitted:
    """The settings to load with (llama.cpp's common_params_fit_impl), ``extra``'s memory counted in every
    measurement."""
    notes: list[str] = []
    state = _State(request.n_ctx, request.n_gpu_layers, request.tensor_split, request.overrides)

    def done(ok: bool, note: str | None = None) -> Fitted:
        if note:
            notes.append(note)
        return Fitted(state.n_ctx, state.ngl, ok, tuple(notes), state.split, state.overrides)

    try:
        _fit(measure, request, state, notes, extra)
    except _Abort as exc:
        return done(False, str(exc))
    return done(True)


def _fit(measure: Measure, request: FitRequest, state: _State, notes: list[str], extra: Extra | None) -> None:
    if request.split_mode == "tensor":
        raise _Abort("fitting is not implemented for -sm tensor")
    n_ctx = request.n_ctx
    streams = max(request.n_streams, 1)
    user = Trial(n_ctx, request.n_gpu_layers, request.tensor_split, request.overrides)
    full = measure(user)
    if n_ctx == 0:
        n_ctx = state.n_ctx = full.n_ctx_train * streams
        if streams > 1:  # the first measurement had the training context for all streams together
            full = measure(dataclasses.replace(user, n_ctx=n_ctx))
    if extra is not None:
        add = _Adder(extra, notes)
        full = add(full, n_ctx)
        measure = add.wrap(measure)
    devs = full.devices
    nd = len(devs)
    margins = [_margin(request.margins_mib, i) + (request.reserved[i] if i < len(request.reserved) else 0)
               for i in range(max(nd, 1))]

    # 1. whether anything must change
    if devs:
        if all(d.free - d.used >= m for d, m in zip(devs, margins, strict=True)):
            notes.append(_leaves(devs, margins))
            return
        budget = sum(d.free for d in devs)
        used = sum(d.used for d in devs)
    else:
        budget, used = full.host.total, full.host.used
        if budget - used >= margins[0]:
            notes.append(_leaves((full.host,), margins))
            return
    notes.append(f"projected to use {used // MIB} MiB of {budget // MIB} MiB "
                 f"({'device' if devs else 'system'} memory), {sum(margins) // MIB} MiB to be left free")

    # 2. a smaller context
    if budget - used - sum(margins) < 0:
        fits = _shrink_context(measure, request, state, notes, full, user, target=budget - sum(margins), used=used)
        n_ctx = state.n_ctx
        if fits and nd <= 1:
            return

    if not devs:
        raise _Abort("was unable to fit the model into system memory by reducing the context")
    if request.n_gpu_layers >= 0:
        raise _Abort(f"-ngl set by the user to {request.n_gpu_layers}: not changed")
    if nd > 1:
        if any(request.tensor_split[:nd]):
            raise _Abort("-ts set by the user: not changed")
        if request.split_mode == "row":
            raise _Abort("changing the weights' placement for -sm row is not implemented")
    if request.overrides:
        raise _Abort("-ot (or -cmoe/-ncmoe) set by the user: not changed")
    _lay_out(measure, request, state, notes, full, n_ctx, margins)


def _shrink_context(measure: Measure, request: FitRequest, state: _State, notes: list[str], full: Measured,
                    user: Trial, *, target: int, used: int) -> bool:
    """Step 2: sets the context size that leaves the margins free (``target``: what the model may use, ``used``:
    what it uses at the full context), where the user left it to the fit (-c unset): interpolated between the
    minimum's measured use and the full one's. Returns whether that fits."""
    devs = full.devices
    nd = len(devs)
    streams = max(request.n_streams, 1)
    n_ctx_max = full.n_ctx_train * streams
    n_ctx_min = request.n_ctx_min * streams
    if request.n_ctx != 0:
        notes.append(f"context size set by the user to {state.n_ctx}: not changed")
        return False
    if request.n_ctx_min < 0:
        notes.append(f"the full context size {n_ctx_max} was asked for (-c 0): not changed")
        return False
    if n_ctx_max <= n_ctx_min:
        notes.append(f"the model's context size {n_ctx_max} is at most the minimum {n_ctx_min}: not changed")
        return False
    if nd > 1:
        # Only whole layers (dense) or whole tensors (MoE, about a third of a layer) move between devices:
        # allow for a little more than half of one wasted per device.
        layers = max(min(_all_layers(request.n_gpu_layers, full), full.n_layer), 1)
        per_layer = sum(d.model for d in devs) // layers
        target -= (nd + 1) * per_layer // (6 if full.n_expert else 2)
    at_min = measure(dataclasses.replace(user, n_ctx=n_ctx_min))
    used_min = sum(d.used for d in at_min.devices) if devs else at_min.host.used
    if target <= used_min:
        state.n_ctx = n_ctx_min
        notes.append(f"context size reduced from {n_ctx_max} to the minimum {n_ctx_min} (-fitc), still too large")
        return False
    n_ctx = n_ctx_min + (n_ctx_max - n_ctx_min) * (target - used_min) // max(used - used_min, 1)
    state.n_ctx = max(n_ctx - n_ctx % (_CTX_ALIGN * streams), n_ctx_min)
    notes.append(f"context size reduced from {n_ctx_max} to {state.n_ctx}")
    return True


def _lay_out(measure: Measure, request: FitRequest, state: _State, notes: list[str], full: Measured, n_ctx: int, margins: list[int]) -> None:
    """Steps 3 and 4: the layers per device, back to front (llama.cpp's method of false position)."""
    devs = full.devices
    nd = len(devs)
    n_layers = full.n_layer + 1  # the output layer too
    moe = full.n_expert > 0

    def trial(shares: list[_Share], overflow: list[str]) -> Trial:
        ngl = sum(s.n_layer for s in shares)
        split = tuple(float(s.n_layer) for s in shares) if nd > 1 else request.tensor_split
        overrides: list[tuple[str, str]] = []
        il0 = n_layers - ngl
        for s, buffer in zip(shares, overflow, strict=True):
            il0 += s.n_full
            for il in range(il0, il0 + s.n_part):
                first = il == il0
                overrides.append((overflow_pattern(il, s.overflow if first else Fraction.MOE),
                                  buffer if first else CPU_BUFFER))
            il0 += s.n_part
        return Trial(n_ctx, ngl, split, tuple(overrides))

    def memory(shares: list[_Share], overflow: list[str]) -> list[int]:
        return [d.used for d in measure(trial(shares, overflow)).devices]

    surplus_cpu_moe = 0
    if moe:
        dense_only = measure(Trial(n_ctx, request.n_gpu_layers, request.tensor_split, ((MOE_ALL, CPU_BUFFER),)))
        surplus_cpu_moe = sum(d.free - d.used - m for d, m in zip(dense_only.devices, margins, strict=True))

    targets = [d.free - m for d, m in zip(devs, margins, strict=True)]
    overflow = [CPU_BUFFER] * nd
    shares = [_Share() for _ in range(nd)]
    mem = memory(shares, overflow)

    # 3. dense layers (a MoE model's without their experts), filled from the last device back
    for i in reversed(range(nd)):
        unassigned = n_layers - sum(s.n_layer for s in shares[i + 1:])
        high = _copy(shares)
        high[i].n_layer = unassigned
        if moe:
            high[i].n_part = unassigned if i < nd - 1 else unassigned - 1
        if high[i].n_layer == 0:
            continue
        mem_high = memory(high, overflow)
        if mem_high[i] <= targets[i]:
            shares, mem = high, mem_high
            continue
        delta = high[i].n_layer - shares[i].n_layer
        while delta > 1:
            step = _step(delta, targets[i], mem[i], mem_high[i])
            test = _copy(shares)
            test[i].n_layer += step
            if moe:  # the output layer, the last device's first, is always whole
                test[i].n_part += step - 1 if i == nd - 1 and test[i].n_part == 0 else step
            mem_test = memory(test, overflow)
            if mem_test[i] <= targets[i]:
                shares, mem = test, mem_test
            else:
                high, mem_high = test, mem_test
            delta = high[i].n_layer - shares[i].n_layer

    if moe and surplus_cpu_moe > 0:
        shares, overflow, mem = _whole_layers(memory, shares, overflow, mem, targets, devs)
    t = trial(shares, overflow)
    state.ngl, state.split, state.overrides = t.n_gpu_layers, t.tensor_split, t.overrides
    for d, s, used in zip(devs, shares, mem, strict=True):
        part = f" ({s.n_part} of them without all their tensors)" if s.n_part else ""
        notes.append(f"{s.n_layer}/{n_layers} layers offloaded to {d.name}{part}: {used // MIB} MiB used, "
                     f"{(d.free - used) // MIB} MiB free")


def _whole_layers(memory: Callable[[list[_Share], list[str]], list[int]], shares: list[_Share], overflow: list[str],
                  mem: list[int], targets: list[int], devs: tuple[Usage, ...],
                  ) -> tuple[list[_Share], list[str], list[int]]:
    """Step 4, for a MoE model whose dense tensors all fit: partial layers made whole from the first device
    on, and part of one more layer on each, while the devices have room."""
    nd = len(devs)
    dense_start = nd  # the first device holding partial layers
    for i in reversed(range(nd)):
        if shares[i].n_layer == 0:
            break
        dense_start = i
    i = 0
    while i <= dense_start < nd:
        high = _copy(shares)
        for j in range(dense_start, nd):
            move = high[j].n_layer if j < nd - 1 else high[j].n_layer - 1
            high[i].n_layer += move
            high[j].n_layer -= move
            high[j].n_part = 0
        dense_start_high = nd - 1
        mem_high = memory(high, overflow)
        if mem_high[i] > targets[i]:
            delta = high[i].n_full - shares[i].n_full
            while delta > 1:
                step = _step(delta, targets[i], mem[i], mem_high[i])
                test = _copy(shares)
                start = dense_start
                converted = 0
                while start < nd:
                    n = min(step - converted, test[start].n_part)
                    test[start].n_layer -= n
                    test[start].n_part -= n
                    test[i].n_layer += n
                    converted += n
                    if test[start].n_part > 0:
                        break
                    start += 1
                mem_test = memory(test, overflow)
                if mem_test[i] <= targets[i]:
                    shares, mem, dense_start = test, mem_test, start
                else:
                    high, mem_high, dense_start_high = test, mem_test, start
                delta = high[i].n_full - shares[i].n_full
        else:
            shares, mem, dense_start = high, mem_high, dense_start_high

        # part of one more layer: its attention and as many of its projections as fit
        if dense_start < nd and shares[dense_start].n_layer > (0 if i < nd - 1 else 1):
            test = _copy(shares)
            start = dense_start
            test[start].n_layer -= 1
            test[start].n_part -= 1
            test[i].n_layer += 1
            test[i].n_part += 1
            if test[start].n_part == 0:
                start += 1
            overflow_test = list(overflow)
            if i < nd - 1:
                overflow_test[i] = devs[i + 1].buffer

            def fits(candidate: list[_Share], buffers: list[str], i: int) -> list[int] | None:
                used = memory(candidate, buffers)
                ok = used[i] < targets[i] and (i + 1 == nd or used[i + 1] < targets[i + 1])
                return used if ok else None

            test[i].overflow = Fraction.UP
            if (used := fits(test, overflow_test, i)) is not None:
                shares, overflow, mem, dense_start = _copy(test), overflow_test, used, start
                test[i].overflow = Fraction.GATE
                if (used := fits(test, overflow_test, i)) is not None:
                    shares, mem = _copy(test), used
            else:
                test[i].overflow = Fraction.ATTN
                if (used := fits(test, overflow_test, i)) is not None:
                    shares, overflow, mem, dense_start = _copy(test), overflow_test, used, start
        i += 1
    return shares, overflow, mem


class _Adder:
    """Adds the extra model's memory, measured again whenever the target's context changes, to a measurement
    of the target's: per device of the target's (by name; others are not the target's), and the host's."""

    def __init__(self, extra: Extra, notes: list[str]) -> None:
        self._extra = extra
        self._notes = notes
        self._at: tuple[int, Measured | None] | None = None

    def __call__(self, measured: Measured, n_ctx: int) -> Measured:
        if self._at is None or self._at[0] != n_ctx:
            try:
                self._at = (n_ctx, self._extra.measure(n_ctx))
            except EngineError as exc:  # it is optional: fit the target alone
                self._notes.append(f"could not measure the draft model, fitting without it: {exc}")
                self._at = (n_ctx, None)
        other = self._at[1]
        if other is None:
            return measured
        by_name: dict[str, list[int]] = {}
        for d in other.devices:
            sums = by_name.setdefault(d.name, [0, 0, 0])
            for k, v in enumerate((d.model, d.context, d.compute)):
                sums[k] += v
        devices = tuple(self._plus(d, *by_name.get(d.name, (0, 0, 0))) for d in measured.devices)
        host = other.host
        return dataclasses.replace(measured, devices=devices,
                                   host=self._plus(measured.host, host.model, host.context, host.compute))

    def wrap(self, measure: Measure) -> Measure:
        """``measure`` with the extra model added (a trial names its context from here on)."""
        return lambda trial: self(measure(trial), trial.n_ctx)

    def _plus(self, u: Usage, model: int, context: int, compute: int) -> Usage:
        return dataclasses.replace(u, model=u.model + (0 if self._extra.shares_model else model),
                                   context=u.context + context, compute=u.compute + compute)


def cli_args(fitted: Fitted) -> str:
    """The settings as llama-fit-params prints them: ``-c N -ngl N [-ts A,B] [-ot "PATTERN=BUFFER,..."]``."""
    out = f"-c {fitted.n_ctx} -ngl {fitted.n_gpu_layers}"
    split = list(fitted.tensor_split)
    while len(split) > 1 and split[-1] == 0:
        split.pop()
    if len(split) > 1:
        out += " -ts " + ",".join(str(int(x)) for x in split)
    if fitted.overrides:
        out += ' -ot "' + ",".join(f"{p}={b}" for p, b in fitted.overrides) + '"'
    return out


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
            n_layer = int(lib.llama_model_n_layer(m)) + (int(lib.llama_model_n_layer_nextn(m)) if load_mtp else 0)
            return Measured(devices=usages, host=Usage("host", free, total, host[0], host[1], host[2]),
                            n_layer=n_layer,
                            n_ctx_train=int(lib.llama_model_n_ctx_train(m)),
                            n_expert=int(lib.llamatwist_model_n_expert(m)))
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
    buft = lib.ggml_backend_dev_buffer_type(dev)
    buffer = ffi.string(lib.ggml_backend_buft_name(buft)).decode() if buft != ffi.NULL else CPU_BUFFER
    return Usage(ffi.string(lib.ggml_backend_dev_name(dev)).decode(), free, total, model, context, compute, buffer)
