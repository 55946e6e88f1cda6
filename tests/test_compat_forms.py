"""llama-server's response forms and start-up flags (issue 21 items 4 and 5): ``__verbose`` with -v or the
request's ``verbose``, ignore_eos's end-of-generation biases in generation_settings, /slots entries with
llama-server's keys, /metrics' Process-Start-Time-Unix header, /models aliases and --tags, several --host
addresses (IPv6 and a UNIX socket included), --backend-sampling and --cache-idle-slots; -n as a default, and
/metrics' throughput averaged between scrapes. Several were found running llama.cpp's own server tests
(tools/server/tests) against both servers."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Server

SLOT_KEYS = {"id", "n_ctx", "speculative", "is_processing"}
TASK_KEYS = SLOT_KEYS | {"id_task", "n_prompt_tokens", "n_prompt_tokens_processed", "n_prompt_tokens_cache",
                         "params", "next_token"}


@pytest.fixture(scope="module")
def srv(model_path: str) -> Iterator[Server]:
    s = Server(["-m", model_path, "-np", "2", "-c", "1024", "-t", "2", "--slots", "--metrics", "-v",
                "-a", "second,first", "--tags", "chat, small,chat", "--host", "127.0.0.1,::1"])
    yield s
    s.stop()


def test_models_list_aliases_and_tags(srv: Server) -> None:
    model = srv.get("/v1/models").json()["data"][0]
    assert model["id"] == "first"  # the first -a name in sorted order, as llama-server's std::set has them
    assert model["aliases"] == ["first", "second"] and model["tags"] == ["chat", "small"]


def test_every_host_listens_ipv6_included(srv: Server) -> None:
    for base in (f"http://127.0.0.1:{srv.port}", f"http://[::1]:{srv.port}"):
        assert requests.get(base + "/health", timeout=10).json() == {"status": "ok"}
    assert f"listening on http://[::1]:{srv.port}" in srv.log()


def test_verbose_carries_the_native_result(srv: Server) -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    r = srv.post("/v1/chat/completions", chat).json()
    native = r["__verbose"]
    assert native["tokens_predicted"] == r["usage"]["completion_tokens"] and native["stop"] is True
    assert "generation_settings" in native
    assert "__verbose" not in srv.post("/v1/chat/completions", {**chat, "verbose": False}).json()
    text = srv.post("/v1/completions", {"prompt": "Hello", "max_tokens": 2}).json()
    assert text["__verbose"]["content"] == text["choices"][0]["text"]
    with requests.post(srv.url + "/v1/completions", json={"prompt": "Hello", "max_tokens": 2, "stream": True},
                       stream=True, timeout=60) as stream:
        chunks = [json.loads(ln[6:]) for ln in stream.iter_lines() if ln.startswith(b"data: {")]
    assert all("__verbose" in c for c in chunks if c["choices"])
    assert native["prompt"].endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")  # special tokens
    assert native["tokens_cached"] == native["tokens_evaluated"] + native["tokens_predicted"] - 1  # last: not decoded
    streamed = srv.stream("/v1/chat/completions", chat)
    shown = [c for c in streamed if "__verbose" in c]
    assert len(shown) == 1 and shown[0]["__verbose"]["prompt"] == native["prompt"]
    bad = srv.post("/v1/chat/completions", {**chat, "verbose": "yes"})
    assert bad.status_code == 400 and "verbose" in bad.json()["error"]["message"]


def test_ignore_eos_lists_the_eog_biases(srv: Server) -> None:
    eos = srv.get("/props").json()["eos_token"]
    eos_id = srv.post("/tokenize", {"content": eos, "parse_special": True}).json()["tokens"][0]
    body = {"prompt": "Hi", "n_predict": 1, "logit_bias": [[42, 1.5]]}
    plain = srv.post("/completion", body).json()["generation_settings"]["logit_bias"]
    assert plain == [{"bias": 1.5, "token": 42}]
    banned = srv.post("/completion", {**body, "ignore_eos": True}).json()["generation_settings"]["logit_bias"]
    assert banned[0] == {"bias": 1.5, "token": 42}
    assert {"bias": None, "token": eos_id} in banned[1:] and all(b["bias"] is None for b in banned[1:])


def test_slots_have_llama_servers_keys(srv: Server) -> None:
    r = srv.post("/completion", {"prompt": "Tell me a joke", "n_predict": 4, "id_slot": 1}).json()
    slots = {s["id"]: s for s in srv.get("/slots").json()}
    used = slots[1]
    assert set(used) == TASK_KEYS  # no prompt or text: those only with LLAMA_SERVER_SLOTS_DEBUG
    assert used["n_ctx"] == 512 and used["is_processing"] is False and used["speculative"] is False
    assert used["params"]["n_predict"] == 4 and used["params"]["seed"] == r["generation_settings"]["seed"]
    assert "grammar" not in used["params"] and "stop" not in used["params"]  # llama-server's metrics-only set
    # idle again: the finished task's counts start over (llama-server resets them), the cells it left stay
    assert used["next_token"] == [{"has_next_token": False, "has_new_line": False, "n_remain": -1, "n_decoded": 0}]
    assert used["n_prompt_tokens"] == r["tokens_cached"] == r["tokens_evaluated"] + r["tokens_predicted"] - 1
    assert used["n_prompt_tokens_processed"] == used["n_prompt_tokens_cache"] == 0
    for s in slots.values():
        assert set(s) in (SLOT_KEYS, TASK_KEYS)


def test_slots_debug_shows_the_prompt_and_the_text(make_server: Any, model_path: str) -> None:
    debug = make_server("-m", model_path, "-np", "1", "-c", "512", "-t", "2",
                        command=["env", "LLAMA_SERVER_SLOTS_DEBUG=1", sys.executable, "-m", "llamatwist"])
    r = debug.post("/completion", {"prompt": "Tell me a joke", "n_predict": 4, "grammar": 'root ::= "ha" [a-z]*'})
    slot = debug.get("/slots").json()[0]
    assert slot["prompt"] == "Tell me a joke" and slot["generated"] == r.json()["content"]
    assert slot["params"]["grammar"] == 'root ::= "ha" [a-z]*'


def test_metrics_carry_the_process_start_time(srv: Server) -> None:
    r = srv.get("/metrics")
    started = int(r.headers["Process-Start-Time-Unix"])
    assert time.time() - 600 < started <= time.time()


def _scrape(srv: Server) -> tuple[dict[str, str], dict[str, float]]:
    types, values = {}, {}
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line[7:].split()
            types[name] = kind
        elif line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return types, values


def test_metrics_throughput_is_averaged_between_scrapes(srv: Server) -> None:
    r = srv.post("/completion", {"prompt": "Count: 1, 2, 3,", "n_predict": 8, "ignore_eos": True}).json()
    types, first = _scrape(srv)
    assert first["llamacpp:prompt_tokens_seconds"] > 0 and first["llamacpp:predicted_tokens_seconds"] > 0
    second = _scrape(srv)[1]  # nothing ran since: an empty window, as llama-server's buckets
    assert second["llamacpp:prompt_tokens_seconds"] == second["llamacpp:predicted_tokens_seconds"] == 0
    assert second["llamacpp:tokens_predicted_total"] == first["llamacpp:tokens_predicted_total"] > 0
    # the largest sequence: typed a counter as llama-server types it, the cells a slot held
    assert types["llamacpp:n_tokens_max"] == "counter" and types["llamacpp:prompt_tokens_seconds"] == "gauge"
    assert first["llamacpp:n_tokens_max"] >= r["tokens_cached"]


def test_n_predict_flag_is_a_default_not_a_cap(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "1", "-c", "512", "-t", "2", "-n", "3")
    body = {"prompt": "Count: 1, 2, 3,", "ignore_eos": True}
    assert srv.post("/completion", body).json()["tokens_predicted"] == 3
    longer = srv.post("/completion", {**body, "n_predict": 7}).json()  # the request's own limit wins
    assert longer["tokens_predicted"] == 7 and longer["generation_settings"]["n_predict"] == 7
    assert srv.post("/completion", {**body, "n_predict": -1}).json()["tokens_predicted"] == 3  # -1: -n's


def _unix_get(path: Path, target: str) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_unix_socket_and_tcp_together(make_server: Any, model_path: str, tmp_path: Path) -> None:
    sock = tmp_path / "llamatwist.sock"
    srv = make_server("-m", model_path, "-np", "1", "-c", "512", "-t", "1",
                      "--host", f"127.0.0.1,{sock}")  # waits for the TCP address
    status, body = _unix_get(sock, "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, body = _unix_get(sock, "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"].endswith(".gguf")
    assert f"listening on unix://{sock}" in srv.log()


def test_port_zero_with_two_tcp_addresses_is_refused(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "--host", "127.0.0.1,::1", "--port", "0", wait=False)
    assert srv.proc.wait(60) != 0
    assert "--port 0 is not supported with multiple TCP addresses" in srv.log()


def test_backend_sampling_is_accepted_and_reported(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "1", "-c", "512", "-t", "1", "-bs")
    r = srv.post("/completion", {"prompt": "Hi", "n_predict": 2}).json()
    assert r["generation_settings"]["backend_sampling"] is True and r["tokens_predicted"] == 2
    assert "samples on the CPU" in srv.log()
    off = srv.post("/completion", {"prompt": "Hi", "n_predict": 2, "backend_sampling": False}).json()
    assert off["generation_settings"]["backend_sampling"] is False


@pytest.mark.parametrize("flag", ["--cache-idle-slots", "--no-cache-idle-slots"])
def test_cache_idle_slots_flags_serve(make_server: Any, model_path: str, flag: str) -> None:
    srv = make_server("-m", model_path, "-np", "2", "-c", "512", "-t", "1", flag)
    for prompt in ("One two three", "Four five six"):
        assert srv.post("/completion", {"prompt": prompt, "n_predict": 2}).json()["tokens_predicted"] == 2
