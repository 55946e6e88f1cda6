"""Request fields the decode loop acts on, as llama-server: ``timings_per_token``, ``return_progress``,
``t_max_predict_ms``, ``t_max_prompt_ms`` (reserved by llama-server, applied here) and ``n_indent``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import Server

# a long prompt: with -b 64 it is fed over many steps
LONG = "The quick brown fox jumps over the lazy dog. " * 60
CODE = "def add(a, b):\n    result = a + b\n"
GREEDY = {"temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def srv(model_path: str) -> Iterator[Server]:
    s = Server(["-m", model_path, "-np", "2", "-c", "4096", "-b", "64", "-ub", "64", "-t", "2"])
    yield s
    s.stop()


def events(srv: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    with requests.post(srv.url + path, json={**body, "stream": True}, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def test_timings_per_token(srv: Server) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 6, "ignore_eos": True, **GREEDY}
    plain = events(srv, "/completion", body)
    assert all("timings" not in e for e in plain[:-1]) and "timings" in plain[-1]
    timed = events(srv, "/completion", {**body, "timings_per_token": True})
    partials = [e for e in timed if not e["stop"]]
    assert len(partials) == 6
    assert [e["timings"]["predicted_n"] for e in partials] == [1, 2, 3, 4, 5, 6]
    assert all(e["timings"]["prompt_n"] + e["timings"]["cache_n"] == e["tokens_evaluated"] for e in partials)
    final = srv.post("/completion", {**body, "timings_per_token": True}).json()
    assert final["generation_settings"]["timings_per_token"] is True
    chat = events(srv, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                                                 "timings_per_token": True, **GREEDY})
    assert any("timings" in c and c["choices"] and c["choices"][0]["delta"].get("content") for c in chat)


def test_return_progress(srv: Server) -> None:
    body = {"prompt": LONG, "n_predict": 2, "return_progress": True, **GREEDY}
    evs = events(srv, "/completion", body)
    progress = [e["prompt_progress"] for e in evs if "prompt_progress" in e]
    first_token = next(i for i, e in enumerate(evs) if e.get("content") or e["stop"])
    assert all("prompt_progress" in e for e in evs[: len(progress)])  # progress comes first
    assert len(progress) == first_token and len(progress) >= 5
    total = progress[0]["total"]
    assert evs[-1]["tokens_evaluated"] == total
    processed = [p["processed"] for p in progress]
    assert processed == sorted(processed) and processed[-1] == total and processed[0] == progress[0]["cache"]
    assert all(set(p) == {"total", "cache", "processed", "time_ms"} for p in progress)
    # the same prompt again: the cache holds all but the last token
    again = [e["prompt_progress"] for e in events(srv, "/completion", body) if "prompt_progress" in e]
    assert again[0]["cache"] >= total - 2 and again[-1]["processed"] == total
    assert not any("prompt_progress" in e for e in events(srv, "/completion", {**body, "return_progress": False}))
    chat = events(srv, "/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}], "max_tokens": 2,
                                                 "return_progress": True, **GREEDY})
    shown = [c for c in chat if "prompt_progress" in c]
    assert shown and all(c["choices"][0]["delta"] == {"role": "assistant", "content": None} for c in shown)


def test_telemetry_rides_where_llama_server_puts_it(srv: Server) -> None:
    # prompts no earlier request began with: the prefix cache holds none of them
    chat = {"messages": [{"role": "user", "content": "Chat. " + LONG}], "max_tokens": 3, "timings_per_token": True,
            "return_progress": True, **GREEDY}
    evs = events(srv, "/v1/chat/completions", {**chat, "stream_options": {"include_usage": True}})
    assert "timings" not in next(e for e in evs if "prompt_progress" not in e)  # the role chunk
    finish = next(e for e in evs if e["choices"] and e["choices"][0]["finish_reason"])
    assert "timings" not in finish and evs[-1]["choices"] == [] and evs[-1]["timings"]["predicted_n"] == 3
    assert "timings" in events(srv, "/v1/chat/completions", chat)[-1]  # no usage chunk: on the finish chunk
    # progress events carry the prompt's timings so far: none at the start, then never backwards
    progress = [e["timings"] for e in evs if "prompt_progress" in e]
    assert len(progress) >= 5 and progress[0]["prompt_n"] == 0 and progress[0]["prompt_ms"] == 0.0
    ms = [t["prompt_ms"] for t in progress]
    assert ms == sorted(ms) and ms[-1] > 0 and all(t["predicted_n"] == 0 for t in progress)
    # the Responses stream: progress as response.in_progress events, timings on the text deltas
    body = {"input": "Responses. " + LONG, "max_output_tokens": 3, "stream": True, "timings_per_token": True,
            "return_progress": True, **GREEDY}
    with requests.post(srv.url + "/v1/responses", json=body, stream=True, timeout=120) as r:
        data = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith(b"data: ")]
    shown = [d for d in data if "prompt_progress" in d]
    assert len(shown) >= 5 and all(d["type"] == "response.in_progress" and "timings" in d for d in shown)
    deltas = [d for d in data if d["type"] == "response.output_text.delta"]
    assert deltas and all("timings" in d for d in deltas)
    assert [d["sequence_number"] for d in data] == list(range(len(data)))


def test_t_max_predict_ms_stops_at_a_newline(srv: Server) -> None:
    body = {"prompt": "1\n2\n3\n4\n5\n", "n_predict": 64, "ignore_eos": True, **GREEDY}
    free = srv.post("/completion", body).json()
    assert free["tokens_predicted"] == 64 and free["content"].count("\n") > 3
    cut = srv.post("/completion", {**body, "t_max_predict_ms": 1}).json()
    assert cut["stop_type"] == "limit" and cut["tokens_predicted"] < 64
    assert cut["content"].endswith("\n") and cut["content"].count("\n") == 1
    assert free["content"].startswith(cut["content"])


def test_t_max_prompt_ms_stops_a_slow_prompt(srv: Server) -> None:
    body = {"prompt": LONG + " and then", "n_predict": 8, "cache_prompt": False, **GREEDY}
    r = srv.post("/completion", {**body, "t_max_prompt_ms": 1}).json()
    assert r["stop_type"] == "limit" and r["tokens_predicted"] == 0 and r["content"] == ""
    assert r["timings"]["prompt_n"] < r["tokens_evaluated"]  # it stopped partway
    assert srv.post("/completion", body).json()["tokens_predicted"] == 8


def test_n_indent_stops_before_a_shallower_line(srv: Server) -> None:
    body = {"prompt": CODE, "n_predict": 96, **GREEDY}
    free = srv.post("/completion", body).json()["content"]
    lines = free.split("\n")
    # the model leaves the function body somewhere: a later line starts with less than 4 spaces
    shallow = next(i for i, ln in enumerate(lines) if i > 0 and ln.strip() and not ln.startswith("    "))
    r = srv.post("/completion", {**body, "n_indent": 4}).json()
    cut = "\n".join(lines[:shallow]) + "\n" + lines[shallow][: len(lines[shallow]) - len(lines[shallow].lstrip())]
    assert r["stop_type"] == "limit" and r["content"] == cut


@pytest.mark.parametrize("field, value", [
    ("timings_per_token", "yes"), ("return_progress", 3), ("t_max_predict_ms", -2), ("t_max_prompt_ms", "1"),
    ("n_indent", -1), ("n_indent", 1.5),
])  # fmt: skip
def test_bad_values_are_400s_naming_the_field(srv: Server, field: str, value: Any) -> None:
    r = srv.post("/completion", {"prompt": "x", "n_predict": 1, field: value})
    assert r.status_code == 400 and field in r.json()["error"]["message"]
    assert srv.post("/completion", {"prompt": "x", "n_predict": 1}).status_code == 200


def test_reasoning_budget_on_a_native_request(srv: Server) -> None:
    prompt = "Question: what is two plus two?\nAnswer: <think>\n"
    body = {"prompt": prompt, "n_predict": 24, "ignore_eos": True, **GREEDY}
    free = srv.post("/completion", body).json()["content"]
    assert "</think>" not in free
    fields = {"reasoning_budget_tokens": 4, "reasoning_budget_start_tag": "<think>",
              "reasoning_budget_end_tags": ["</think>"], "reasoning_budget_message": " Enough.",
              "generation_prompt": "<think>\n"}
    r = srv.post("/completion", {**body, **fields}).json()
    thought, closed, _ = r["content"].partition(" Enough.</think>")
    assert closed and free.startswith(thought) and 0 < len(thought) < len(free)
    assert r["generation_settings"]["generation_prompt"] == "<think>\n"
    # the singular end tag is llama-server's alias
    single = {**fields, "reasoning_budget_end_tag": "</think>"}
    del single["reasoning_budget_end_tags"]
    assert srv.post("/completion", {**body, **single}).json()["content"] == r["content"]


@pytest.mark.parametrize("extra, needle", [
    ({"chat_parser": "x"}, "'chat_parser'"),
    ({"reasoning_control": True}, "'reasoning_control'"),
    ({"reasoning_control": "no"}, "'reasoning_control' must be a boolean"),
    ({"parse_tool_calls": "x"}, "'parse_tool_calls'"),
    ({"echo": 2}, "'echo'"),
    ({"generation_prompt": 5}, "'generation_prompt' must be a string"),
    ({"reasoning_budget_tokens": -3}, "'reasoning_budget_tokens'"),
    ({"reasoning_budget_end_tags": "</think>"}, "'reasoning_budget_end_tags'"),
    ({"reasoning_budget_start_tag": 1}, "'reasoning_budget_start_tag' must be a string"),
    ({"stream_options": {"include_usage": "y"}}, "stream_options.include_usage"),
    ({"continue_final_message": 3}, "'continue_final_message'"),
])  # fmt: skip
def test_bad_parser_and_reasoning_fields(srv: Server, extra: dict[str, Any], needle: str) -> None:
    r = srv.post("/completion", {"prompt": "x", "n_predict": 1, **extra})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
