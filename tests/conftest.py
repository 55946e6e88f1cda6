"""Shared fixtures: the real default model and real server processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_path() -> str:
    from llamatwist.models import ensure_default_model

    return str(ensure_default_model())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(proc: subprocess.Popen[Any], port: int, timeout: float, output: Callable[[], str] = lambda: "") -> None:
    """Wait until the child `proc` listens on `port`; fails with its `output()` when it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, output()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout} s") from None
            time.sleep(0.05)


class Server:
    """A llamatwist process on a free port, stopped at teardown."""

    def __init__(self, args: list[str], command: list[str] | None = None, wait: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llamatwist-test-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  # closed in stop()
        cmd = command or [sys.executable, "-m", "llamatwist"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, json: object = None, **kw: object) -> requests.Response:
        return requests.post(self.url + path, json=json, timeout=120, **kw)  # type: ignore[arg-type]

    def get(self, path: str, **kw: object) -> requests.Response:
        return requests.get(self.url + path, timeout=60, **kw)  # type: ignore[arg-type]

    def stream(self, path: str, body: dict[str, Any], timeout: float = 300) -> list[dict[str, Any]]:
        """A streamed request read to its end: its ``data:`` events (a 200 asserted)."""
        with requests.post(self.url + path, json={**body, "stream": True}, stream=True, timeout=timeout) as r:
            assert r.status_code == 200, r.text
            return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith(b"data: ")
                    and line != b"data: [DONE]"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def staggered_streams(srv: Server, bodies: list[dict[str, Any]], delay: float = 0.5,
                      path: str = "/completion") -> list[list[dict[str, Any]]]:
    """Streamed requests, each sent ``delay`` s after the one before (while it generates), all read to the end:
    each one's events, in the order of ``bodies``."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        futures: list[Future[list[dict[str, Any]]]] = []
        for body in bodies:
            if futures:
                time.sleep(delay)
            futures.append(pool.submit(srv.stream, path, body))
        return [f.result() for f in futures]


@pytest.fixture(scope="session")
def server(model_path: str) -> Iterator[Server]:
    """One shared server: 4 slots, metrics on, small context."""
    srv = Server(["-m", model_path, "-np", "4", "-c", "4096", "-t", "2", "--metrics"])
    yield srv
    srv.stop()


@pytest.fixture
def make_server(model_path: str) -> Iterator[object]:
    started: list[Server] = []

    def start(*args: str, command: list[str] | None = None, wait: bool = True) -> Server:
        srv = Server(list(args), command=command, wait=wait)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def llama_server() -> list[str]:
    """The command of llama.cpp's own llama-server, built from the same pinned source (the first build compiles
    for minutes on 2 cores): what tests compare llamatwist against."""
    from tests.models import _script

    bn = _script("device_kit").build_native_module()
    return [str(dict(bn.ensure_reference(bn.ensure_native(build=False)))["llama-server"])]
