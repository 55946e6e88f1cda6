"""OpenAI's Responses API (/v1/responses, /v1/responses/input_tokens) through the official `openai` SDK,
against a real server with the default model; raw HTTP only where the SDK cannot send the mistake."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import openai
import pytest
import requests

from llamatwist.api.openai.responses import input_items, to_chat_body
from llamatwist.api.openai.responses_stream import OutputBuilder
from tests.conftest import Server
from tests.test_reasoning import THINK_TEMPLATE

pytestmark = pytest.mark.timeout(300)

GREEDY: dict[str, Any] = {"extra_body": {"top_k": 1}}
WEATHER = {
    "type": "function", "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def srv(model_path: str) -> Iterator[Server]:
    s = Server(["-m", model_path, "-c", "2048", "-np", "2", "-t", "1"])
    yield s
    s.stop()


def _client(srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client(srv: Server) -> openai.OpenAI:
    return _client(srv)


def _chat(srv: Server, messages: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    r = srv.post("/v1/chat/completions", {"messages": messages, "top_k": 1, **kw})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_text_matches_chat_route(srv: Server, client: openai.OpenAI) -> None:
    resp = client.responses.create(model="any", instructions="Answer briefly.", input=ASK, max_output_tokens=24,
                                   **GREEDY)
    chat = _chat(srv, [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": ASK}],
                 max_tokens=24)
    assert resp.object == "response" and resp.id.startswith("resp_")
    assert [item.type for item in resp.output] == ["message"]
    message = resp.output[0]
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    # one pipeline: the same prompt and the same greedy output as the chat route
    assert resp.output_text == chat["choices"][0]["message"]["content"] != ""
    assert resp.usage is not None
    assert resp.usage.input_tokens == chat["usage"]["prompt_tokens"]
    assert resp.usage.output_tokens == chat["usage"]["completion_tokens"]
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    expected = {"stop": "completed", "length": "incomplete"}[chat["choices"][0]["finish_reason"]]
    assert resp.status == expected and resp.instructions == "Answer briefly." and resp.max_output_tokens == 24


def test_item_forms_render_alike(client: openai.OpenAI) -> None:
    plain = client.responses.create(model="any", input=ASK, max_output_tokens=12, **GREEDY)
    easy = client.responses.create(model="any", input=[{"role": "user", "content": ASK}], max_output_tokens=12,
                                   **GREEDY)
    parts = client.responses.create(
        model="any", max_output_tokens=12, **GREEDY,
        input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": ASK}]}],
    )
    assert plain.output_text == easy.output_text == parts.output_text != ""
    assert plain.usage and easy.usage and parts.usage
    assert plain.usage.input_tokens == easy.usage.input_tokens == parts.usage.input_tokens


def test_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="any", input=ASK, max_output_tokens=3, **GREEDY)
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.output_tokens == 3


def _events(stream: Any) -> list[Any]:
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def test_stream_events_in_order(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="any", input=ASK, max_output_tokens=16, **GREEDY)
    events = _events(client.responses.create(model="any", input=ASK, max_output_tokens=16, stream=True, **GREEDY))
    kinds = [e.type for e in events]
    n_deltas = kinds.count("response.output_text.delta")
    assert n_deltas > 1
    last = "response.completed" if whole.status == "completed" else "response.incomplete"
    assert kinds == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * n_deltas, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", last,
    ]
    item_id = events[2].item.id
    assert all(e.item_id == item_id and e.output_index == 0 for e in events[3:-2])
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-4].text == events[-1].response.output_text == whole.output_text
    assert events[0].response.status == "in_progress" and events[-1].response.id == events[0].response.id
    assert events[-1].response.output[0].id == item_id
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens


def _call(resp: Any) -> Any:
    calls = [item for item in resp.output if item.type == "function_call"]
    assert len(calls) == 1, resp.output
    return calls[0]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}])
def test_function_call_round_trip(srv: Server, client: openai.OpenAI, choice: Any) -> None:
    first = client.responses.create(model="any", input=ASK, tools=[WEATHER], tool_choice=choice,
                                    max_output_tokens=64, **GREEDY)
    call = _call(first)
    assert call.name == "get_weather" and call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert isinstance(json.loads(call.arguments).get("city"), str)
    assert first.status == "completed"
    answer = client.responses.create(
        # tool_choice none: the small model would call again under auto; the answer must be text
        model="any", tools=[WEATHER], tool_choice="none", max_output_tokens=32, **GREEDY,
        input=[{"role": "user", "content": ASK}, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees Celsius."}],
    )
    assert answer.output_text != "" and not [i for i in answer.output if i.type == "function_call"]
    # the same prompt and answer as the chat route given the call and its result as chat messages
    chat = _chat(srv, [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "name": call.name, "content": "Sunny, 24 degrees Celsius."},
    ], tools=[{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
        tool_choice="none", max_tokens=32)
    assert answer.usage is not None and answer.usage.input_tokens == chat["usage"]["prompt_tokens"]
    assert answer.output_text == chat["choices"][0]["message"]["content"]


def test_function_call_streamed(client: openai.OpenAI) -> None:
    whole = _call(client.responses.create(model="any", input=ASK, tools=[WEATHER], tool_choice="required",
                                          max_output_tokens=64, **GREEDY))
    events = _events(client.responses.create(model="any", input=ASK, tools=[WEATHER], tool_choice="required",
                                             max_output_tokens=64, stream=True, **GREEDY))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    assert events[2].item.type == "function_call" and events[2].item.name == "get_weather"
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == events[-3].arguments == events[-2].item.arguments == whole.arguments
    assert events[-1].response.output[0].call_id == events[2].item.call_id


def test_json_schema_output(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    resp = client.responses.create(
        model="any", input="Name a big city and its population, as JSON.", max_output_tokens=64, **GREEDY,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    assert resp.status == "completed"
    jsonschema.validate(json.loads(resp.output_text), schema)


def test_previous_response_id_continues(srv: Server, client: openai.OpenAI) -> None:
    first = client.responses.create(model="any", instructions="Answer briefly.", input="My name is Zorblax.",
                                    max_output_tokens=16, **GREEDY)
    follow = client.responses.create(model="any", previous_response_id=first.id, input="What is my name?",
                                     max_output_tokens=16, **GREEDY)
    assert follow.previous_response_id == first.id
    # the stored turn is prepended (instructions are not carried over, as OpenAI): the same prompt as the chat
    # route with the whole conversation
    chat = _chat(srv, [{"role": "user", "content": "My name is Zorblax."},
                       {"role": "assistant", "content": first.output_text},
                       {"role": "user", "content": "What is my name?"}], max_tokens=16)
    assert follow.usage is not None and follow.usage.input_tokens == chat["usage"]["prompt_tokens"]
    assert follow.output_text == chat["choices"][0]["message"]["content"]
    # and chains: a third turn continues the second, with both earlier turns
    third = client.responses.create(model="any", previous_response_id=follow.id, input="Thanks.",
                                    max_output_tokens=4, **GREEDY)
    assert third.usage is not None and third.usage.input_tokens > follow.usage.input_tokens
    counted = client.responses.input_tokens.count(previous_response_id=follow.id, input="Thanks.")
    assert counted.input_tokens == third.usage.input_tokens


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="any", input="Hi", store=False, max_output_tokens=2, **GREEDY)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="any", input="Hi", previous_response_id=resp.id, max_output_tokens=2)


def test_stored_responses_are_retrieved_listed_and_deleted(srv: Server, client: openai.OpenAI) -> None:
    items = [{"role": "user", "content": "My name is Zorblax."}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]}]
    made = client.responses.create(model="any", instructions="Answer briefly.", input=items,
                                   max_output_tokens=8, metadata={"k": "v"}, **GREEDY)
    got = client.responses.retrieve(made.id)
    assert got.model_dump() == made.model_dump()  # the response as it was answered
    last = list(client.responses.create(model="any", input="Hi", max_output_tokens=4, stream=True, **GREEDY))[-1]
    streamed = last.response  # type: ignore[union-attr]
    assert client.responses.retrieve(streamed.id).model_dump() == streamed.model_dump()
    # input items: the request's own (not the instructions), each with an id, newest first by default
    listed = client.responses.input_items.list(made.id)
    assert [i.role for i in listed.data] == ["user", "assistant", "user"][::-1]  # type: ignore[union-attr]
    assert listed.data[0].content[0].text == "What is my name?"  # type: ignore[union-attr]
    assert all(i.id.startswith("msg_") for i in listed.data) and listed.has_more is False
    raw = srv.get(f"/v1/responses/{made.id}/input_items?order=asc&limit=2").json()
    assert [d["content"][0]["text"] for d in raw["data"]] == ["My name is Zorblax.", "Hello!"]
    assert raw["has_more"] is True and raw["last_id"] == raw["data"][1]["id"]
    rest = srv.get(f"/responses/{made.id}/input_items?order=asc&after={raw['last_id']}").json()
    assert [d["role"] for d in rest["data"]] == ["user"] and rest["has_more"] is False
    for query, needle in (("limit=0", "limit"), ("limit=x", "limit"), ("order=up", "order"), ("after=zz", "after")):
        r = srv.get(f"/v1/responses/{made.id}/input_items?{query}")
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
    # a deleted response is gone for every use, and a second delete is a 404
    deleted = requests.delete(f"{srv.url}/v1/responses/{made.id}", timeout=10)
    assert deleted.json() == {"id": made.id, "object": "response", "deleted": True}
    for call in (lambda: client.responses.retrieve(made.id), lambda: client.responses.delete(made.id),
                 lambda: client.responses.input_items.list(made.id),
                 lambda: client.responses.create(model="any", input="?", previous_response_id=made.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert srv.get("/v1/responses/resp_unknown").json()["error"]["type"] == "not_found_error"


def test_store_is_a_bounded_lru(make_server: Callable[..., Server], model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "1024", "-np", "1", "-t", "1", "--responses-store-size", "2")
    client = _client(srv)

    def create(**kw: Any) -> str:
        return client.responses.create(model="any", max_output_tokens=2, **GREEDY, **kw).id

    a = create(input="one")
    b = create(input="two")
    create(input="three", previous_response_id=a)  # a is used, so b is the least recently used
    with pytest.raises(openai.NotFoundError):
        create(input="again", previous_response_id=b)
    create(input="again", previous_response_id=a)


def test_input_tokens_counts_the_prompt(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="any", instructions="Answer briefly.", input=ASK, tools=[WEATHER],
                                   max_output_tokens=2, **GREEDY)
    counted = client.responses.input_tokens.count(instructions="Answer briefly.", input=ASK, tools=[WEATHER])
    assert counted.object == "response.input_tokens"
    assert resp.usage is not None and counted.input_tokens == resp.usage.input_tokens


def test_unknown_previous_response_id_is_404(srv: Server, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="any", input="Hi", previous_response_id="resp_unknown")
    assert "resp_unknown" in caught.value.message
    r = srv.post("/v1/responses/input_tokens", {"input": "Hi", "previous_response_id": "resp_unknown"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(("body", "needle"), [
    ({}, "'input' is required"),
    ({"input": 3}, "'input' must be"),
    ({"input": [{"type": "file_search_call", "id": "x"}]}, "input[0].type"),
    ({"input": ["hello"]}, "input[0]"),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "output_image"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "--mmproj"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}, "input[0].call_id"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "max_output_tokens": 2**31}, "max_output_tokens"),
    ({"input": "hi", "max_output_tokens": "many"}, "max_output_tokens"),
    ({"input": "hi", "max_output_tokens": True}, "max_output_tokens"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "hi", "tools": {"type": "function"}}, "'tools'"),
    ({"input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"input": "hi", "instructions": 5}, "instructions"),
    ({"input": "hi", "previous_response_id": 5}, "previous_response_id"),
    ({"input": "hi", "stream": "yes"}, "stream"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "reasoning": "high"}, "reasoning"),
])
def test_bad_input_is_400_in_openai_shape(srv: Server, body: dict[str, Any], needle: str) -> None:
    for path in ("/v1/responses", "/responses/input_tokens"):
        r = srv.post(path, {"model": "any", **body})
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and needle in error["message"], error


def test_keep_alive_comments_before_response_created(srv: Server) -> None:
    # a prompt that takes seconds, with a ':' comment after each silent second: the comments come first,
    # then the events as usual
    body = {"input": "hello " * 700, "max_output_tokens": 2, "stream": True, "sse_ping_interval": 1,
            "cache_prompt": False}
    r = srv.post("/v1/responses", body)
    assert r.status_code == 200
    frames = r.text.strip().split("\n\n")
    assert frames[0] == ":"
    names = [f.split("\n")[0][7:] for f in frames if f != ":"]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] in ("response.completed", "response.incomplete")
    numbers = [json.loads(f.split("\n")[1][6:])["sequence_number"] for f in frames if f != ":"]
    assert numbers == list(range(len(numbers)))


def test_stream_error_before_output_is_a_plain_status(client: openai.OpenAI) -> None:
    # headers wait for the first result: a prompt over the context is a 400, not a broken stream
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="any", input="word " * 3000, stream=True)
    assert "context size" in caught.value.message


def test_bad_input_through_the_sdk_then_healthy(srv: Server, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="any", input="hi", max_output_tokens=-1)
    assert "max_output_tokens" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="any", input=[{"type": "mystery"}])
    assert requests.get(srv.url + "/health", timeout=10).status_code == 200
    assert client.responses.create(model="any", input="Hi", max_output_tokens=4, **GREEDY).output_text != ""


@pytest.fixture(scope="module")
def thinker(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    template = tmp_path_factory.mktemp("think") / "think.jinja"
    template.write_text(THINK_TEMPLATE)
    srv = Server(["-m", model_path, "-c", "2048", "-np", "1", "-t", "1", "--chat-template-file", str(template),
                  "--reasoning-budget", "0", "--reasoning-budget-message", " Enough."])
    yield srv
    srv.stop()


def test_reasoning_item(thinker: Server) -> None:
    """A template that thinks: the thinking block is a ``reasoning`` item before the message, streamed as
    ``reasoning_text`` events, and a reasoning item is accepted back as input."""
    client = _client(thinker)
    # one word biased so strongly that the model writes nothing else where it is free (as test_reasoning.py):
    # --reasoning-budget 0 forces the budget message and the end tag first, then the answer is that word
    (token,) = thinker.post("/tokenize", {"content": " blue"}).json()["tokens"]
    bias: dict[str, Any] = {"extra_body": {"logit_bias": {str(token): 100.0}}}
    resp = client.responses.create(model="any", input="What is the capital of France?", max_output_tokens=12,
                                   temperature=0, **bias)
    assert [item.type for item in resp.output] == ["reasoning", "message"]
    reasoning = resp.output[0]
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_") and reasoning.content is not None
    # the "\n" the prompt wrote after <think> starts the reasoning, as in the chat route
    assert [(c.type, c.text) for c in reasoning.content] == [("reasoning_text", "\n Enough.")]
    events = _events(client.responses.create(model="any", input="What is the capital of France?",
                                             max_output_tokens=12, temperature=0, stream=True, **bias))
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.reasoning_text.delta"]
    done = kinds.index("response.reasoning_text.done")
    assert kinds[done + 1: done + 3] == ["response.output_item.done", "response.output_item.added"]
    assert events[done].text == "\n Enough." and events[done + 2].output_index == 1
    assert [i.type for i in events[-1].response.output] == ["reasoning", "message"]
    assert events[-1].response.output_text == resp.output_text
    assert set(resp.output_text.split()) == {"blue"}
    follow = client.responses.create(model="any", previous_response_id=resp.id, input="And of Spain?",
                                     max_output_tokens=4, temperature=0, **bias)
    assert follow.output[0].type == "reasoning"


# Pure parts: the translation and the output builder, without a server


def test_translation_merges_an_assistant_turn() -> None:
    body = {"instructions": "Be brief.", "input": [
        {"role": "user", "content": "Weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Hm."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "Sunny"}]},
        {"role": "developer", "content": [{"type": "input_text", "text": "Answer now."}]},
    ], "max_output_tokens": 9, "text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "low"},
        "tool_choice": {"type": "function", "name": "get_weather"}, "tools": [WEATHER], "top_k": 1}
    chat = to_chat_body(body, input_items(body))
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "reasoning_content": "Hm.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "Sunny"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer now."}]},
    ]
    assert chat["max_tokens"] == 9 and chat["top_k"] == 1 and chat["reasoning_effort"] == "low"
    assert chat["response_format"] == {"type": "json_object"}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["tools"] == [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]


def test_output_builder_closes_each_item_before_the_next() -> None:
    b = OutputBuilder()
    events = b.feed([{"reasoning_content": "Hm"}, {"content": "Let me check."},
                     {"tool_calls": [{"index": 0, "id": "a", "type": "function",
                                      "function": {"name": "f", "arguments": "{\"x\""}}]}])
    events += b.feed([{"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}]) + b.close()
    assert [name for name, _ in events] == [
        "response.output_item.added", "response.reasoning_text.delta", "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert [data.get("output_index") for _, data in events if "item" in data] == [0, 0, 1, 1, 2, 2]
    added = [data["item"] for name, data in events if name == "response.output_item.added"]
    assert added[2] == {"id": "fc_a", "type": "function_call", "status": "in_progress", "arguments": "",
                        "call_id": "call_a", "name": "f"}  # as it was when added
    assert [item["type"] for item in b.output] == ["reasoning", "message", "function_call"]
    assert b.output[2]["arguments"] == "{\"x\": 1}" and all(i["status"] == "completed" for i in b.output)
    assert b.output[1]["content"] == [{"type": "output_text", "text": "Let me check.", "annotations": [],
                                       "logprobs": []}]
