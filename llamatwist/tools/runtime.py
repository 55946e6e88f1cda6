"""--tools-runtime: the isolate every tool call runs in when its request names none (llama-server's
``server_tools_runtime``).

``docker:<image>`` / ``podman:<image>`` spawns a container that this server owns, respawns it if it dies and
removes it at exit. Any other spec (``docker-container:<id>``, ``ssh:<target>``) names a target that already
exists: it is validated once, at start-up, and passed through unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from typing import IO

from llamatwist.tools.io import ContainerRuntimeSpec, make_io

__all__ = [
    "ContainerToolsRuntime",
    "StaticToolsRuntime",
    "ToolsRuntime",
    "container_run_argv",
    "make_tools_runtime",
]

log = logging.getLogger("llamatwist.tools")

CID_WAIT = 10.0  # seconds for `<engine> run` to write the container id (llama-server: 100 x 100 ms)
STOP_WAIT = 10.0  # seconds for the container to go once its shell's stdin is closed
_STDERR_TAIL = 2048  # bytes of the engine's stderr kept for an error message


class ToolsRuntime(ABC):
    @abstractmethod
    def spec(self) -> str:
        """The runtime string ``make_io`` takes, asked once per tool call."""

    def close(self) -> None:
        """Releases what the runtime owns; called once, at shutdown."""


class StaticToolsRuntime(ToolsRuntime):
    """A target that already exists and needs no lifecycle."""

    def __init__(self, spec: str) -> None:
        self._spec = spec

    def spec(self) -> str:
        return self._spec


def container_run_argv(bin: str, cidfile: str, image: str) -> list[str]:
    """``<engine> run --rm -i --cidfile <file> <image> sh``: the shell blocks reading its stdin, which we hold
    open, so the container lives until we close it; --rm then removes it."""
    return [bin, "run", "--rm", "-i", "--cidfile", cidfile, image, "sh"]


class _StderrTail:
    """Drains the engine client's stderr (an unread pipe would block a chatty engine pulling an image) and keeps
    its last bytes, which say why a container did not start."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._tail = bytearray()
        assert proc.stderr is not None
        self._file: IO[bytes] | None = proc.stderr
        self._fd = proc.stderr.fileno()
        self._thread = threading.Thread(target=self._drain, name="tools-runtime-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self._fd, 4096):
            self._tail += chunk
            del self._tail[:-_STDERR_TAIL]

    def text(self) -> str:
        self.close()
        return bytes(self._tail).decode("utf-8", "replace").strip()

    def close(self) -> None:
        """Once the client has exited: its pipe is at EOF, or about to be."""
        self._thread.join(1.0)
        if not self._thread.is_alive() and self._file is not None:
            self._file.close()
            self._file = None


class ContainerToolsRuntime(ToolsRuntime):
    """Owns the container of ``--tools-runtime <engine>:<image>``: spawned here, stopped by ``close``."""

    def __init__(self, spec: str) -> None:
        parsed = ContainerRuntimeSpec.parse(spec)
        if parsed is None:
            raise ValueError(f"unknown --tools-runtime option: {spec}")
        if not parsed.arg:
            raise ValueError(f"--tools-runtime {parsed.bin}:<image> requires an image name")
        self.bin = parsed.bin
        self.image = parsed.arg
        self.container_id = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: _StderrTail | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._spawn()

    def spec(self) -> str:
        with self._lock:
            if self._closed:
                raise RuntimeError("the tools runtime is shut down")
            if self._proc is None or self._proc.poll() is not None:
                log.warning('%s tools runtime container "%s" died, respawning', self.bin, self.container_id)
                self._spawn()
            return f"{self.bin}-container:{self.container_id}"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        stderr, self._stderr = self._stderr, None
        if proc is None:
            return
        # EOF on its stdin ends the container's shell (its pid 1); --rm then removes the container
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            log.warning('%s tools runtime container "%s" did not stop, killing its client', self.bin,
                        self.container_id)
            proc.kill()
            proc.wait()
        if stderr is not None:
            stderr.close()

    def _spawn(self) -> None:
        self._stop()  # the previous client, if any, is reaped first
        workdir = tempfile.mkdtemp(prefix="llamatwist-tools-runtime-")
        # the engine refuses a --cidfile that exists: a fresh directory holds a name that does not
        cidfile = os.path.join(workdir, "cid")
        try:
            try:
                proc = subprocess.Popen(container_run_argv(self.bin, cidfile, self.image), stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as exc:
                raise RuntimeError(f"failed to spawn {self.bin} container for tools runtime (image: {self.image}): "
                                   f"{exc.strerror}") from None
            stderr = _StderrTail(proc)
            try:
                cid = self._wait_for_cid(proc, cidfile, stderr)
            except BaseException:
                if proc.stdin is not None:
                    proc.stdin.close()
                raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._proc, self._stderr = proc, stderr
        self.container_id = cid

    def _wait_for_cid(self, proc: subprocess.Popen[bytes], cidfile: str, stderr: _StderrTail) -> str:
        deadline = time.monotonic() + CID_WAIT
        while True:
            try:
                with open(cidfile, encoding="utf-8") as f:
                    cid = f.readline().strip()
            except OSError:
                cid = ""
            if cid:
                return cid
            if proc.poll() is not None:
                # it is gone already (no daemon, no such image): say why instead of waiting out the clock
                raise RuntimeError(f"{self.bin} container for tools runtime exited with status {proc.returncode} "
                                   f"(image: {self.image}): {stderr.text()}")
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                stderr.close()
                raise RuntimeError(f"timed out waiting for {self.bin} container to start (image: {self.image})")
            time.sleep(0.1)


def make_tools_runtime(spec: str) -> ToolsRuntime:
    """The runtime of ``--tools-runtime <spec>``. ValueError, with llama-server's message, for a bad spec;
    RuntimeError when an owned container cannot be started."""
    parsed = ContainerRuntimeSpec.parse(spec)
    if parsed is not None and not parsed.attach:
        return ContainerToolsRuntime(spec)
    make_io("", spec)  # nothing to own: just reject a bad spec now
    return StaticToolsRuntime(spec)
