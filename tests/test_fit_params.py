"""--fit on several devices, and MoE models: the settings llamatwist chooses are llama-fit-params' own.

The devices are two real ``llamatwist-rpc-server`` processes (this machine's CPU behind ggml's RPC backend,
GPU-like devices to libllama). Their memory is made a chosen size by ``tests/native/fake_memory.c``,
LD_PRELOADed into both programs: it answers ``ggml_backend_dev_memory`` for the devices it names. Each case
runs llama.cpp's ``llama-fit-params`` (built from the pinned source) and ``llamatwist-fit-params`` with the
same model, flags and memory, and compares the printed settings: context, layers, the split between the
devices and the MoE tensors left in system memory or overflowing to the next device. A server started under
the same memory places the weights as llama-server does and answers as the CPU does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import test_multimodal
from tests.conftest import REPO, Server, free_port
from tests.test_rpc import RpcServer

NATIVE = REPO / "tests" / "native"


@pytest.fixture(scope="module")
def fake_memory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler (the native build needs one too)"
    out = tmp_path_factory.mktemp("fake") / "fake_memory.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(NATIVE / "fake_memory.c"), "-ldl"],
                   check=True)
    return out


@pytest.fixture(scope="module")
def fit_params_ref() -> Path:
    from tests.models import _script

    bn = _script("device_kit").build_native_module()
    return Path(dict(bn.ensure_reference(bn.ensure_native(build=False)))["llama-fit-params"])


@pytest.fixture(scope="module")
def rpcs() -> Iterator[tuple[RpcServer, RpcServer]]:
    pair = (RpcServer(), RpcServer())
    yield pair
    for srv in pair:
        srv.stop()


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> str:
    """GLM-4.5's architecture, 8 MoE layers of 8 experts (~13 MB of experts per layer), random weights."""
    sys.path.insert(0, str(REPO / "scripts"))
    from make_mtp_model import make

    out = tmp_path_factory.mktemp("moe") / "moe.gguf"
    make(out, Path(model_path), arch="glm4moe", n_heads=0, n_layer=8, n_embd=256, n_head=4, n_head_kv=2, n_ff=512,
         n_expert=8, n_ff_exp=512)
    return str(out)


def _env(fake_memory: Path, memory: dict[str, int]) -> dict[str, str]:
    return {**os.environ, "LD_PRELOAD": str(fake_memory),
            "FAKE_DEVICE_MEMORY": ",".join(f"{name}={mib}" for name, mib in memory.items())}


def _both(command: list[str], args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
                          check=False)


def _fit_args(fit_params_ref: Path, fake_memory: Path, rpcs: tuple[RpcServer, ...], memory: dict[str, int],
              model: str, *flags: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    used = rpcs[: len(memory)]
    args = ["-m", model, "--rpc", ",".join(r.endpoint for r in used), *flags]
    env = _env(fake_memory, memory)
    theirs = _both([str(fit_params_ref)], args, env)
    ours = _both([sys.executable, "-m", "llamatwist.cli.fit_params"], args, env)
    return theirs, ours


# (model, device memory in MiB, flags): each a different path through the fit. Full use: the dense model
# ~280 MiB (output layer and compute ~110 of it), the MoE model ~200 MiB (experts ~105).
CASES = [
    ("dense", {"RPC0": 300}, ["-fitt", "0", "-fitc", "1024"]),  # the context shrinks, all layers fit
    ("dense", {"RPC0": 150}, ["-fitt", "0", "-fitc", "1024"]),  # the least context, some layers
    ("dense", {"RPC0": 60, "RPC1": 200}, ["-fitt", "0", "-fitc", "1024"]),  # split between two devices
    ("dense", {"RPC0": 200, "RPC1": 150}, ["-fitt", "0", "-fitc", "1024"]),
    ("dense", {"RPC0": 100, "RPC1": 120}, ["-np", "2", "-fitt", "10,20", "-fitc", "512"]),  # margins per device
    ("moe", {"RPC0": 200}, ["-fitt", "0"]),  # fits as it is
    ("moe", {"RPC0": 140}, ["-fitt", "0"]),  # layers without their experts
    ("moe", {"RPC0": 50, "RPC1": 130}, ["-fitt", "0"]),  # whole layers, a gate overflowing to the next device
    ("moe", {"RPC0": 10, "RPC1": 170}, ["-fitt", "0"]),
    ("moe", {"RPC0": 30, "RPC1": 150}, ["-fitt", "0"]),  # a part layer overflowing to the CPU
    ("moe", {"RPC0": 1040, "RPC1": 1200}, []),  # the default margin, 1024 MiB
]


@pytest.mark.parametrize(("which", "memory", "flags"), CASES,
                         ids=[f"{w}-{'-'.join(f'{k}={v}' for k, v in m.items())}" for w, m, _ in CASES])
def test_fit_chooses_what_llama_fit_params_chooses(fit_params_ref: Path, fake_memory: Path,
                                                   rpcs: tuple[RpcServer, RpcServer], model_path: str,
                                                   moe_model: str, which: str, memory: dict[str, int],
                                                   flags: list[str]) -> None:
    model = moe_model if which == "moe" else model_path
    theirs, ours = _fit_args(fit_params_ref, fake_memory, rpcs, memory, model, "-np", "1", *flags)
    assert theirs.returncode == 0, theirs.stderr[-2000:]
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert ours.stdout.strip() == theirs.stdout.strip(), ours.stderr[-3000:]
    assert ours.stdout.startswith("-c ")


def test_fitted_settings_are_not_trivial(fit_params_ref: Path, fake_memory: Path, rpcs: tuple[RpcServer, RpcServer],
                                         moe_model: str) -> None:
    """The cases above reach the paths that matter: a split, experts on the CPU, a part layer elsewhere."""
    _, split = _fit_args(fit_params_ref, fake_memory, rpcs, {"RPC0": 50, "RPC1": 130}, moe_model, "-np", "1",
                         "-fitt", "0")
    assert " -ts 8,1 " in split.stdout and r'-ot "blk\.7\.ffn_down.*=' in split.stdout, split.stdout
    _, experts = _fit_args(fit_params_ref, fake_memory, rpcs, {"RPC0": 140}, moe_model, "-np", "1", "-fitt", "0")
    assert "exps=CPU" in experts.stdout and "-ts" not in experts.stdout, experts.stdout
    assert "layers offloaded to RPC0 (" in experts.stderr  # the log says some layers are partial


def test_settings_the_user_fixed_fail_as_llama_fit_params_fails(fit_params_ref: Path, fake_memory: Path,
                                                                rpcs: tuple[RpcServer, RpcServer],
                                                                model_path: str) -> None:
    theirs, ours = _fit_args(fit_params_ref, fake_memory, rpcs, {"RPC0": 100}, model_path, "-np", "1", "-fitt", "0",
                             "-ngl", "20")
    assert theirs.returncode == ours.returncode == 1
    assert ours.stdout == ""
    assert "fit: -ngl set by the user to 20: not changed" in ours.stderr
    assert "error: failed to fit CLI arguments to free memory" in ours.stderr


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "llamatwist.cli.fit_params", "-m", str(tmp_path / "none.gguf")],
                         capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert out.returncode == 1 and "model file not found" in out.stderr and "Traceback" not in out.stderr


def _loads(log: str, after: str = "") -> list[dict[str, float]]:
    """Each model load's weight buffers (name: MiB), in order, as the log reports them after ``after``."""
    log = log[log.index(after):] if after else log
    loads: list[dict[str, float]] = []
    for line in log.splitlines():
        if "offloaded" in line and "layers to" in line:
            loads.append({})
        ours = re.search(r"weights: (.*)", line)  # llamatwist: "weights: CPU_Mapped 24.00 MiB, RPC0[...] 5.26 MiB"
        if ours:
            loads[-1].update({name: float(mib) for name, mib in re.findall(r"(\S+) ([\d.]+) MiB", ours[1])})
        theirs = re.search(r"load_tensors:\s+(\S+) model buffer size =\s*([\d.]+) MiB", line)
        if theirs:
            loads[-1][theirs[1]] = float(theirs[2])
    return loads


def _llama_server_log(llama_server: list[str], flags: list[str], env: dict[str, str], tmp_path: Path) -> str:
    """What llama-server (-v) logs until it listens; then it is stopped."""
    log_path = tmp_path / "llama-server.log"
    with log_path.open("w") as log_file:
        ref = subprocess.Popen([*llama_server, *flags, "--port", str(free_port()), "-v"], stdout=log_file,
                               stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + 120
            while "listening on" not in log_path.read_text() and time.monotonic() < deadline:
                assert ref.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.2)
        finally:
            ref.terminate()
            ref.wait(timeout=30)
    return log_path.read_text()


SERVED = [  # (model, device memory in MiB, flags, what the fit says it loads with)
    ("moe", {"RPC0": 20, "RPC1": 80}, [], 'fit: loading with -c 4096 -ngl 9 -ts 3,6 -ot "blk\\.2\\.ffn_(gate|up|'),
    # the draft model (here the target itself) is measured with the target: the least context, 29 layers
    ("dense", {"RPC0": 250}, ["-md", "TARGET", "-fitc", "1024"], "fit: loading with -c 1024 -ngl 29\n"),
]


@pytest.mark.parametrize(("which", "memory", "extra", "chosen"), SERVED, ids=["moe-two-devices", "dense-with-draft"])
def test_server_loads_as_llama_server_does(llama_server: list[str], fake_memory: Path,
                                          rpcs: tuple[RpcServer, RpcServer], moe_model: str, model_path: str,
                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path, which: str,
                                          memory: dict[str, int], extra: list[str], chosen: str) -> None:
    """Under the same memory, llamatwist's server fits and places every model's weights as llama-server does
    (its output limits make the compute buffers smaller than llama-fit-params measures; a draft model counts
    with the target), and answers as the CPU."""
    model = moe_model if which == "moe" else model_path
    extra = [model if x == "TARGET" else x for x in extra]
    prompt = {"prompt": "The capital of France is", "n_predict": 12, "temperature": 0, "ignore_eos": True,
              "return_tokens": True}
    cpu = Server(["-m", model, "-np", "1", "-t", "2", "-dev", "none"])
    try:
        expected = cpu.post("/completion", prompt).json()["tokens"]
    finally:
        cpu.stop()
    env = _env(fake_memory, memory)
    endpoints = ",".join(r.endpoint for r in rpcs[: len(memory)])
    flags = ["-m", model, "-np", "1", "-t", "2", "--rpc", endpoints, "-fitt", "0", *extra]
    theirs = _loads(_llama_server_log(llama_server, flags, env, tmp_path), after="successfully fit params")
    assert len(theirs) == (2 if "-md" in extra else 1) and all(len(load) >= 2 for load in theirs), theirs
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    srv = Server(flags)
    try:
        log = srv.log()
        assert chosen in log, log[-3000:]
        assert _loads(log, after="fit: loading with") == theirs, log[-3000:]
        offload: dict[str, Any] = srv.get("/props").json()["offload"]
        assert offload["layers_offloaded"] == int(re.findall(r"-ngl (\d+)", chosen)[0]), offload
        out = srv.post("/completion", prompt)
        assert out.status_code == 200 and out.json()["tokens"] == expected
    finally:
        srv.stop()


vision_dir = test_multimodal.vision_dir  # the fixture: the generated vision model


def test_projector_memory_is_kept_free_as_llama_server_keeps_it(llama_server: list[str], fake_memory: Path,
                                                                 vision_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """--mmproj's memory (libmtmd's estimate, 0.67 MiB here) is added to the fit margin of its device, the host
    here, whose total is made 1224 MiB: the context is 3840 where it is 4096 without the projector, as in
    llama-server."""
    env = _env(fake_memory, {"CPU": 1224})
    base = ["-m", str(vision_dir / "model.gguf"), "-np", "1", "-t", "2", "-fitc", "1024"]
    with_projector = [*base, "--mmproj", str(vision_dir / "mmproj.gguf")]
    theirs = _llama_server_log(llama_server, with_projector, env, tmp_path)
    reserved = re.search(r"\[mtmd\] adding ([\d.]+) MiB to fit_params_target for device CPU", theirs)
    n_ctx = re.search(r"new slot, n_ctx = (\d+)", theirs)
    assert reserved and n_ctx, theirs[-3000:]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx_of: dict[str, int] = {}
    for name, flags in (("with", with_projector), ("without", base)):
        srv = Server(flags)
        try:
            ctx_of[name] = srv.get("/props").json()["default_generation_settings"]["n_ctx"]
            if name == "with":
                log = srv.log()
                assert f"fit: {reserved[1]} MiB kept free on device 0 for the multimodal projector" in log, log
        finally:
            srv.stop()
    assert ctx_of["with"] == int(n_ctx[1]) < ctx_of["without"], ctx_of
