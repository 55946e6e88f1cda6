"""What unloading a model costs and frees: Ollama's ``keep_alive: 0`` (``ollama stop``), which puts the server to
sleep as --sleep-idle-seconds does.

Per round: a warm request's time to its last byte (``/api/generate``, ``--n-predict`` tokens), the server's
resident memory, ``keep_alive: 0`` and the wait until ``/props`` says it sleeps, its memory then, and the next
request's time (the model loaded again first). Prints medians; writes bench/results/keep_alive-*.json (or --out).

    python -m bench.keep_alive                    # the default model, 5 rounds
    python -m bench.keep_alive -m MODEL --rounds 3 --server-args="-ngl 99"
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import default_threads, machine_info, resolve_model, save_results
from bench.loadgen import spawn_server

__all__ = ["main"]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def _sleeping(url: str) -> bool:
    with urllib.request.urlopen(url + "/props", timeout=60) as r:
        return bool(json.loads(r.read())["is_sleeping"])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(url: str, n_predict: int) -> float:
    t0 = time.perf_counter()
    out = _post(url + "/api/generate", {"model": "m", "prompt": "Write a story.", "stream": False,
                                        "options": {"num_predict": n_predict, "temperature": 0}})
    assert out["done"], out
    return (time.perf_counter() - t0) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", help="GGUF model (default: the project's default model)")
    p.add_argument("-t", "--threads", type=int, help="server -t (default: os.cpu_count())")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n-predict", type=int, default=16)
    p.add_argument("--server-args", default="", help="more server flags")
    p.add_argument("--out", type=Path, help="JSON result file (default: bench/results/keep_alive-*.json)")
    args = p.parse_args(argv)
    threads = args.threads or default_threads()
    model = resolve_model(args.model)
    server = spawn_server(model, 1, threads=threads, extra=shlex.split(args.server_args))
    rounds: list[dict[str, float]] = []
    try:
        url, pid = server.url, server.proc.pid
        _timed(url, args.n_predict)  # the first request's one-off costs (template, graphs) out of the rounds
        for i in range(args.rounds):
            warm_ms = _timed(url, args.n_predict)
            rss_loaded = _rss_mib(pid)
            t0 = time.perf_counter()
            assert _post(url + "/api/generate", {"model": "m", "keep_alive": 0})["done_reason"] == "unload"
            while not _sleeping(url):
                time.sleep(0.01)
            unload_ms = (time.perf_counter() - t0) * 1e3
            rss_unloaded = _rss_mib(pid)
            cold_ms = _timed(url, args.n_predict)
            row = {"warm_ms": warm_ms, "unload_ms": unload_ms, "cold_ms": cold_ms, "rss_loaded_mib": rss_loaded,
                   "rss_unloaded_mib": rss_unloaded}
            rounds.append(row)
            print(f"  round {i + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
    finally:
        server.stop()
    medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"medians over {len(rounds)} rounds ({Path(model).name}, -n {args.n_predict}): "
          f"warm request {medians['warm_ms']:.0f} ms, after an unload {medians['cold_ms']:.0f} ms "
          f"(+{medians['cold_ms'] - medians['warm_ms']:.0f} ms to load); unload {medians['unload_ms']:.0f} ms; "
          f"RSS {medians['rss_loaded_mib']:.0f} MiB loaded, {medians['rss_unloaded_mib']:.0f} MiB unloaded")
    save_results("keep_alive", {"machine": machine_info(threads), "model": model, "n_predict": args.n_predict,
                                "server_args": args.server_args, "rounds": rounds, "medians": medians}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
