"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) through the official `anthropic` SDK,
against a real server with the default model; raw HTTP only where the SDK cannot send the mistake."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
import requests

from llamatwist.api.anthropic.request import to_chat_body
from llamatwist.api.anthropic.response import BlockStream, error_shape
from llamatwist.api.errors import ErrorAnswer
from llamatwist.api.security import MAX_BODY_BYTES
from tests.conftest import Server
from tests.test_reasoning import THINK_TEMPLATE

pytestmark = pytest.mark.timeout(300)

# this SDK has no sampling arguments any more: they travel as extra body fields, as Anthropic reads them
TOP_K1: dict[str, Any] = {"top_k": 1}
GREEDY: dict[str, Any] = {"extra_body": TOP_K1}
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def srv(model_path: str) -> Iterator[Server]:
    s = Server(["-m", model_path, "-c", "2048", "-np", "2", "-t", "1"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(srv: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.url, api_key="unused", max_retries=0, timeout=120)


def _chat(srv: Server, messages: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    r = srv.post("/v1/chat/completions", {"messages": messages, **kw})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _text(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def test_create_matches_chat_route(srv: Server, client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="any", max_tokens=24, system="Answer briefly.", messages=ASK, **GREEDY)
    chat = _chat(srv, [{"role": "system", "content": "Answer briefly."}, *ASK], max_tokens=24, **TOP_K1)
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    # one pipeline: the same prompt and the same greedy output as the chat route
    assert _text(msg) == chat["choices"][0]["message"]["content"] != ""
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) == chat["usage"]["prompt_tokens"]
    assert msg.usage.output_tokens == chat["usage"]["completion_tokens"]
    expected = {"stop": "end_turn", "length": "max_tokens"}[chat["choices"][0]["finish_reason"]]
    assert msg.stop_reason == expected and msg.stop_sequence is None


def test_system_blocks_and_text_blocks(srv: Server, client: anthropic.Anthropic) -> None:
    blocks = client.messages.create(
        model="any", max_tokens=12, system=[{"type": "text", "text": "Answer "}, {"type": "text", "text": "briefly."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]}],
        **GREEDY,
    )
    plain = client.messages.create(model="any", max_tokens=12, system="Answer briefly.", messages=ASK, **GREEDY)
    assert _text(blocks) == _text(plain)


def test_max_tokens_and_stop_sequence(client: anthropic.Anthropic) -> None:
    short = client.messages.create(model="any", max_tokens=3, messages=ASK, **GREEDY)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    full = _text(client.messages.create(model="any", max_tokens=24, messages=ASK, **GREEDY))
    word = full.split()[2]
    stopped = client.messages.create(model="any", max_tokens=24, messages=ASK, stop_sequences=[word], **GREEDY)
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    assert full.startswith(_text(stopped)) and word not in _text(stopped)


def test_model_and_max_tokens_may_be_left_out(srv: Server) -> None:
    """As llama-server documents (Anthropic requires both): no model, and max_tokens 4096."""
    body = {"messages": ASK, **TOP_K1, "cache_prompt": False}
    r = srv.post("/v1/messages", body)
    assert r.status_code == 200 and r.json()["stop_reason"] == "end_turn", r.text
    last = max((s for s in srv.get("/slots").json() if s.get("params")), key=lambda s: s["id_task"])
    assert last["params"]["n_predict"] == 4096
    explicit = srv.post("/v1/messages", {**body, "model": "any", "max_tokens": 4096}).json()
    assert explicit["content"] == r.json()["content"]
    assert srv.post("/v1/messages", {**body, "model": None}).status_code == 200
    assert srv.post("/v1/messages/count_tokens", {"messages": ASK}).json()["input_tokens"] > 0


def test_keep_alive_comments_before_message_start(srv: Server) -> None:
    # a prompt that takes seconds, with a ':' comment after each silent second: the comments come first,
    # then message_start as usual
    body = {"model": "m", "max_tokens": 2, "stream": True, "sse_ping_interval": 1, "cache_prompt": False,
            "messages": [{"role": "user", "content": "hello " * 700}]}
    r = srv.post("/v1/messages", body)
    assert r.status_code == 200
    frames = r.text.strip().split("\n\n")
    assert frames[0] == ":" and "event: message_start" in [f.split("\n")[0] for f in frames]
    names = [f.split("\n")[0][7:] for f in frames if f != ":"]
    assert names[:2] == ["message_start", "ping"] and names[-1] == "message_stop"


def test_llama_fields_pass_through(client: anthropic.Anthropic) -> None:
    hi = [{"role": "user", "content": "hi"}]
    plain = client.messages.create(model="any", max_tokens=40, messages=hi, **GREEDY)
    assert plain.stop_reason == "end_turn" and plain.usage.output_tokens < 40
    # llama.cpp's own generation fields work here as on the other generation routes
    forced = client.messages.create(model="any", max_tokens=40, messages=hi, extra_body={**TOP_K1, "ignore_eos": True})
    assert forced.stop_reason == "max_tokens" and forced.usage.output_tokens == 40
    assert _text(forced).startswith(_text(plain))


def test_stream_event_order(srv: Server, client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model="any", max_tokens=20, messages=ASK, **GREEDY)
    # on the wire (the SDK drops pings): each event's name is its data's type
    raw = srv.post("/v1/messages", {"model": "any", "max_tokens": 20, "messages": ASK, "stream": True, **TOP_K1})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    frames = [f.split("\n") for f in raw.text.strip().split("\n\n")]
    assert all(len(f) == 2 and f[0].startswith("event: ") and f[1].startswith("data: ") for f in frames)
    wire = [(f[0][7:], json.loads(f[1][6:])) for f in frames]
    assert all(name == data["type"] for name, data in wire)
    assert [n for n, _ in wire][:3] == ["message_start", "ping", "content_block_start"]
    # message_start already knows the cached share of the prompt (the same prompt as `whole`: cached now)
    start_usage, end_usage = wire[0][1]["message"]["usage"], wire[-2][1]["usage"]
    assert start_usage["cache_read_input_tokens"] == end_usage["cache_read_input_tokens"] > 0
    assert start_usage["input_tokens"] == end_usage["input_tokens"] and start_usage["output_tokens"] == 0
    assert start_usage["input_tokens"] + start_usage["cache_read_input_tokens"] == (
        whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0))
    events = list(client.messages.create(model="any", max_tokens=20, messages=ASK, stream=True, **GREEDY))
    kinds = [e.type for e in events]
    assert kinds == [n for n, _ in wire if n != "ping"]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert events[1].content_block.type == "text"  # type: ignore[union-attr]
    assert all(e.index == 0 and e.delta.type == "text_delta" for e in events[2:-3])  # type: ignore[union-attr]
    assert "".join(e.delta.text for e in events[2:-3]) == _text(whole)  # type: ignore[union-attr]
    delta = events[-2]
    assert delta.delta.stop_reason == whole.stop_reason  # type: ignore[union-attr]
    assert delta.usage.output_tokens == whole.usage.output_tokens  # type: ignore[union-attr]
    # the SDK's helper assembles the same message
    with client.messages.stream(model="any", max_tokens=20, messages=ASK, **GREEDY) as stream:
        final = stream.get_final_message()
    assert _text(final) == _text(whole) and final.stop_reason == whole.stop_reason


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    call = client.messages.create(
        model="any", max_tokens=160, messages=ASK, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"},
        extra_body={"temperature": 0},  # as test_tool_use_stream_any: the same call every run
    )
    assert call.stop_reason == "tool_use"
    uses = [b for b in call.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict) and isinstance(uses[0].input.get("city"), str)
    history = [*ASK, {"role": "assistant", "content": call.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"}]}]
    answer = client.messages.create(model="any", max_tokens=32, messages=history, tools=[WEATHER],
                                    tool_choice={"type": "none"})
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] == ["text"] and _text(answer)
    # the tool's answer is part of the prompt
    without = client.messages.count_tokens(model="any", messages=history[:2], tools=[WEATHER])
    with_result = client.messages.count_tokens(model="any", messages=history, tools=[WEATHER])
    assert with_result.input_tokens > without.input_tokens


def test_tool_use_stream_any(client: anthropic.Anthropic) -> None:
    # greedy, with room to finish the call: with the default sampling the reply differed from run to run, and one
    # in a clean-clone CI run did not pass
    with client.messages.stream(
        model="any", max_tokens=160, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"},
        extra_body={"temperature": 0},
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "input_json" in kinds  # the SDK's event for each input_json_delta
    assert final.stop_reason == "tool_use"
    use = final.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and isinstance(use.input.get("city"), str)


def test_count_tokens_equals_chat_prompt(srv: Server, client: anthropic.Anthropic) -> None:
    system = "You are terse."
    counted = client.messages.count_tokens(model="any", system=system, messages=ASK, tools=[WEATHER])
    oai_tools = [{"type": "function", "function": {"name": WEATHER["name"], "description": WEATHER["description"],
                                                   "parameters": WEATHER["input_schema"]}}]
    chat = _chat(srv, [{"role": "system", "content": system}, *ASK], tools=oai_tools, max_tokens=4)
    assert counted.input_tokens == chat["usage"]["prompt_tokens"]
    plain = client.messages.count_tokens(model="any", messages=ASK)
    r = srv.post("/v1/chat/completions/input_tokens", {"messages": ASK})
    assert plain.input_tokens == r.json()["input_tokens"] < counted.input_tokens


def test_thinking_parameter(client: anthropic.Anthropic) -> None:
    # the default model has no thinking block: enabled is accepted and no thinking block comes back
    msg = client.messages.create(model="any", max_tokens=8, messages=ASK,
                                 thinking={"type": "enabled", "budget_tokens": 1024}, metadata={"user_id": "u1"})
    assert [b.type for b in msg.content] == ["text"]


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("model not a string", {"model": 5, "max_tokens": 8, "messages": ASK}, "model"),
    ("messages not a list", {"model": "m", "max_tokens": 8, "messages": {"role": "user", "content": "hi"}},
     "messages"),
    ("empty messages", {"model": "m", "max_tokens": 8, "messages": []}, "messages"),
    ("bad role", {"model": "m", "max_tokens": 8, "messages": [{"role": "system", "content": "hi"}]},
     "messages.0.role"),
    ("unknown block", {"model": "m", "max_tokens": 8,
                       "messages": [{"role": "user", "content": [{"type": "video", "text": "x"}]}]},
     "messages.0.content.0.type"),
    ("tool_use from the user", {"model": "m", "max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages.0.content.0.type"),
    ("tool_result for no tool_use", {"model": "m", "max_tokens": 8, "messages": [
        *ASK, {"role": "assistant", "content": "Let me check."},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]}]},
     "tool_use_id"),
    ("image", {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]},
     "multimodal projector"),
    ("bad tool_choice", {"model": "m", "max_tokens": 8, "messages": ASK, "tools": [WEATHER],
                         "tool_choice": {"type": "required"}}, "tool_choice"),
    ("tool_choice names no tool", {"model": "m", "max_tokens": 8, "messages": ASK, "tools": [WEATHER],
                                   "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
    ("tool without schema", {"model": "m", "max_tokens": 8, "messages": ASK,
                             "tools": [{"name": "f", "description": "x"}]}, "input_schema"),
    ("tool schema not an object", {"model": "m", "max_tokens": 8, "messages": ASK,
                                   "tools": [{"name": "f", "input_schema": {"type": "string"}}]}, "input_schema.type"),
    ("max_tokens 0", {"model": "m", "max_tokens": 0, "messages": ASK}, "max_tokens"),
    ("stop_sequences not strings", {"model": "m", "max_tokens": 8, "messages": ASK, "stop_sequences": [1]},
     "stop_sequences"),
    ("bad thinking", {"model": "m", "max_tokens": 8, "messages": ASK, "thinking": {"type": "on"}}, "thinking"),
]


@pytest.mark.parametrize(("case", "body", "named"), BAD, ids=[c[0] for c in BAD])
def test_bad_request(srv: Server, client: anthropic.Anthropic, case: str, body: dict[str, Any], named: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.post("/v1/messages", body=body, cast_to=object)
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict) and set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message", "code"} and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == 400
    assert named in body["error"]["message"]


def test_error_shapes_raw(srv: Server) -> None:
    r = srv.post("/v1/messages", {"model": "m", "max_tokens": 0, "messages": ASK})
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Input should be an integer greater than or equal to 1",
        "code": 400}}
    r = requests.post(srv.url + "/v1/messages", data=b"[1, 2", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = srv.post("/v1/messages/nothing-here", {})
    assert r.status_code == 404 and r.json()["type"] == "error" and r.json()["error"]["type"] == "not_found_error"
    r = srv.get("/v1/messages")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    # a stream refused before it starts is a plain JSON error with its status
    r = srv.post("/v1/messages", {"model": "m", "max_tokens": 8, "stream": True, "messages": "hi"})
    assert r.status_code == 400 and r.json()["type"] == "error"
    # other routes keep llama-server's shape
    r = srv.post("/v1/chat/completions", {"messages": "hi"})
    assert r.status_code == 400 and "code" in r.json()["error"]


def test_body_over_the_limit_is_request_too_large(srv: Server) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b'Content-Length: %d\r\n\r\n{"messages": "' % (MAX_BODY_BYTES + 1))
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body)["error"]["type"] == "request_too_large" and json.loads(body)["type"] == "error"
    assert srv.get("/health").status_code == 200


def test_context_exceeded_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="any", max_tokens=8, messages=[{"role": "user", "content": "hello " * 1200}])
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "context" in err.value.body["error"]["message"]  # type: ignore[index]
    # llama-server's fields beside Anthropic's: the prompt's size and the context's
    error = err.value.body["error"]  # type: ignore[index]
    assert error["code"] == 400 and error["n_prompt_tokens"] > error["n_ctx"] > 0, error


def test_not_found_via_sdk(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        client.post("/v1/messages/batches-not-here", body={}, cast_to=object)
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_models_through_the_anthropic_sdk(srv: Server, client: anthropic.Anthropic) -> None:
    """/v1/models carries Anthropic's model fields beside OpenAI's: either SDK lists and retrieves it."""
    listed = client.models.list()
    (model,) = listed.data
    name = srv.get("/v1/models").json()["data"][0]["id"]
    assert model.type == "model" and model.id == model.display_name == name
    assert model.created_at.year >= 2026 and listed.has_more is False and listed.first_id == name
    assert client.models.retrieve(name).id == name
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nothing")


def test_disconnect_cancels_the_stream(srv: Server) -> None:
    # 900 tokens take this server well over the 5 s it gets to free the slot (about 10 s at -t 1)
    body = {"model": "m", "max_tokens": 900, "stream": True, "messages": ASK, "ignore_eos": True}
    with requests.post(srv.url + "/v1/messages", json=body, stream=True, timeout=60) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # the stream started
    deadline = time.monotonic() + 5
    while any(s["is_processing"] for s in srv.get("/slots").json()):
        assert time.monotonic() < deadline, "the slot kept generating for a client that left"
        time.sleep(0.1)


def test_server_healthy_after(srv: Server, client: anthropic.Anthropic) -> None:
    assert srv.get("/health").json()["status"] == "ok"
    assert _text(client.messages.create(model="any", max_tokens=4, messages=ASK))


def test_api_key(make_server: Any, model_path: str) -> None:
    s = make_server("-m", model_path, "-c", "512", "-np", "1", "-t", "1", "--api-key", "sekret")
    wrong = anthropic.Anthropic(base_url=s.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        wrong.messages.create(model="any", max_tokens=4, messages=ASK)
    assert err.value.status_code == 401
    assert err.value.body == {"type": "error",
                              "error": {"type": "authentication_error", "message": "Invalid API Key", "code": 401}}
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.count_tokens(model="any", messages=ASK)
    # the SDK sends x-api-key and anthropic-version
    right = anthropic.Anthropic(base_url=s.url, api_key="sekret", max_retries=0)
    assert right.messages.count_tokens(model="any", messages=ASK).input_tokens > 0
    assert _text(right.messages.create(model="any", max_tokens=4, messages=ASK))
    r = requests.post(s.url + "/v1/messages", json={"model": "m", "max_tokens": 4, "messages": ASK},
                      headers={"x-api-key": "sekret", "anthropic-version": "2023-06-01"}, timeout=60)
    assert r.status_code == 200 and r.json()["type"] == "message"


# thinking, with test_reasoning's template (it opens <think> in the prompt) and one word biased so strongly
# that the model writes nothing else where it is free: the blocks show exactly what the budget forced
@pytest.fixture(scope="module")
def thinker(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    template = tmp_path_factory.mktemp("think") / "think.jinja"
    template.write_text(THINK_TEMPLATE)
    s = Server(["-m", model_path, "-c", "1024", "-np", "1", "-t", "1", "--chat-template-file", str(template),
                "--reasoning-budget", "0", "--reasoning-budget-message", " Enough."])
    yield s
    s.stop()


def test_thinking_blocks(thinker: Server) -> None:
    client = anthropic.Anthropic(base_url=thinker.url, api_key="unused", max_retries=0, timeout=120)
    (token,) = thinker.post("/tokenize", {"content": " blue"}).json()["tokens"]
    extra = {"extra_body": {"temperature": 0, "logit_bias": {str(token): 100.0}}}
    msg = client.messages.create(model="any", max_tokens=20, messages=ASK,
                                 thinking={"type": "enabled", "budget_tokens": 5}, **extra)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    thinking, text = msg.content
    # the budget counts from <think>, the prompt's own "\n" included, and that "\n" starts the thinking (as the
    # chat route's reasoning_content)
    assert thinking.thinking == "\n" + " blue" * 4 + " Enough." and thinking.signature == ""  # type: ignore[union-attr]
    assert text.text.strip().startswith("blue blue") and msg.stop_reason == "max_tokens"  # type: ignore[union-attr]
    # streamed: a thinking block (closed with its signature) then a text block, numbered in order
    with client.messages.stream(model="any", max_tokens=20, messages=ASK,
                                thinking={"type": "enabled", "budget_tokens": 5}, **extra) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [(e.index, e.content_block.type) for e in events if e.type == "content_block_start"]  # type: ignore[union-attr]
    assert starts == [(0, "thinking"), (1, "text")]
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]  # type: ignore[union-attr]
    assert deltas[0] == "thinking_delta" and "signature_delta" in deltas and deltas[-1] == "text_delta"
    stops = [e.index for e in events if e.type == "content_block_stop"]  # type: ignore[union-attr]
    assert stops == [0, 1]
    assert final.content[0].thinking == thinking.thinking and final.content[1].text == text.text  # type: ignore[union-attr]
    # disabled: the template closes the block in the prompt, no thinking block comes back
    off = client.messages.create(model="any", max_tokens=8, messages=ASK, thinking={"type": "disabled"}, **extra)
    assert [b.type for b in off.content] == ["text"] and _text(off) == " blue" * 8


# pure parts


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (404, "not_found_error"),
    (405, "invalid_request_error"), (413, "request_too_large"), (500, "api_error"), (501, "api_error"),
    (503, "overloaded_error"),
])
def test_error_types(status: int, kind: str) -> None:
    assert error_shape(ErrorAnswer(status, "any_llama_type", "why")) == {
        "type": "error", "error": {"type": kind, "message": "why", "code": status}}


def test_block_stream_numbers_and_closes_blocks_in_order() -> None:
    blocks = BlockStream()
    events = blocks.feed([{"reasoning_content": "hm"}, {"content": "Sure."}])
    events += blocks.feed([{"tool_calls": [{"index": 0, "id": "c0", "type": "function",
                                            "function": {"name": "f", "arguments": ""}}]}])
    events += blocks.feed([{"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
                           {"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]},
                           {"tool_calls": [{"index": 1, "id": "c1", "type": "function",
                                            "function": {"name": "g", "arguments": "{}"}}]}])
    events += blocks.close()
    assert [(name, data.get("index"), (data.get("delta") or data.get("content_block") or {}).get("type"))
            for name, data in events] == [
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"), ("content_block_stop", 2, None),
        ("content_block_start", 3, "tool_use"), ("content_block_delta", 3, "input_json_delta"),
        ("content_block_stop", 3, None),
    ]
    assert events[7][1]["content_block"] == {"type": "tool_use", "id": "c0", "name": "f", "input": {}}
    assert blocks.close() == []


def test_translation_keeps_tool_results_before_text() -> None:
    body = to_chat_body({"model": "m", "max_tokens": 4, "system": [{"type": "text", "text": "S"}], "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""},
                                          {"type": "text", "text": "a"},
                                          {"type": "tool_use", "id": "u1", "name": "f", "input": {"x": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "u1", "content": [{"type": "text", "text": "r"}]},
                                     {"type": "text", "text": "and?"}]},
    ], "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        "tools": [{"name": "f", "input_schema": {"type": "object"}}], "stop_sequences": ["END"]})
    assert body["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "t", "tool_calls": [
            {"id": "u1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "tool_call_id": "u1", "name": "f", "content": "r"},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False and body["stop"] == ["END"] and body["max_tokens"] == 4
    assert body["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
