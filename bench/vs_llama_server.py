"""llamatwist against llama.cpp's own llama-server: same build, model, flags and load, side by side.

Both servers run the same libllama build (``build_native.py --reference`` compiles llama-server from the
same source, backend and configuration as the libraries llamatwist loads), the same model and the same
command-line flags; the closed-loop load generator (bench/loadgen.py) drives each at every client count,
alternating which goes first from round to round so that drift on the machine is shared.

    python -m bench.vs_llama_server                               # this backend's build; C = 1, 8
    python -m bench.vs_llama_server --llama-server PATH -m MODEL --clients 1,8 --duration 20 --rounds 2 \\
        --server-args="-ngl 99"

Prints, per C, each server's generated tok/s (median over rounds), llamatwist/llama-server, and TTFT and
ITL medians; writes everything to bench/results/vs_llama_server-*.json (or --out).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import default_threads, machine_info, parse_clients, resolve_model, save_results
from bench.loadgen import LoadResult, Server, add_common_args, run_load, spawn_server

__all__ = ["main"]

NAMES = ("llama-server", "llamatwist")


def reference_server() -> Path:
    """llama-server built beside this backend's libraries (LLAMATWIST_BACKEND, default cpu)."""
    import build_native

    return build_native.ensure_reference(build_native.ensure_native(), targets=("llama-server",))["llama-server"]


def add_pair_args(p: argparse.ArgumentParser, kind: str) -> None:
    """The flags of a benchmark that runs llama-server and llamatwist side by side (``kind``: its results name)."""
    p.add_argument("-t", "--threads", type=int, help="server -t (default: os.cpu_count())")
    p.add_argument("--llama-server", type=Path, help="the reference binary (default: built by build_native.py)")
    p.add_argument("--server-args", default="", help="more flags for both servers")
    p.add_argument("--out", type=Path, help=f"JSON result file (default: bench/results/{kind}-*.json)")


def pair_programs(args: argparse.Namespace) -> dict[str, list[str] | None]:
    """What to run for each server of `add_pair_args`' benchmark (None: llamatwist's own command)."""
    return {"llama-server": [str(args.llama_server or reference_server())], "llamatwist": None}


def _median(results: list[LoadResult], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in results))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--llama-server", type=Path, help="the reference binary (default: built by build_native.py)")
    p.add_argument("--server-args", default="", help="more flags for both servers, e.g. \"-ngl 99\"")
    p.add_argument("--rounds", type=int, default=2, help="measurements per server and C (default 2)")
    p.add_argument("--out", type=Path, help="JSON result file (default: bench/results/vs_llama_server-*.json)")
    args = p.parse_args(argv)
    clients = parse_clients(args.clients)
    threads = args.threads or default_threads()
    model = resolve_model(args.model)
    binary = args.llama_server or reference_server()
    extra = shlex.split(args.server_args)
    programs: dict[str, list[str] | None] = {"llama-server": [str(binary)], "llamatwist": None}

    servers: dict[str, Server] = {}
    try:
        for name, program in programs.items():
            servers[name] = spawn_server(model, max(clients), threads=threads, n_ctx=args.ctx_size,
                                         kv_unified=not args.no_kv_unified, extra=extra, program=program)
            print(f"{name}: {' '.join(servers[name].cmd)}", file=sys.stderr, flush=True)
        runs: dict[tuple[str, int], list[LoadResult]] = {(n, c): [] for n in NAMES for c in clients}
        for rnd in range(args.rounds):
            for c in clients:
                order = NAMES if rnd % 2 == 0 else NAMES[::-1]
                for name in order:
                    r = run_load(servers[name].url, c, n_predict=args.n_predict, prompt=args.prompt,
                                 duration=args.duration, warmup=args.warmup, server_pid=servers[name].pid)
                    print(f"  round {rnd + 1} C={c} {name}: {r.tok_s:.1f} tok/s, {r.requests_completed} requests, "
                          f"{r.errors} errors {r.error_samples or ''}", file=sys.stderr, flush=True)
                    runs[(name, c)].append(r)
    finally:
        for server in servers.values():
            server.stop()

    rows: list[dict[str, Any]] = []
    print(f"{'C':>3} {'llama-server tok/s':>19} {'llamatwist tok/s':>17} {'ratio':>6} "
          f"{'TTFT p50 ref/ours ms':>21} {'ITL p50 ref/ours ms':>20}")
    for c in clients:
        ref, ours = runs[("llama-server", c)], runs[("llamatwist", c)]
        row = {"clients": c, **{f"{n}_tok_s": _median(runs[(n, c)], "tok_s") for n in NAMES}}
        row["ratio"] = row["llamatwist_tok_s"] / row["llama-server_tok_s"] if row["llama-server_tok_s"] else 0.0
        rows.append(row)
        print(f"{c:>3} {row['llama-server_tok_s']:>19.1f} {row['llamatwist_tok_s']:>17.1f} {row['ratio']:>5.2f}x "
              f"{_median(ref, 'ttft_ms_p50'):>10.1f}/{_median(ours, 'ttft_ms_p50'):<10.1f} "
              f"{_median(ref, 'itl_ms_p50'):>9.1f}/{_median(ours, 'itl_ms_p50'):<10.1f}")
    errors = sum(r.errors for rs in runs.values() for r in rs)
    data = {
        "kind": "vs_llama_server", "model": model, "llama_server": str(binary), "server_args": extra,
        "n_predict": args.n_predict, "rounds": args.rounds, "machine": machine_info(threads),
        "summary": rows, "runs": {f"{n}/{c}": [asdict(r) for r in rs] for (n, c), rs in runs.items()},
    }
    save_results("vs_llama_server", data, args.out)
    print(f"{errors} request errors", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
