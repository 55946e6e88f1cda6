"""``tool_choice: "required"`` (and a named function) force exactly one well-formed call in every native
format, as llama-server constrains the reply to the template's call syntax.

The default model (SmolLM2) knows none of these formats and, asked to say hello, would rather chat: without
the grammar it answers with content (checked with ``tool_choice: "auto"`` on the same server). Each family's
real template (from the pinned llama.cpp tree) renders the prompt; the reply must parse back, with that
family's parser, into one call of the chosen function whose arguments validate against its parameters.
(The free-text parameters carry a ``maxLength``: a 135M model, once inside a string, may never close it.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest

from llamatwist.chat.toolcalls.forced import FORCED_FAMILIES
from tests.conftest import Server
from tests.test_toolcall_templates import TEMPLATES

CODE = {
    "type": "function",
    "function": {
        "name": "run_python",
        "description": "Run a Python program",
        "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "the program",
                                                                  "maxLength": 80}},
                       "required": ["code"]},
    },
}
NOTE = {
    "type": "function",
    "function": {
        "name": "save_note",
        "description": "Save a note",
        "parameters": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 80}, "stars": {"type": "integer", "minimum": 1,
                                                                                       "maximum": 5}},
                       "required": ["text", "stars"]},
    },
}
HELLO = [{"role": "user", "content": "Hi! Please just say hello back to me in a friendly way."}]

# one real template per native family
FAMILY_TEMPLATE = {family: name for name, (family, _, _) in reversed(TEMPLATES.items()) if family in FORCED_FAMILIES}


def test_every_native_family_can_be_forced() -> None:
    natives = {family for family, _, _ in TEMPLATES.values()} - {"generic"}
    assert natives <= set(FORCED_FAMILIES)
    assert set(FAMILY_TEMPLATE) == natives


@pytest.fixture(scope="module")
def template_dir() -> Path:
    import build_native

    return build_native.place_source() / "models" / "templates"


def _ask(srv: Server, tool_choice: Any, tools: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    r = srv.post("/v1/chat/completions", {"messages": HELLO, "tools": tools, "tool_choice": tool_choice,
                                          "max_tokens": 224, "temperature": 0,
                                          # a template that opens a thinking block gets the call after it
                                          "reasoning_budget_tokens": 16, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json()["choices"][0])


def _one_call(choice: dict[str, Any], function: dict[str, Any]) -> None:
    calls = choice["message"].get("tool_calls") or []
    assert len(calls) == 1, choice
    assert choice["finish_reason"] == "tool_calls", choice
    assert calls[0]["function"]["name"] == function["name"]
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), function["parameters"])


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
def test_required_call_is_forced(family: str, template_dir: Path, make_server: Any, model_path: str) -> None:
    template = template_dir / FAMILY_TEMPLATE[family]
    srv = make_server("-m", model_path, "-c", "2048", "-np", "1", "-t", "2", "--jinja",
                      "--chat-template-file", str(template))
    free = _ask(srv, "auto", [CODE])
    assert not free["message"].get("tool_calls"), f"{family}: the model called unforced; the test shows nothing"
    _one_call(_ask(srv, "required", [CODE]), CODE["function"])
    named = {"type": "function", "function": {"name": "save_note"}}
    _one_call(_ask(srv, named, [CODE, NOTE]), NOTE["function"])
    assert srv.get("/health").status_code == 200


def _byte_matcher(grammar: str) -> Any:
    """An llguidance matcher for ``grammar`` over a vocabulary of single bytes (so any text can be fed)."""
    import llguidance as llg

    from llamatwist.constrain.base import TokenizerInfo
    from llamatwist.constrain.llg import lltokenizer

    info = TokenizerInfo(tokens=[bytes([i]) for i in range(256)] + [b"<eos>"], eog_ids=[256], tokenize=list)
    return llg.LLMatcher(lltokenizer(info), llg.LLMatcher.grammar_from_lark(grammar), log_level=0)


def test_minimax_m3_forced_arguments_are_the_templates_xml(template_dir: Path) -> None:
    """MiniMax-M3's template writes nested arguments as elements (``to_xml``: an object's members inside its
    element, an array's values as ``<item>``s), and llama.cpp's grammar for a forced call follows it: the
    grammar takes the call exactly as the template renders it, reads it back to the same arguments, and
    refuses the JSON text a generic value rule would have let through."""
    from llamatwist.chat.messages import parse_messages
    from llamatwist.chat.template import ChatTemplate, template_messages
    from llamatwist.chat.toolcalls import ChatSyntax, parse_output
    from llamatwist.chat.toolcalls.forced import ForcedCall, forced_call_grammar
    from llamatwist.chat.toolcalls.formats import MINIMAX_NS as NS

    params = {"type": "object", "required": ["title", "days", "stops", "opts"], "properties": {
        "title": {"type": "string"}, "days": {"type": "integer"},
        "stops": {"type": "array", "items": {"type": "object", "required": ["city", "nights"], "properties": {
            "city": {"type": "string"}, "nights": {"type": "integer"}}}},
        "opts": {"type": "object", "required": ["fast", "tags"], "properties": {
            "fast": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}}}}}}  # fmt: skip
    tool = {"type": "function", "function": {"name": "plan", "parameters": params}}
    args = {"title": "Trip", "days": 3, "stops": [{"city": "Rome", "nights": 2}, {"city": "Pisa", "nights": 1}],
            "opts": {"fast": True, "tags": ["a", "b"]}}
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "plan", "arguments": json.dumps(args)}}]}
    template = ChatTemplate((template_dir / "MiniMax-M3.jinja").read_text())
    rendered = template.render(template_messages(template, parse_messages([*HELLO, call])),
                               add_generation_prompt=False, tools=[tool], extra={}, enable_thinking=False)
    start = rendered.rindex(NS + "<tool_call>")  # the last: the system prompt shows an example first
    written = rendered[start : rendered.index(NS + "</tool_call>", start) + len(NS + "</tool_call>")]
    assert NS + "<item>" + NS + "<city>Rome" in written  # the template nests them

    grammar = forced_call_grammar(ForcedCall("minimax-m3", (tool["function"],)), {})
    matcher = _byte_matcher(grammar)
    assert matcher.consume_tokens(list(written.encode())) and matcher.is_accepting(), matcher.get_error()
    parsed = parse_output(written, ChatSyntax(format="minimax-m3", tool_parameters={"plan": params}), partial=False)
    assert [json.loads(c.arguments) for c in parsed.tool_calls] == [args]

    as_json = written.replace(written[written.index(NS + "<stops>"):written.index(NS + "<opts>")],
                              f"{NS}<stops>{json.dumps(args['stops'])}{NS}</stops>")
    assert not _byte_matcher(grammar).consume_tokens(list(as_json.encode()))


# a Pydantic-style tool: its nested models are $defs, its parameters $refs to them
TRIP = {"type": "function", "function": {"name": "plan_trip", "description": "Plan a trip", "parameters": {
    "type": "object", "required": ["start", "stops"],
    "$defs": {"Stop": {"type": "object", "required": ["city", "nights"], "properties": {
        "city": {"type": "string", "maxLength": 20}, "nights": {"type": "integer", "minimum": 1, "maximum": 9}}}},
    "properties": {"start": {"$ref": "#/$defs/Stop"}, "stops": {"type": "array", "maxItems": 2,
                                                                 "items": {"$ref": "#/$defs/Stop"}}}}}}  # fmt: skip


@pytest.mark.parametrize("template", ["Qwen3-Coder.jinja", "GLM-4.6.jinja", "MiniMax-M3.jinja"])
def test_forced_call_follows_referenced_definitions(template: str, template_dir: Path, make_server: Any,
                                                    model_path: str) -> None:
    """The formats that write each argument on its own (Qwen3-Coder's XML, GLM's tags, MiniMax-M3's elements)
    constrain a parameter that is a reference to a definition as what it refers to (before, it was free text,
    and SmolLM2 wrote anything there): the forced call's arguments validate against the schema."""
    srv = make_server("-m", model_path, "-c", "2048", "-np", "1", "-t", "2", "--jinja",
                      "--chat-template-file", str(template_dir / template))
    # MiniMax-M3's namespace token is ~8 of SmolLM2's, and it writes one around every tag
    _one_call(_ask(srv, "required", [TRIP], max_tokens=400), TRIP["function"])
