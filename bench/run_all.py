"""Engine ceiling vs. server, side by side.

One server is spawned (-np = max C, same model, threads, context and KV
layout as the engine reference).  For each C the engine reference runs in a
subprocess (so its model and threads are gone before the server is loaded
with requests), then the load generator drives the server at C clients.

    python -m bench.run_all                       # C = 1, 8; 30 s each
    python -m bench.run_all --clients 1,2,4,8 --duration 20

Prints C, engine tok/s, server tok/s, server/engine %, TTFT and ITL
percentiles, and writes everything to bench/results/run_all-*.json.
Goals: server >= 95 % of the engine at C = 1 and >= 90 % at C = 8.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_PROMPT,
    default_threads,
    machine_info,
    parse_clients,
    resolve_model,
    save_results,
    wait_quiet,
)
from bench.loadgen import REPO_ROOT, add_common_args, run_load, spawn_server

__all__ = ["GOALS", "main"]

GOALS = {1: 95.0, 8: 90.0}  # server tok/s as % of the engine's generation tok/s


def run_engine(model: str, c: int, args: argparse.Namespace, threads: int, n_seq_max: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "engine.json"
        cmd = [
            sys.executable, "-m", "bench.engine_ref", "-m", model, "--clients", str(c),
            "-n", str(args.n_predict), "-t", str(threads), "-c", str(args.ctx_size),
            "--n-seq-max", str(n_seq_max), "--repeat", str(args.repeat), "--out", str(out),
        ]
        if args.no_kv_unified:
            cmd.append("--no-kv-unified")
        if args.prompt != DEFAULT_PROMPT:
            cmd += ["--prompt", args.prompt]
        proc = subprocess.run(cmd, check=False, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"engine reference failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        data: dict[str, Any] = json.loads(out.read_text())
    return data


def _log_engine(c: int, engine: dict[str, Any], when: str) -> None:
    e = engine["results"][0]
    print(f"  engine C={c} ({when}): gen {e['gen_tps']:.1f} tok/s {e['gen_tps_runs']}, prompt "
          f"{e['prompt_tps']:.1f} tok/s, cpu {e['cpu']}", file=sys.stderr, flush=True)


def _mean_engine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the engine figures of the runs before and after the server's."""
    out = dict(results[0])
    for key in ("gen_tps", "e2e_tps", "prompt_tps", "step_ms_p50"):
        out[key] = sum(r[key] for r in results) / len(results)
    out["cpu"] = {"other_cores": max(r["cpu"]["other_cores"] for r in results)}
    return out


def _fmt(v: float, spec: str = ".1f") -> str:
    return "n/a" if math.isnan(v) else format(v, spec)


def print_table(rows: list[dict[str, Any]], header: str) -> None:
    print(header)
    cols = (f"{'C':>3} {'engine tok/s':>12} {'server tok/s':>12} {'ratio':>7} {'goal':>5} "
            f"{'TTFT p50/p95 ms':>17} {'ITL p50/p95 ms':>16} {'eng e2e':>8} {'ratio e2e':>9} {'srv/req':>8} "
            f"{'other cpu':>10}")
    print(cols)
    for r in rows:
        goal = GOALS.get(r["clients"])
        goal_s = f">={goal:.0f}%" if goal else "-"
        mark = "" if goal is None else (" ok" if r["ratio_pct"] >= goal else " LOW")
        print(f"{r['clients']:>3} {r['engine_tok_s']:>12.1f} {r['server_tok_s']:>12.1f} "
              f"{r['ratio_pct']:>6.1f}% {goal_s:>5} "
              f"{_fmt(r['ttft_ms_p50']) + '/' + _fmt(r['ttft_ms_p95']):>17} "
              f"{_fmt(r['itl_ms_p50']) + '/' + _fmt(r['itl_ms_p95']):>16} "
              f"{r['engine_e2e_tok_s']:>8.1f} {r['ratio_e2e_pct']:>8.1f}% {r['server_tok_s_per_request']:>8.1f} "
              f"{r['other_cpu_cores']:>10.2f}{mark}")
    print("engine tok/s: generation phase only (ratio and goal use it); eng e2e: prompt phase included, the\n"
          "ceiling for a closed loop that must also process each request's prompt (ratio e2e uses it);\n"
          "srv/req: mean of the server's own timings.predicted_per_second; other cpu: cores used by\n"
          "unrelated processes during the runs (> ~0.1 means the figures are disturbed)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--repeat", type=int, default=3, help="engine runs per C (median; default 3)")
    p.add_argument("--no-engine-after", action="store_true",
                   help="run the engine reference only before the server run, not before and after")
    p.add_argument("--wait-quiet", type=float, default=120.0,
                   help="before each run, wait up to this long for other load to drop (default 120 s)")
    p.add_argument("--out", type=Path, help="JSON result file (default: bench/results/run_all-*.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clients = parse_clients(args.clients)
    threads = args.threads or default_threads()
    model = resolve_model(args.model)
    max_c = max(clients)
    log = sys.stderr

    server = spawn_server(model, max_c, threads=threads, n_ctx=args.ctx_size, kv_unified=not args.no_kv_unified)
    print(f"server: {' '.join(server.cmd[1:])} (pid {server.pid}, log {server.log_path})", file=log, flush=True)
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    try:
        for c in clients:
            wait_quiet(args.wait_quiet, log=log)
            engine = run_engine(model, c, args, threads, max_c)
            _log_engine(c, engine, "before")
            wait_quiet(args.wait_quiet, log=log)
            s = run_load(server.url, c, n_predict=args.n_predict, prompt=args.prompt, duration=args.duration,
                         warmup=args.warmup, server_pid=server.pid)
            print(f"  server C={c}: {s.tok_s:.1f} tok/s, {s.requests_completed} requests, {s.errors} errors, "
                  f"cpu {s.cpu}", file=log, flush=True)
            if s.errors:
                print(f"    errors: {s.error_samples}", file=log, flush=True)
            engines = [engine]
            if not args.no_engine_after:
                # The machine's speed drifts (shared VM): bracket the server run and average.
                wait_quiet(args.wait_quiet, log=log)
                engines.append(run_engine(model, c, args, threads, max_c))
                _log_engine(c, engines[-1], "after")
            e = _mean_engine([x["results"][0] for x in engines])
            rows.append({
                "clients": c,
                "engine_tok_s": e["gen_tps"],
                "engine_e2e_tok_s": e["e2e_tps"],
                "engine_prompt_tok_s": e["prompt_tps"],
                "engine_step_ms_p50": e["step_ms_p50"],
                "server_tok_s": s.tok_s,
                "server_tok_s_per_request": s.server_predicted_per_second,
                "ratio_pct": 100.0 * s.tok_s / e["gen_tps"] if e["gen_tps"] else 0.0,
                "ratio_e2e_pct": 100.0 * s.tok_s / e["e2e_tps"] if e["e2e_tps"] else 0.0,
                "goal_pct": GOALS.get(c),
                "ttft_ms_p50": s.ttft_ms_p50,
                "ttft_ms_p95": s.ttft_ms_p95,
                "itl_ms_p50": s.itl_ms_p50,
                "itl_ms_p95": s.itl_ms_p95,
                "other_cpu_cores": max(e["cpu"]["other_cores"], s.cpu["other_cores"]),
            })
            raw.append({"clients": c, "engine": engines, "server": asdict(s)})
    finally:
        server.stop()
        print(f"server log: {server.log_path}", file=log)

    header = (f"model {Path(model).name}, {threads} threads, n_predict {args.n_predict}, prompt "
              f"{raw[0]['engine'][0]['n_prompt'] if raw else '?'} tokens, {args.duration:.0f} s per C, "
              f"{'unified' if not args.no_kv_unified else 'per-sequence'} KV, n_ctx {args.ctx_size}")
    print_table(rows, header)
    save_results("run_all", {
        "kind": "run_all",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": model,
        "n_predict": args.n_predict,
        "duration_s": args.duration,
        "server_cmd": server.cmd[1:],
        "machine": machine_info(threads),
        "goals_pct": GOALS,
        "rows": rows,
        "raw": raw,
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
