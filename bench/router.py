"""Router mode: what the router's hop costs, and how long a model takes to come up through it.

One model served two ways with the same flags: directly (``llamatwist -m MODEL``) and through a router
(``llamatwist --models-dir DIR``, DIR holding that model). The same streamed ``/completion`` workload as
bench/loadgen.py (greedy, ``ignore_eos``, ``cache_prompt: false``, fixed ``n_predict``) runs at each C against
each, alternating which goes first per round; the router's requests name the model. Also measured: a cold
load through the router (the first request's TTFT: the child's start-up included) and a reload after
``/models/unload``.

    python -m bench.router                              # C = 1, 8; 2 rounds of 20 s
    python -m bench.router --clients 1,4,8 --rounds 3 --duration 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import default_threads, machine_info, resolve_model, save_results, wait_quiet
from bench.loadgen import REPO_ROOT, LoadResult, Server, _free_port, add_common_args, http_get, run_load, spawn_server

NAME = "bench"


def _post(url: str, body: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return dict(json.loads(resp.read()))


def _status(url: str) -> str:
    models = json.loads(http_get(url + "/v1/models")[1])["data"]
    return str(next(m for m in models if m["id"] == NAME)["status"]["value"])


def _first_token_s(url: str) -> float:
    t0 = time.monotonic()
    _post(url + "/completion", {"model": NAME, "prompt": "Hello", "n_predict": 1})
    return time.monotonic() - t0


def _spawn_router(models: Path, flags: list[str]) -> Server:
    port = _free_port()
    cmd = [sys.executable, "-m", "llamatwist", "--models-dir", str(models), "--host", "127.0.0.1", "--port",
           str(port), *flags]
    log = models.parent / "router.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    server = Server(f"http://127.0.0.1:{port}", proc, log, cmd)
    deadline = time.monotonic() + 60
    while http_status(server.url + "/health") != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"router did not start:\n{server.log_tail()}")
        time.sleep(0.1)
    return server


def http_status(url: str) -> int:
    try:
        return http_get(url)[0]
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)  # -m, --clients, -n, -t, -c, --duration, --warmup, ... as every benchmark
    p.add_argument("--rounds", type=int, default=2)
    p.set_defaults(duration=20.0)
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    clients = [int(c) for c in args.clients.split(",")]
    threads = args.threads or default_threads()
    flags = ["-np", str(max(clients)), "-c", str(args.ctx_size), "-t", str(threads),
             "-no-kvu" if args.no_kv_unified else "-kvu"]

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        (models / f"{NAME}.gguf").symlink_to(Path(model).resolve())
        direct = spawn_server(model, max(clients), threads=threads, n_ctx=args.ctx_size,
                              kv_unified=not args.no_kv_unified)
        router = _spawn_router(models, flags)
        try:
            wait_quiet(30)
            cold = _first_token_s(router.url)
            _post(router.url + "/models/unload", {"model": NAME})
            while _status(router.url) != "unloaded":
                time.sleep(0.05)
            reload = _first_token_s(router.url)
            warm = statistics.median(_first_token_s(router.url) for _ in range(5))
            direct_warm = statistics.median(_first_token_s(direct.url) for _ in range(5))
            results: dict[str, dict[int, list[LoadResult]]] = {"direct": {}, "router": {}}
            for r in range(args.rounds):
                for c in clients:
                    order = [("direct", direct.url), ("router", router.url)]
                    for kind, url in order if r % 2 == 0 else order[::-1]:
                        res = run_load(url, c, n_predict=args.n_predict, prompt=args.prompt, duration=args.duration,
                                       warmup=args.warmup, extra={"model": NAME})
                        results[kind].setdefault(c, []).append(res)
                        print(f"round {r + 1} C={c} {kind}: {res.tok_s:.1f} tok/s, TTFT p50 {res.ttft_ms_p50:.0f} ms",
                              flush=True)
        finally:
            router.stop()
            direct.stop()

    print(f"\ncold load through the router (first request, child start-up included): {cold:.2f} s")
    print(f"reload after /models/unload: {reload:.2f} s")
    print(f"1-token request once loaded: router {warm * 1000:.0f} ms, direct {direct_warm * 1000:.0f} ms")
    print(f"\n{'C':>3} {'direct tok/s':>13} {'router tok/s':>13} {'ratio':>6} {'TTFT p50 d/r (ms)':>18}")
    summary = []
    for c in clients:
        d = statistics.mean(x.tok_s for x in results["direct"][c])
        rt = statistics.mean(x.tok_s for x in results["router"][c])
        dt = statistics.mean(x.ttft_ms_p50 for x in results["direct"][c])
        rtt = statistics.mean(x.ttft_ms_p50 for x in results["router"][c])
        print(f"{c:>3} {d:>13.1f} {rt:>13.1f} {rt / d:>6.2f} {dt:>8.0f} / {rtt:<8.0f}")
        summary.append({"clients": c, "direct_tok_s": d, "router_tok_s": rt, "ratio": rt / d,
                        "direct_ttft_ms_p50": dt, "router_ttft_ms_p50": rtt})
    save_results("router", {"machine": machine_info(threads), "args": vars(args), "cold_load_s": cold,
                                   "reload_s": reload, "warm_1_token_s": {"router": warm, "direct": direct_warm},
                                   "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
