"""Server tools (--tools, MCP servers): what one call of each costs through POST /tools, next to llama-server.

Both servers run the same model with ``--tools all`` and one MCP server (tests/data/mcp/sdk_server.py, the MCP
SDK's), from the repository's root. For each call: the latency of ``--calls`` calls one after the other (p50 and
p95, ms), then the calls per second with ``--concurrency`` clients at once. Each answer is checked (a 200 without
``error``), so a figure never counts failures.

    python -m bench.tools                            # llamatwist only
    python -m bench.tools --reference                # and llama-server, built beside the libraries
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import default_threads, machine_info, percentile, resolve_model, save_results, wait_quiet
from bench.loadgen import REPO_ROOT, spawn_server

MCP_SERVER = REPO_ROOT / "tests" / "data" / "mcp" / "sdk_server.py"

CALLS: dict[str, dict[str, Any]] = {
    "get_info": {},
    "read_file": {"path": "README.md", "start_line": 1, "end_line": 100},
    "file_glob_search": {"path": "llamatwist", "include": "*.py"},
    "grep_search": {"path": "llamatwist", "pattern": "def ", "include": "*.py"},
    "exec_shell_command": {"command": "echo hello"},
    "echo_echo": {"message": "hello"},  # the MCP server's echo tool
}


def _call(url: str, tool: str, params: dict[str, Any]) -> float:
    """Seconds for one call; raises unless it answered 200 without an error."""
    body = json.dumps({"tool": tool, "params": params}).encode()
    req = urllib.request.Request(url + "/tools", data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as res:  # a local server
        answer = json.loads(res.read())
    took = time.perf_counter() - t0
    if "error" in answer:
        raise RuntimeError(f"{tool}: {answer['error']}")
    return took


def _measure(url: str, calls: int, concurrency: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for tool, params in CALLS.items():
        _call(url, tool, params)  # warm: the MCP server starts on its first call
        ms = [1000 * _call(url, tool, params) for _ in range(calls)]
        one: Callable[[int], float] = lambda _: _call(url, tool, params)  # noqa: B023
        with ThreadPoolExecutor(concurrency) as pool:
            t0 = time.perf_counter()
            list(pool.map(one, range(calls)))
            rate = calls / (time.perf_counter() - t0)
        out[tool] = {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "calls_per_s": rate}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="GGUF model (default: the default model)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--calls", type=int, default=100, help="calls per tool, sequential and then concurrent")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--llama-server", type=Path, help="llama.cpp's llama-server, to measure it too")
    p.add_argument("--reference", action="store_true", help="build llama-server beside the libraries for it")
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    threads = args.threads or default_threads()
    reference = args.llama_server
    if reference is None and args.reference:
        from bench.vs_llama_server import reference_server

        reference = reference_server()
    mcp = json.dumps({"mcpServers": {"echo": {"command": sys.executable, "args": [str(MCP_SERVER)]}}})
    extra = ["--tools", "all", "--mcp-servers-json", mcp]
    programs: dict[str, list[str] | None] = {"llamatwist": None}
    if reference is not None:
        programs["llama-server"] = [str(reference)]
    out: dict[str, Any] = {"machine": machine_info(threads), "model": model, "calls": args.calls,
                           "concurrency": args.concurrency, "servers": {}}
    for name, program in programs.items():
        srv = spawn_server(model, 2, threads=threads, program=program, extra=extra)
        try:
            wait_quiet(30)
            out["servers"][name] = _measure(srv.url, args.calls, args.concurrency)
        finally:
            srv.stop()
    names = list(out["servers"])
    print(f"{'tool':<20}" + "".join(f"{n + ' p50/p95 ms':>28}{n + ' calls/s':>22}" for n in names))
    for tool in CALLS:
        row = "".join(f"{r[tool]['p50_ms']:>17.2f} / {r[tool]['p95_ms']:>8.2f}{r[tool]['calls_per_s']:>22.0f}"
                      for r in (out["servers"][n] for n in names))
        print(f"{tool:<20}{row}")
    save_results("tools", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
