"""Constrained (JSON schema) vs unconstrained generation throughput.

One server (-np = max C). For each C, the load generator runs the same
streaming /completion workload twice: plain, and with a realistic
json_schema (nested object, array of objects, enums, a date). The goal is
constrained >= 90 % of unconstrained throughput (tok/s) at C = 1 and C = 8.

    python -m bench.constrained                  # C = 1, 8; 20 s per run
    python -m bench.constrained --clients 1 --duration 10
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from bench.common import default_threads, machine_info, parse_clients, resolve_model, write_json
from bench.loadgen import run_load, spawn_server

__all__ = ["SCHEMA", "main"]

# A realistic schema: an order with a customer, a date, a status enum and line items.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "date": {"type": "string", "format": "date"},
        "status": {"enum": ["pending", "shipped", "delivered", "cancelled"]},
        "customer": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "email": {"type": "string", "format": "email"},
                "tier": {"enum": ["free", "pro", "enterprise"]},
            },
            "required": ["name", "email", "tier"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "maxLength": 12},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                    "price": {"type": "number", "minimum": 0},
                },
                "required": ["sku", "quantity", "price"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["order_id", "date", "status", "customer", "items"],
    "additionalProperties": False,
}

PROMPT = "Write one example order as JSON with many line items:\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", help="GGUF path (default: the project's default model)")
    p.add_argument("--clients", default="1,8")
    p.add_argument("-n", "--n-predict", type=int, default=128)
    p.add_argument("-t", "--threads", type=int, default=None)
    p.add_argument("--duration", type=float, default=20.0)
    args = p.parse_args(argv)
    clients = parse_clients(args.clients)
    threads = args.threads or default_threads()
    model = resolve_model(args.model)
    server = spawn_server(model, max(clients), threads=threads)
    rows: list[dict[str, Any]] = []
    try:
        for c in clients:
            plain = run_load(server.url, c, n_predict=args.n_predict, prompt=PROMPT, duration=args.duration,
                             server_pid=server.proc.pid)
            constrained = run_load(server.url, c, n_predict=args.n_predict, prompt=PROMPT, duration=args.duration,
                                   server_pid=server.proc.pid, extra={"json_schema": SCHEMA})
            rows.append({"clients": c, "plain": asdict(plain), "constrained": asdict(constrained)})
    finally:
        server.stop()
    print(f"model {model}, {threads} threads, n_predict {args.n_predict}, {args.duration:.0f} s per run")
    print("  C  plain tok/s  json tok/s   ratio  srv/req plain  srv/req json  errors")
    for r in rows:
        a, b = r["plain"], r["constrained"]
        ratio = 100 * b["tok_s"] / a["tok_s"] if a["tok_s"] else 0.0
        print(f"{r['clients']:3d} {a['tok_s']:12.1f} {b['tok_s']:11.1f} {ratio:6.1f}%"
              f" {a['server_predicted_per_second']:14.1f} {b['server_predicted_per_second']:13.1f}"
              f"  {a['errors'] + b['errors']}")
    path = write_json("constrained", {"kind": "constrained", "machine": machine_info(threads), "model": model,
                                      "n_predict": args.n_predict, "schema": SCHEMA, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
