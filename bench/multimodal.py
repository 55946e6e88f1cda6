"""Multimodal cost (issue 16): time to first token with an image, cold and cached, and what image requests
cost text clients.

Against one ``-np 5`` server with the generated vision model (scripts/make_vision_model.py: the default text
model and a random-weight LLaVA projector, 16 tokens per 32x32 image):

* TTFT: ``n_predict 1`` requests with an image never seen before (cold: preprocessing, encoding, decoding the
  image's embeddings) vs. the next turn of the same conversation with the same image (its KV reused);
* text aggregate tok/s at 4 streaming text clients alone, then while a fifth client sends image requests
  (each with a new image) at ``--image-rate`` per second (open loop; 0: back to back, the worst case), then the
  same with text requests of the same token count in place of the images: the issue's goal is >= 0.8x, and the
  text side run shows whether an image costs more than its tokens would as text.

    python -m bench.multimodal [--duration 20] [--image-rate 1] [--model PATH]

On a shared small machine use ``--threads 1``: with 2 threads, ggml's threads wait for each other at every
barrier while another process holds a core, and every figure grows about 20x (3 s for a 9-token prompt).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import json
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import default_threads, machine_info, resolve_model, wait_quiet, write_json
from bench.loadgen import LoadResult, run_load, spawn_server

__all__ = ["main"]

N_CLIENTS = 4
REPO = Path(__file__).resolve().parent.parent


def _vision_files(model: str) -> tuple[str, str]:
    from llamatwist.models import cache_dir

    spec = importlib.util.spec_from_file_location("make_vision_model", REPO / "scripts" / "make_vision_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text, mmproj = module.make(cache_dir() / "bench-vision", Path(model))
    return str(text), str(mmproj)


def _image(seed: int) -> str:
    from PIL import Image  # a runtime dependency of llamatwist

    img = Image.new("RGB", (64, 48), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    img.putpixel((seed % 64, seed % 48), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url + "/completion", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return dict(json.loads(resp.read()))


def _ask(url: str, image: str, question: str, n_predict: int = 1) -> tuple[float, int, int]:
    """Seconds until the (first) token (a non-streamed ``n_predict`` 1 request), and the server's prompt_n and
    cache_n, which show whether the image's KV was reused."""
    t0 = time.perf_counter()
    out = _post(url, {"prompt": {"prompt_string": f"Look at this: <__media__>\n{question}",
                                 "multimodal_data": [image]},
                      "n_predict": n_predict, "temperature": 0, "id_slot": 0})
    timings = out.get("timings", {})
    return time.perf_counter() - t0, int(timings.get("prompt_n", -1)), int(timings.get("cache_n", -1))


# the side client's text requests put this many words where the image request has its image (16 tokens)
N_IMAGE_WORDS = 16
_WORDS = ("red", "blue", "green", "cat", "dog", "sun", "tree", "house", "car", "bird", "fish", "moon", "road",
          "hat", "cup", "door", "book")  # one token each (SmolLM2's vocabulary)


def _side_request(kind: str, seed: int, n_predict: int) -> dict[str, Any]:
    if kind == "image":
        prompt: Any = {"prompt_string": "Picture: <__media__>\nDescribe it.", "multimodal_data": [_image(seed)]}
    else:  # the same request with words in place of the image: what the same number of tokens costs as text
        words = " ".join(_WORDS[(seed * 7 + k * 3) % len(_WORDS)] for k in range(N_IMAGE_WORDS))
        prompt = f"Picture: {words}\nDescribe it."
    return {"prompt": prompt, "n_predict": n_predict, "temperature": 0, "cache_prompt": False}


def _beside(url: str, kind: str, args: argparse.Namespace, load: Callable[[], LoadResult]) -> tuple[LoadResult, int]:
    """Run ``load`` while a fifth client sends ``kind`` requests: at ``--image-rate`` per second (open loop:
    each on schedule, whether or not the last one has finished), or back to back when the rate is 0."""
    stop = threading.Event()
    sent = [0]
    threads: list[threading.Thread] = []

    def one(seed: int) -> None:
        _post(url, _side_request(kind, seed, args.image_n_predict))
        sent[0] += 1

    def client() -> None:
        seed, t_next = 1000, time.perf_counter()
        while not stop.is_set():
            seed += 1
            if args.image_rate <= 0:
                one(seed)
                continue
            t = threading.Thread(target=one, args=(seed,))
            t.start()
            threads.append(t)
            t_next += 1.0 / args.image_rate
            stop.wait(max(0.0, t_next - time.perf_counter()))

    worker = threading.Thread(target=client)
    worker.start()
    try:
        return load(), sent[0]
    finally:
        stop.set()
        worker.join()
        for t in threads:
            t.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default=None)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--n-predict", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7, help="TTFT samples per case")
    p.add_argument("--image-n-predict", type=int, default=8,
                   help="tokens each image request generates (1: only the image's own cost, no 5th generating slot)")
    p.add_argument("--image-rate", type=float, default=1.0,
                   help="side requests per second (open loop); 0: back to back, the worst case")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="wait up to this long for an idle machine before each measurement")
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    text, mmproj = _vision_files(model)
    threads = args.threads or default_threads()
    # one slot more than the text clients: the image client must not take a text client's slot, so the ratio
    # measures what encoding and decoding images costs, not a slot shortage
    server = spawn_server(text, N_CLIENTS + 1, threads=threads, extra=["--mmproj", mmproj])
    try:
        _ask(server.url, _image(0), "warm-up")
        busy_before = {"ttft": wait_quiet(args.wait_quiet, log=sys.stderr)}
        cold_runs, cached_runs = [], []
        for i in range(1, args.rounds + 1):
            img = _image(i)
            cold_runs.append(_ask(server.url, img, "What is it?"))
            cached_runs.append(_ask(server.url, img, "What is it? Say more."))  # same image, next turn
        cold = [r[0] for r in cold_runs]
        cached = [r[0] for r in cached_runs]
        ttft = {"cold_ms_p50": statistics.median(cold) * 1e3, "cached_ms_p50": statistics.median(cached) * 1e3,
                # (prompt_n, cache_n) of the last round: the cached turn evaluates only its new text
                "cold_prompt_cache_n": cold_runs[-1][1:], "cached_prompt_cache_n": cached_runs[-1][1:]}
        print(f"TTFT with one image: cold {ttft['cold_ms_p50']:.0f} ms (prompt_n, cache_n "
              f"{cold_runs[-1][1:]}), same image next turn {ttft['cached_ms_p50']:.0f} ms "
              f"({cached_runs[-1][1:]}) (median of {args.rounds})", flush=True)

        busy_before["text_alone"] = wait_quiet(args.wait_quiet, log=sys.stderr)
        alone = run_load(server.url, N_CLIENTS, n_predict=args.n_predict, duration=args.duration,
                         server_pid=server.pid)
        side: dict[str, Any] = {}
        for kind in ("image", "text"):
            busy_before[f"text_with_{kind}"] = wait_quiet(args.wait_quiet, log=sys.stderr)
            side[kind] = _beside(server.url, kind, args, lambda: run_load(
                server.url, N_CLIENTS, n_predict=args.n_predict, duration=args.duration, server_pid=server.pid))
    finally:
        server.stop()
    rate = f"{args.image_rate:g}/s" if args.image_rate > 0 else "back to back"
    results: dict[str, Any] = {}
    for kind, (mixed, n_sent) in side.items():
        ratio = mixed.tok_s / alone.tok_s if alone.tok_s else 0.0
        results[kind] = {"load": asdict(mixed), "requests": n_sent, "ratio": ratio,
                         "other_cores": mixed.cpu.get("other_cores")}
        what = ("image requests" if kind == "image"
                else f"text requests of the same length ({N_IMAGE_WORDS} words where the image was)")
        print(f"text at {N_CLIENTS} clients: {alone.tok_s:.1f} tok/s alone, {mixed.tok_s:.1f} tok/s beside "
              f"{n_sent} {what} ({rate}): {ratio:.2f}x" + ("; goal >= 0.8x" if kind == "image" else ""), flush=True)
    # other processes' cores during each load run (above ~0.1 the figures are disturbed on a small machine)
    other = {"text_alone": alone.cpu.get("other_cores"), **{k: v["other_cores"] for k, v in results.items()}}
    print(f"other processes' cores: {other} (idle before: {busy_before})", flush=True)
    path = write_json("multimodal", {
        "machine": machine_info(threads), "model": model, "mmproj": mmproj, "clients": N_CLIENTS,
        "ttft": ttft, "ttft_cold_s": cold, "ttft_cached_s": cached, "image_rate": args.image_rate,
        "image_n_predict": args.image_n_predict, "text_alone": asdict(alone), "beside": results,
        "busy_before": busy_before,
    })
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
