"""Function calling on /v1/chat/completions: request validation (pure) and SmolLM2 with the generic
format through the official `openai` client."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
import requests
from openai import OpenAI

from llamatwist.api.chatformat import add_system_prompt
from llamatwist.api.errors import InvalidRequest
from llamatwist.api.openai.chat import parse_chat
from llamatwist.api.openai.functions import from_functions, legacy_delta, legacy_finish, legacy_message
from llamatwist.api.openai.tools import (
    MessageStream,
    ToolCallIds,
    check_tool_history,
    message_json,
    parse_tool_request,
)
from llamatwist.chat.toolcalls import ParsedMessage, ToolCallOut
from llamatwist.chat.toolcalls.generic import CALL_ID_MAX_LENGTH, PARALLEL_CALLS_MIN_CAP, max_parallel_calls
from llamatwist.config import SamplingDefaults
from llamatwist.constrain.schema import closed_objects, resolve_refs
from tests.conftest import Server


def function_tool(name: str, description: str, parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def params(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


WEATHER = function_tool("get_weather", "Get the current weather in a city", params(
    {"city": {"type": "string", "maxLength": 24}, "unit": {"type": "string", "enum": ["c", "f"]}}, ["city"]))
# bounded integers: a small model may otherwise write digits until max_tokens
SMALL_INT = {"type": "integer", "minimum": 0, "maximum": 999}
ADD = function_tool("add", "Add two integers", params({"a": SMALL_INT, "b": SMALL_INT}, ["a", "b"]))
TOOLS: Any = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK: Any = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def tools_with(parameters: Any) -> list[dict[str, Any]]:
    return [function_tool("f", "", parameters)]


# -- request validation (pure) ----------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    ({"tools": {"type": "function"}}, "'tools' must be an array"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type must be 'function'"),
    ({"tools": [{"type": "function"}]}, "tools[0].function must be an object"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "name must be a non-empty string"),
    ({"tools": [{"type": "function", "function": {"name": 3}}]}, "name must be a non-empty string"),
    ({"tools": tools_with("{}")}, "parameters must be a JSON schema object"),
    ({"tools": tools_with({"type": "string"})}, "must describe an object"),
    ({"tools": tools_with({"type": "object", "properties": []})}, "properties must be an object"),
    ({"tools": tools_with({"type": "object", "properties": {"x": {"type": "strin"}}})}, "properties.x.type"),
    ({"tools": tools_with({"type": "object", "properties": {"x": 5}})}, "properties.x must be a JSON schema"),
    ({"tools": tools_with({"type": "object", "required": "x"})}, "required must be an array of strings"),
    ({"tools": [WEATHER, WEATHER]}, "defined twice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "Invalid tool_choice: sometimes"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "unknown function"),
    ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "'tool_choice' must be"),
    ({"tool_choice": "required"}, "needs a non-empty 'tools'"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "'parallel_tool_calls' must be a boolean"),
])
def test_tool_request_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_tool_request(body)
    assert message in exc.value.message


def test_tool_request_parsed() -> None:
    req = parse_tool_request({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "add"}},
                              "parallel_tool_calls": True})
    assert req.active and req.names == ["get_weather", "add"] and req.parallel_tool_calls
    assert req.tool_choice == {"type": "function", "function": {"name": "add"}}
    assert not parse_tool_request({"tools": TOOLS, "tool_choice": "none"}).active
    assert not parse_tool_request({"tools": []}).active and parse_tool_request({}).tools is None


def test_tool_history() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    ok = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]},
          {"role": "tool", "tool_call_id": "c1", "content": "3"}, {"role": "tool", "content": "no id"}]
    check_tool_history(ok)
    with pytest.raises(InvalidRequest, match=r"messages\[1\].tool_call_id 'c1' does not match"):
        check_tool_history([ok[0], ok[2]])  # the answer comes before the call
    with pytest.raises(InvalidRequest, match="must be a string"):
        check_tool_history([ok[0], ok[1], {"role": "tool", "tool_call_id": 1, "content": "3"}])


def test_parse_chat_tool_conflicts() -> None:
    defaults = SamplingDefaults()
    base = {"messages": ASK, "tools": TOOLS}
    with pytest.raises(InvalidRequest, match="custom grammar"):
        parse_chat({**base, "grammar": 'root ::= "a"'}, defaults, 1)
    with pytest.raises(InvalidRequest, match="logprobs is not supported with tools"):
        parse_chat({**base, "logprobs": True, "stream": True}, defaults, 1)
    with pytest.raises(InvalidRequest, match="reasoning_format"):
        parse_chat({**base, "reasoning_format": "verbose"}, defaults, 1)
    with pytest.raises(InvalidRequest, match="reasoning_budget_tokens"):
        parse_chat({**base, "reasoning_budget_tokens": -2}, defaults, 1)
    req = parse_chat({**base, "tool_choice": "none", "grammar": 'root ::= "a"', "reasoning_budget_tokens": -1},
                     defaults, 1, "deepseek")
    assert not req.tools.active and req.reasoning_format == "deepseek" and req.reasoning_budget is None


def test_closed_objects_as_llama_cpp_reads_schemas() -> None:
    schema = {"anyOf": [params({"a": params({"x": {}}, []), "b": {"items": params({}, [])}}, ["a"]),
                        {"type": "object"}, {**params({}, []), "additionalProperties": True}],
              "enum": [{"properties": {}}]}
    closed = closed_objects(schema)
    one, any_object, open_object = closed["anyOf"]
    assert one["additionalProperties"] is False and one["properties"]["a"]["additionalProperties"] is False
    assert one["properties"]["b"]["items"]["additionalProperties"] is False
    assert "additionalProperties" not in any_object and open_object["additionalProperties"] is True
    assert closed["enum"] == [{"properties": {}}] and "additionalProperties" not in schema["anyOf"][0]


def test_resolve_refs_lets_each_parameter_stand_alone() -> None:
    """Pydantic-style tool schemas ($defs and $ref) resolved as llama.cpp reads them: each reference becomes
    its definition (sibling keywords kept), through lists and nested references; a recursive one stays a
    reference with the definitions beside it; data keywords and other documents' references are left alone."""
    city = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    tree = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}}}
    schema = {"type": "object", "$defs": {"City": city, "Tree": tree, "a/b": {"type": "integer"}},
              "properties": {"home": {"$ref": "#/$defs/City", "description": "where"},
                             "stops": {"type": "array", "items": {"$ref": "#/$defs/City"}},
                             "either": {"anyOf": [{"$ref": "#/$defs/City"}, {"$ref": "#/$defs/a~1b"}]},
                             "tree": {"$ref": "#/$defs/Tree"},
                             "other": {"$ref": "https://example.com/x.json"},
                             "missing": {"$ref": "#/$defs/Nope"},
                             "fixed": {"const": {"$ref": "#/$defs/City"}}}}  # fmt: skip
    props = resolve_refs(schema)["properties"]
    assert props["home"] == {**city, "description": "where"}
    assert props["stops"]["items"] == city and props["either"]["anyOf"] == [city, {"type": "integer"}]
    inner = props["tree"]["properties"]["kids"]["items"]
    assert inner["$ref"] == "#/$defs/Tree" and inner["$defs"]["Tree"] == tree  # recursion: one level, then a ref
    assert props["other"] == {"$ref": "https://example.com/x.json"} and props["missing"] == {"$ref": "#/$defs/Nope"}
    assert props["fixed"] == {"const": {"$ref": "#/$defs/City"}}
    assert resolve_refs(True) is True and "$ref" in schema["properties"]["home"]  # the input is not changed


def test_add_system_prompt() -> None:
    assert add_system_prompt(ASK, "") is ASK
    assert add_system_prompt(ASK, "Use JSON")[0] == {"role": "system", "content": "Use JSON"}
    sys_msg = [{"role": "system", "content": "Be brief."}, *ASK]
    assert add_system_prompt(sys_msg, "Use JSON")[0]["content"] == "Be brief.\n\nUse JSON"
    parts = [{"role": "system", "content": [{"type": "text", "text": "A"}]}]
    assert add_system_prompt(parts, "B")[0]["content"][-1] == {"type": "text", "text": "B"}


def test_ids_and_message_json() -> None:
    ids = ToolCallIds()
    first = ids.fill(ParsedMessage(tool_calls=(ToolCallOut("add", '{"a": 1'),)))
    again = ids.fill(ParsedMessage(tool_calls=(ToolCallOut("add", '{"a": 1, "b": 2}'), ToolCallOut("f", "{}", "own"))))
    assert len(first.tool_calls[0].id) == 32 and first.tool_calls[0].id.isalnum()
    assert again.tool_calls[0].id == first.tool_calls[0].id and again.tool_calls[1].id == "own"
    # a model that writes the same id twice still gets one id per call
    twice = ToolCallIds().fill(ParsedMessage(tool_calls=(ToolCallOut("f", "{}", "c1"), ToolCallOut("f", "{}", "c1"))))
    assert twice.tool_calls[0].id == "c1" and len(twice.tool_calls[1].id) == 32
    out = message_json(again)
    assert out["content"] is None and [c["function"]["name"] for c in out["tool_calls"]] == ["add", "f"]
    assert message_json(ParsedMessage(content="", reasoning_content="hm")) == {
        "role": "assistant", "content": "", "reasoning_content": "hm"}


def test_plain_message_stream() -> None:
    stream = MessageStream(None)
    assert stream.feed("Hel") == [{"content": "Hel"}] and stream.feed("") == []
    msg, deltas = stream.finish("lo")
    assert msg == ParsedMessage(content="Hello") and deltas == [{"content": "lo"}]


# -- SmolLM2 with the generic format ------------------------------------------

@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def call_args(call: Any) -> dict[str, Any]:
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[call.function.name])
    return args


# What the model writes depends on the CPU's SIMD path (greedy text of a tiny quantized model), so these tests
# assert what the grammar forces, or compare two paths on the same machine, never the model's choice of words.
# Every string and number of TOOLS is bounded, so a reply constrained to calls closes within a known number of
# tokens whatever the model picks (at most one character per token).
FREE = {"ignore_eos": True, "cache_prompt": False}  # n tokens exactly, every prompt evaluated afresh


def completion_of(server: Server, body: dict[str, Any]) -> str:
    """The plain /completion of the prompt a chat request renders (tools, polyfilled history and all)."""
    prompt = server.post("/apply-template", body).json()["prompt"]
    r = server.post("/completion", {"prompt": prompt, "n_predict": body["max_tokens"], "temperature": 0, **FREE})
    return str(r.json()["content"])


def test_required_gives_valid_calls_over_seeds(client: OpenAI) -> None:
    seen = set()
    for seed in range(10):
        r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                           max_tokens=128, seed=seed, temperature=1.0)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.content is None and choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert call.type == "function" and len(call.id) == 32
            call_args(call)
            seen.add(call.function.name)
    assert seen <= {"get_weather", "add"}


def test_named_function_and_parallel_calls(client: OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, max_tokens=96, temperature=0,
                                       tool_choice={"type": "function", "function": {"name": "add"}})
    (call,) = r.choices[0].message.tool_calls or []
    assert call.function.name == "add" and set(call_args(call)) == {"a", "b"}
    # room for the longest reply the grammar allows: max_parallel_calls(2) calls of get_weather, each about 20
    # tokens of JSON around a 32-character id and a 24-character city (the prompt is ~330 tokens of 1024)
    r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=True, max_tokens=680, temperature=0)
    calls = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and 1 <= len(calls) <= max_parallel_calls(len(TOOLS))
    assert len({c.id for c in calls}) == len(calls)
    assert all(0 < len(c.id) <= CALL_ID_MAX_LENGTH for c in calls)
    for c in calls:
        call_args(c)


def test_parallel_calls_are_bounded(client: OpenAI, server: Server) -> None:
    """llama-server's parallel generic format has no upper bound on the calls: a model that keeps writing
    ', {' runs to the token limit (finish_reason "length", no usable call). Pushed hard to go on, the model
    must still end with a closed array of at most max_parallel_calls(n_tools) calls."""
    (comma,), (quote,) = (server.post("/tokenize", {"content": c}).json()["tokens"] for c in (",", '"'))
    # '"' closes each id as soon as the grammar allows (4 characters); ',' starts another call wherever one
    # may follow, and shortens the numbers in between
    bias = {str(quote): 100, str(comma): 50}
    r = client.chat.completions.create(model="m", messages=ASK, tools=[ADD], tool_choice="required",
                                       parallel_tool_calls=True, max_tokens=400, temperature=0, logit_bias=bias)
    choice = r.choices[0]
    calls = choice.message.tool_calls or []
    assert choice.finish_reason == "tool_calls", choice
    assert len(calls) == max_parallel_calls(1) == PARALLEL_CALLS_MIN_CAP
    assert r.usage is not None and r.usage.completion_tokens < 400
    assert len({c.id for c in calls}) == len(calls)  # the model wrote the same id every time
    for c in calls:
        assert c.function.name == "add" and set(call_args(c)) == {"a", "b"}


def test_tool_choice_none_answers_with_content(client: OpenAI, server: Server) -> None:
    body: Any = {"messages": ASK, "tools": TOOLS, "tool_choice": "none", "max_tokens": 16}
    r = client.chat.completions.create(model="m", **body, temperature=0, extra_body=FREE)
    msg = r.choices[0].message
    assert msg.tool_calls is None and r.choices[0].finish_reason == "length"
    # unconstrained and unparsed: exactly the model's free text for that prompt
    assert msg.content == completion_of(server, body)


def test_stream_reassembles_the_same_calls(client: OpenAI) -> None:
    kw: Any = {"model": "m", "messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 128,
               "temperature": 0, "extra_body": {"cache_prompt": False}}
    full = client.chat.completions.create(**kw).choices[0]
    chunks = list(client.chat.completions.create(**kw, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for d in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            if d.id:
                assert not call["id"], "an id is sent once per call"
                call["id"] = d.id
            if d.function is not None:
                call["name"] += d.function.name or ""
                call["arguments"] += d.function.arguments or ""
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]
    expected = [(c.function.name, c.function.arguments) for c in full.message.tool_calls or []]
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == expected
    assert all(len(c["id"]) == 32 for c in calls.values())


def test_call_then_tool_result_then_answer(client: OpenAI, server: Server) -> None:
    messages: Any = list(ASK)
    first = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER], tool_choice="required",
                                           max_tokens=96, temperature=0)
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and "city" in call_args(call)
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21})})
    # the call and its result reach the prompt (as text: SmolLM2's template shows no tool calls)
    prompt = server.post("/apply-template", {"messages": messages, "tools": [WEATHER]}).json()["prompt"]
    assert prompt.count(call.id) == 2 and "temperature_c" in prompt and prompt.count("get_weather") >= 2
    final = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER], max_tokens=48,
                                           temperature=0)
    choice = final.choices[0]
    if choice.message.tool_calls:  # the model's choice: call again or answer, in either case well formed
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        for c in choice.message.tool_calls:
            call_args(c)
    else:
        assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str)
    body: Any = {"messages": messages, "tools": [WEATHER], "tool_choice": "none", "max_tokens": 24}
    forced_answer = client.chat.completions.create(model="m", **body, temperature=0, extra_body=FREE)
    assert not forced_answer.choices[0].message.tool_calls and forced_answer.choices[0].finish_reason == "length"
    assert forced_answer.choices[0].message.content == completion_of(server, body)


def test_bad_tool_requests_are_400(client: OpenAI, server: Server) -> None:
    with pytest.raises(openai.BadRequestError, match="parameters"):
        client.chat.completions.create(model="m", messages=ASK, tools=tools_with([1]))  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="unknown function"):
        client.chat.completions.create(model="m", messages=ASK, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    stale: Any = [*ASK, {"role": "tool", "tool_call_id": "gone", "content": "1"}]
    with pytest.raises(openai.BadRequestError, match="does not match any earlier"):
        client.chat.completions.create(model="m", messages=stale, tools=TOOLS)
    r = server.post("/v1/chat/completions", {"messages": ASK, "tools": TOOLS, "grammar": 'root ::= "a"'})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    bad_schema = tools_with({"type": "object", "properties": {"x": {"type": "string", "pattern": "(unclosed"}}})
    r = server.post("/v1/chat/completions", {"messages": ASK, "tools": bad_schema, "tool_choice": "required"})
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_cut_off_tool_call_is_content_and_the_slot_serves_on(server: Server, stream: bool) -> None:
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 6, "temperature": 0,
            "stream": stream}
    r = requests.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    if stream:
        events = [json.loads(e[6:]) for e in r.content.split(b"\n\n") if e.startswith(b"data: {")]
        assert events[-1]["choices"][0]["finish_reason"] == "length"
    else:
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "length" and isinstance(choice["message"]["content"], str)
    after = server.post("/v1/chat/completions", {"messages": ASK, "max_tokens": 4, "temperature": 0, **FREE})
    assert after.status_code == 200, after.text
    assert after.json()["choices"][0]["finish_reason"] == "length" and after.json()["usage"]["completion_tokens"] == 4


# -- OpenAI's legacy function calling ----------------------------------------

LEGACY_WEATHER = WEATHER["function"]


def test_legacy_functions_become_tools() -> None:
    body, legacy = from_functions({"messages": ASK, "functions": [LEGACY_WEATHER], "function_call": "auto"})
    assert legacy and body["tools"] == [WEATHER] and body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False and "functions" not in body and "function_call" not in body
    named = from_functions({"functions": [LEGACY_WEATHER], "function_call": {"name": "get_weather"}})[0]
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert from_functions({"messages": ASK}) == ({"messages": ASK}, False)
    # history: the assistant's function_call becomes a tool call with an id, the function message its answer
    history = [*ASK, {"role": "assistant", "content": None, "function_call": {"name": "get_weather",
                                                                              "arguments": '{"city": "Paris"}'}},
               {"role": "function", "name": "get_weather", "content": "21 C"}]
    body, legacy = from_functions({"messages": history, "tools": [WEATHER]})
    assert not legacy  # tools asked for: the reply is in the tools' shape
    call, answer = body["messages"][1:]
    assert call["tool_calls"][0]["function"] == history[1]["function_call"] and "function_call" not in call
    assert answer == {"role": "tool", "name": "get_weather", "content": "21 C",
                      "tool_call_id": call["tool_calls"][0]["id"]}
    check_tool_history(body["messages"])
    # a function message answering no earlier call stays as it is (the chat layer renders role "function")
    alone = [{"role": "function", "name": "f", "content": "x"}, {"role": "function", "content": "y"}]
    assert from_functions({"messages": alone})[0]["messages"] == alone
    for bad, needle in (({"functions": [LEGACY_WEATHER], "tools": [WEATHER]}, "together"),
                        ({"functions": {"name": "f"}}, "'functions' must be"),
                        ({"function_call": "always"}, "'function_call' must be"),
                        ({"messages": [{"role": "assistant", "function_call": "f"}]}, "function_call must be")):
        with pytest.raises(InvalidRequest, match=needle):
            from_functions(bad)


def test_legacy_reply_shapes() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert legacy_message({"role": "assistant", "content": None, "tool_calls": [call]}) == {
        "role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}}
    assert legacy_message({"role": "assistant", "content": "hi"}) == {"role": "assistant", "content": "hi"}
    assert legacy_delta({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}) == {
        "function_call": {"arguments": "{"}}
    assert legacy_finish("tool_calls") == "function_call" and legacy_finish("stop") == "stop"


def test_legacy_function_call_through_the_sdk(client: OpenAI, server: Server) -> None:
    kw: Any = {"model": "m", "messages": ASK, "max_tokens": 96, "temperature": 0,
               "extra_body": {"cache_prompt": False}}
    legacy = client.chat.completions.create(**kw, functions=[LEGACY_WEATHER],
                                            function_call={"name": "get_weather"})
    choice = legacy.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    fc = choice.message.function_call
    assert fc is not None and fc.name == "get_weather"
    jsonschema.validate(json.loads(fc.arguments), SCHEMAS["get_weather"])
    # the same call as the tools request it stands for
    tools = client.chat.completions.create(**kw, tools=[WEATHER], parallel_tool_calls=False,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    (call,) = tools.choices[0].message.tool_calls or []
    assert (call.function.name, call.function.arguments) == (fc.name, fc.arguments)
    # streamed: function_call pieces that add up to the same call
    chunks = list(client.chat.completions.create(**kw, functions=[LEGACY_WEATHER], stream=True,
                                                 function_call={"name": "get_weather"}))
    name = "".join(c.choices[0].delta.function_call.name or "" for c in chunks if c.choices[0].delta.function_call)
    args = "".join(c.choices[0].delta.function_call.arguments or "" for c in chunks
                   if c.choices[0].delta.function_call)
    assert (name, args) == (fc.name, fc.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["function_call"]
    # the function's answer goes back as a function message and reaches the prompt
    history: Any = [*ASK, choice.message.model_dump(exclude_none=True),
                    {"role": "function", "name": "get_weather", "content": "twenty-one degrees"}]
    prompt = server.post("/apply-template", {"messages": history, "functions": [LEGACY_WEATHER]}).json()["prompt"]
    assert "twenty-one degrees" in prompt and json.loads(fc.arguments)["city"] in prompt
    answer = client.chat.completions.create(model="m", messages=history, functions=[LEGACY_WEATHER],
                                            function_call="none", max_tokens=8)
    assert answer.choices[0].message.function_call is None and answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="together"):
        client.chat.completions.create(model="m", messages=ASK, functions=[LEGACY_WEATHER], tools=[WEATHER])
