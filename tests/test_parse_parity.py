"""Replies split as llama.cpp's own chat parser splits them, on every pinned template.

``tests/native/chat_parse.cpp`` is compiled against the pinned llama.cpp's common library (built beside the
reference llama-server) and parses a text as llama-server parses a finished reply to a request. Each pinned
template gets replies without tools (plain, around a thinking block) and with a tool (the call as the template
itself writes one in an assistant turn, with whitespace or text before it and whitespace after it), with
``reasoning_format`` ``auto`` and ``none``; llamatwist's split of the same text comes from the plan its route
makes. ``test_response_shapes.py`` checks a template per spacing rule against a running llama-server; this
checks all of them, and tool calls, which llama-server cannot be made to write (it refuses a raw grammar
beside tools)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llamatwist.sampling_defaults import SamplingDefaults
from tests.conftest import REPO

TEMPLATES = REPO / "third_party" / "llama.cpp" / "models" / "templates"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
ASK = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {"role": "assistant", "content": "", "tool_calls": [{"id": "abc123XYZ", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]}
# what ends an assistant turn in the pinned templates (the call is what comes before it)
TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<｜end▁of▁sentence｜>", "</s>", "<|end|>", "<end_of_turn>",
             "<|END_OF_TURN_TOKEN|>", "<|endoftext|>", "<turn|>", "<|return|>", "<|eom|>", "<|end_of_msg|>", "[e~[",
             "<|message_sep|>", "<|end_of_text|>", "<eos>", "<|eos|>", "<|tool_response>", "<|role_end|>")

# (template, reasoning_format, "tools" | "plain") -> how many of its four replies llamatwist splits otherwise
# than llama.cpp (README, "Tools and reasoning"): Gemma 4's parser drops the text after a stray thinking end,
# which llamatwist keeps; Bielik's turn opens a block its parser reads all of the reply into, call included
KNOWN_DIFFER: dict[tuple[str, str, str], int] = {
    ("Bielik-11B-v3.0-Instruct", "auto", "tools"): 4,
    ("google-gemma-4-31B-it", "auto", "plain"): 1,
    ("google-gemma-4-31B-it", "none", "plain"): 1,
    ("google-gemma-4-31B-it-interleaved", "auto", "plain"): 1,
    ("google-gemma-4-31B-it-interleaved", "none", "plain"): 1,
}


@pytest.fixture(scope="module")
def chat_parse(llama_server: list[str]) -> Path:
    """The harness, built once per reference build (beside its llama-server and libllama-common)."""
    bin_dir = Path(llama_server[0]).parent
    exe, src = bin_dir / "llamatwist-chat-parse", REPO / "tests" / "native" / "chat_parse.cpp"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        cxx = shutil.which("c++") or shutil.which("g++")
        assert cxx, "a C++ compiler (the native build needs one too)"
        llama = REPO / "third_party" / "llama.cpp"
        subprocess.run([cxx, "-std=c++17", "-O1", *(f"-I{llama / d}" for d in ("common", "include", "ggml/include",
                        "vendor")), str(src), f"-L{bin_dir}", "-lllama-common", "-lllama", f"-Wl,-rpath,{bin_dir}",
                        "-o", str(exe)], check=True)
    return exe


def _turn(source: str, tool: dict[str, Any] = TOOL, call: dict[str, Any] = CALL, needle: str = "Paris") -> str | None:
    """The template's own assistant turn with one call (``call`` to ``tool``), up to its end-of-turn marker
    after the last ``needle`` (a text of the call's arguments)."""
    from llamatwist.chat.messages import parse_messages
    from llamatwist.chat.template import ChatTemplate, TemplateError, template_messages

    t = ChatTemplate(source)
    try:
        gen, full = (t.render(template_messages(t, parse_messages(msgs)), add_generation_prompt=add,
                              tools=[tool], extra={}, enable_thinking=True) for msgs, add in (([ASK], True),
                                                                                             ([ASK, call], False)))
    except TemplateError:
        return None
    i = next((k for k, (a, b) in enumerate(zip(gen, full)) if a != b), min(len(gen), len(full)))
    rest = full[i:]
    at = rest.rfind(needle)
    if at < 0:
        return None
    return rest[:min([k for k in (rest.find(e, at) for e in TURN_ENDS) if k >= 0] or [len(rest)])]


def _replies(source: str, kind: str, opened: bool) -> list[str] | None:
    """Four replies of ``kind``; ``opened``: the prompt opened the thinking block, so a model goes on inside it."""
    from llamatwist.chat.toolcalls.formats import THINK, detect_family

    if kind == "plain":
        family = detect_family(source)
        start, end = family.think if family is not None and family.think else THINK
        start = "" if opened else start
        return ["  Hello.\n", f"{start}\nHm.\n{end}\n\nHello.", f"Hm.\n{end}\n\n Hello.", f"\n{start}Hm.{end}Hello."]
    turn = _turn(source)
    return None if turn is None else [turn, "  " + turn, "Let me check.\n\n" + turn.lstrip(), turn + "\n  "]


def _split(msg: dict[str, Any]) -> dict[str, Any]:
    def args(text: str) -> Any:
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return text
    return {"content": msg.get("content") or "", "reasoning": msg.get("reasoning_content") or "",
            "calls": [(c["function"]["name"], args(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]}


def _differences(exe: Path) -> tuple[dict[tuple[str, str, str], int], int]:
    """How many replies llamatwist splits otherwise than llama.cpp, per template, format and kind (replies that
    llama.cpp rejects as not in the format, which llama-server answers with a 500, are left out); and how many
    were compared."""
    from llamatwist.api.chatformat import build_formatter
    from llamatwist.api.openai.chat import build_prompt, parse_chat
    from llamatwist.api.openai.tools import MessageStream, message_json
    from llamatwist.config import ServerConfig

    differ: dict[tuple[str, str, str], int] = {}
    compared = 0
    for path in sorted(TEMPLATES.glob("*.jinja")):
        source = path.read_text()
        fmt = build_formatter(ServerConfig(jinja=True), None, source, "<s>", "</s>", False, False)
        for kind in ("plain", "tools"):
            tools = [TOOL] if kind == "tools" else []
            for fmt_name in ("auto", "none"):
                body = {"messages": [ASK], "tools": tools, "reasoning_format": fmt_name}
                prompt = build_prompt(fmt, body, parse_chat(body, SamplingDefaults(), 1))
                syntax = prompt.plan.syntax if prompt.plan else None
                opened = bool(syntax and (syntax.thinking_forced_open or syntax.content_lead or syntax.unwrap_block))
                replies = _replies(source, kind, opened)
                if replies is None:
                    continue
                request = {"template": source, "tools": tools, "messages": [ASK], "reasoning_format": fmt_name,
                           "texts": replies}
                run = subprocess.run([str(exe)], input=json.dumps(request), capture_output=True, text=True,
                                     check=True)
                theirs = json.loads(run.stdout)
                assert isinstance(theirs, list), (path.stem, theirs)
                for reply, their in zip(replies, theirs, strict=True):
                    if "error" in their:
                        continue
                    compared += 1
                    ours = message_json(MessageStream(prompt.plan.syntax if prompt.plan else None).finish(reply)[0])
                    if _split(ours) != _split(their):
                        key = (path.stem, fmt_name, kind)
                        differ[key] = differ.get(key, 0) + 1
    return differ, compared


def test_replies_are_split_as_llama_cpps_parser_splits_them(chat_parse: Path) -> None:
    differ, compared = _differences(chat_parse)
    assert compared > 800
    assert differ == KNOWN_DIFFER, {k: (differ.get(k), KNOWN_DIFFER.get(k)) for k in differ.keys() ^ KNOWN_DIFFER.keys()
                                    | {k for k in differ if differ[k] != KNOWN_DIFFER.get(k)}}


# parameters of every typing case: a string or null (Pydantic's Optional[str]), a number or a string, a
# referenced string, an enum of strings, and no type at all
TYPED = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "$defs": {"S": {"type": "string"}},
    "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "b": {"type": ["integer", "string"]},
                   "c": {"$ref": "#/$defs/S"}, "d": {"enum": ["x", "1"]}, "e": {}}}}}  # fmt: skip
# plain types, for the templates that cannot render the schema above (Seed-OSS, GigaChat 3)
PLAIN_TYPED = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
    "s": {"type": "string"}, "i": {"type": "integer"}, "n": {"type": "number"}, "o": {"type": "object"}}}}}
MARK = "QQ{}QQ"  # a value the template writes as it is, replaced by each raw value below


def _keys(tool: dict[str, Any]) -> tuple[str, ...]:
    return tuple(tool["function"]["parameters"]["properties"])


def _marked_call(tool: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": "", "tool_calls": [{"id": "abc123XYZ", "type": "function", "function": {
        "name": "f", "arguments": json.dumps({k: MARK.format(k) for k in _keys(tool)})}}]}


RAW_VALUES = ("123", "null", '"abc"', "1.5", '{"k": 1}', "true", "abc")
# Bielik's parser reads the whole reply, call included, into the thinking block its prompt opened (above)
TYPED_KNOWN = {"Bielik-11B-v3.0-Instruct"}


# Under plain types, text that is not JSON (abc) for a number or object does not fit the format: llama.cpp's
# parsers then read no call, or pass the text on as arguments that are not JSON; llamatwist keeps it a string.
@pytest.mark.parametrize(("tool", "values", "least"), [(TYPED, RAW_VALUES, 250), (PLAIN_TYPED, RAW_VALUES[:-1], 240)],
                         ids=["mixed-schemas", "plain-types"])
def test_values_are_typed_as_llama_cpps_parser_types_them(chat_parse: Path, tool: dict[str, Any],
                                                          values: tuple[str, ...], least: int) -> None:
    """Every template's own call, each argument's value replaced by raw texts (123, null, "abc", 1.5, an
    object, true, abc) under each kind of parameter (a string or null, an integer or string, a referenced
    string, an enum of strings, no type; or plain types): the arguments are typed as llama.cpp's parser for the format types
    them — raw text where the schema may be a string (its template analysis, MiniMax-M3, Muse Glimmer, DSML,
    MiniCPM 5), JSON first (Ling 3), JSON of the other kinds allowed (Qwen3-Coder), the property's own type
    (Kimi K3) — and JSON formats read JSON."""
    from llamatwist.api.chatformat import build_formatter
    from llamatwist.api.openai.chat import build_prompt, parse_chat
    from llamatwist.api.openai.tools import MessageStream, message_json
    from llamatwist.config import ServerConfig

    compared, differ, tagged = 0, [], set()
    for path in sorted(TEMPLATES.glob("*.jinja")):
        source = path.read_text()
        turn = _turn(source, tool, _marked_call(tool), "QQ")
        if turn is None or path.stem in TYPED_KNOWN:
            continue
        texts = []
        for value in values:
            text = turn
            for key in _keys(tool):
                text = text.replace(MARK.format(key), value)
            texts.append(text)
        request = {"template": source, "tools": [tool], "messages": [ASK], "reasoning_format": "auto",
                   "texts": texts}
        theirs = json.loads(subprocess.run([str(chat_parse)], input=json.dumps(request), capture_output=True,
                                           text=True, check=True).stdout)
        if not isinstance(theirs, list):  # llama.cpp cannot set up the format with this tool
            continue
        fmt = build_formatter(ServerConfig(jinja=True), None, source, "<s>", "</s>", False, False)
        body = {"messages": [ASK], "tools": [tool]}
        plan = build_prompt(fmt, body, parse_chat(body, SamplingDefaults(), 1)).plan
        for text, their in zip(texts, theirs, strict=True):
            if "error" in their:  # not a call in the format (a raw value inside JSON): llama-server's 500
                continue
            compared += 1
            ours = _split(message_json(MessageStream(plan.syntax if plan else None).finish(text)[0]))["calls"]
            if ours != _split(their)["calls"]:
                differ.append((path.stem, text[-200:], ours, _split(their)["calls"]))
            if any(isinstance(v, int) and not isinstance(v, bool) for _, args in ours for v in args.values()):
                tagged.add(path.stem)  # a raw 123 typed as a number: the format writes values untyped
    assert compared > least and len(tagged) >= 8, (compared, sorted(tagged))
    assert differ == [], differ
