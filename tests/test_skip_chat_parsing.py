"""--skip-chat-parsing on real servers: the reply is all content, as llama-server's pure content parser.

Contrasted with servers without the flag (test_reasoning.py's thinker, the shared default server). As there,
the model's words are never asserted: a logit bias or a grammar decides what it writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests import test_reasoning
from tests.conftest import Server
from tests.test_reasoning import ASK, LEAD, THINK_TEMPLATE, WORD, chat
from tests.test_tools_api import ASK as ASK_WEATHER
from tests.test_tools_api import TOOLS

# test_reasoning.py's server without the flag, and its word bias
thinker = test_reasoning.thinker
word_bias = test_reasoning.word_bias


@pytest.fixture(scope="module")
def skipper(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The thinker's flags (a template that opens <think>, budget 0) and --skip-chat-parsing."""
    template = tmp_path_factory.mktemp("skip") / "think.jinja"
    template.write_text(THINK_TEMPLATE)
    srv = Server(["-m", model_path, "-c", "2048", "-np", "2", "-t", "2", "--chat-template-file", str(template),
                  "--reasoning-budget", "0", "--reasoning-budget-message", " Enough.", "--skip-chat-parsing"])
    yield srv
    srv.stop()


def test_reasoning_stays_in_content(thinker: Server, skipper: Server, word_bias: dict[str, float]) -> None:
    parsed = chat(thinker, word_bias, reasoning_budget_tokens=5)["message"]
    assert parsed["reasoning_content"] == LEAD + WORD * 4 + " Enough."
    # no thinking tags, so no budget either (llama-server's pure content parser has none): the raw reply
    raw = chat(skipper, word_bias, reasoning_budget_tokens=5)
    assert "reasoning_content" not in raw["message"]
    assert raw["message"]["content"] == WORD * 40 and raw["finish_reason"] == "length"
    # a closing tag written by the model is text too
    forced = chat(skipper, {}, grammar='root ::= " Hm.</think>Paris."', max_tokens=20)
    assert forced["message"] == {"role": "assistant", "content": " Hm.</think>Paris."}
    assert forced["finish_reason"] == "stop"


def test_streamed_reply_is_content_only(skipper: Server) -> None:
    r = requests.post(skipper.url + "/v1/chat/completions", json={
        "messages": ASK, "max_tokens": 20, "temperature": 0, "stream": True,
        "grammar": 'root ::= " Hm.</think>Paris."'}, timeout=120)
    deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in r.content.split(b"\n\n") if e.startswith(b"data: {")]
    assert not any(d.get("reasoning_content") or d.get("tool_calls") for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas) == " Hm.</think>Paris."


@pytest.fixture(scope="module")
def plain_skipper(model_path: str) -> Iterator[Server]:
    """The shared server's model and template (the generic tool-call format) with --skip-chat-parsing."""
    srv = Server(["-m", model_path, "-c", "2048", "-np", "1", "-t", "2", "--skip-chat-parsing"])
    yield srv
    srv.stop()


def _weather(srv: Server, **body: Any) -> dict[str, Any]:
    r = srv.post("/v1/chat/completions", {"messages": ASK_WEATHER, "tools": TOOLS, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    choice: dict[str, Any] = r.json()["choices"][0]
    return choice


def test_tool_calls_are_neither_forced_nor_parsed(server: Server, plain_skipper: Server) -> None:
    assert _weather(server, tool_choice="required", max_tokens=128)["finish_reason"] == "tool_calls"
    # tool_choice "required" forces no call (llama-server makes no grammar for a pure content parser)
    (token,) = plain_skipper.post("/tokenize", {"content": WORD}).json()["tokens"]
    free = _weather(plain_skipper, tool_choice="required", max_tokens=8, logit_bias={str(token): 100.0})
    assert free["message"] == {"role": "assistant", "content": WORD * 8} and free["finish_reason"] == "length"
    # a reply shaped as the generic format's call (forced here by a JSON schema) stays text
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    schema = {"type": "object", "additionalProperties": False, "required": ["tool_call"], "properties": {
        "tool_call": {"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                      "properties": {"name": {"const": "get_weather"}, "arguments": {
                          "type": "object", "additionalProperties": False, "required": ["city"],
                          "properties": {"city": {"const": "Paris"}}}}}}}
    shaped = _weather(plain_skipper, json_schema=schema, max_tokens=64)
    assert "tool_calls" not in shaped["message"] and shaped["finish_reason"] == "stop"
    assert json.loads(shaped["message"]["content"]) == {"tool_call": call}


def test_prompt_has_no_format_instructions(server: Server, plain_skipper: Server) -> None:
    # the template rendered as it is: no tool-call instructions added to the system message
    with_tools = {"messages": ASK_WEATHER, "tools": TOOLS}
    parsed = server.post("/apply-template", with_tools).json()["prompt"]
    raw = plain_skipper.post("/apply-template", with_tools).json()["prompt"]
    assert "tool_call" in parsed and "tool_call" not in raw
    assert raw == server.post("/apply-template", {"messages": ASK_WEATHER}).json()["prompt"]


def test_grammar_with_tools_is_still_refused(plain_skipper: Server) -> None:
    r = plain_skipper.post("/v1/chat/completions", {"messages": ASK_WEATHER, "tools": TOOLS,
                                                    "grammar": 'root ::= "x"'})
    assert r.status_code == 400 and "Cannot use custom grammar constraints with tools." in r.text
