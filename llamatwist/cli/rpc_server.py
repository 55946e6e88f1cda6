# -*- test-case-name: tests.test_rpc -*-
"""``llamatwist-rpc-server``: llama.cpp's rpc-server, the far end of ``--rpc``.

Offers this machine's devices (its GPUs, else the CPU; ``-d`` names them) to servers started with
``--rpc HOST:PORT``, with rpc-server's flags and defaults. Like rpc-server it has no authentication:
bind it to a private network only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

DEFAULT_PORT = 50052


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamatwist-rpc-server",
                                description="Serve this machine's ggml devices to llamatwist/llama-server --rpc.")
    p.add_argument("-t", "--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="number of threads for the CPU device (default: %(default)s)")
    p.add_argument("-d", "--device", default="",
                   help="comma-separated list of devices (default: the GPUs, else the CPU)")
    p.add_argument("-H", "--host", default="127.0.0.1", help="host to bind to (default: %(default)s)")
    p.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="port to bind to (default: %(default)s)")
    p.add_argument("-c", "--cache", action="store_true",
                   help="enable local file cache (tensors the client sends again are read from it)")
    return p


def _cache_dir() -> str:
    """rpc-server's: $LLAMA_CACHE/rpc, else llamatwist's cache directory's rpc/."""
    from llamatwist.models import cache_dir

    root = Path(os.environ["LLAMA_CACHE"]) if os.environ.get("LLAMA_CACHE") else cache_dir()
    path = root / "rpc"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"error: invalid port {args.port}", file=sys.stderr)
        return 1
    if args.threads < 1:
        print(f"error: invalid number of threads {args.threads}", file=sys.stderr)
        return 1
    if args.host != "127.0.0.1":
        print(f"WARNING: Host ('{args.host}') is != '127.0.0.1'\n"
              "         Never expose the RPC server to an open network!\n"
              "         It has no authentication: anyone who reaches the port runs code on this machine's devices.",
              file=sys.stderr)
    from llamatwist.engine.errors import EngineError
    from llamatwist.engine.model import devices
    from llamatwist.engine.rpc import serve

    names = [n for n in args.device.split(",") if n]
    known = {d.name for d in devices()}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"error: unknown device: {', '.join(unknown)}\navailable devices:", file=sys.stderr)
        for d in devices():
            print(f"  {d.name}: {d.description} ({d.total >> 20} MiB, {d.free >> 20} MiB free)", file=sys.stderr)
        return 1
    # ggml serves in a blocking call: the default actions end the process at once on ^C or a stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        serve(args.host, args.port, names, args.threads, _cache_dir() if args.cache else None)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
