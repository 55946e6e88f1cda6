"""OpenAI's Predicted Outputs: decode tok/s of a chat reply with its ``prediction`` vs without, side by side.

One server (no --spec-type: the prediction alone drafts). Per case, the reply without a prediction is made
first (greedy); the prediction is then built from it, and rounds alternate plain and predicted requests so
that machine noise hits both alike:

* copy: the prediction is the reply itself (the best case: every draft is taken);
* edit: the reply with every tenth word replaced (drafts re-align after each edit);
* rename: a short code file whose function the model is asked to rename; the prediction is the original file
  (what an editor sends; the model's reply may differ from it in more than the name).

Decode tok/s is ``timings.predicted_per_second`` (the prompt is evaluated alike in both modes).

    python -m bench.prediction [--rounds 3] [--model PATH] [--max-tokens 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

from bench.common import default_threads, machine_info, resolve_model, write_json
from bench.loadgen import spawn_server

__all__ = ["main"]

CODE = '''def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def factorial(n):
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result


def is_prime(n):
    if n < 2:
        return False
    for i in range(2, int(n ** 0.5) + 1):
        if n % i == 0:
            return False
    return True
'''
TEXT = (
    "The harbour town woke slowly on winter mornings. Fishermen checked their nets by lantern light, the baker "
    "pulled the first loaves from his oven, and the ferry captain walked along the pier counting the mooring "
    "ropes as he had done for thirty years. Children ran down the cobbled hill towards the school, their "
    "breath white in the cold air, while the church bell rang seven times. By the time the sun rose over the "
    "cliffs, the market square was full of voices: traders calling out the price of herring, farmers "
    "unloading carts of potatoes and cabbages, and old women arguing about the weather."
)


def _every_tenth_word(reply: str) -> str:
    words = reply.split(" ")
    return " ".join("purple" if i % 10 == 9 else w for i, w in enumerate(words))


# name -> (user message, the prediction made from the plain reply)
CASES: dict[str, tuple[str, Callable[[str], str]]] = {
    "copy": (f"Repeat this text exactly, nothing else:\n\n{TEXT}", lambda reply: reply),
    "edit": (f"Repeat this text exactly, nothing else:\n\n{TEXT}", _every_tenth_word),
    "rename": ("Rename the function factorial to fact in this code and reply with only the full code.\n\n" + CODE,
               lambda reply: CODE),
}


def _chat(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out: dict[str, Any] = json.loads(r.read())
    return out


def run_case(url: str, message: str, make: Callable[[str], str], rounds: int, max_tokens: int) -> dict[str, Any]:
    base = {"messages": [{"role": "user", "content": message}], "max_tokens": max_tokens, "temperature": 0,
            "cache_prompt": False}
    prediction = make(_chat(url, base)["choices"][0]["message"]["content"])
    speeds: dict[str, list[float]] = {"plain": [], "predicted": []}
    details: dict[str, int] = {}
    for _ in range(rounds):
        speeds["plain"].append(_chat(url, base)["timings"]["predicted_per_second"])
        out = _chat(url, {**base, "prediction": {"type": "content", "content": prediction}})
        speeds["predicted"].append(out["timings"]["predicted_per_second"])
        details = out["usage"]["completion_tokens_details"]
    plain, predicted = statistics.median(speeds["plain"]), statistics.median(speeds["predicted"])
    return {"plain_tok_s": plain, "predicted_tok_s": predicted, "speedup": predicted / plain, **details,
            "rounds": speeds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=300)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--cases", default=",".join(CASES))
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    server = spawn_server(model, 1, threads=args.threads, n_ctx=4096)
    results: dict[str, Any] = {}
    try:
        for name in args.cases.split(","):
            message, make = CASES[name]
            results[name] = run_case(server.url, message, make, args.rounds, args.max_tokens)
            r = results[name]
            print(f"{name:8s} plain {r['plain_tok_s']:6.1f} tok/s  predicted {r['predicted_tok_s']:6.1f} tok/s  "
                  f"{r['speedup']:.2f}x  accepted {r['accepted_prediction_tokens']} "
                  f"rejected {r['rejected_prediction_tokens']}", flush=True)
    finally:
        server.stop()
    path = write_json("prediction", {"model": model, "machine": machine_info(args.threads), "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
