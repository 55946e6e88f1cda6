"""Soak: mixed traffic for a long time at 4x more clients than slots, watching for leaks and slow-downs
(issue 19 item 2).

One generation server (``-np`` slots, --slot-save-path) and one embedding server (the same model with
``--embeddings``) are spawned. ``4 x slots`` client threads (plain http.client, keep-alive) each loop over
the mix: streamed and plain /completion, chat with a tool, chat with a JSON schema, tokenize/detokenize,
embeddings, a stream cancelled after its first event, slot save + restore. Every answer is checked; an
unexpected status, a malformed body or a dropped connection is an error (a slot action on a busy slot waits
for the slot's task to end, as llama-server defers it).

Measured on the generation server: RSS and open descriptors at start, after the warm-up and at the end
(sampled all along), and generated tok/s over the first and the last window of the run (the same closed-loop
load, so the two should match).

    python -m bench.soak --duration 1800            # the issue's 30 minutes
    python -m bench.soak --duration 60 --slots 2     # the short version tests/test_hardening_soak.py runs
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import CpuMeter, _pid_cpu, default_threads, machine_info, resolve_model, save_results
from bench.loadgen import Server, spawn_server

__all__ = ["SoakResult", "main", "run_soak"]

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain how a bicycle gear works.",
    "List three facts about owls.",
    "Describe a quiet morning in a small town.",
]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
KINDS = ("stream", "complete", "chat_tools", "chat_schema", "tokenize", "embed", "cancel", "slots")


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Sample:
    t: float  # seconds since the traffic started
    rss_kib: int
    fds: int
    tokens: int  # generated tokens counted by the clients so far
    cpu_ticks: int  # the server's CPU time so far (utime + stime, clock ticks)


@dataclass
class SoakResult:
    duration_s: float
    warmup_s: float
    slots: int
    clients: int
    requests: dict[str, int]
    errors: int
    error_samples: list[str]
    slot_round_trips: int  # saves followed by a restore of the same state
    rss_kib: dict[str, int]  # start, warm, end
    rss_growth_after_warmup: float  # (end - warm) / warm
    fds: dict[str, int]
    tok_s: dict[str, float]  # first and last window, generated tokens per second (all clients)
    tok_s_ratio: float  # last / first
    # the server's CPU per generated token, first and last window: steadier than tok/s on a shared machine
    cpu_ms_per_token: dict[str, float]
    cpu: dict[str, float]  # cores over the run: the machine, the soak's own processes (and clients), other work
    samples: list[Sample] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)


class Client:
    """One keep-alive connection per server; reconnects after a cancelled stream."""

    def __init__(self, gen: Server, emb: Server | None, index: int, stats: Stats) -> None:
        self.gen, self.emb, self.index, self.stats = gen, emb, index, stats
        self._conns: dict[str, http.client.HTTPConnection] = {}

    def _conn(self, url: str) -> http.client.HTTPConnection:
        conn = self._conns.get(url)
        if conn is None:
            host, port = url.removeprefix("http://").split(":")
            conn = self._conns[url] = http.client.HTTPConnection(host, int(port), timeout=300)
        return conn

    def _drop(self, url: str) -> None:
        conn = self._conns.pop(url, None)
        if conn is not None:
            conn.close()

    def call(self, url: str, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn = self._conn(url)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()
        except BaseException:
            self._drop(url)
            raise

    def run(self, kind: str, n: int) -> int:
        """One request of ``kind``; returns the tokens it generated. Raises AssertionError on a bad answer."""
        prompt = PROMPTS[n % len(PROMPTS)]
        gen = self.gen.url
        if kind == "complete":
            status, data = self.call(gen, "POST", "/completion", {"prompt": prompt, "n_predict": 24})
            body = ok_json(status, data)
            return int(body["tokens_predicted"])
        if kind == "stream":
            status, data = self.call(gen, "POST", "/completion", {"prompt": prompt, "n_predict": 24, "stream": True})
            assert status == 200, (status, data[:200])
            events = [json.loads(line[6:]) for line in data.decode().split("\n") if line.startswith("data: ")]
            assert events and events[-1]["stop"] is True, data[-300:]
            return int(events[-1]["tokens_predicted"])
        if kind == "chat_tools":
            status, data = self.call(gen, "POST", "/v1/chat/completions", {
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": [TOOL], "max_tokens": 32})  # fmt: skip
            body = ok_json(status, data)
            assert body["choices"][0]["message"]["role"] == "assistant", body
            return int(body["usage"]["completion_tokens"])
        if kind == "chat_schema":
            status, data = self.call(gen, "POST", "/v1/chat/completions", {
                "messages": [{"role": "user", "content": "Make up a person."}], "max_tokens": 48,
                "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}})  # fmt: skip
            body = ok_json(status, data)
            choice = body["choices"][0]
            if choice["finish_reason"] == "stop":  # complete output must follow the schema
                value = json.loads(choice["message"]["content"])
                assert isinstance(value["name"], str) and isinstance(value["age"], int), value
            return int(body["usage"]["completion_tokens"])
        if kind == "tokenize":
            tokens = ok_json(*self.call(gen, "POST", "/tokenize", {"content": prompt}))["tokens"]
            text = ok_json(*self.call(gen, "POST", "/detokenize", {"tokens": tokens}))["content"]
            assert text.strip() == prompt, text
            return 0
        if kind == "embed":
            if self.emb is None:
                return 0
            body = ok_json(*self.call(self.emb.url, "POST", "/v1/embeddings", {"input": [prompt, "x"]}))
            assert len(body["data"]) == 2 and len(body["data"][0]["embedding"]) > 0, body
            return 0
        if kind == "cancel":
            self.cancelled_stream(prompt)
            return 0
        if kind == "slots":
            # with 4x more clients than slots the slot is busy: each action waits for a gap between tasks
            name = f"soak-{self.index}.bin"
            slot = self.index % self.stats.slots
            status, data = self.call(gen, "POST", f"/slots/{slot}?action=save", {"filename": name})
            saved = ok_json(status, data)
            status, data = self.call(gen, "POST", f"/slots/{slot}?action=restore", {"filename": name})
            assert ok_json(status, data)["n_restored"] == saved["n_saved"], data
            self.stats.saved()
            return 0
        raise ValueError(kind)

    def cancelled_stream(self, prompt: str) -> None:
        """Start a long stream, read its first event, hang up: the server must free the slot."""
        host, port = self.gen.url.removeprefix("http://").split(":")
        body = json.dumps({"prompt": prompt, "n_predict": 400, "stream": True, "ignore_eos": True}).encode()
        with socket.create_connection((host, int(port)), timeout=300) as sock:
            sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
            data = b""
            while b"data: " not in data:
                chunk = sock.recv(4096)
                assert chunk, data[:300]
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:300]


def ok_json(status: int, data: bytes) -> Any:
    assert status == 200, (status, data[:300])
    return json.loads(data)


class Stats:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: list[str] = []
        self.tokens = 0
        self.slot_round_trips = 0

    def done(self, kind: str, tokens: int) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.tokens += tokens

    def error(self, kind: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{kind}: {type(exc).__name__}: {str(exc)[:300]}")

    def saved(self) -> None:
        with self.lock:
            self.slot_round_trips += 1


def run_soak(duration: float, slots: int = 2, *, model: str | None = None, threads: int | None = None,
             warmup: float | None = None, sample_every: float = 5.0, embeddings: bool = True,
             log: Any = None, n_ctx: int | None = None) -> SoakResult:  # fmt: skip
    model = resolve_model(model)
    threads = threads or default_threads()
    warmup = warmup if warmup is not None else max(10.0, duration * 0.1)
    window = max(10.0, duration * 0.1)
    clients = 4 * slots
    slot_dir = tempfile.mkdtemp(prefix="soak-slots-")
    gen = spawn_server(model, slots, threads=threads, n_ctx=n_ctx or 512 * slots,
                       extra=["--slots", "--slot-save-path", slot_dir])  # fmt: skip
    emb = spawn_server(model, 1, threads=1, n_ctx=512, extra=["--embeddings", "--pooling", "mean"]) if embeddings \
        else None  # fmt: skip
    stats = Stats(slots)
    samples: list[Sample] = []
    try:
        rss_start, fds_start = proc_rss_kib(gen.pid), proc_fds(gen.pid)
        meter = CpuMeter([os.getpid(), gen.pid, *([emb.pid] if emb is not None else [])])
        meter.start()
        t0 = time.monotonic()
        stop_at = t0 + duration

        def client(i: int) -> None:
            c = Client(gen, emb, i, stats)
            n = i  # clients start at different points of the mix
            while time.monotonic() < stop_at:
                kind = KINDS[n % len(KINDS)]
                n += 1
                try:
                    stats.done(kind, c.run(kind, n))
                except Exception as exc:  # noqa: BLE001  # every failure is counted and reported
                    stats.error(kind, exc)

        workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for w in workers:
            w.start()
        next_sample = t0
        while time.monotonic() < stop_at:
            if time.monotonic() >= next_sample:
                with stats.lock:
                    tokens = stats.tokens
                samples.append(Sample(round(time.monotonic() - t0, 2), proc_rss_kib(gen.pid), proc_fds(gen.pid),
                                      tokens, _pid_cpu(gen.pid)))  # fmt: skip
                if log is not None:
                    s = samples[-1]
                    print(f"  t={s.t:7.1f}s rss={s.rss_kib / 1024:7.1f} MiB fds={s.fds:4d} tokens={s.tokens:7d} "
                          f"requests={sum(stats.requests.values())} errors={len(stats.errors)}", file=log, flush=True)
                next_sample += sample_every
            time.sleep(0.2)
        for w in workers:
            w.join(timeout=300)
        time.sleep(1.0)  # the server lets go of the last connections
        end = Sample(round(time.monotonic() - t0, 2), proc_rss_kib(gen.pid), proc_fds(gen.pid), stats.tokens,
                     _pid_cpu(gen.pid))
        samples.append(end)
        warm = min((s for s in samples if s.t >= warmup), key=lambda s: s.t - warmup, default=samples[0])
        first = rate(samples, warmup, warmup + window)
        last = rate(samples, end.t - window, end.t)
        cpu_first = cpu_per_token(samples, warmup, warmup + window)
        cpu_last = cpu_per_token(samples, end.t - window, end.t)
        cpu = meter.stop()
        assert gen.proc.poll() is None, gen.log_tail()
        return SoakResult(
            duration_s=duration, warmup_s=warmup, slots=slots, clients=clients,
            requests=dict(stats.requests), errors=len(stats.errors), error_samples=stats.errors[:20],
            slot_round_trips=stats.slot_round_trips,
            rss_kib={"start": rss_start, "warm": warm.rss_kib, "end": end.rss_kib},
            rss_growth_after_warmup=round((end.rss_kib - warm.rss_kib) / warm.rss_kib, 4),
            fds={"start": fds_start, "warm": warm.fds, "end": end.fds},
            tok_s={"first": round(first, 2), "last": round(last, 2)},
            tok_s_ratio=round(last / first, 4) if first else 0.0,
            cpu_ms_per_token={"first": round(cpu_first, 2), "last": round(cpu_last, 2)},
            cpu=cpu,
            samples=samples, machine=machine_info(threads),
        )  # fmt: skip
    finally:
        gen.stop()
        if emb is not None:
            emb.stop()


def rate(samples: list[Sample], t0: float, t1: float) -> float:
    """Generated tok/s between the samples nearest to t0 and t1."""
    a = min(samples, key=lambda s: abs(s.t - t0))
    b = min(samples, key=lambda s: abs(s.t - t1))
    return (b.tokens - a.tokens) / (b.t - a.t) if b.t > a.t else 0.0


def cpu_per_token(samples: list[Sample], t0: float, t1: float) -> float:
    """The server's CPU milliseconds per generated token between the samples nearest to t0 and t1."""
    a = min(samples, key=lambda s: abs(s.t - t0))
    b = min(samples, key=lambda s: abs(s.t - t1))
    tokens = b.tokens - a.tokens
    return (b.cpu_ticks - a.cpu_ticks) * 1000 / os.sysconf("SC_CLK_TCK") / tokens if tokens > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of traffic (default 1800)")
    p.add_argument("--slots", type=int, default=2, help="server -np; clients are 4x this (default 2)")
    p.add_argument("--warmup", type=float, default=None, help="seconds before the 'warm' figures (default 10%%)")
    p.add_argument("-m", "--model", help="GGUF (default: the project's default model)")
    p.add_argument("-t", "--threads", type=int, default=None)
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--no-embeddings", action="store_true", help="skip the embedding server")
    p.add_argument("-c", "--ctx-size", type=int, default=None,
                   help="the generation server's -c, one pool for every slot (default 512 x slots; smaller: a full pool)")
    p.add_argument("--out", type=Path, default=None, help="JSON result path (default bench/results/soak-*.json)")
    args = p.parse_args(argv)
    import sys

    result = run_soak(args.duration, args.slots, model=args.model, threads=args.threads, warmup=args.warmup,
                      sample_every=args.sample_every, embeddings=not args.no_embeddings, log=sys.stderr,
                      n_ctx=args.ctx_size)  # fmt: skip
    data = asdict(result)
    summary = {k: v for k, v in data.items() if k not in ("samples", "machine")}
    print(json.dumps(summary, indent=2))
    save_results("soak", data, args.out)
    return 1 if result.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
