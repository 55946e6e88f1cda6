"""--fit, -fitt, -fitc: an unset context size (and, on a GPU, -ngl) fitted to the memory there is.

The search (llamatwist.engine.fit.fit) runs here against a model of memory use with known answers; the
measurement and the whole start-up run against the real model, in real server processes. On a GPU build
tests/test_gpu.py checks the layers it offloads.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import Any

import gguf
import pytest

from llamatwist.cli import ConfigError, parse_config
from llamatwist.engine.context import ContextParams
from llamatwist.engine.errors import EngineError
from llamatwist.engine.fit import MIB, Extra, FitRequest, Measured, Trial, Usage, fit, measure
from tests.conftest import REPO, Server

N_LAYER = 30
TRAIN = 8192
WEIGHTS = 100 * MIB  # spread evenly over N_LAYER + 1 layers
KV_PER_TOKEN = 20 * 1024  # bytes, all layers
COMPUTE = 20 * MIB
HOST_TOTAL = 16 * 1024 * MIB


def model_of_memory(gpu_free: int | None = None) -> tuple[Any, list[tuple[int, int]]]:
    """A measure callable for a dense model (on one GPU with gpu_free bytes if given), and its calls."""
    calls: list[tuple[int, int]] = []

    def measure_(trial: Trial) -> Measured:
        n_ctx, ngl = trial.n_ctx, trial.n_gpu_layers
        calls.append((n_ctx, ngl))
        ctx = n_ctx or TRAIN
        if gpu_free is None:
            host = Usage("host", HOST_TOTAL, HOST_TOTAL, WEIGHTS, ctx * KV_PER_TOKEN, COMPUTE)
            return Measured((), host, N_LAYER, TRAIN)
        on_gpu = N_LAYER + 1 if ngl < 0 else min(ngl, N_LAYER + 1)
        share = on_gpu / (N_LAYER + 1)
        dev = Usage("GPU0", gpu_free, gpu_free, int(WEIGHTS * share), int(ctx * KV_PER_TOKEN * share),
                    COMPUTE if on_gpu else 0)
        host = Usage("host", HOST_TOTAL, HOST_TOTAL, WEIGHTS - dev.model, ctx * KV_PER_TOKEN - dev.context,
                     COMPUTE // 4)
        return Measured((dev,), host, N_LAYER, TRAIN)

    return measure_, calls


def used_at(n_ctx: int) -> int:
    return WEIGHTS + n_ctx * KV_PER_TOKEN + COMPUTE


def test_unset_context_is_the_training_context_per_stream() -> None:
    measure_, calls = model_of_memory()
    out = fit(measure_, FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=4))
    assert (out.n_ctx, out.n_gpu_layers, out.ok) == (4 * TRAIN, -1, True)
    assert calls == [(0, -1), (4 * TRAIN, -1)]  # measured again at the whole context
    assert "no changes needed" in out.notes[0]


def test_unified_cache_keeps_the_training_context() -> None:
    measure_, calls = model_of_memory()
    out = fit(measure_, FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=1))
    assert (out.n_ctx, out.ok) == (TRAIN, True)
    assert calls == [(0, -1)]


def test_context_shrinks_linearly_to_leave_the_margin() -> None:
    measure_, calls = model_of_memory()
    streams = 2
    n_max, n_min = TRAIN * streams, 4096 * streams
    # Leave free all but what the model takes at 3/4 of the way from the least to the most context.
    allowed = used_at(n_min) + (used_at(n_max) - used_at(n_min)) * 3 // 4
    margin_mib = (HOST_TOTAL - allowed) // MIB
    out = fit(measure_, FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=streams, margins_mib=(margin_mib,)))
    assert out.ok, out.notes
    assert calls[-1] == (n_min, -1)  # measured at the least context to interpolate
    assert out.n_ctx % (256 * streams) == 0
    assert n_min < out.n_ctx < n_max
    assert used_at(out.n_ctx) <= HOST_TOTAL - margin_mib * MIB  # what it chose fits
    assert used_at(out.n_ctx + 256 * streams) > HOST_TOTAL - margin_mib * MIB - MIB  # and is about the most
    assert f"context size reduced from {n_max} to {out.n_ctx}" in out.notes


def test_a_draft_model_counts_with_the_target() -> None:
    """The draft's memory (measured again at each context size) is added: where the target alone fits, the
    two need a smaller context; a draft that cannot be measured leaves the target fitted alone, said."""
    measure_, _ = model_of_memory()
    draft_at: list[int] = []

    def draft(n_ctx: int) -> Measured:
        draft_at.append(n_ctx)
        return measure_(Trial(n_ctx, -1))  # a draft as big as the target

    margin_mib = (HOST_TOTAL - used_at(TRAIN) * 3 // 2) // MIB  # the target alone fits, two need less context
    request = FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=1, margins_mib=(margin_mib,), n_ctx_min=1024)
    assert fit(measure_, request).n_ctx == TRAIN
    out = fit(measure_, request, Extra(draft))
    assert out.ok and 1024 <= out.n_ctx < TRAIN, out.notes
    assert draft_at == [TRAIN, 1024]  # at the target's context, measured once per context
    assert 2 * used_at(out.n_ctx) <= HOST_TOTAL - margin_mib * MIB

    def broken(n_ctx: int) -> Measured:
        raise EngineError("no such file")

    alone = fit(measure_, request, Extra(broken))
    assert alone.n_ctx == TRAIN
    assert "could not measure the draft model, fitting without it: no such file" in alone.notes


def test_reserved_memory_is_added_to_its_devices_margin() -> None:
    """A projector's bytes, by ggml's device index, are left free beside that device's margin."""
    free = 200 * MIB
    measure_, _ = model_of_memory(gpu_free=free)
    request = FitRequest(n_ctx=4096, n_gpu_layers=-1, n_streams=1, margins_mib=(100,))
    plain = fit(measure_, request)
    reserved = fit(measure_, dataclasses.replace(request, reserved=(20 * MIB,)))
    elsewhere = fit(measure_, dataclasses.replace(request, reserved=(0, 20 * MIB)))  # another device's
    assert reserved.n_gpu_layers < plain.n_gpu_layers == elsewhere.n_gpu_layers
    assert measure_(Trial(4096, reserved.n_gpu_layers)).devices[0].used <= free - 120 * MIB


def test_shared_weights_are_not_counted_twice() -> None:
    """An MTP context runs on the target's weights: only its cache and compute buffers count."""
    measure_, _ = model_of_memory()
    margin_mib = (HOST_TOTAL - used_at(TRAIN) - TRAIN * KV_PER_TOKEN - COMPUTE) // MIB  # room for one more cache
    request = FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=1, margins_mib=(margin_mib,))
    assert fit(measure_, request, Extra(lambda n: measure_(Trial(n, -1)), shares_model=True)).n_ctx == TRAIN
    assert fit(measure_, request, Extra(lambda n: measure_(Trial(n, -1)))).n_ctx < TRAIN


def test_nothing_fits_the_least_context_is_taken_and_said() -> None:
    measure_, _ = model_of_memory()
    out = fit(measure_, FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=1, margins_mib=(HOST_TOTAL // MIB,),
                                   n_ctx_min=1024))
    assert (out.n_ctx, out.ok) == (1024, False)
    assert any("unable to fit" in note for note in out.notes), out.notes


def test_a_context_the_user_set_is_not_changed() -> None:
    measure_, calls = model_of_memory()
    out = fit(measure_, FitRequest(n_ctx=2048, n_gpu_layers=-1, n_streams=1, margins_mib=(HOST_TOTAL // MIB,)))
    assert (out.n_ctx, out.ok) == (2048, False)
    assert calls == [(2048, -1)]
    assert "context size set by the user to 2048: not changed" in out.notes


def test_a_training_context_below_the_minimum_is_kept() -> None:
    measure_, _ = model_of_memory()
    out = fit(measure_, FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=1, margins_mib=(HOST_TOTAL // MIB,),
                                   n_ctx_min=TRAIN * 2))
    assert out.n_ctx == TRAIN and not out.ok


def test_whole_context_asked_for_is_not_shrunk() -> None:
    measure_, _ = model_of_memory()
    out = fit(measure_, FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=2, margins_mib=(HOST_TOTAL // MIB,),
                                   n_ctx_min=-1))
    assert (out.n_ctx, out.ok) == (2 * TRAIN, False)
    assert f"the full context size {2 * TRAIN} was asked for (-c 0): not changed" in out.notes


def test_gpu_gets_the_layers_that_fit() -> None:
    free = 200 * MIB
    measure_, _ = model_of_memory(gpu_free=free)
    margin = 100  # MiB: the whole model (with the least context) does not fit in the other 100
    out = fit(measure_, FitRequest(n_ctx=4096, n_gpu_layers=-1, n_streams=1, margins_mib=(margin,)))
    assert out.ok and out.n_ctx == 4096
    assert 0 < out.n_gpu_layers < N_LAYER + 1

    def gpu_use(ngl: int) -> int:
        return measure_(Trial(4096, ngl)).devices[0].used

    assert gpu_use(out.n_gpu_layers) <= free - margin * MIB < gpu_use(out.n_gpu_layers + 1)
    assert any(n.startswith(f"{out.n_gpu_layers}/{N_LAYER + 1} layers offloaded to GPU0:") for n in out.notes)


def test_gpu_layers_the_user_set_are_not_changed() -> None:
    measure_, _ = model_of_memory(gpu_free=150 * MIB)
    out = fit(measure_, FitRequest(n_ctx=4096, n_gpu_layers=99, n_streams=1))
    assert (out.n_gpu_layers, out.ok) == (99, False)
    assert "-ngl set by the user to 99: not changed" in out.notes


def test_gpu_with_room_changes_nothing() -> None:
    measure_, _ = model_of_memory(gpu_free=8 * 1024 * MIB)
    out = fit(measure_, FitRequest(n_ctx=0, n_gpu_layers=-1, n_streams=1))
    assert (out.n_ctx, out.n_gpu_layers, out.ok) == (TRAIN, -1, True)


# ---------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def trained_ctx(model_path: str) -> int:
    reader = gguf.GGUFReader(model_path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    return int(reader.fields[f"{arch}.context_length"].parts[-1][0])


def test_measure_reads_the_models_memory(model_path: str, trained_ctx: int) -> None:
    small = measure(model_path, context=ContextParams(n_ctx=1024), n_gpu_layers=-1)
    big = measure(model_path, context=ContextParams(n_ctx=4096), n_gpu_layers=-1)
    assert small.devices == ()  # the CPU build
    assert (small.n_ctx_train, small.n_layer) == (trained_ctx, 30)
    assert small.host.total > 0
    assert small.host.model == big.host.model > 50 * MIB  # the weights (~92 MiB at Q4_1), not read
    assert big.host.context == 4 * small.host.context > 0  # the KV cache grows with the context
    assert small.host.compute > 0


def _slots(srv: Server) -> list[int]:
    return [s["n_ctx"] for s in srv.get("/slots").json()]


def test_unset_context_gives_each_slot_the_training_context(make_server: Any, model_path: str,
                                                           trained_ctx: int) -> None:
    """As llama-server: -np 2 without -c gives each of the two KV streams the model's whole context."""
    srv = make_server("-m", model_path, "-np", "2", "-t", "2")
    assert _slots(srv) == [trained_ctx, trained_ctx]
    assert srv.get("/props").json()["default_generation_settings"]["n_ctx"] == trained_ctx
    assert "fit: fits, no changes needed; host: " in srv.log()
    out = srv.post("/completion", {"prompt": "Hello", "n_predict": 4, "temperature": 0})
    assert out.status_code == 200 and out.json()["tokens_predicted"] == 4


def test_fit_off_shares_the_training_context(make_server: Any, model_path: str, trained_ctx: int) -> None:
    srv = make_server("-m", model_path, "-np", "2", "-t", "2", "-fit", "off")
    assert _slots(srv) == [trained_ctx // 2] * 2
    assert "fit:" not in srv.log()


def test_fit_target_shrinks_the_context(make_server: Any, model_path: str, trained_ctx: int) -> None:
    """A margin that leaves only part of the most context's memory: a smaller context, said in the log."""
    at_most = measure(model_path, context=ContextParams(n_ctx=2 * trained_ctx, n_seq_max=2, kv_unified=False),
                      n_gpu_layers=-1)
    kv = at_most.host.context
    margin = (at_most.host.total - at_most.host.used + kv // 4) // MIB  # a quarter of the KV cache too many
    srv = make_server("-m", model_path, "-np", "2", "-t", "2", "-fitt", str(margin), "-fitc", "1024")
    slots = _slots(srv)
    assert slots[0] == slots[1] and 1024 < slots[0] < trained_ctx and slots[0] % 256 == 0, slots
    assert f"fit: context size reduced from {2 * trained_ctx} to {2 * slots[0]}" in srv.log()
    out = srv.post("/completion", {"prompt": "Hello", "n_predict": 4, "temperature": 0})
    assert out.status_code == 200


def test_explicit_whole_context_is_kept(make_server: Any, model_path: str, trained_ctx: int) -> None:
    """-c 0 given: no shrinking under any margin, and --kv-unified-per-slot only caps the slots (llama-server)."""
    srv = make_server("-m", model_path, "-c", "0", "-np", "2", "-kvu", "-t", "2", "-fitt", "100000000",
                      "--kv-unified-per-slot", "384")
    assert _slots(srv) == [384, 384]
    assert f"n_ctx {trained_ctx}, 2 slots of 384 tokens" in srv.log()
    assert f"fit: the full context size {trained_ctx} was asked for (-c 0): not changed" in srv.log()


def test_fit_that_cannot_succeed_warns_and_serves(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "1024", "-np", "1", "-t", "2", "-fitt", "100000000")
    log = srv.log()
    assert "W " in log and "fit: context size set by the user to 1024: not changed" in log, log
    assert _slots(srv) == [1024]
    assert srv.get("/health").status_code == 200


@pytest.mark.parametrize(("argv", "env", "expected"), [
    ([], {}, (True, (1024,), 4096)),
    (["-fit", "off", "-fitt", "512", "-fitc", "2048"], {}, (False, (512,), 2048)),
    (["--fit", "on", "--fit-target", "2048,512", "--fit-ctx", "0"], {}, (True, (2048, 512), 0)),
    (["-fitt", "100/200"], {}, (True, (100, 200), 4096)),
    ([], {"LLAMA_ARG_FIT": "false", "LLAMA_ARG_FIT_TARGET": "64", "LLAMA_ARG_FIT_CTX": "8192"},
     (False, (64,), 8192)),
    (["-fit", "enabled"], {"LLAMA_ARG_FIT": "off"}, (True, (1024,), 4096)),  # the flag wins
    # an explicit -c 0 asks for the whole context: never shrunk (llama-server), unless -fitc says otherwise
    (["-c", "0"], {}, (True, (1024,), -1)),
    ([], {"LLAMA_ARG_CTX_SIZE": "0"}, (True, (1024,), -1)),
    (["-c", "0", "-fitc", "2048"], {}, (True, (1024,), 2048)),
    (["-c", "4096"], {}, (True, (1024,), 4096)),
    (["--fim-qwen-1.5b-default"], {}, (True, (1024,), 4096)),  # a preset's context 0 is not the user's
])
def test_fit_flags(argv: list[str], env: dict[str, str], expected: tuple[Any, ...]) -> None:
    config = parse_config(argv, env)
    assert (config.fit, config.fit_target_mib, config.fit_ctx) == expected


@pytest.mark.parametrize(("argv", "message"), [
    (["-fit", "maybe"], "unknown value 'maybe': expected on or off"),
    (["-fitt", "-5"], "must be >= 0"),
    (["-fitt", "lots"], "expected an integer"),
    (["-fitt", ",".join(["1"] * 300)], "input configs, but system only has"),
    (["-fitc", "-1"], "must be >= 0"),
])
def test_bad_fit_values_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(argv, {})


def test_bad_fit_value_stops_the_start_up() -> None:
    proc = subprocess.run([sys.executable, "-m", "llamatwist", "-fit", "maybe"], capture_output=True, text=True,
                          timeout=120, cwd=REPO, check=False)
    assert proc.returncode != 0
    assert "-fit" in proc.stderr and "maybe" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
