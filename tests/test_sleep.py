"""--sleep-idle-seconds (issue 17 item 6): after N idle seconds the model and its KV are unloaded, the next
task loads them again; /props shows is_sleeping; /health, /props, /metrics, /slots and /tokenize do not wake it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.conftest import Server
from tests.models import lora_gguf
from tests.test_cli import run

BODY = {"prompt": "The capital of France is", "n_predict": 8, "temperature": 0, "seed": 1}


def sleeping(srv: Server) -> bool:
    return bool(srv.get("/props").json()["is_sleeping"])


def wait_sleeping(srv: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sleeping(srv):
            return
        time.sleep(0.2)
    raise AssertionError(f"not asleep after {timeout}s:\n{srv.log()[-2000:]}")


def mapped(srv: Server, path: str) -> bool:
    return any(line.rstrip().endswith(path) for line in Path(f"/proc/{srv.proc.pid}/maps").read_text().splitlines())


def test_sleeps_when_idle_and_wakes_for_the_next_task(make_server: Callable[..., Server], model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "512", "-np", "2", "-t", "1", "--metrics",
                      "--sleep-idle-seconds", "1")
    awake = srv.post("/completion", BODY).json()
    real = str(Path(model_path).resolve())
    assert mapped(srv, real)  # the weights are mapped while awake
    wait_sleeping(srv)
    assert "server is entering sleeping state" in srv.log()
    assert not mapped(srv, real)  # unloaded (the vocabulary-only model reads the file, then lets it go)

    # these do not wake it
    assert srv.get("/health").status_code == 200
    assert srv.get("/metrics").status_code == 200
    assert srv.get("/slots").status_code == 200
    assert srv.get("/v1/models").status_code == 200
    tokens = srv.post("/tokenize", {"content": "Hello world"}).json()["tokens"]
    assert srv.post("/detokenize", {"tokens": tokens}).json()["content"] == "Hello world"
    time.sleep(0.5)
    assert sleeping(srv) and "exiting sleeping state" not in srv.log()

    # the next task wakes it, with the same model: the same greedy text
    again = srv.post("/completion", BODY)
    assert again.status_code == 200, again.text
    assert again.json()["content"] == awake["content"]
    assert not sleeping(srv) and mapped(srv, real)
    assert "server is exiting sleeping state" in srv.log()
    # and it goes back to sleep
    wait_sleeping(srv)


def test_constrained_output_across_sleeps(make_server: Callable[..., Server], model_path: str) -> None:
    # the grammar's tokenizer is built once and kept: it must not hold the model it was built on (a sleep frees
    # that one, and using it crashed the server), whether it was built awake, or asleep on the vocabulary alone
    srv = make_server("-m", model_path, "-c", "512", "-np", "2", "-t", "1", "--sleep-idle-seconds", "1")
    wait_sleeping(srv)
    body = {"prompt": "A JSON object:", "n_predict": 12, "temperature": 0,
            "json_schema": {"type": "object", "properties": {"name": {"type": "string"}}}}
    first = srv.post("/completion", body)  # built asleep, on the vocabulary-only model, which the wake frees
    assert first.status_code == 200, first.text
    for _ in range(2):
        wait_sleeping(srv)
        again = srv.post("/completion", body)
        assert again.status_code == 200 and again.json()["content"] == first.json()["content"], again.text
    lazy = srv.post("/completion", {"prompt": "Say hi", "n_predict": 8, "temperature": 0,
                                    "grammar": "root ::= [a-z ]+", "grammar_lazy": True,
                                    "grammar_triggers": [{"type": 2, "value": "hi"}]})
    assert lazy.status_code == 200, lazy.text
    assert srv.proc.poll() is None and "Traceback" not in srv.log()


def test_lora_adapters_across_sleeps(make_server: Callable[..., Server], model_path: str) -> None:
    # freeing the model frees its adapters: each adapter was freed a second time after a sleep (heap corruption,
    # a segfault at the next prompts); the scales set before the sleep still apply after it
    srv = make_server("-m", model_path, "--lora", str(lora_gguf(Path(model_path), "lora")), "-c", "512", "-np", "2",
                      "-t", "1", "--sleep-idle-seconds", "1")
    chat = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 6, "temperature": 0}
    assert srv.post("/lora-adapters", [{"id": 0, "scale": 0.5}]).status_code == 200
    first = srv.post("/v1/chat/completions", chat)
    assert first.status_code == 200, first.text
    for _ in range(2):
        wait_sleeping(srv)
        again = srv.post("/v1/chat/completions", chat)
        assert again.status_code == 200, again.text
        assert again.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    assert srv.get("/lora-adapters").json()[0]["scale"] == 0.5
    assert srv.proc.poll() is None and "Traceback" not in srv.log()


def test_requests_racing_the_transitions(make_server: Callable[..., Server], model_path: str) -> None:
    """Tokenization runs beside the decode thread swapping models: never on a freed one."""
    srv = make_server("-m", model_path, "-c", "512", "-np", "2", "-t", "1", "--sleep-idle-seconds", "1")
    stop = threading.Event()
    errors: list[str] = []

    def tokenize() -> None:
        while not stop.is_set():
            r = requests.post(srv.url + "/tokenize", json={"content": "Hello world " * 50}, timeout=30)
            if r.status_code != 200 or len(r.json()["tokens"]) < 100:
                errors.append(r.text)

    workers = [threading.Thread(target=tokenize) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        for _ in range(3):
            wait_sleeping(srv)
            r = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                  "max_tokens": 4, "temperature": 0})
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not errors, errors[:3]
    assert srv.proc.poll() is None


def test_disabled_by_default(make_server: Callable[..., Server], model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "512", "-np", "1", "-t", "1")
    assert srv.post("/completion", {**BODY, "n_predict": 1}).status_code == 200
    time.sleep(2)
    assert not sleeping(srv)


@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_bad_values_exit_2(value: str) -> None:
    proc = run("-m", "llamatwist", "--sleep-idle-seconds", value)
    assert proc.returncode == 2 and "--sleep-idle-seconds" in proc.stderr
