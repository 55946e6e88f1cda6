"""Closed-loop load generator for ``POST /completion`` (streaming).

C clients each send a request, read its SSE stream to the end, and send the
next one at once, for ``--warmup`` + ``--duration`` seconds (or until
``--requests`` requests have completed).  Plain asyncio streams speak
HTTP/1.1 (keep-alive, chunked transfer) so there is no extra dependency and
the client stays cheap: on a small machine the load generator competes with
the server for the same cores.

    python -m bench.loadgen --spawn --clients 1,8 --duration 30
    python -m bench.loadgen --url http://127.0.0.1:8080 --clients 4

Measured per C, over the window [warmup, warmup + duration] only (clients
are all busy throughout it; in-flight requests are cut at its end):

* tok/s: generated tokens that arrived in the window / window length.  One
  streamed partial chunk is one token; the final chunk carries
  ``timings.predicted_n - partials`` more (0 for llama-server, 1 when the
  last token rides on the final chunk) -- both are counted and the
  convention seen is reported, with any request where the counts disagree;
* TTFT p50/p95: request sent -> first token chunk;
* ITL p50/p95: gap between consecutive token chunks of one request;
* decode tok/s: 1 / the mean of those gaps -- one stream's rate once its first token came, prompt
  processing left out (what speculative decoding speeds up);
* the server's own ``timings.predicted_per_second`` (mean per request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from bench.common import (
    DEFAULT_CTX,
    DEFAULT_N_PREDICT,
    DEFAULT_PROMPT,
    CpuMeter,
    default_threads,
    machine_info,
    parse_clients,
    percentile,
    resolve_model,
    save_results,
)

__all__ = ["LoadResult", "RequestRecord", "Server", "Workload", "main", "run_load", "spawn_server"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class HttpError(Exception):
    pass


@dataclass
class RequestRecord:
    t_send: float
    token_times: list[float] = field(default_factory=list)
    n_partial: int = 0
    predicted_n: int = -1  # from the final chunk's timings; -1 if no final chunk
    final_content: bool = False  # the final chunk carried text
    predicted_per_second: float = 0.0
    error: str = ""
    text: list[str] = field(default_factory=list)  # the streamed content pieces

    @property
    def complete(self) -> bool:
        return self.predicted_n >= 0


@dataclass
class LoadResult:
    clients: int
    duration_s: float
    tokens: int
    tok_s: float
    requests_completed: int
    requests_started: int
    errors: int
    ttft_ms_p50: float
    ttft_ms_p95: float
    itl_ms_p50: float
    itl_ms_p95: float
    decode_tok_s: float
    server_predicted_per_second: float
    count_mismatches: int
    final_chunk_tokens: list[int]
    client_cpu_s: float
    cpu: dict[str, float]
    error_samples: list[str]


# -- a minimal HTTP/1.1 client --------------------------------------------------------------


class Connection:
    """One keep-alive connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        return not (self.reader is None or self.writer is None or self.reader.at_eof() or self.writer.is_closing())

    async def ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is not None and self.writer is not None and self.is_open:
            return self.reader, self.writer
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("connection closed before the response")
    parts = status_line.split(None, 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return status, headers
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()


async def _body_parts(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """Yield the body as it arrives (chunked, Content-Length or until EOF)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionResetError("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise ConnectionResetError("connection closed inside the body")
            remaining -= len(data)
            yield data
    else:
        while data := await reader.read(65536):
            yield data


async def stream_completion(conn: Connection, request: bytes | Workload, rec: RequestRecord) -> None:
    """Send one streaming request (a /completion body, or a `Workload`) and record token arrival times in
    ``rec``."""
    work = request if isinstance(request, Workload) else Workload(request)
    body = work.body
    head = (
        f"POST {work.path} HTTP/1.1\r\nHost: {conn.host}:{conn.port}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    while True:
        reused = conn.is_open
        reader, writer = await conn.ensure()
        rec.t_send = time.perf_counter()
        try:
            writer.write(head + body)
            await writer.drain()
            status, headers = await _read_headers(reader)
            break
        except (ConnectionError, asyncio.IncompleteReadError):
            # A kept-alive connection the server had closed (llama-server closes one after a stream
            # without saying so): send again on a new one, as HTTP clients do. A new one failing is an error.
            conn.close()
            if not reused:
                raise
    if headers.get("connection", "").lower() == "close":
        conn.reader = None  # do not reuse after this response
    if status != 200:
        text = b"".join([part async for part in _body_parts(reader, headers)])
        raise HttpError(f"HTTP {status}: {text[:200].decode('utf-8', 'replace')}")
    buf = b""
    sep = b"\n" if work.ndjson else b"\n\n"  # NDJSON: an object a line; SSE: events apart by a blank line
    async for part in _body_parts(reader, headers):
        now = time.perf_counter()
        buf += part
        while True:
            end = buf.find(sep)
            if end < 0:
                break
            event, buf = buf[:end], buf[end + len(sep) :]
            for line in event.split(b"\n"):
                if line.startswith(b"error: "):
                    raise HttpError(f"stream error: {line[7:200].decode('utf-8', 'replace')}")
                payload = line if work.ndjson else line[6:] if line.startswith(b"data: ") else b""
                if not payload.strip() or payload == b"[DONE]":
                    continue
                obj = json.loads(payload)
                if isinstance(obj, dict) and "error" in obj:  # llama-server's error after the stream began
                    raise HttpError(f"stream error: {json.dumps(obj['error'])[:200]}")
                work.on_data(obj, now, rec)


def _on_data(obj: dict[str, Any], now: float, rec: RequestRecord) -> None:
    rec.text.append(obj.get("content") or "")
    if not obj.get("stop", False):
        rec.n_partial += 1
        rec.token_times.append(now)
        return
    timings = obj.get("timings") or {}
    rec.predicted_n = int(timings.get("predicted_n", obj.get("tokens_predicted", rec.n_partial)))
    rec.predicted_per_second = float(timings.get("predicted_per_second", 0.0))
    rec.final_content = bool(obj.get("content"))
    # Tokens not streamed as partials arrived with the final chunk.
    rec.token_times.extend([now] * max(rec.predicted_n - rec.n_partial, 0))


@dataclass(frozen=True)
class Workload:
    """What every client sends and how its events are read: ``on_data`` gets each ``data:`` object of the
    stream (``[DONE]`` excepted) and records tokens in the request's record, as `_on_data` does for
    /completion (bench/api_families.py has the other route families')."""

    body: bytes
    path: str = "/completion"
    on_data: Callable[[dict[str, Any], float, RequestRecord], None] = _on_data
    ndjson: bool = False  # the stream is newline-delimited JSON (Ollama's), not server-sent events


# -- the closed loop --------------------------------------------------------------------------


async def _client(host: str, port: int, work: Workload, records: list[RequestRecord], stop_at: float,
                  max_requests: int | None, counter: list[int]) -> None:
    conn = Connection(host, port)
    try:
        while time.perf_counter() < stop_at and (max_requests is None or counter[0] < max_requests):
            counter[0] += 1
            rec = RequestRecord(t_send=time.perf_counter())
            records.append(rec)
            try:
                await stream_completion(conn, work, rec)
            except (HttpError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                rec.error = f"{type(exc).__name__}: {exc}"
                conn.close()
                await asyncio.sleep(0.2)  # do not spin on a failing server
    finally:
        conn.close()  # a request cut at the deadline: the server cancels it


async def _run_clients(url: str, clients: int, work: Workload, warmup: float, duration: float,
                       max_requests: int | None) -> tuple[list[RequestRecord], float, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    records: list[RequestRecord] = []
    counter = [0]
    t0 = time.perf_counter()
    stop_at = t0 + warmup + duration
    tasks = [asyncio.ensure_future(_client(host, port, work, records, stop_at, max_requests, counter))
             for _ in range(clients)]
    _, pending = await asyncio.wait(tasks, timeout=max(stop_at - time.perf_counter(), 0.0))
    t_end = time.perf_counter()
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if max_requests is not None and not pending:
        # Request-count mode: the window is however long the requests took.
        t_end = max((r.token_times[-1] for r in records if r.token_times), default=t_end)
    return records, t0 + min(warmup, t_end - t0), t_end


def summarize(records: list[RequestRecord], clients: int, w0: float, w1: float, client_cpu_s: float,
              cpu: dict[str, float]) -> LoadResult:
    window = max(w1 - w0, 1e-9)
    tokens = sum(1 for r in records for t in r.token_times if w0 <= t <= w1)
    ttft = [(r.token_times[0] - r.t_send) * 1e3 for r in records
            if r.token_times and w0 <= r.t_send and r.token_times[0] <= w1]
    itl = [(b - a) * 1e3 for r in records for a, b in itertools.pairwise(r.token_times)
           if w0 <= a and b <= w1]
    done = [r for r in records if r.complete]
    final_tokens = sorted({r.predicted_n - r.n_partial for r in done})
    mismatches = sum(1 for r in done if r.n_partial + int(r.final_content) != r.predicted_n)
    errors = [r for r in records if r.error]
    sps = [r.predicted_per_second for r in done if r.predicted_per_second > 0]
    return LoadResult(
        clients=clients,
        duration_s=round(window, 3),
        tokens=tokens,
        tok_s=tokens / window,
        requests_completed=len(done),
        requests_started=len(records),
        errors=len(errors),
        ttft_ms_p50=percentile(ttft, 50),
        ttft_ms_p95=percentile(ttft, 95),
        itl_ms_p50=percentile(itl, 50),
        itl_ms_p95=percentile(itl, 95),
        decode_tok_s=1e3 * len(itl) / sum(itl) if itl and sum(itl) > 0 else 0.0,
        server_predicted_per_second=sum(sps) / len(sps) if sps else 0.0,
        count_mismatches=mismatches,
        final_chunk_tokens=final_tokens,
        client_cpu_s=round(client_cpu_s, 3),
        cpu=cpu,
        error_samples=sorted({r.error for r in errors})[:3],
    )


def completion_body(prompt: str, n_predict: int, extra: dict[str, object] | None = None) -> bytes:
    return json.dumps({
        "prompt": prompt, "n_predict": n_predict, "temperature": 0, "stream": True,
        "ignore_eos": True, "cache_prompt": False, **(extra or {}),
    }).encode()


def run_load(url: str, clients: int, *, n_predict: int = DEFAULT_N_PREDICT, prompt: str = DEFAULT_PROMPT,
             duration: float = 30.0, warmup: float = 3.0, max_requests: int | None = None,
             server_pid: int | None = None, extra: dict[str, object] | None = None,
             workload: Workload | None = None) -> LoadResult:
    """One closed-loop measurement at ``clients`` concurrent clients; ``extra``
    adds request fields (e.g. a json_schema); ``workload`` replaces the /completion request."""
    work = workload or Workload(completion_body(prompt, n_predict, extra))
    if max_requests is not None:
        warmup, duration = 0.0, 24 * 3600.0
    meter = CpuMeter([os.getpid()] + ([server_pid] if server_pid else []))
    cpu0 = time.process_time()
    meter.start()
    records, w0, w1 = asyncio.run(_run_clients(url, clients, work, warmup, duration, max_requests))
    cpu = meter.stop()
    result = summarize(records, clients, w0, w1, time.process_time() - cpu0, cpu)
    wait_idle(url)
    return result


# -- the server -------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_idle(url: str, timeout: float = 10.0) -> None:
    """Let cancelled requests drain so the next measurement starts on an idle server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, data = http_get(url.rstrip("/") + "/slots")
        except OSError:
            status, data = 0, b""
        if status != 200:
            time.sleep(1.0)
            return
        slots = json.loads(data)
        if not any(s.get("is_processing") for s in slots):
            return
        time.sleep(0.2)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    cmd: list[str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(model: str, n_parallel: int, *, threads: int, n_ctx: int | None = DEFAULT_CTX,
                 kv_unified: bool = True, extra: list[str] | None = None, timeout: float = 180.0,
                 log_dir: Path | None = None, program: list[str] | None = None) -> Server:
    """Start ``python -m llamatwist`` (or ``program``, e.g. llama.cpp's llama-server: the flags are
    the same) and wait for /health to answer 200; ``n_ctx`` None: no -c (the server's default)."""
    port = _free_port()
    cmd = [
        *(program or [sys.executable, "-m", "llamatwist"]),
        "-m", model, "--host", "127.0.0.1", "--port", str(port),
        "-np", str(n_parallel), *(["-c", str(n_ctx)] if n_ctx is not None else []), "-t", str(threads),
        "-kvu" if kv_unified else "-no-kvu", "--metrics", *(extra or []),
    ]
    fd, name = tempfile.mkstemp(prefix="llamatwist-server-", suffix=".log", dir=log_dir)
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    server = Server(f"http://127.0.0.1:{port}", proc, Path(name), cmd)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError):
            if http_get(server.url + "/health")[0] == 200:
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.25)


@contextlib.contextmanager
def maybe_spawn(args: argparse.Namespace, n_parallel: int, log: IO[str]) -> Iterator[tuple[str, int | None]]:
    if not args.spawn:
        yield args.url, args.server_pid
        return
    model = resolve_model(args.model)
    server = spawn_server(model, n_parallel, threads=args.threads or default_threads(), n_ctx=args.ctx_size,
                          kv_unified=not args.no_kv_unified)
    print(f"spawned {' '.join(server.cmd)} (pid {server.pid}, log {server.log_path})", file=log, flush=True)
    try:
        yield server.url, server.pid
    finally:
        server.stop()


# -- CLI ---------------------------------------------------------------------------------------


def print_table(results: list[LoadResult]) -> None:
    print(f"{'C':>3} {'tok/s':>8} {'srv tok/s/req':>13} {'reqs':>5} {'err':>4} {'TTFT p50':>9} {'p95':>8} "
          f"{'ITL p50':>8} {'p95':>7} {'other cpu':>9}")
    for r in results:
        print(f"{r.clients:>3} {r.tok_s:>8.1f} {r.server_predicted_per_second:>13.1f} {r.requests_completed:>5} "
              f"{r.errors:>4} {r.ttft_ms_p50:>9.1f} {r.ttft_ms_p95:>8.1f} {r.itl_ms_p50:>8.1f} "
              f"{r.itl_ms_p95:>7.1f} {r.cpu['other_cores']:>9.2f}")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="GGUF path for --spawn (default: the project's default model)")
    p.add_argument("--clients", default="1,8", help="comma-separated client counts C (default 1,8)")
    p.add_argument("-n", "--n-predict", type=int, default=DEFAULT_N_PREDICT, help="tokens per request")
    p.add_argument("-t", "--threads", type=int, default=None, help="server -t (default: os.cpu_count())")
    p.add_argument("-c", "--ctx-size", type=int, default=DEFAULT_CTX, help="server -c (shared KV cache)")
    p.add_argument("--no-kv-unified", action="store_true", help="spawn the server with -no-kvu")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per C (default 30)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each window (default 3)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="an already-running server, e.g. http://127.0.0.1:8080")
    target.add_argument("--spawn", action="store_true", help="start a server (-np = max C), stop it at the end")
    p.add_argument("--server-pid", type=int, help="with --url: the server's pid, to account its CPU")
    p.add_argument("--requests", type=int, default=None,
                   help="stop after this many requests in all instead of after --duration")
    p.add_argument("--out", type=Path, help="write the JSON result here (default: bench/results/loadgen-*.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clients = parse_clients(args.clients)
    results: list[LoadResult] = []
    with maybe_spawn(args, max(clients), sys.stderr) as (url, pid):
        for c in clients:
            r = run_load(url, c, n_predict=args.n_predict, prompt=args.prompt, duration=args.duration,
                         warmup=args.warmup, max_requests=args.requests, server_pid=pid)
            print(f"  server C={c}: {r.tok_s:.1f} tok/s, {r.requests_completed} requests, "
                  f"{r.errors} errors {r.error_samples or ''}", file=sys.stderr, flush=True)
            results.append(r)
    print_table(results)
    data = {
        "kind": "loadgen",
        "url": None if args.spawn else args.url,
        "n_predict": args.n_predict,
        "machine": machine_info(args.threads or default_threads()),
        "results": [asdict(r) for r in results],
    }
    save_results("loadgen", data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
