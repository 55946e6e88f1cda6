"""Speculative decoding (issue 15): generated tok/s with n-gram speculation vs without, side by side.

One server per client count, started with ``--spec-type ngram-simple`` (llama-server's defaults otherwise:
n-gram 12, m-gram 48, --draft-max 16), or the ``--spec-type`` given (ngram-mod: its defaults, n_match 24,
drafts of 48 to 64 tokens; ngram-map-k, ngram-map-k4v, or a comma list); the baseline is the same server with ``"speculative.type": "none"``
per request, in alternating rounds so that machine noise hits both alike.

* repeat, 1 client: the model copies a ~300-token passage from its prompt (prompt lookup pays here);
* story, 1 client: an ordinary story prompt (drafts rarely match: speculation must get out of the way);
* story, 8 clients: aggregate tok/s with speculation on vs off;
* repeat-image, 1 client (with ``--mmproj``: the model's projector): the copy, after an image (a request with
  media speculates too).

Two rates per mode: closed-loop tok/s (tokens streamed in the window / its length, so every request's prompt
processing -- ~1,000 uncached tokens for the copy, the same work in both modes -- is in it) and decode tok/s
(1 / the mean gap between a stream's tokens: the decoding that speculation speeds up).

    python -m bench.speculative [--duration 20] [--rounds 3] [--model PATH] [--spec-type TYPE]
                                [--cases repeat:1,story:1,story:8] [--mmproj PATH --cases repeat-image:1]
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
from dataclasses import asdict
from typing import Any

from bench.common import default_threads, machine_info, resolve_model, write_json
from bench.loadgen import run_load, spawn_server

__all__ = ["main"]

PASSAGE = (
    "The harbour town woke slowly on winter mornings. Fishermen checked their nets by lantern light, the baker "
    "pulled the first loaves from his oven, and the ferry captain walked along the pier counting the mooring "
    "ropes as he had done for thirty years. Children ran down the cobbled hill towards the school, their "
    "breath white in the cold air, while the church bell rang seven times. By the time the sun rose over the "
    "cliffs, the market square was full of voices: traders calling out the price of herring, farmers "
    "unloading carts of potatoes and cabbages, and old women arguing about the weather. Nobody noticed the "
    "stranger who stepped off the early boat with a small leather case and a map folded in his pocket. He "
    "stood for a moment at the end of the pier, looked up at the lighthouse, and then walked into the town "
    "without a word to anyone. He took a room above the tavern, paid a week in advance in old silver coins, "
    "and asked the landlady whether the lighthouse keeper still lived in the cottage on the headland. She told "
    "him that the keeper had died two winters ago and that his daughter now kept the light alone. The stranger "
    "thanked her, climbed the narrow stairs, and did not come down again until evening. When he did, he sat by "
    "the fire with a glass of dark ale and listened to the fishermen talk about the storm that was coming from "
    "the north. They said the sea would rise higher than it had in twenty years, and that no boat would leave "
    "the harbour for three days. The stranger smiled at that, as if it were exactly the news he had hoped to "
    "hear."
)  # 328 tokens (SmolLM2's vocabulary): the issue's ~300-token passage
REPEAT_N_PREDICT = 320  # within the passage, so that every timed token is copied (past it the model rambles)
# a copying task the 135M model does follow (asked in words, it paraphrases): the passage twice, then again
REPEAT = f"Copy the text.\nText: {PASSAGE}\nCopy: {PASSAGE}\nText: {PASSAGE}\nCopy:"
STORY = "Write a short story about a dragon who learns to bake bread.\n\nOnce upon a time"
OFF = {"speculative.type": "none"}


def _image_prompt(prompt: str) -> dict[str, Any]:
    """``prompt`` after an image (a small gradient, PNG)."""
    from PIL import Image

    img = Image.new("RGB", (64, 48))
    img.putdata([(x * 4, y * 5, 128) for y in range(48) for x in range(64)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return {"prompt_string": f"<__media__>\n{prompt}", "multimodal_data": [base64.b64encode(buf.getvalue()).decode()]}


def _measure(url: str, pid: int, clients: int, prompt: str, n_predict: int, duration: float, rounds: int,
             image: bool = False) -> dict[str, Any]:
    runs: dict[str, list[Any]] = {"off": [], "on": []}
    media = {"prompt": _image_prompt(prompt)} if image else {}
    for _ in range(rounds):
        for mode in ("off", "on"):
            extra = {"temperature": 0, "ignore_eos": True, **media, **(OFF if mode == "off" else {})}
            runs[mode].append(run_load(url, clients, prompt=prompt, n_predict=n_predict, duration=duration,
                                       warmup=2.0, server_pid=pid, extra=extra))
    off = statistics.mean(r.tok_s for r in runs["off"])
    on = statistics.mean(r.tok_s for r in runs["on"])
    off_decode = statistics.mean(r.decode_tok_s for r in runs["off"])
    on_decode = statistics.mean(r.decode_tok_s for r in runs["on"])
    return {"off_tok_s": off, "on_tok_s": on, "speedup": on / off if off else 0.0,
            "off_decode_tok_s": off_decode, "on_decode_tok_s": on_decode,
            "decode_speedup": on_decode / off_decode if off_decode else 0.0,
            "errors": sum(r.errors for rs in runs.values() for r in rs),
            "runs": {m: [asdict(r) for r in rs] for m, rs in runs.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default=None)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--spec-type", default="ngram-simple", help="the server's --spec-type")
    p.add_argument("--cases", default="repeat:1,story:1,story:8", help="workload:clients, comma-separated")
    p.add_argument("--mmproj", default=None, help="the model's projector: the server loads it (repeat-image needs it)")
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    threads = args.threads or default_threads()
    wanted = {tuple(c.split(":")) for c in args.cases.split(",")}
    cases = [c for c in (("repeat", 1, REPEAT, REPEAT_N_PREDICT), ("repeat-image", 1, REPEAT, REPEAT_N_PREDICT),
                         ("story", 1, STORY, 128), ("story", 8, STORY, 128))
             if (c[0], str(c[1])) in wanted]
    if any(c[0] == "repeat-image" for c in cases) and not args.mmproj:
        p.error("repeat-image needs --mmproj")
    results: list[dict[str, Any]] = []
    for clients in sorted({c for _, c, _, _ in cases}):
        server = spawn_server(model, clients, threads=threads, n_ctx=1024 * max(clients, 2),
                              extra=["--spec-type", args.spec_type, *(["--mmproj", args.mmproj] if args.mmproj else [])])
        try:
            for name, n, prompt, n_predict in cases:
                if n != clients:
                    continue
                r = _measure(server.url, server.pid, clients, prompt, n_predict, args.duration, args.rounds,
                             image=name == "repeat-image")
                print(f"{name:>7} x{clients}: off {r['off_tok_s']:.1f} tok/s, on {r['on_tok_s']:.1f} tok/s, "
                      f"speedup {r['speedup']:.2f}x; decoding off {r['off_decode_tok_s']:.1f}, on "
                      f"{r['on_decode_tok_s']:.1f} tok/s, {r['decode_speedup']:.2f}x; errors {r['errors']}",
                      flush=True)
                results.append({"workload": name, "clients": clients, **r})
        finally:
            server.stop()
    path = write_json("speculative", {"machine": machine_info(threads), "model": model, "spec_type": args.spec_type,
                                      "results": results})
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
