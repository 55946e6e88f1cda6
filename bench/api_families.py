"""Route families on one pipeline: what a family's translation costs (issue 13).

The same streaming workload (same prompt, greedy, ``ignore_eos``, ``cache_prompt: false``, a fixed number of
tokens) goes to each family's route of one server: OpenAI ``/v1/chat/completions`` (the reference, ``chat``),
Anthropic ``/v1/messages`` (``messages``), OpenAI ``/v1/responses`` (``responses``), Ollama ``/api/chat``
(``ollama``, newline-delimited JSON), and any family added to
`FAMILIES`. The families take turns, ``--rounds`` times (chat, messages, chat, messages, ...), so a drift of
the machine hits them alike; each family's figure is the mean of its rounds, and its cost is its aggregate
tok/s relative to chat's (the goal: under 3 %).
On a shared machine tok/s moves with the other work; the server's CPU time per generated token (its
process's CPU over the run / the tokens its /metrics counted) moves much less, and shows what a
family's translation adds per token.

    python -m bench.api_families                                  # chat,messages; C=8; 2 rounds of 15 s
    python -m bench.api_families --families chat,messages --clients 8 --duration 20 --rounds 3
    python -m bench.api_families --families chat,responses
    python -m bench.api_families --families chat,ollama

A family is a route path, a request body built from (prompt, n_predict), and a reader of its stream's
``data:`` objects that marks each token (bench/loadgen.py's `Workload`); the load loop, the token window,
TTFT/ITL and the CPU accounting are bench/loadgen.py's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.common import (
    DEFAULT_PROMPT,
    CpuMeter,
    default_threads,
    machine_info,
    resolve_model,
    save_results,
    wait_quiet,
)
from bench.loadgen import LoadResult, RequestRecord, Workload, http_get, run_load, spawn_server

__all__ = ["FAMILIES", "Family", "main"]

OnData = Callable[[dict[str, Any], float, RequestRecord], None]


def _token(rec: RequestRecord, now: float, text: str) -> None:
    rec.n_partial += 1
    rec.token_times.append(now)
    rec.text.append(text)


def _final(rec: RequestRecord, now: float, predicted_n: int, per_second: float = 0.0) -> None:
    rec.predicted_n = predicted_n
    rec.predicted_per_second = per_second
    # tokens that were not streamed on their own (e.g. a held-back UTF-8 prefix) arrived with the end
    rec.token_times.extend([now] * max(predicted_n - rec.n_partial, 0))


def _chat_data(obj: dict[str, Any], now: float, rec: RequestRecord) -> None:
    for choice in obj.get("choices") or ():
        if (choice.get("delta") or {}).get("content"):
            _token(rec, now, choice["delta"]["content"])
        if choice.get("finish_reason") is not None:
            timings = obj.get("timings") or {}
            _final(rec, now, int(timings.get("predicted_n", rec.n_partial)),
                   float(timings.get("predicted_per_second", 0.0)))


def _messages_data(obj: dict[str, Any], now: float, rec: RequestRecord) -> None:
    kind = obj.get("type")
    if kind == "content_block_delta" and obj["delta"].get("type") == "text_delta":
        _token(rec, now, obj["delta"]["text"])
    elif kind == "message_delta":
        _final(rec, now, int(obj["usage"]["output_tokens"]))


def _responses_data(obj: dict[str, Any], now: float, rec: RequestRecord) -> None:
    kind = obj.get("type")
    if kind == "response.output_text.delta":
        _token(rec, now, obj["delta"])
    elif kind in ("response.completed", "response.incomplete"):
        _final(rec, now, int(obj["response"]["usage"]["output_tokens"]))


def _ollama_data(obj: dict[str, Any], now: float, rec: RequestRecord) -> None:
    if (obj.get("message") or {}).get("content"):
        _token(rec, now, obj["message"]["content"])
    if obj.get("done"):
        _final(rec, now, int(obj["eval_count"]), 1e9 * max(obj["eval_count"] - 1, 0) / max(obj["eval_duration"], 1))


def _ollama_body(prompt: str, n_predict: int) -> dict[str, Any]:
    # Ollama's sampling fields go in options; llama.cpp's own ride there too
    same = {"num_predict": n_predict, "temperature": 0, "ignore_eos": True, "cache_prompt": False}
    return {"model": "bench", "messages": [{"role": "user", "content": prompt}], "options": same}


def _responses_body(prompt: str, n_predict: int) -> dict[str, Any]:
    return {"model": "bench", "input": prompt, "max_output_tokens": n_predict}


def _chat_body(prompt: str, n_predict: int) -> dict[str, Any]:
    return {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": n_predict}


@dataclass(frozen=True)
class Family:
    path: str
    body: Callable[[str, int], dict[str, Any]]  # (prompt, n_predict) -> the family's own request
    on_data: OnData
    ndjson: bool = False

    def workload(self, prompt: str, n_predict: int) -> Workload:
        # the same generation for every family: llama.cpp's fields pass through each route's translation
        same = {"temperature": 0, "ignore_eos": True, "cache_prompt": False, "stream": True}
        return Workload(json.dumps({**self.body(prompt, n_predict), **same}).encode(), self.path, self.on_data,
                        self.ndjson)


FAMILIES: dict[str, Family] = {
    "chat": Family("/v1/chat/completions", _chat_body, _chat_data),
    "messages": Family("/v1/messages", _chat_body, _messages_data),  # Anthropic: the same three fields
    "responses": Family("/v1/responses", _responses_body, _responses_data),  # OpenAI Responses
    "ollama": Family("/api/chat", _ollama_body, _ollama_data, ndjson=True),  # Ollama (its own JSON lines)
}


def _tokens_predicted(url: str) -> float:
    """The server's llamacpp:tokens_predicted_total (spawned with --metrics)."""
    for line in http_get(url + "/metrics", timeout=10.0)[1].decode().splitlines():
        if line.startswith("llamacpp:tokens_predicted_total "):
            return float(line.split()[1])
    raise RuntimeError("no llamacpp:tokens_predicted_total in /metrics")


def _families(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--families", type=_families, default=["chat", "messages"],
                   help=f"comma-separated, the first is the reference (known: {', '.join(FAMILIES)})")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("-n", "--n-predict", type=int, default=64)
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per family and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("-m", "--model", default=None)
    p.add_argument("-t", "--threads", type=int, default=0)
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--wait-quiet", type=float, default=60.0, help="wait up to this long for an idle machine")
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    threads = args.threads or default_threads()
    runs: dict[str, list[LoadResult]] = {name: [] for name in args.families}
    cpu_ms: dict[str, list[float]] = {name: [] for name in args.families}  # server CPU ms per generated token
    server = spawn_server(model, args.clients, threads=threads)
    try:
        wait_quiet(args.wait_quiet, log=sys.stderr)
        for rnd in range(args.rounds):
            for name in args.families:
                work = FAMILIES[name].workload(args.prompt, args.n_predict)
                meter, n0 = CpuMeter([server.pid]), _tokens_predicted(server.url)
                meter.start()
                r = run_load(server.url, args.clients, duration=args.duration, server_pid=server.pid, workload=work)
                used = meter.stop()
                n_tokens = _tokens_predicted(server.url) - n0
                cpu_ms[name].append(1e3 * used["ours_cores"] * used["seconds"] / max(n_tokens, 1))
                print(f"  round {rnd + 1} {name:>9}: {r.tok_s:.1f} tok/s, {cpu_ms[name][-1]:.2f} server cpu ms/token, "
                      f"{r.requests_completed} requests, {r.errors} errors {r.error_samples or ''}, "
                      f"other cpu {r.cpu['other_cores']:.2f}", file=sys.stderr, flush=True)
                runs[name].append(r)
    finally:
        server.stop()
    ref = sum(r.tok_s for r in runs[args.families[0]]) / args.rounds
    ref_cpu = sum(cpu_ms[args.families[0]]) / args.rounds
    vs = "vs " + args.families[0]
    print(f"{'family':>9} {'tok/s':>8} {vs:>9} {'cpu ms/tok':>10} {vs:>9} {'TTFT p50':>9} {'ITL p50':>8} {'errors':>6} "
          f"{'other cpu':>9}")
    summary = []
    for name, rs in runs.items():
        tok_s = sum(r.tok_s for r in rs) / len(rs)
        ttft = sum(r.ttft_ms_p50 for r in rs) / len(rs)
        itl = sum(r.itl_ms_p50 for r in rs) / len(rs)
        errors = sum(r.errors for r in rs)
        other = sum(r.cpu["other_cores"] for r in rs) / len(rs)
        cost = 1 - tok_s / ref if ref else 0.0
        cpu = sum(cpu_ms[name]) / len(rs)
        cpu_cost = cpu / ref_cpu - 1 if ref_cpu else 0.0
        print(f"{name:>9} {tok_s:>8.1f} {-cost:>+9.1%} {cpu:>10.2f} {cpu_cost:>+9.1%} {ttft:>9.1f} {itl:>8.1f} "
              f"{errors:>6} {other:>9.2f}")
        summary.append({"family": name, "path": FAMILIES[name].path, "tok_s": tok_s, "cost_vs_reference": cost,
                        "server_cpu_ms_per_token": cpu, "cpu_cost_vs_reference": cpu_cost,
                        "ttft_ms_p50": ttft, "itl_ms_p50": itl, "errors": errors, "other_cores": other,
                        "server_cpu_ms_per_token_rounds": cpu_ms[name], "rounds": [asdict(r) for r in rs]})
    save_results("api_families", {
        "kind": "api_families", "machine": machine_info(threads), "model": model, "clients": args.clients,
        "n_predict": args.n_predict, "duration_s": args.duration, "rounds": args.rounds, "families": summary,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
