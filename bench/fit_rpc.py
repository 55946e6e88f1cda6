"""--fit and --rpc: what fitting costs at start-up, what it chooses next to llama-server, and what a remote
device costs per token.

1. Start-up to ``/health`` 200 with ``-fit on`` and ``-fit off`` (median of ``--starts``), at ``-np 4`` with a
   KV stream per slot and no ``-c`` (fitting measures the model twice there), and the slots' context each gives.
2. The context each server chooses under margins (``-fitt``) that leave room for all, part or none of the KV
   cache: llamatwist's and (with ``--llama-server PATH``, or ``--reference`` to build it) llama-server's.
3. Generation through a ``llamatwist-rpc-server`` on this machine (``--rpc``, ``-ngl 99``) against the same
   model on the local CPU: the same streamed ``/completion`` load as bench/loadgen.py at each C.

    python -m bench.fit_rpc                          # C = 1; 20 s per run
    python -m bench.fit_rpc --reference --clients 1,4
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import default_threads, machine_info, resolve_model, save_results, wait_quiet
from bench.loadgen import REPO_ROOT, _free_port, add_common_args, http_get, run_load, spawn_server

MIB = 1024 * 1024


def _startup(model: str, threads: int, fit: str, program: list[str] | None = None,
             extra: tuple[str, ...] = ()) -> tuple[float, list[int], str]:
    """Seconds to /health 200, the slots' contexts, and the fit lines of the log."""
    t0 = time.monotonic()
    srv = spawn_server(model, 4, threads=threads, n_ctx=None, kv_unified=False, program=program,
                       extra=["-fit", fit, *extra])
    took = time.monotonic() - t0
    try:
        slots = [int(s["n_ctx"]) for s in json.loads(http_get(srv.url + "/slots")[1])]
        fit_lines = [ln.split("fit: ", 1)[1] for ln in srv.log_path.read_text().splitlines() if "fit: " in ln]
    finally:
        srv.stop()
    return took, slots, "; ".join(fit_lines)


def _host_budget(model: str) -> tuple[int, int, int]:
    """The host's total memory and the model's use at -np 4's whole context and at the least (-fitc 4096)."""
    from llamatwist.engine.context import ContextParams
    from llamatwist.engine.fit import measure

    def used(n_ctx: int) -> tuple[int, int]:
        m = measure(model, context=ContextParams(n_ctx=n_ctx, n_seq_max=4, kv_unified=False), n_gpu_layers=-1)
        return m.host.total, m.host.used

    total, _ = used(0)
    probe = measure(model, context=ContextParams(n_ctx=0), n_gpu_layers=-1)
    _, most = used(probe.n_ctx_train * 4)
    _, least = used(4096 * 4)
    return total, most, least


class _RpcServer:
    def __init__(self, threads: int) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "llamatwist.cli.rpc_server", "-p", str(self.port),
                                      "-t", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=REPO_ROOT)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the RPC server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _measure_load(model: str, clients: int, threads: int, args: argparse.Namespace,
                  extra: list[str] | None = None) -> Any:
    """bench/loadgen.py's closed-loop load at C=`clients` on a server started with `extra`."""
    srv = spawn_server(model, clients, threads=threads, n_ctx=args.ctx_size, extra=extra)
    try:
        wait_quiet(30)
        return run_load(srv.url, clients, n_predict=args.n_predict, prompt=args.prompt, duration=args.duration,
                        warmup=args.warmup)
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--starts", type=int, default=3, help="start-ups per setting (median)")
    p.add_argument("--llama-server", type=Path, help="llama.cpp's llama-server, for the margins' comparison")
    p.add_argument("--reference", action="store_true", help="build llama-server beside the libraries for it")
    p.set_defaults(duration=20.0, clients="1")
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    threads = args.threads or default_threads()
    clients = [int(c) for c in args.clients.split(",")]
    reference = args.llama_server
    if reference is None and args.reference:
        from bench.vs_llama_server import reference_server

        reference = reference_server()
    out: dict[str, Any] = {"machine": machine_info(threads), "model": model}

    wait_quiet(30)
    startup: dict[str, Any] = {}
    for fit in ("on", "off"):
        runs = [_startup(model, threads, fit) for _ in range(args.starts)]
        startup[fit] = {"seconds_median": statistics.median(r[0] for r in runs), "slots_n_ctx": runs[0][1]}
        print(f"-fit {fit}: start-up {startup[fit]['seconds_median']:.2f} s (median of {args.starts}), "
              f"slots {runs[0][1]}", flush=True)
    out["startup"] = startup

    total, most, least = _host_budget(model)
    margins = {"room for all": (total - most) // MIB - 64,
               "room for half the KV growth": (total - (most + least) // 2) // MIB,
               "no room": total // MIB}
    choices = []
    print(f"\nhost {total // MIB} MiB; the model at -np 4's whole context {most // MIB} MiB, at -fitc 4096 per "
          f"slot {least // MIB} MiB")
    print(f"{'-fitt (MiB)':>12} {'llamatwist slot ctx':>20} {'llama-server slot ctx':>22}  case")
    for case, margin in margins.items():
        ours = _startup(model, threads, "on", extra=("-fitt", str(margin)))[1][0]
        theirs = (_startup(model, threads, "on", program=[str(reference)], extra=("-fitt", str(margin)))[1][0]
                  if reference else None)
        choices.append({"case": case, "fit_target_mib": margin, "llamatwist": ours, "llama_server": theirs})
        print(f"{margin:>12} {ours:>20} {theirs if theirs is not None else '-':>22}  {case}", flush=True)
    out["margins"] = choices

    rpc_results = []
    print(f"\n{'C':>3} {'local tok/s':>12} {'via RPC tok/s':>14} {'ratio':>6}")
    for c in clients:
        res_local = _measure_load(model, c, threads, args)
        rpc = _RpcServer(threads)
        try:
            res_rpc = _measure_load(model, c, threads, args, ["--rpc", f"127.0.0.1:{rpc.port}", "-ngl", "99"])
        finally:
            rpc.stop()
        print(f"{c:>3} {res_local.tok_s:>12.1f} {res_rpc.tok_s:>14.1f} {res_rpc.tok_s / res_local.tok_s:>6.2f}",
              flush=True)
        rpc_results.append({"clients": c, "local_tok_s": res_local.tok_s, "rpc_tok_s": res_rpc.tok_s,
                            "local_ttft_ms_p50": res_local.ttft_ms_p50, "rpc_ttft_ms_p50": res_rpc.ttft_ms_p50})
    out["rpc"] = rpc_results
    save_results("fit_rpc", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
