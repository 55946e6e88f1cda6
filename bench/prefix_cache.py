"""Shared-prefix and multi-turn workloads for the prefix cache (issue 5).

* shared: 8 clients x 2 requests; every prompt is one ~1000-token system
  prompt plus the client's own question; 32 generated tokens each.
* multiturn: 8 clients x 4 turns; each client continues its own conversation
  (the same system prompt, then its history, then a new question).

Both run against ``-np 8`` twice: with one KV pool (``-kvu``) and the shared
prefix cache, and with a KV stream per slot (llama-server's layout for an
explicit ``-np 8``: each slot reuses only its own previous prompt). Reported: TTFT p50/p95, aggregate generated tok/s
(all generated tokens / wall time of the workload), prompt tokens evaluated.

    python -m bench.prefix_cache
    python -m bench.prefix_cache --workload shared --modes shared
    python -m bench.prefix_cache --floor     # the engine alone: what any server could do here
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.common import default_threads, machine_info, percentile, resolve_model, write_json
from bench.loadgen import Connection, HttpError, RequestRecord, http_get, spawn_server, stream_completion

__all__ = ["main"]

N_CLIENTS = 8
N_PREDICT = 32
SYSTEM = "<|im_start|>system\nYou are the support assistant of a railway museum. " + " ".join(
    f"Exhibit {i}: locomotive number {100 + i}, built in {1850 + i}, restored in {1950 + i}, "
    f"shown in hall {i % 7}." for i in range(28)
) + "<|im_end|>\n"
# shared: one KV pool (-kvu) and the shared prefix cache; per-slot: llama-server's layout for
# an explicit -np 8 (a KV stream per slot, each reusing only its own previous prompt)
MODES = {"shared": True, "per-slot": False}


@dataclass
class WorkloadResult:
    workload: str
    mode: str
    requests: int
    errors: int
    wall_s: float
    generated_tokens: int
    gen_tok_s: float
    ttft_ms_p50: float
    ttft_ms_p95: float
    prompt_tokens_evaluated: int
    prompt_tokens_cached: int


def turn_prompt(history: str, question: str) -> str:
    return f"{SYSTEM}{history}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


async def _client(host: str, port: int, client: int, turns: int, multiturn: bool,
                  records: list[RequestRecord]) -> None:
    conn = Connection(host, port)
    history = ""
    try:
        for turn in range(turns):
            question = f"Client {client}, question {turn}: which exhibit was built in {1850 + 5 * client + turn}?"
            prompt = turn_prompt(history if multiturn else "", question)
            body = json.dumps({"prompt": prompt, "n_predict": N_PREDICT, "temperature": 0, "stream": True,
                               "ignore_eos": True, "return_tokens": False}).encode()
            rec = RequestRecord(t_send=time.perf_counter())
            records.append(rec)
            answer = await _stream_text(conn, body, rec)
            if multiturn:
                history += f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
    finally:
        conn.close()


async def _stream_text(conn: Connection, body: bytes, rec: RequestRecord) -> str:
    try:
        await stream_completion(conn, body, rec)
    except (HttpError, OSError, asyncio.IncompleteReadError, ValueError) as exc:  # recorded; the workload goes on
        rec.error = f"{type(exc).__name__}: {exc}"
        conn.close()
    return "".join(rec.text)


def _metric(url: str, name: str) -> float:
    _, body = http_get(url + "/metrics", timeout=10)
    for line in body.decode().splitlines():
        if line.startswith(f"llamacpp:{name}"):
            return float(line.split()[-1])
    return 0.0


def run_workload(url: str, workload: str, mode: str) -> WorkloadResult:
    parts = urlsplit(url)
    multiturn = workload == "multiturn"
    turns = 4 if multiturn else 2
    records: list[RequestRecord] = []
    evaluated0, cached0 = _metric(url, "prompt_tokens_total"), _metric(url, "prompt_tokens_cached_total")
    t0 = time.perf_counter()

    async def run() -> None:
        await asyncio.gather(*(_client(parts.hostname or "127.0.0.1", parts.port or 80, c, turns, multiturn, records)
                               for c in range(N_CLIENTS)))

    asyncio.run(run())
    wall = time.perf_counter() - t0
    ttft = [(r.token_times[0] - r.t_send) * 1e3 for r in records if r.token_times]
    generated = sum(len(r.token_times) for r in records)
    return WorkloadResult(
        workload=workload, mode=mode, requests=len(records), errors=sum(1 for r in records if r.error),
        wall_s=round(wall, 2), generated_tokens=generated, gen_tok_s=generated / wall,
        ttft_ms_p50=percentile(ttft, 50), ttft_ms_p95=percentile(ttft, 95),
        prompt_tokens_evaluated=int(_metric(url, "prompt_tokens_total") - evaluated0),
        prompt_tokens_cached=int(_metric(url, "prompt_tokens_cached_total") - cached0),
    )


def engine_floor(model_path: str, threads: int) -> dict[str, float]:
    """In-process, no HTTP: the prefix's prefill rate and the decode step of 8
    sequences sharing it (the two costs that bound the workloads)."""
    from llamatwist.engine.batch import Batch
    from llamatwist.engine.context import Context, ContextParams
    from llamatwist.engine.model import Model

    model = Model(model_path, n_gpu_layers=0)
    tokens = model.vocab.tokenize(turn_prompt("", "Client 1, question 0: which exhibit?"), True, True)
    ctx = Context(model, ContextParams(n_ctx=16384, n_seq_max=N_CLIENTS, n_threads=threads,
                                       n_threads_batch=threads, kv_unified=True))
    batch = Batch(ctx.n_batch)
    batch.add_sequence(tokens[:32], 0, 0, True)
    ctx.decode(batch)  # warm-up
    ctx.clear()
    batch.clear()
    batch.add_sequence(tokens, 0, 0, True)
    t0 = time.perf_counter()
    ctx.decode(batch)
    prefill_s = time.perf_counter() - t0
    for seq in range(1, N_CLIENTS):
        ctx.seq_cp(0, seq)
    steps = []
    for i in range(N_PREDICT):
        batch.clear()
        for seq in range(N_CLIENTS):
            batch.add(100 + seq, len(tokens) + i, seq, True)
        t0 = time.perf_counter()
        ctx.decode(batch)
        steps.append(time.perf_counter() - t0)
    ctx.close()
    model.close()
    return {"prefix_tokens": len(tokens), "prefill_s": prefill_s, "prefill_tok_s": len(tokens) / prefill_s,
            "step_ms_p50": percentile([s * 1e3 for s in steps], 50)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", help="GGUF model (default: the project's default model)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--ctx-size", type=int, default=16384, help="-c for the server (-np 8: 2048 per slot)")
    p.add_argument("--workload", choices=["shared", "multiturn", "both"], default="both")
    p.add_argument("--modes", default="shared,per-slot", help="comma-separated: shared, per-slot")
    p.add_argument("--server-arg", action="append", default=[], help="extra server argument (repeatable)")
    p.add_argument("--floor", action="store_true", help="measure the engine alone instead")
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    threads = args.threads or default_threads()
    if args.floor:
        floor = engine_floor(model, threads)
        print(f"prefix of {floor['prefix_tokens']} tokens: prefill {floor['prefill_s']:.2f} s "
              f"({floor['prefill_tok_s']:.0f} tok/s); {N_CLIENTS}-sequence decode step at that depth: "
              f"{floor['step_ms_p50']:.1f} ms (p50)")
        write_json("prefix_cache_floor", {"machine": machine_info(threads), "model": model, **floor})
        return 0
    workloads = ["shared", "multiturn"] if args.workload == "both" else [args.workload]
    results: list[dict[str, Any]] = []
    for mode in args.modes.split(","):
        for workload in workloads:
            # a fresh server per run: nothing cached from the previous workload
            server = spawn_server(model, N_CLIENTS, threads=threads, n_ctx=args.ctx_size, kv_unified=MODES[mode],
                                  extra=args.server_arg)
            try:
                r = run_workload(server.url, workload, mode)
            finally:
                server.stop()
            print(f"{workload:>9} {mode:>8}: {r.requests} requests ({r.errors} errors) in {r.wall_s:.1f} s, "
                  f"{r.gen_tok_s:.1f} generated tok/s, TTFT p50 {r.ttft_ms_p50:.0f} ms p95 {r.ttft_ms_p95:.0f} ms, "
                  f"prompt tokens evaluated {r.prompt_tokens_evaluated} / reused {r.prompt_tokens_cached}",
                  flush=True)
            results.append(asdict(r))
    path = write_json("prefix_cache", {"machine": machine_info(threads), "model": model, "n_parallel": N_CLIENTS,
                                       "n_ctx": args.ctx_size, "n_predict": N_PREDICT, "server_args": args.server_arg,
                                       "results": results})
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
