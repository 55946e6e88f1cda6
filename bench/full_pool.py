"""Requests that overfill a shared KV pool: how many complete, end early or fail, against llama-server.

``--clients`` clients each send ``--requests`` streamed /completion requests in a row, each asking for
``--n-predict`` tokens (ignore_eos), to a server whose one pool (``-kvu -c``) cannot hold them all at once.
llamatwist lets generations take turns (the youngest stops and goes on later) and prompts wait for room;
llama-server fails them with a 500. Both servers run the same model and flags, one after the other.

    python -m bench.full_pool                                     # default model, 8 x 5 x 256 tokens, -c 1024
    python -m bench.full_pool -m MTP.gguf --server-args="--spec-type draft-mtp"

Prints, per server, the requests that completed with all their tokens, ended early or failed, the tokens
received and the wall time; writes bench/results/full_pool-*.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.common import default_threads, machine_info, resolve_model, save_results
from bench.loadgen import spawn_server
from bench.vs_llama_server import add_pair_args, pair_programs

__all__ = ["main"]


def _client(url: str, client: int, n_requests: int, n_predict: int) -> list[tuple[str, int]]:
    """(outcome, tokens) per request: "complete", "early" (stopped before n_predict) or "error"."""
    out = []
    for k in range(n_requests):
        body: dict[str, Any] = {"prompt": f"Client {client} request {k}: " + "tell me a story " * 10, "n_predict": n_predict,
                "ignore_eos": True, "stream": True}
        last: Any = None
        try:
            with requests.post(url + "/completion", json=body, stream=True, timeout=300) as r:
                for line in r.iter_lines():
                    if line.startswith(b"data: "):
                        last = json.loads(line[6:])
        except (requests.RequestException, ValueError):
            last = None
        if not isinstance(last, dict) or "error" in last or not last.get("stop"):
            out.append(("error", 0))
        else:
            n = int(last.get("tokens_predicted", 0))
            out.append(("complete" if n == n_predict else "early", n))
    return out


def run(url: str, clients: int, n_requests: int, n_predict: int) -> dict[str, Any]:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for xs in pool.map(lambda c: _client(url, c, n_requests, n_predict), range(clients))
                   for x in xs]
    counts = Counter(kind for kind, _ in results)
    return {"complete": counts["complete"], "early": counts["early"], "error": counts["error"],
            "tokens": sum(n for _, n in results), "asked": len(results) * n_predict,
            "seconds": round(time.perf_counter() - started, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", help="GGUF path (default: the project's default model)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients, and -np (default 8)")
    p.add_argument("--requests", type=int, default=5, help="requests per client (default 5)")
    p.add_argument("-n", "--n-predict", type=int, default=256, help="tokens each request asks for (default 256)")
    p.add_argument("-c", "--ctx-size", type=int, default=1024, help="the shared pool's size (default 1024)")
    add_pair_args(p, "full_pool")
    args = p.parse_args(argv)
    threads = args.threads or default_threads()
    model = resolve_model(args.model)
    programs = pair_programs(args)
    out: dict[str, Any] = {}
    for name, program in programs.items():
        server = spawn_server(model, args.clients, threads=threads, n_ctx=args.ctx_size,
                              extra=shlex.split(args.server_args), program=program)
        try:
            out[name] = run(server.url, args.clients, args.requests, args.n_predict)
        finally:
            server.stop()
        r = out[name]
        print(f"{name}: {r['complete']} complete, {r['early']} ended early, {r['error']} failed; "
              f"{r['tokens']} of {r['asked']} tokens in {r['seconds']} s")
    save_results("full_pool", {"kind": "full_pool", "model": model, "clients": args.clients,
                               "requests": args.requests, "n_predict": args.n_predict, "ctx_size": args.ctx_size,
                               "server_args": args.server_args, "machine": machine_info(threads),
                               "results": out}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
