"""LoRA adapter overhead (issue 14): aggregate generated tok/s and TTFT at ``--clients`` clients (8).

Modes, each against a fresh ``-np CLIENTS`` server:

* base: no adapter loaded;
* loaded-off: the test LoRA loaded at scale 0 (``--lora-init-without-apply``): must match base;
* 2-sets: half the clients send ``"lora": [{"id": 0, "scale": 1}]``, half run on the base (scale 0);
  slots of one adapter set batch together, the sets take turns;
* adapter: every client on the LoRA (server-wide scale 1).

The adapter is the generated test LoRA (scripts/make_lora.py, through tests/models.py).

    python -m bench.lora [--clients 8] [--duration 20] [--model PATH]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import default_threads, machine_info, resolve_model, write_json
from bench.loadgen import run_load, spawn_server

__all__ = ["main"]

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default=None)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--n-predict", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--clients", type=int, default=8, help="clients and slots (even: 2-sets splits them)")
    args = p.parse_args(argv)
    n_clients = args.clients
    from tests.models import lora_gguf  # the generated test adapter (cached)

    model = resolve_model(args.model)
    lora = str(lora_gguf(Path(model), "lora"))
    threads = args.threads or default_threads()
    modes: dict[str, list[str]] = {
        "base": [],
        "loaded-off": ["--lora", lora, "--lora-init-without-apply"],
        "2-sets": ["--lora", lora, "--lora-init-without-apply"],
        "adapter": ["--lora", lora],
    }
    results: list[dict[str, Any]] = []
    for mode, extra in modes.items():
        server = spawn_server(model, n_clients, threads=threads, extra=extra)
        try:
            if mode == "2-sets":  # two groups of clients at once, one per adapter set
                sets: list[dict[str, object] | None] = [None, {"lora": [{"id": 0, "scale": 1.0}]}]
                with ThreadPoolExecutor(2) as pool:
                    futures = [pool.submit(run_load, server.url, n_clients // 2, n_predict=args.n_predict,
                                           duration=args.duration, server_pid=server.pid, extra=extra)
                               for extra in sets]
                    runs = [f.result() for f in futures]
            else:
                runs = [run_load(server.url, n_clients, n_predict=args.n_predict, duration=args.duration,
                                 server_pid=server.pid)]
        finally:
            server.stop()
        tok_s = sum(r.tok_s for r in runs)
        print(f"{mode:>10}: {tok_s:.1f} tok/s aggregate, {sum(r.requests_completed for r in runs)} requests, "
              f"{sum(r.errors for r in runs)} errors, TTFT p50 {max(r.ttft_ms_p50 for r in runs):.0f} ms, "
              f"p95 {max(r.ttft_ms_p95 for r in runs):.0f} ms", flush=True)
        results.append({"mode": mode, "tok_s": tok_s, "runs": [asdict(r) for r in runs]})
    path = write_json("lora", {"machine": machine_info(threads), "model": model, "clients": n_clients,
                               "n_predict": args.n_predict, "results": results})
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
