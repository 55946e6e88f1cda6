"""--rpc and llamatwist-rpc-server: the model's layers on another process's devices (ggml's RPC backend).

Each test runs a real ``llamatwist-rpc-server`` (offering this machine's CPU, as rpc-server does without a
GPU) and real servers using it. An RPC server serves one client at a time, so each test has its own.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO, Server, free_port, wait_port

N_LAYERS = 31  # SmolLM2-135M: 30 blocks and the output layer
PROMPTS = ("The capital of France is", "def fibonacci(n):")


class RpcServer:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        # its output goes to a file: a pipe nobody reads fills after some clients, and the server blocks
        self.output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by stop)
        self.written = ""
        self.proc = subprocess.Popen([sys.executable, "-m", "llamatwist.cli.rpc_server", "-p", str(self.port),
                                      "-t", "1", *args], stdout=self.output, stderr=subprocess.STDOUT,
                                     text=True, cwd=REPO)
        wait_port(self.proc, self.port, 60, self.read)

    def read(self) -> str:
        self.output.seek(0)
        return self.output.read()

    def stop(self) -> str:
        """Stop it (again: no-op) and return what it wrote."""
        if not self.output.closed:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.written = self.read()
            self.output.close()
        return self.written


@pytest.fixture
def rpc() -> Iterator[RpcServer]:
    srv = RpcServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def cpu_reference(model_path: str) -> Iterator[Server]:
    srv = Server(["-m", model_path, "-c", "1024", "-np", "1", "-t", "2"])
    yield srv
    srv.stop()


def _greedy(srv: Server, prompt: str) -> list[int]:
    out = srv.post("/completion", {"prompt": prompt, "n_predict": 16, "temperature": 0, "ignore_eos": True,
                                   "return_tokens": True, "cache_prompt": False})
    assert out.status_code == 200, out.text
    return list(out.json()["tokens"])


def _offload(srv: Server) -> dict[str, Any]:
    return dict(srv.get("/props").json()["offload"])


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "llamatwist", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, check=False, env={**os.environ, **(env or {})})


def test_rpc_server_says_what_it_serves(rpc: RpcServer) -> None:
    out = rpc.stop()
    assert f"endpoint       : {rpc.endpoint}" in out and "CPU:" in out, out


def test_list_devices_shows_the_rpc_device(rpc: RpcServer) -> None:
    out = _cli("--list-devices", "--rpc", rpc.endpoint)
    assert out.returncode == 0, out.stderr
    assert re.search(rf"^  RPC0: {re.escape(rpc.endpoint)} \(\d+ MiB, \d+ MiB free\)$", out.stdout, re.MULTILINE), out.stdout


def test_all_layers_on_the_rpc_device_match_the_cpu(rpc: RpcServer, make_server: Any, model_path: str,
                                                    cpu_reference: Server) -> None:
    srv = make_server("-m", model_path, "-c", "1024", "-np", "1", "-t", "2", "--rpc", rpc.endpoint, "-ngl", "99")
    offload = _offload(srv)
    assert offload["backend"] == "RPC"
    assert {"name": "RPC0", "description": rpc.endpoint, "type": "gpu"}.items() <= offload["devices"][1].items()
    assert offload["layers_offloaded"] == offload["layers_total"] == N_LAYERS
    assert f"offloaded {N_LAYERS}/{N_LAYERS} layers to the GPU; weights: " in srv.log()
    assert f"RPC0[{rpc.endpoint}]" in srv.log()
    for prompt in PROMPTS:  # the same CPU kernels on the far side: the same tokens
        assert _greedy(srv, prompt) == _greedy(cpu_reference, prompt)


def test_fit_offloads_the_layers_that_fit_the_rpc_device(rpc: RpcServer, make_server: Any, model_path: str,
                                                         cpu_reference: Server) -> None:
    """-ngl unset: --fit measures the model on RPC0 and offloads only what leaves -fitt MiB free there.

    The RPC server serves its clients one after the other: the listing, a server with room, then one without.
    """
    args = ("-m", model_path, "-c", "1024", "-np", "1", "-t", "2", "--rpc", rpc.endpoint)
    listing = _cli("--list-devices", "--rpc", rpc.endpoint).stdout
    free_mib = int(re.search(r"RPC0: .* (\d+) MiB free\)", listing)[1])  # type: ignore[index]
    roomy = make_server(*args)
    assert _offload(roomy)["layers_offloaded"] == N_LAYERS
    used_mib = int(re.search(r"fit: fits, no changes needed; RPC0: (\d+) MiB used", roomy.log())[1])  # type: ignore[index]
    roomy.stop()

    # Room for all but 8 MiB of it: the compute buffers (there from the first layer) fit, the last layers not.
    srv = make_server(*args, "-fitt", str(free_mib - used_mib + 8))
    offload = _offload(srv)
    assert 0 < offload["layers_offloaded"] < N_LAYERS, offload
    assert offload["n_gpu_layers"] == offload["layers_offloaded"]
    assert f"fit: {offload['layers_offloaded']}/{N_LAYERS} layers offloaded to RPC0" in srv.log()
    assert _greedy(srv, PROMPTS[0]) == _greedy(cpu_reference, PROMPTS[0])


def test_device_flags_may_come_before_rpc(rpc: RpcServer, make_server: Any, model_path: str) -> None:
    """-dev RPC0 written before --rpc (llama-server needs --rpc first), and the variable LLAMA_ARG_RPC."""
    out = _cli("-dev", "RPC0", "--list-devices", env={"LLAMA_ARG_RPC": rpc.endpoint})
    assert out.returncode == 0 and "RPC0:" in out.stdout, out.stderr
    srv = make_server("-m", model_path, "-c", "1024", "-np", "1", "-t", "2", "-dev", "none",
                      "--rpc", rpc.endpoint, "-ngl", "99")
    assert _offload(srv)["layers_offloaded"] == 0  # -dev none: nothing goes to RPC0


def test_unreachable_rpc_server_is_a_clear_error() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _cli("--rpc", f"127.0.0.1:{port}", "--list-devices")
    assert out.returncode == 1
    assert f"--rpc: cannot reach the RPC server at 127.0.0.1:{port}: Connection refused" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "GGML_ASSERT" not in out.stderr


@pytest.mark.parametrize("value", ["localhost", "127.0.0.1:notaport", ":50052", "127.0.0.1:70000", ","])
def test_bad_rpc_endpoints_are_refused(value: str) -> None:
    out = _cli("--rpc", value)
    assert out.returncode == 2, out.stderr
    assert "--rpc" in out.stderr and ("expected host:port" in out.stderr or "no RPC servers" in out.stderr)
    assert "Traceback" not in out.stderr


def test_rpc_server_refuses_an_unknown_device() -> None:
    out = subprocess.run([sys.executable, "-m", "llamatwist.cli.rpc_server", "-d", "Vulkan9", "-p",
                          str(free_port())], capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert out.returncode == 1
    assert "error: unknown device: Vulkan9" in out.stderr and "  CPU: " in out.stderr, out.stderr
