"""Time to first token of a request that arrives while other streams generate, against llama-server.

The closed loop of bench/loadgen.py starts its clients together, so their requests run in lockstep and a new
prompt rarely meets many generations; real traffic arrives staggered. Here ``--busy N`` streams generate
(``--n-predict`` tokens each, not read past their first token, so they keep their slots) and one more stream
is sent: its time to first token is what a user arriving at a busy server waits. Both servers run the same
model and flags (``-np N+1``), alternating which goes first per round.

    python -m bench.join_latency                      # 5 busy streams (where speculation's cut applies)
    python -m bench.join_latency --busy 7 --rounds 5

Prints each server's TTFT per round and their medians; writes bench/results/join_latency-*.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from bench.common import DEFAULT_PROMPT, default_threads, machine_info, resolve_model, save_results
from bench.loadgen import spawn_server, wait_idle
from bench.vs_llama_server import NAMES, add_pair_args, pair_programs

__all__ = ["main"]


@contextlib.contextmanager
def _stream(url: str, prompt: str, n_predict: int) -> Iterator[float]:
    """Send a streaming /completion and wait for its first token; yields the seconds that took, and keeps the
    stream open (its slot busy) until the block ends."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=300)
    body = json.dumps({"prompt": prompt, "n_predict": n_predict, "stream": True, "ignore_eos": True,
                       "temperature": 0, "cache_prompt": False})
    try:
        started = time.perf_counter()
        conn.request("POST", "/completion", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
        while not resp.readline().startswith(b"data: "):
            pass
        yield time.perf_counter() - started
    finally:
        conn.close()


def join_ttft(url: str, busy: int, n_predict: int, prompt: str) -> float:
    """Seconds to the first token of one more stream while ``busy`` streams generate."""
    with contextlib.ExitStack() as stack:
        for _ in range(busy):
            stack.enter_context(_stream(url, prompt, n_predict))
        with _stream(url, "Hello there, how are you today?", 4) as ttft:
            return ttft


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", help="GGUF path (default: the project's default model)")
    p.add_argument("--busy", type=int, default=5, help="streams generating when the new one arrives (default 5)")
    p.add_argument("-n", "--n-predict", type=int, default=400, help="tokens each busy stream asks for (default 400)")
    p.add_argument("-c", "--ctx-size", type=int, default=8192, help="server -c (default 8192)")
    p.add_argument("--rounds", type=int, default=3, help="measurements per server (default 3)")
    add_pair_args(p, "join_latency")
    args = p.parse_args(argv)
    threads = args.threads or default_threads()
    model = resolve_model(args.model)
    programs = pair_programs(args)
    ttfts: dict[str, list[float]] = {name: [] for name in NAMES}
    servers = {}
    try:
        for name, program in programs.items():
            servers[name] = spawn_server(model, args.busy + 1, threads=threads, n_ctx=args.ctx_size,
                                         extra=shlex.split(args.server_args), program=program)
        for rnd in range(args.rounds):
            for name in NAMES if rnd % 2 == 0 else NAMES[::-1]:
                ttfts[name].append(join_ttft(servers[name].url, args.busy, args.n_predict, DEFAULT_PROMPT))
                wait_idle(servers[name].url, timeout=60)
                print(f"  round {rnd + 1} {name}: {ttfts[name][-1] * 1e3:.0f} ms", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    medians = {name: statistics.median(ttfts[name]) * 1e3 for name in NAMES}
    print(f"TTFT beside {args.busy} generating streams, median of {args.rounds}: "
          + ", ".join(f"{name} {medians[name]:.0f} ms" for name in NAMES))
    save_results("join_latency", {"kind": "join_latency", "model": model, "busy": args.busy,
                                  "n_predict": args.n_predict, "machine": machine_info(threads),
                                  "ttft_ms": {name: [t * 1e3 for t in ttfts[name]] for name in NAMES},
                                  "median_ms": medians}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
