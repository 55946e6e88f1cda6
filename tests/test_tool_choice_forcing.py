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
