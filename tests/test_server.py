"""A real llamatwist process, the real model, real HTTP."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.conftest import REPO, Server, free_port

PROMPT = "The capital of France is"
# What the model writes depends on the CPU's SIMD path (greedy text of a tiny quantized model): these tests
# check shapes and compare two paths on the same machine, never the model's words. ignore_eos makes a reply
# run to its token limit (a model may otherwise stop at once); without the prompt cache both paths evaluate
# the prompt the same way.
FREE = {"ignore_eos": True, "cache_prompt": False}


def stream_completion(srv: Server, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    r = requests.post(srv.url + "/completion", json={**body, "stream": True}, stream=True, timeout=120)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for line in r.iter_lines():
        if line:
            assert line.startswith(b"data: "), line
            events.append(json.loads(line[6:]))
    return "".join(e["content"] for e in events), events


def metrics(srv: Server) -> dict[str, float]:
    text = srv.get("/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(llamacpp:\S+) (\S+)$", text, re.MULTILINE) for m in [m]}


def all_idle(srv: Server) -> bool:
    return not any(s["is_processing"] for s in srv.get("/slots").json())


def wait_idle(srv: Server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all_idle(srv):
            return
        time.sleep(0.05)
    raise AssertionError(f"slots still busy: {srv.get('/slots').json()}")


# -- completion ---------------------------------------------------------

def test_completion_non_streaming(server: Server) -> None:
    r = server.post("/completion", {"prompt": PROMPT, "n_predict": 16, "temperature": 0, "return_tokens": True,
                                    "ignore_eos": True})
    assert r.status_code == 200
    body = r.json()
    assert len(body["tokens"]) == 16  # the content is the text of exactly the tokens generated
    assert body["content"] == server.post("/detokenize", {"tokens": body["tokens"]}).json()["content"]
    assert body["stop"] is True
    assert body["tokens_predicted"] == 16
    assert body["stop_type"] == "limit"
    assert body["tokens_evaluated"] == len(server.post("/tokenize", {"content": PROMPT}).json()["tokens"])
    assert body["truncated"] is False
    for key in ("prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms", "predicted_per_second"):
        assert key in body["timings"]
    assert body["timings"]["predicted_n"] == 16
    assert body["generation_settings"]["n_predict"] == 16
    assert body["generation_settings"]["temperature"] == 0


def test_each_task_logs_its_timings_as_llama_server(server: Server) -> None:
    """llama-server's lines at the start and end of each task: its print_timings with the figures its response
    carries."""
    body = server.post("/completion", {"prompt": PROMPT, "n_predict": 5, **FREE}).json()
    t, slot = body["timings"], body["id_slot"]
    head = rf"slot {slot} \| task \d+ \| "
    rate = r" ms per token, +{:.2f} tokens per second\)"
    lines = [
        rf"{head}prompt eval time = +{t['prompt_ms']:.2f} ms / +{t['prompt_n']} tokens \( *{t['prompt_per_token_ms']:.2f}"
        + rate.format(t["prompt_per_second"]),
        rf"{head} +eval time = +{t['predicted_ms']:.2f} ms / +5 tokens \( *{t['predicted_per_token_ms']:.2f}"
        + rate.format(t["predicted_per_second"]),
        rf"{head} +total time = +{t['prompt_ms'] + t['predicted_ms']:.2f} ms / +{t['prompt_n'] + 5} tokens",
    ]
    log = server.log()
    for line in lines:
        assert re.search(line, log), (line, log[-2000:])
    # the context's count so far: the one-token steps of a generation reuse their graph
    reused = re.findall(rf"{head} +graphs reused = +(\d+)$", log, re.MULTILINE)
    assert reused and int(reused[-1]) >= 3, log[-2000:]
    # the slot's start and end: its cells at the end are the prompt and all but the last token generated
    start = re.findall(rf"{head}processing task: (\d+) prompt tokens, 0 reused$", log, re.MULTILINE)
    assert start and int(start[-1]) == t["prompt_n"], log[-2000:]
    assert re.search(rf"{head}stop processing: n_tokens = {t['prompt_n'] + 4}, truncated = 0$", log, re.MULTILINE)


def test_stream_equals_non_stream_at_temperature_zero(server: Server) -> None:
    req = {"prompt": "Once upon a time", "n_predict": 40, "temperature": 0, **FREE}
    reference = server.post("/completion", req).json()["content"]
    for _ in range(2):
        text, events = stream_completion(server, req)
        assert text == reference
        assert events[-1]["stop"] is True and all(e["stop"] is False for e in events[:-1])
        assert events[-1]["tokens_predicted"] == 40
        assert server.post("/completion", req).json()["content"] == reference


def test_stop_string_and_tokens(server: Server) -> None:
    req = {"prompt": PROMPT, "n_predict": 32, "temperature": 0, **FREE}
    full = server.post("/completion", req).json()["content"]
    stop = full[len(full) // 2 :][:3]  # a piece of its own reply: the model is sure to write it
    assert len(stop) == 3, full
    body = server.post("/completion", {**req, "stop": [stop], "return_tokens": True}).json()
    assert body["stop_type"] == "word"
    assert body["stopping_word"] == stop
    assert body["content"] == full[: full.index(stop)]
    assert body["tokens"] and all(isinstance(t, int) for t in body["tokens"])
    text, events = stream_completion(server, {**req, "stop": [stop]})
    assert text == body["content"]
    assert events[-1]["stop_type"] == "word"


def test_token_prompt_and_mixed_prompt(server: Server) -> None:
    tokens = server.post("/tokenize", {"content": PROMPT}).json()["tokens"]
    a = server.post("/completion", {"prompt": PROMPT, "n_predict": 8, "temperature": 0, **FREE}).json()
    b = server.post("/completion", {"prompt": tokens, "n_predict": 8, "temperature": 0, **FREE}).json()
    c = server.post("/completion", {"prompt": [tokens[0], PROMPT.split(" ", 1)[1]], "n_predict": 8,
                                    "temperature": 0}).json()
    assert a["content"] == b["content"]
    assert c["tokens_evaluated"] >= 2


def test_n_probs(server: Server) -> None:
    body = server.post("/completion", {"prompt": PROMPT, "n_predict": 3, "temperature": 0, "n_probs": 5,
                                       "ignore_eos": True}).json()
    probs = body["completion_probabilities"]
    assert len(probs) == 3
    first = probs[0]
    assert len(first["top_logprobs"]) == 5
    # greedy: the chosen token is the most likely one
    assert first["id"] == first["top_logprobs"][0]["id"]
    lps = [t["logprob"] for t in first["top_logprobs"]]
    assert lps == sorted(lps, reverse=True) and lps[0] <= 0


def test_seed_makes_sampling_repeatable(server: Server) -> None:
    req = {"prompt": "Write a word:", "n_predict": 12, "temperature": 1.0, "seed": 1234, "cache_prompt": False}
    a = server.post("/completion", req).json()
    b = server.post("/completion", req).json()
    assert a["content"] == b["content"]
    assert a["generation_settings"]["seed"] == 1234


def test_multiple_prompts(server: Server) -> None:
    body = server.post("/completion", {"prompt": ["Hello", "The sky is"], "n_predict": 4, "temperature": 0}).json()
    assert isinstance(body, list) and [b["index"] for b in body] == [0, 1]


# -- batching, cancellation, queueing -------------------------------------

def test_concurrent_requests_share_decode_steps(server: Server) -> None:
    wait_idle(server)
    before = metrics(server)
    n, n_predict = 4, 24
    req = {"prompt": PROMPT, "n_predict": n_predict, "temperature": 0, **FREE}
    seen_busy = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal seen_busy
        while not stop.is_set():
            seen_busy = max(seen_busy, sum(s["is_processing"] for s in server.get("/slots").json()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda i: server.post("/completion", {**req, "id_slot": i}).json(), range(n)))
    stop.set()
    watcher.join()
    after = metrics(server)
    assert all(r["tokens_predicted"] == n_predict for r in results)
    assert len({r["content"] for r in results}) == 1  # batching does not change greedy output
    decodes = after["llamacpp:n_decode_total"] - before["llamacpp:n_decode_total"]
    # Sequentially this takes >= n * n_predict decodes; batched, about n_predict.
    assert decodes < n * n_predict / 2, decodes
    assert seen_busy >= 2


def test_disconnect_frees_slot(server: Server) -> None:
    wait_idle(server)
    before = metrics(server)["llamacpp:tokens_predicted_total"]
    r = requests.post(server.url + "/completion", json={
        "prompt": PROMPT, "n_predict": 3000, "ignore_eos": True, "stream": True,
    }, stream=True, timeout=60)
    lines = r.iter_lines()
    got = 0
    for line in lines:
        if line:
            got += 1
        if got >= 3:
            break
    assert not all_idle(server)
    r.close()
    wait_idle(server, timeout=10)
    generated = metrics(server)["llamacpp:tokens_predicted_total"] - before
    assert generated < 3000
    # the slot is usable again
    assert server.post("/completion", {"prompt": PROMPT, "n_predict": 2}).status_code == 200
    # a client going away is no error of the server's (it was logged as a critical unhandled Deferred error)
    assert "Unhandled error in Deferred" not in server.log()


def test_disconnect_frees_slot_non_streaming(server: Server) -> None:
    wait_idle(server)
    body = {"prompt": PROMPT, "n_predict": 3000, "ignore_eos": True}
    try:
        requests.post(server.url + "/completion", json=body, timeout=1.0)
    except requests.exceptions.ReadTimeout:
        pass
    else:
        raise AssertionError("3000 tokens in under a second?")
    wait_idle(server, timeout=10)
    assert server.post("/completion", {"prompt": PROMPT, "n_predict": 2}).status_code == 200


def test_no_continuous_batching_defers_new_prompts(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "2", "-c", "2048", "-t", "2", "--metrics", "-nocb")
    long_req = {"prompt": PROMPT, "n_predict": 400, "ignore_eos": True, "stream": True}  # seconds of generation
    r = requests.post(srv.url + "/completion", json=long_req, stream=True, timeout=60)
    lines = r.iter_lines()
    next(line for line in lines if line)  # the first slot is generating
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(srv.post, "/completion", {"prompt": "Hello", "n_predict": 2})
        deadline = time.monotonic() + 10  # until the second request has reached the server
        while (m := metrics(srv))["llamacpp:requests_deferred"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m["llamacpp:requests_deferred"] == 1 and m["llamacpp:requests_processing"] == 1
        rest = [json.loads(line[6:]) for line in lines if line]
        assert rest[-1]["stop"] is True
        assert second.result().status_code == 200


def test_queueing_beyond_parallel_slots(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "1", "-c", "1024", "-t", "2", "--metrics")
    req = {"prompt": PROMPT, "n_predict": 12, "temperature": 0, "cache_prompt": False}
    alone = srv.post("/completion", req).json()["content"]
    deferred_seen = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal deferred_seen
        while not stop.is_set():
            deferred_seen = max(deferred_seen, int(metrics(srv)["llamacpp:requests_deferred"]))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: srv.post("/completion", req).json(), range(4)))
    stop.set()
    watcher.join()
    assert [r["content"] for r in results] == [alone] * 4
    assert {r["id_slot"] for r in results} == {0}
    assert deferred_seen >= 1


def test_a_new_prompt_joins_many_generations(make_server: Any, model_path: str) -> None:
    """Six slots generate 600 tokens each (many seconds); a seventh request's prompt is fed in the next steps
    beside them and its 4 tokens come long before they end. (With 5 or more generations its prompt used to wait
    until fewer generated: speculative decoding's cut of the batch's room also cut the room for prompts.)"""
    srv = make_server("-m", model_path, "-np", "7", "-c", "8192", "-t", "2")
    long_req = {"prompt": PROMPT, "n_predict": 600, "stream": True, **FREE}
    streams = [requests.post(srv.url + "/completion", json=long_req, stream=True, timeout=120) for _ in range(6)]
    try:
        lines = [s.iter_lines() for s in streams]
        for it in lines:
            next(line for line in it if line)  # each is generating
        started = time.monotonic()
        r = srv.post("/completion", {"prompt": "Hello there", "n_predict": 4, **FREE})
        assert r.status_code == 200 and r.json()["tokens_predicted"] == 4
        assert sum(s["is_processing"] for s in srv.get("/slots").json()) == 6, "the six ended first"
        assert time.monotonic() - started < 5
    finally:
        for s in streams:
            s.close()


def test_prompt_cache_reuse(server: Server) -> None:
    prompt = "In a distant galaxy there was a small planet where"
    req = {"prompt": prompt, "n_predict": 4, "temperature": 0, "id_slot": 2, "cache_prompt": True}
    server.post("/completion", req)
    again = server.post("/completion", req).json()
    assert again["timings"]["cache_n"] > 0
    assert again["timings"]["prompt_n"] < again["tokens_evaluated"]


def test_an_id_slot_past_the_last_slot_wraps_around(server: Server) -> None:
    """llama-server takes slot ``id_slot % n_slots`` (before, such a request waited for its slot forever)."""
    for asked, taken in ((4, 0), (6, 2), (9, 1)):
        r = server.post("/completion", {"prompt": "Hello", "n_predict": 2, "id_slot": asked})
        assert r.status_code == 200 and r.json()["id_slot"] == taken, r.text


# -- tokenize ------------------------------------------------------------

def test_tokenize_detokenize_round_trip(server: Server) -> None:
    text = "Hello world! Ünïcödé and emoji 🦙 too."
    tokens = server.post("/tokenize", {"content": text}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert server.post("/detokenize", {"tokens": tokens}).json()["content"] == text
    pieces = server.post("/tokenize", {"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tokens
    assert any(isinstance(p["piece"], str) for p in pieces)


def test_tokenize_special_tokens(server: Server) -> None:
    parsed = server.post("/tokenize", {"content": "<|im_start|>"}).json()["tokens"]
    literal = server.post("/tokenize", {"content": "<|im_start|>", "parse_special": False}).json()["tokens"]
    assert len(parsed) == 1 and len(literal) > 1


# -- info routes ---------------------------------------------------------

def test_props_models_slots(server: Server) -> None:
    props = server.get("/props").json()
    assert props["total_slots"] == 4
    assert props["default_generation_settings"]["n_ctx"] == 1024  # -np 4 without -kvu: 4096 split 4 ways
    assert "im_start" in props["chat_template"]
    models = server.get("/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"].endswith(".gguf")
    assert server.get("/models").json()["data"][0]["id"] == models["data"][0]["id"]
    slots = server.get("/slots").json()
    assert [s["id"] for s in slots] == [0, 1, 2, 3]
    assert server.get("/v1/health").json() == {"status": "ok"}


def test_metrics_format(server: Server) -> None:
    r = server.get("/metrics")
    assert r.status_code == 200
    assert "# TYPE llamacpp:prompt_tokens_total counter" in r.text
    m = metrics(server)
    for name in ("prompt_tokens_total", "tokens_predicted_total", "n_decode_total", "requests_processing",
                 "requests_deferred", "n_busy_slots_per_decode", "prompt_seconds_total"):
        assert "llamacpp:" + name in m


# -- bad input -----------------------------------------------------------

def error_of(r: requests.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["message"] and err["type"]
    return err


def test_bad_inputs_get_clear_errors(server: Server) -> None:
    url = server.url
    err = error_of(requests.post(url + "/completion", data=b"{not json", timeout=10), 400)
    assert err["type"] == "invalid_request_error" and "JSON" in err["message"]
    error_of(requests.post(url + "/completion", data=b"", timeout=10), 400)
    error_of(requests.post(url + "/completion", data=b"[1,2]", timeout=10), 400)
    assert "prompt" in error_of(server.post("/completion", {"n_predict": 3}), 400)["message"]
    assert "n_predict" in error_of(server.post("/completion", {"prompt": "x", "n_predict": "many"}), 400)["message"]
    assert "temperature" in error_of(server.post("/completion", {"prompt": "x", "temperature": "hot"}), 400)["message"]
    assert "stream" in error_of(server.post("/completion", {"prompt": "x", "stream": "yes"}), 400)["message"]
    error_of(server.post("/completion", {"prompt": {"a": 1}}), 400)
    error_of(server.post("/completion", {"prompt": [99999999]}), 400)
    error_of(server.post("/completion", {"prompt": "x", "n_probs": -1}), 400)
    error_of(server.post("/tokenize", {"text": "x"}), 400)
    error_of(server.post("/detokenize", {"tokens": ["a"]}), 400)
    error_of(server.post("/detokenize", {"tokens": [-5]}), 400)
    err = error_of(server.get("/no/such/route"), 404)
    assert err["type"] == "not_found_error"
    error_of(server.get("/completion"), 405)
    long_prompt = "hello " * 1500
    err = error_of(server.post("/completion", {"prompt": long_prompt, "n_predict": 1}), 400)
    assert err["type"] == "exceed_context_size_error"
    assert err["n_ctx"] == 1024 and err["n_prompt_tokens"] > 1024
    # still serving, no slot lost
    wait_idle(server)
    assert len(server.get("/slots").json()) == 4
    assert server.post("/completion", {"prompt": PROMPT, "n_predict": 2}).status_code == 200


def test_endpoints_disabled_by_flags(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "1", "-c", "512", "--no-slots")
    error_of(srv.get("/slots"), 501)
    error_of(srv.get("/metrics"), 501)


# -- process level -------------------------------------------------------

def test_health_is_503_while_loading_then_200(model_path: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llamatwist", "-m", model_path, "--port", str(port), "-c", "8192", "-np", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and 200 not in statuses:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                statuses.append(r.status_code)
                if r.status_code == 503:
                    assert r.json() == {"error": {"code": 503, "message": "Loading model",
                                                  "type": "unavailable_error"}}
            except requests.ConnectionError:
                time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait(30)
    assert statuses[0] == 503 and statuses[-1] == 200, statuses[:5]


def test_model_load_errors_exit_cleanly(tmp_path: Any) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(200)))
    cases = [str(tmp_path / "missing.gguf"), str(tmp_path), __file__, str(bad)]
    for path in cases:
        r = subprocess.run(
            [sys.executable, "-m", "llamatwist", "-m", path, "--port", str(free_port())],
            check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
        )
        assert r.returncode != 0, path
        assert "Traceback" not in r.stderr + r.stdout
        assert "error:" in r.stderr + r.stdout


def test_context_too_large_for_memory_exits_cleanly(model_path: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "llamatwist", "-m", model_path, "-c", str(2**24), "--port", str(free_port())],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "ctx-size" in r.stderr


def test_twistd_serves(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "1", "-c", "512",
                      command=[str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "llamatwist"])
    body = srv.post("/completion", {"prompt": PROMPT, "n_predict": 4, "temperature": 0}).json()
    assert body["tokens_predicted"] == 4


def test_port_in_use_is_a_clear_error(model_path: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "llamatwist", "-m", model_path, "--port", str(port)],
            check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
        )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
