"""In-process engine reference: the throughput ceiling for the server.

For each client count C, C sequences get the same prompt (the load
generator's prompt text, tokenized the way ``/completion`` does it), then
generate ``--n-predict`` tokens each, greedy with EOS banned.  Every
generation step is ONE ``llama_decode`` over a batch holding one token per
sequence, which is exactly what the server's decode loop does with C busy
slots -- minus HTTP, JSON, detokenization and the reactor.

    python -m bench.engine_ref --clients 1,2,4,8 --n-predict 128

Reported per C (median of ``--repeat`` runs):

* prompt tok/s: C x prompt tokens / time of the prompt phase (the prompts
  are decoded together, in n_batch chunks, as the server admits them; the
  phase ends once every sequence has sampled its first token);
* gen tok/s: C x (n_predict - 1) / time of the generation steps (each step
  decodes C tokens and samples C new ones);
* e2e tok/s: C x n_predict / (prompt + generation) -- the rate one
  request "cycle" at a time would allow, prompt included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_CTX,
    DEFAULT_N_PREDICT,
    DEFAULT_PROMPT,
    CpuMeter,
    default_threads,
    machine_info,
    parse_clients,
    percentile,
    resolve_model,
    save_results,
)
from llamatwist.engine.batch import Batch
from llamatwist.engine.context import Context, ContextParams
from llamatwist.engine.model import Model
from llamatwist.engine.sampling import Sampler
from llamatwist.sampling_defaults import SamplerSettings

__all__ = ["EngineRun", "EngineSummary", "main", "run_engine_ref"]

GREEDY = SamplerSettings(temperature=0.0, ignore_eos=True)


@dataclass
class EngineRun:
    clients: int
    n_prompt: int
    n_predict: int
    prompt_s: float
    gen_s: float
    step_ms: list[float] = field(repr=False)

    @property
    def prompt_tps(self) -> float:
        return self.clients * self.n_prompt / self.prompt_s

    @property
    def gen_tps(self) -> float:
        return self.clients * (self.n_predict - 1) / self.gen_s if self.n_predict > 1 else 0.0

    @property
    def e2e_tps(self) -> float:
        return self.clients * self.n_predict / (self.prompt_s + self.gen_s)


@dataclass
class EngineSummary:
    clients: int
    n_prompt: int
    n_predict: int
    repeats: int
    prompt_tps: float
    gen_tps: float
    e2e_tps: float
    gen_tps_runs: list[float]
    step_ms_p50: float
    step_ms_p95: float
    cpu: dict[str, float]


def _one_run(ctx: Context, model: Model, batch: Batch, prompt: list[int], clients: int,
             n_predict: int) -> EngineRun:
    ctx.clear()
    samplers = [Sampler(model, GREEDY) for _ in range(clients)]
    n_prompt = len(prompt)

    # Prompt phase: every sequence's prompt, packed into n_batch-sized decodes
    # (the server fills a batch with prompt chunks the same way).
    t0 = time.perf_counter()
    tokens = [-1] * clients
    fed = [0] * clients
    while any(f < n_prompt for f in fed):
        batch.clear()
        ends: list[tuple[int, int]] = []
        for s in range(clients):
            if fed[s] >= n_prompt or batch.free == 0:
                continue
            chunk = prompt[fed[s] : fed[s] + batch.free]
            last = fed[s] + len(chunk) == n_prompt
            idx = batch.add_sequence(chunk, fed[s], s, last)
            fed[s] += len(chunk)
            if last:
                ends.append((s, idx))
        ctx.decode(batch)
        for s, idx in ends:  # first token of the sequences whose prompt ended here
            tokens[s] = samplers[s].sample(ctx, idx)
    t1 = time.perf_counter()

    # Generation: one batch per step, one token per sequence.
    pos = n_prompt
    step_ms: list[float] = []
    for _ in range(n_predict - 1):
        ts = time.perf_counter()
        batch.clear()
        out_idx = [batch.add(tokens[s], pos, s, True) for s in range(clients)]
        ctx.decode(batch)
        tokens = [samplers[s].sample(ctx, out_idx[s]) for s in range(clients)]
        pos += 1
        step_ms.append((time.perf_counter() - ts) * 1e3)
    t2 = time.perf_counter()
    ctx.clear()
    return EngineRun(clients, n_prompt, n_predict, t1 - t0, t2 - t1, step_ms)


def run_engine_ref(
    model_path: str,
    clients: list[int],
    *,
    n_predict: int = DEFAULT_N_PREDICT,
    prompt_text: str = DEFAULT_PROMPT,
    threads: int | None = None,
    n_ctx: int = DEFAULT_CTX,
    kv_unified: bool = True,
    repeat: int = 3,
    warmup_tokens: int = 16,
    n_seq_max: int | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Measure every C in ``clients``; returns a JSON-able result dict."""
    threads = threads or default_threads()
    model = Model(model_path, n_gpu_layers=-1)
    max_c = max(*clients, n_seq_max or 0)
    ctx = Context(model, ContextParams(
        n_ctx=n_ctx, n_batch=2048, n_ubatch=512, n_seq_max=max_c,
        n_threads=threads, n_threads_batch=threads, kv_unified=kv_unified,
    ))
    # Tokenized as /completion does it: special tokens added and parsed.
    prompt = model.vocab.tokenize(prompt_text, True, True)
    need = len(prompt) + n_predict
    if (max(clients) * need > ctx.n_ctx) if kv_unified else (need > ctx.n_ctx_seq):
        raise SystemExit(f"context too small for {max(clients)} x {need} tokens (n_ctx {ctx.n_ctx}, "
                         f"{ctx.n_ctx_seq} per sequence)")
    batch = Batch(max(ctx.n_batch, max_c))

    summaries: list[EngineSummary] = []
    for c in clients:
        if warmup_tokens > 0:
            _one_run(ctx, model, batch, prompt, c, min(warmup_tokens, n_predict))
        meter = CpuMeter([os.getpid()])
        meter.start()
        runs = [_one_run(ctx, model, batch, prompt, c, n_predict) for _ in range(max(repeat, 1))]
        cpu = meter.stop()
        steps = [ms for r in runs for ms in r.step_ms]
        summary = EngineSummary(
            clients=c,
            n_prompt=len(prompt),
            n_predict=n_predict,
            repeats=len(runs),
            prompt_tps=statistics.median(r.prompt_tps for r in runs),
            gen_tps=statistics.median(r.gen_tps for r in runs),
            e2e_tps=statistics.median(r.e2e_tps for r in runs),
            gen_tps_runs=[round(r.gen_tps, 2) for r in runs],
            step_ms_p50=percentile(steps, 50),
            step_ms_p95=percentile(steps, 95),
            cpu=cpu,
        )
        summaries.append(summary)
        if log is not None:
            print(f"  engine C={c}: gen {summary.gen_tps:.1f} tok/s (runs {summary.gen_tps_runs}), "
                  f"prompt {summary.prompt_tps:.1f} tok/s, step p50 {summary.step_ms_p50:.2f} ms, "
                  f"cpu {cpu}",
                  file=log, flush=True)
    ctx.close()
    model.close()
    return {
        "kind": "engine_ref",
        "model": model_path,
        "n_predict": n_predict,
        "n_prompt": len(prompt),
        "n_ctx": n_ctx,
        "n_seq_max": max_c,
        "kv_unified": kv_unified,
        "machine": machine_info(threads),
        "results": [asdict(s) for s in summaries],
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"engine reference: {result['model']}, {result['machine']['threads']} threads, "
          f"prompt {result['n_prompt']} tok, n_predict {result['n_predict']}")
    print(f"{'C':>3} {'gen tok/s':>10} {'e2e tok/s':>10} {'prompt tok/s':>13} {'step p50 ms':>12} {'p95 ms':>8}")
    for r in result["results"]:
        print(f"{r['clients']:>3} {r['gen_tps']:>10.1f} {r['e2e_tps']:>10.1f} {r['prompt_tps']:>13.1f} "
              f"{r['step_ms_p50']:>12.2f} {r['step_ms_p95']:>8.2f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", help="GGUF path (default: the project's default model)")
    p.add_argument("--clients", default="1,2,4,8", help="comma-separated client counts C (default 1,2,4,8)")
    p.add_argument("-n", "--n-predict", type=int, default=DEFAULT_N_PREDICT, help="tokens generated per sequence")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: os.cpu_count())")
    p.add_argument("-c", "--ctx-size", type=int, default=DEFAULT_CTX, help="context size (shared by all sequences)")
    p.add_argument("--no-kv-unified", action="store_true", help="one KV stream per sequence instead of a shared one")
    p.add_argument("--n-seq-max", type=int, default=None,
                   help="sequences the context is sized for (default: max C; the server uses -np)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text (same as the load generator's)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per C; the median is reported (default 3)")
    p.add_argument("--warmup-tokens", type=int, default=16, help="untimed warm-up run length per C (0: none)")
    p.add_argument("--out", type=Path, help="write the JSON result here (default: bench/results/engine_ref-*.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n_predict < 1:
        raise SystemExit("--n-predict must be >= 1")
    result = run_engine_ref(
        resolve_model(args.model), parse_clients(args.clients),
        n_predict=args.n_predict, prompt_text=args.prompt, threads=args.threads, n_ctx=args.ctx_size,
        kv_unified=not args.no_kv_unified, repeat=args.repeat, warmup_tokens=args.warmup_tokens,
        n_seq_max=args.n_seq_max, log=sys.stderr,
    )
    print_table(result)
    save_results("engine_ref", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
