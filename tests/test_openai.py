"""OpenAI-compatible routes through the official `openai` client and raw HTTP."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.openai.completions import mean_logprob, parse_best_of, pick_best
from llamatwist.runtime import FinalResult, Timings, TokenProbs
from tests.conftest import Server

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]
# What the model writes depends on the CPU's SIMD path (greedy text of a tiny quantized model): these tests
# check shapes and compare two paths on the same machine, never the model's words. ignore_eos makes a reply
# run to its token limit (a model may otherwise stop at once); without the prompt cache both paths evaluate
# the prompt the same way.
FREE = {"ignore_eos": True, "cache_prompt": False}


def stop_in(text: str) -> str:
    """A stop string the model is sure to write: a piece from the middle of its own reply."""
    middle = len(text) // 2
    stop = text[middle : middle + 3]
    assert len(stop) == 3, text
    return stop


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def sse_events(r: requests.Response) -> list[bytes]:
    assert r.headers["Content-Type"].startswith("text/event-stream")
    raw = r.content
    assert raw.endswith(b"\n\n")
    return [e for e in raw.split(b"\n\n") if e]


# -- chat ----------------------------------------------------------------

def test_chat_completion(client: OpenAI) -> None:
    r = client.chat.completions.create(model="any", messages=MESSAGES, max_tokens=16, temperature=0,
                                       logprobs=True, extra_body=FREE)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "length" and r.usage.completion_tokens == 16
    # the message is the text of exactly the tokens sampled
    assert choice.logprobs is not None and choice.logprobs.content and len(choice.logprobs.content) == 16
    text = b"".join(bytes(t.bytes or []) for t in choice.logprobs.content).decode("utf-8", "replace")
    assert choice.message.content == text
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.usage is not None and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_finish_reason_length_and_stop(client: OpenAI) -> None:
    short = client.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=2, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    full = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=32, temperature=0,
                                          extra_body=FREE).choices[0].message.content or ""
    stop = stop_in(full)
    stopped = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=32, temperature=0, stop=[stop],
                                             extra_body=FREE)
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == full[: full.index(stop)]


def test_chat_streaming_matches_non_streaming(client: OpenAI) -> None:
    fresh = {"cache_prompt": False}
    full = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=24, temperature=0, extra_body=fresh)
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=fresh,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_chat_n_choices_and_logprobs(client: OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=6, temperature=0, n=2,
                                       logprobs=True, top_logprobs=3, extra_body=FREE)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content == r.choices[1].message.content
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content and len(lp.content[0].top_logprobs) == 3
    assert lp.content[0].token == lp.content[0].top_logprobs[0].token  # greedy picks the top one
    assert r.usage.completion_tokens == 12


def test_chat_content_parts_and_developer_role(client: OpenAI, server: Server) -> None:
    parts = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "text", "text": "Name a"}, {"type": "text", "text": "color."}]}]
    rendered = server.post("/apply-template", {"messages": parts}).json()["prompt"]
    assert "Name a\ncolor." in rendered and "Be brief." in rendered
    r = client.chat.completions.create(model="m", messages=parts, max_tokens=4, temperature=0,  # type: ignore[arg-type]
                                       extra_body=FREE)
    assert r.choices[0].finish_reason == "length" and isinstance(r.choices[0].message.content, str)
    assert r.usage is not None  # the rendered prompt is what was evaluated
    assert r.usage.prompt_tokens == len(server.post("/tokenize", {"content": rendered}).json()["tokens"])


def test_apply_template_agrees_with_chat(server: Server) -> None:
    prompt = server.post("/apply-template", {"messages": MESSAGES}).json()["prompt"]
    assert prompt.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    via_chat = server.post("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 12, "temperature": 0,
                                                     "cache_prompt": False}).json()
    via_completion = server.post("/completion", {"prompt": prompt, "n_predict": 12, "temperature": 0,
                                                 "cache_prompt": False}).json()
    assert via_chat["choices"][0]["message"]["content"] == via_completion["content"]
    assert via_chat["usage"]["prompt_tokens"] == via_completion["tokens_evaluated"]


def test_assistant_prefill_continues_the_message(server: Server) -> None:
    msgs = [*MESSAGES, {"role": "assistant", "content": "The capital of France is"}]
    prompt = server.post("/apply-template", {"messages": msgs}).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\nThe capital of France is")
    r = server.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0, **FREE}).json()
    # the reply continues the prefilled message: only the new text, as /completion writes it after that prompt
    after = server.post("/completion", {"prompt": prompt, "n_predict": 4, "temperature": 0, **FREE}).json()
    assert r["choices"][0]["message"]["content"] == after["content"]
    assert r["usage"]["prompt_tokens"] == after["tokens_evaluated"]
    two = [*msgs, {"role": "assistant", "content": "x"}]
    bad = server.post("/v1/chat/completions", {"messages": two})
    assert bad.status_code == 400 and "assistant" in bad.json()["error"]["message"]


def test_no_prefill_assistant_flag(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "512", "-np", "1", "--no-prefill-assistant")
    msgs = [*MESSAGES, {"role": "assistant", "content": "The capital"}]
    prompt = srv.post("/apply-template", {"messages": msgs}).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "The capital<|im_end|>" in prompt


def test_builtin_and_custom_templates(make_server: Any, model_path: str, tmp_path: Any) -> None:
    srv = make_server("-m", model_path, "-c", "512", "-np", "1", "--chat-template", "llama3")
    prompt = srv.post("/apply-template", {"messages": MESSAGES[1:]}).json()["prompt"]
    assert "<|start_header_id|>user<|end_header_id|>" in prompt
    tmpl = tmp_path / "t.jinja"
    tmpl.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{{ raise_exception('boom') "
                    "if messages[-1].content == 'explode' else '' }}>")
    srv2 = make_server("-m", model_path, "-c", "512", "-np", "1", "--chat-template-file", str(tmpl))
    assert srv2.post("/apply-template", {"messages": MESSAGES[1:]}).json()["prompt"].startswith("[user] What")
    err = srv2.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "explode"}]})
    assert err.status_code == 400 and "boom" in err.json()["error"]["message"]
    assert srv2.post("/apply-template", {"messages": MESSAGES[1:]}).status_code == 200  # still serving


def test_chat_errors_surface_as_sdk_exceptions(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=[], max_tokens=2)
    assert exc.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=MESSAGES, response_format={"type": "xml"})  # type: ignore[arg-type, typeddict-item]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=MESSAGES, top_logprobs=2)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=MESSAGES, n=99)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user"}])  # type: ignore[list-item]
    with pytest.raises(openai.NotFoundError):
        client.get("/nope", cast_to=dict)


# -- completions ---------------------------------------------------------

def test_completions(client: OpenAI, server: Server) -> None:
    prompt = "The capital of France is"
    r = client.completions.create(model="m", prompt=prompt, max_tokens=8, temperature=0, extra_body=FREE)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    native = server.post("/completion", {"prompt": prompt, "n_predict": 8, "temperature": 0, **FREE}).json()
    assert r.choices[0].text == native["content"] and r.usage.completion_tokens == 8
    many = client.completions.create(model="m", prompt=["Hello", "The sky is"], max_tokens=3, temperature=0, n=2,
                                     echo=True, extra_body={"cache_prompt": False})
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text
    # each choice echoes its own prompt (detokenized once per prompt, not per choice)
    assert [c.text.startswith(p) for c, p in zip(many.choices, ["Hello", "Hello", "The sky is", "The sky is"])] == [True] * 4
    assert many.choices[2].text != many.choices[0].text


def test_completions_echo_logprobs_and_stream(client: OpenAI, server: Server) -> None:
    prompt = "The capital of France is"
    r = client.completions.create(model="m", prompt=prompt, max_tokens=4, temperature=0, echo=True, logprobs=2,
                                  extra_body=FREE)
    assert r.choices[0].text.startswith(prompt)
    lp = r.choices[0].logprobs
    assert lp is not None and len(lp.tokens or []) == 4 and len((lp.top_logprobs or [])[0]) == 2
    fresh = {"cache_prompt": False}
    streamed = client.completions.create(model="m", prompt=prompt, max_tokens=8, temperature=0, stream=True,
                                         extra_body=fresh)
    text = "".join(c.choices[0].text for c in streamed)
    plain = client.completions.create(model="m", prompt=prompt, max_tokens=8, temperature=0, extra_body=fresh)
    assert text == plain.choices[0].text
    # best_of equal to n changes nothing; a suffix on a model without FIM tokens is ignored, as llama-server does
    both = client.completions.create(model="m", prompt=prompt, max_tokens=8, temperature=0, best_of=1,
                                     suffix=" is Paris.", extra_body=fresh)
    assert [c.text for c in both.choices] == [plain.choices[0].text]
    again = client.completions.create(model="m", prompt=prompt, max_tokens=1, suffix=" is Paris.")
    assert again.choices[0].text
    assert server.log().count("'suffix' ignored") == 1  # once per server, not per request
    with pytest.raises(openai.BadRequestError, match="suffix"):
        client.completions.create(model="m", prompt=prompt, extra_body={"suffix": 3})


def test_best_of_returns_the_most_probable_candidates(client: OpenAI) -> None:
    prompt = "Once upon a time"
    sampled = {"temperature": 1.5, "max_tokens": 8, "extra_body": FREE}
    # all four candidates back, best first: their per-token log probabilities never rise
    ranked = client.completions.create(model="m", prompt=prompt, best_of=4, n=4, logprobs=1, **sampled)
    means = [statistics.fmean(c.logprobs.token_logprobs) for c in ranked.choices]  # type: ignore[union-attr]
    assert [c.index for c in ranked.choices] == [0, 1, 2, 3] and means == sorted(means, reverse=True)
    assert len({c.text for c in ranked.choices}) > 1  # sampled: the ranking had something to choose from
    # the n best of best_of: only n come back, and every candidate's tokens are counted
    best = client.completions.create(model="m", prompt=[prompt, "The sky"], best_of=3, n=2, **sampled)
    assert [c.index for c in best.choices] == [0, 1, 2, 3]
    assert all(c.logprobs is None for c in best.choices)  # the ranking's probabilities are not shown unasked
    assert best.usage.completion_tokens == 2 * 3 * 8
    for bad, match in (({"best_of": 1, "n": 2}, "best_of"), ({"best_of": 5}, "number of slots"),
                       ({"best_of": 2.5}, "integer"), ({"best_of": 2, "stream": True}, "cannot be streamed")):
        with pytest.raises(openai.BadRequestError, match=match):
            client.completions.create(model="m", prompt=prompt, max_tokens=2, **bad)  # type: ignore[call-overload]
    streamed = client.completions.create(model="m", prompt=prompt, max_tokens=2, best_of=2, n=2, stream=True)
    assert sorted({c.choices[0].index for c in streamed}) == [0, 1]


def test_best_of_ranking() -> None:
    def result(*probs: float) -> FinalResult:
        return FinalResult(0, 0, "", [], len(probs), 1, 0, "limit", "", False, Timings(0, 1, 0.0, 0, 0.0), 0,
                           [TokenProbs(1, "x", [120], p, []) for p in probs])

    results = [result(0.5, 0.5), result(0.9, 0.1), result(0.2, 0.9), result(0.6), result(0.7), result()]
    assert mean_logprob(results[0]) == pytest.approx(math.log(0.5)) and mean_logprob(results[5]) == 0.0
    # per prompt (three candidates each), best first by the geometric mean of the token probabilities
    assert pick_best(results, 3, 2) == [0, 2, 5, 4]
    assert pick_best(results, 3, 1) == [0, 5]
    assert parse_best_of({}, 2, 4, False) == 2 and parse_best_of({"best_of": None}, 1, 4, True) == 1
    for body in ({"best_of": 0}, {"best_of": True}, {"best_of": "2"}, {"best_of": 9}):
        with pytest.raises(InvalidRequest):
            parse_best_of(body, 1, 4, False)


# -- raw HTTP: SSE framing and errors -----------------------------------

def test_sse_framing_raw(server: Server) -> None:
    r = requests.post(server.url + "/v1/chat/completions", json={
        "messages": MESSAGES, "max_tokens": 4, "temperature": 0, "stream": True, **FREE}, timeout=60)
    events = sse_events(r)
    assert events[-1] == b"data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert len({p["id"] for p in payloads}) == 1
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"
    native = requests.post(server.url + "/completion", json={"prompt": "Hi", "n_predict": 3, "stream": True},
                           timeout=60)
    assert not sse_events(native)[-1].startswith(b"data: [DONE]")  # llama-server's native stream has no [DONE]


def test_stream_error_before_output_is_plain_json(server: Server) -> None:
    r = requests.post(server.url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hello " * 1500}], "stream": True}, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "exceed_context_size_error"


def test_alias_and_props_endpoint(make_server: Any, model_path: str) -> None:
    # the name is the first alias in sorted order (llama-server keeps them in a std::set)
    srv = make_server("-m", model_path, "-c", "512", "-np", "1", "-a", "tiny,smol", "--props")
    models = OpenAI(base_url=srv.url + "/v1", api_key="x").models.list()
    assert [m.id for m in models.data] == ["smol"]
    assert srv.get("/v1/models").json()["data"][0]["aliases"] == ["smol", "tiny"]
    # OpenAI's models.retrieve: by the name or any alias, the list's entry; another name is a 404
    client = OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    assert client.models.retrieve("tiny").id == "smol" == srv.get("/models/smol").json()["id"]
    assert srv.get("/v1/models/smol").json()["meta"] == srv.get("/v1/models").json()["data"][0]["meta"]
    with pytest.raises(openai.NotFoundError, match="gpt-4"):
        client.models.retrieve("gpt-4")
    assert srv.get("/v1/models/org/other").status_code == 404
    r = srv.post("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2})
    assert r.json()["model"] == "smol"
    assert srv.post("/props", {}).json() == {"success": True}
    assert srv.get("/props").json()["endpoint_props"] is True


def test_post_props_needs_flag(server: Server) -> None:
    r = server.post("/props", {})
    assert r.status_code == 501 and "--props" in r.json()["error"]["message"]
