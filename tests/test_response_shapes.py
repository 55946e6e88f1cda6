"""Responses shaped as llama-server's: the same requests to llamatwist and to the pinned llama-server (same
model, same flags), and every key llama-server's answer has (its path through objects and arrays, and the
JSON type at its end) is in llamatwist's too. llamatwist may add keys (OpenAI's legacy logprob arrays,
/props' offload report, the draft settings echoed in generation_settings); it may not leave one out. Where
the values are facts about the model or the request (its name, file type, template capabilities, the
grammar and biases echoed), they must be equal too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamatwist.chat.toolcalls.formats import THINK
from llamatwist.sampling_defaults import SamplingDefaults
from tests.conftest import REPO, Server

ARGS = ("-np", "2", "-c", "2048", "-t", "2", "--jinja")
GRAMMAR = 'root ::= "yes" | "no"'
MESSAGES = [{"role": "user", "content": "Say hi"}]
ASK = {"role": "user", "content": "What is the weather in Paris?"}

# "STREAM": its events, all of them as one answer
REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/props", None),
    ("GET", "/v1/models", None),
    ("GET", "/models", None),
    ("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 4, "n_probs": 2}),
    ("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 4, "grammar": GRAMMAR}),
    ("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 4, "json_schema": {"type": "object"}}),
    ("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 4,
                             "logit_bias": [["Hello world", -1.0], [17, 2.0], [10**7, 1.0]]}),
    ("POST", "/completion", {"prompt": ["Once", "Twice"], "n_predict": 2}),
    ("POST", "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 4, "logprobs": 2}),
    ("POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4, "logprobs": True, "top_logprobs": 2}),
    ("POST", "/v1/messages", {"model": "x", "max_tokens": 4, "messages": MESSAGES}),
    ("POST", "/v1/responses", {"model": "x", "input": "Say hi", "max_output_tokens": 96}),
    ("POST", "/tokenize", {"content": "Hello world", "with_pieces": True}),
    ("POST", "/apply-template", {"messages": MESSAGES}),
    ("STREAM", "/completion", {"prompt": "Once upon a time", "n_predict": 4, "n_probs": 2}),
    ("STREAM", "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 4}),
    ("STREAM", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4}),
    ("STREAM", "/v1/messages", {"model": "x", "max_tokens": 4, "messages": MESSAGES}),
    ("STREAM", "/v1/responses", {"model": "x", "input": "Say hi", "max_output_tokens": 96}),
    # last: the slots after a chat request on slot 0 and a native one on slot 1
    ("POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2, "id_slot": 0}),
    ("POST", "/completion", {"prompt": "Hi", "n_predict": 2, "id_slot": 1, "reasoning_format": "deepseek"}),
    ("GET", "/slots", None),
]
PARSER_SETTINGS = ("chat_format", "reasoning_format", "reasoning_in_content", "generation_prompt")


def paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Every key path of a JSON value, ending in its JSON type (arrays: the paths of all their elements)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, f"{prefix}/{key}")
    elif isinstance(value, list):
        yield f"{prefix}[]"
        for item in value:
            yield from paths(item, f"{prefix}[]")
    else:
        kind = {bool: "bool", int: "number", float: "number", str: "string", type(None): "null"}[type(value)]
        yield f"{prefix}:{kind}"


@pytest.fixture(scope="module")
def answers(model_path: str, llama_server: list[str]) -> Iterator[list[tuple[Any, Any]]]:
    ours, theirs = Server(["-m", model_path, *ARGS]), Server(["-m", model_path, *ARGS], command=llama_server)
    try:
        out = []
        for method, path, body in REQUESTS:
            pair = []
            for srv in (ours, theirs):
                if method == "STREAM":
                    pair.append(srv.stream(path, {**(body or {}), "temperature": 0}))
                    continue
                r = srv.get(path) if method == "GET" else srv.post(path, {**(body or {}), "temperature": 0})
                assert r.status_code == 200, (srv.command, path, r.text)
                pair.append(r.json())
            out.append((pair[0], pair[1]))
        yield out
    finally:
        ours.stop()
        theirs.stop()


@pytest.mark.parametrize("i", range(len(REQUESTS)), ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(REQUESTS)])
def test_every_key_of_llama_servers_answer_is_there(answers: list[tuple[Any, Any]], i: int) -> None:
    ours, theirs = answers[i]
    missing = set(paths(theirs)) - set(paths(ours))
    assert not missing, sorted(missing)


def test_the_model_is_named_and_described_alike(answers: list[tuple[Any, Any]]) -> None:
    (props, their_props), (models, their_models) = answers[0], answers[1]
    for key in ("model_alias", "model_path", "model_ftype", "chat_template_caps", "total_slots"):
        assert props[key] == their_props[key], key
    assert props["default_generation_settings"]["params"].keys() >= their_props["default_generation_settings"][
        "params"].keys()
    ours, theirs = models["data"][0], their_models["data"][0]
    assert (ours["id"], ours["aliases"], ours["meta"]["ftype"]) == (theirs["id"], theirs["aliases"],
                                                                     theirs["meta"]["ftype"])
    assert ours["id"].endswith(".gguf") and ours["meta"]["ftype"] == "Q4_1"  # the path, as llama-server
    completion, their_completion = answers[3]
    assert completion["model"] == their_completion["model"] == ours["id"]


def test_generation_settings_echo_the_grammar_and_the_biases_by_token(answers: list[tuple[Any, Any]]) -> None:
    grammar = answers[4][0]["generation_settings"]
    assert grammar["grammar"] == answers[4][1]["generation_settings"]["grammar"] == GRAMMAR
    schema = answers[5][0]["generation_settings"]["grammar"]
    assert schema.startswith("%llguidance") and '{"type": "object"}' in schema  # llama-server: its GBNF
    biases = answers[6][0]["generation_settings"]["logit_bias"]
    assert biases == answers[6][1]["generation_settings"]["logit_bias"]  # the text's tokens, no unknown id
    assert len(biases) == 3 and {"bias": 2.0, "token": 17} in biases
    assert answers[3][0]["generation_settings"]["grammar"] == ""


def test_slots_list_the_output_parser_of_their_last_request(answers: list[tuple[Any, Any]]) -> None:
    ours, theirs = answers[-1]
    for mine, their in zip(ours, theirs, strict=True):
        assert {k: mine["params"][k] for k in PARSER_SETTINGS} == {k: their["params"][k] for k in PARSER_SETTINGS}
    assert ours[0]["params"]["chat_format"] == "peg-native" and ours[0]["params"]["generation_prompt"]
    assert ours[1]["params"]["chat_format"] == "Content-only" and ours[1]["params"]["reasoning_format"] == "deepseek"


# Caps that still differ from the pinned llama.cpp's (which counts what a template does with each value; here
# the message content's uses are counted the same way, the rest is read from rendered output): none.
CAPS_DIFFER: dict[str, set[str]] = {}


# Templates whose prompt with tools differs from llama-server's (README, "Tools and reasoning"): they show no
# tools, so llamatwist adds its generic instructions (and a tools-capable reply) where llama-server sends none;
# FireFunction v2's shows them when it is handed them as `functions`, as llama.cpp's handler for it did
TOOLS_DIFFER = {"HuggingFaceTB-SmolLM3-3B", "google-gemma-2-2b-it", "llama-cpp-rwkv-world",
                "microsoft-Phi-3.5-mini-instruct", "fireworks-ai-llama-3-firefunction-v2"}
# ...and whose continued assistant message (prefill) differs: none (RWKV-World's end marker, "\n</think>", comes
# from the prompt that turns thinking off, as its history shows no reasoning)
PREFILL_DIFFER: set[str] = set()
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["location"]}}}  # fmt: skip
CALLS = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "abc123XYZ", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
    {"id": "abc123XYW", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'}},
]}  # fmt: skip
WITH_TOOLS = [
    {"messages": [ASK], "tools": [TOOL]},
    {"messages": [ASK, CALLS, {"role": "tool", "tool_call_id": "abc123XYZ", "content": "22 degrees"},
                  {"role": "tool", "tool_call_id": "abc123XYW", "content": "{\"c\": 25}"},
                  {"role": "assistant", "content": "Warm in both."}, {"role": "user", "content": "Thanks"}],
     "tools": [TOOL]},
]
PREFILLS = [
    [ASK, {"role": "assistant", "content": "The weather"}],
    [ASK, {"role": "assistant", "content": "The weather", "reasoning_content": "Hm, Paris."}],
    [ASK, {"role": "assistant", "content": "", "reasoning_content": "Hm, Paris"}],  # goes on thinking
]
# without tools: a question (the template's own thinking default), an answer with its reasoning in the history
# (Ministral 3 gets it as a thinking block), a question in two text parts (joined by "\n" where the caps say
# the template takes no typed content), then the three prefills
WITHOUT_TOOLS = [{"messages": [ASK]},
                 {"messages": [ASK, {"role": "assistant", "content": "Sunny.", "reasoning_content": "Let me think."},
                               {"role": "user", "content": "And Rome?"}]},
                 {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                           {"type": "text", "text": "there"}]}]},
                 *({"messages": m} for m in PREFILLS)]


@pytest.fixture(scope="module")
def pinned_templates(model_path: str, llama_server: list[str]) -> dict[Path, tuple[dict[str, bool], list[Any]]]:
    """llama-server on each of llama.cpp's models/templates: its chat_template_caps, and its /apply-template
    prompt for each of WITH_TOOLS and WITHOUT_TOOLS (None where it refuses the conversation)."""
    templates = sorted((REPO / "third_party" / "llama.cpp" / "models" / "templates").glob("*.jinja"))
    assert len(templates) > 50
    out = {}
    for path in templates:
        srv = Server(["-m", model_path, "-c", "256", "-np", "1", "--jinja", "--chat-template-file", str(path),
                      "--no-warmup"], command=llama_server)
        try:
            caps = srv.get("/props").json()["chat_template_caps"]
            out[path] = (caps, [srv.post("/apply-template", body).json().get("prompt")
                                for body in (*WITH_TOOLS, *WITHOUT_TOOLS)])
        finally:
            srv.stop()
    return out


def test_chat_template_caps_match_llama_servers_on_every_pinned_template(
        pinned_templates: dict[Path, tuple[dict[str, bool], list[Any]]]) -> None:
    """/props' chat_template_caps for each of llama.cpp's models/templates, from llama-server and from
    llamatwist's own probes (tool calls, parallel calls, object arguments, preserved reasoning, effort...)."""
    from llamatwist.chat.template import ChatTemplate

    differ = {}
    for path, (theirs, _) in pinned_templates.items():
        ours = ChatTemplate(path.read_text()).caps.as_map()
        keys = {k for k in theirs if theirs[k] != ours.get(k)}
        if keys != CAPS_DIFFER.get(path.name, set()):
            differ[path.name] = {k: (theirs[k], ours.get(k)) for k in keys}
    assert not differ, differ


# Thinking templates whose prefill llama-server writes with the template's own marker spacing (Qwen 3:
# "<think>\n\n</think>\n\n"), which llamatwist reads from the template (chat.template.spaced_reasoning_tags)
SPACED_PREFILL = ["Bielik-11B-v3.0-Instruct", "GLM-4.6", "MiniMax-M2", "Qwen-Qwen3-0.6B", "Qwen3.5-4B", "Reka-Edge",
                  "openbmb-MiniCPM5-1B", "Qwen-QwQ-32B", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"]
@pytest.mark.parametrize("name", SPACED_PREFILL)
def test_a_prefill_on_a_thinking_template_renders_as_llama_servers(model_path: str, llama_server: list[str],
                                                                   name: str) -> None:
    path = REPO / "third_party" / "llama.cpp" / "models" / "templates" / f"{name}.jinja"
    args = ["-m", model_path, "-c", "256", "-np", "1", "-t", "1", "--jinja", "--chat-template-file", str(path)]
    prompts = []
    for command in (None, llama_server):
        srv = Server([*args, "--no-warmup"] if command else args, command=command)
        try:
            prompts.append([srv.post("/apply-template", {"messages": m}).json()["prompt"] for m in PREFILLS])
        finally:
            srv.stop()
    ours, theirs = prompts
    assert ours == theirs
    assert ours[0].endswith("The weather") and "Hm, Paris." in ours[1] and ours[2].endswith("Hm, Paris")


def _prompt(fmt: Any, body: dict[str, Any]) -> str | None:
    """llamatwist's /apply-template prompt, None where it refuses the conversation (a template's own error)."""
    from llamatwist.api.openai.chat import build_prompt, parse_chat
    from llamatwist.chat import ChatError

    try:
        return build_prompt(fmt, body, parse_chat(body, SamplingDefaults(), 1)).rendered.prompt
    except ChatError:
        return None


def test_prompts_are_llama_servers_on_every_pinned_template(
        model_path: str, pinned_templates: dict[Path, tuple[dict[str, bool], list[Any]]]) -> None:
    """/apply-template from llama-server and from llamatwist's own chat path (the same formatter and plan as
    its route, on this model's tokens): with a tool list; with two calls, their results and an answer; a plain
    question (the template's thinking default: Apertus is told "Deliberation: disabled", as llama-server finds
    no thinking markers in it); an answer with its reasoning in the history; text parts; and an assistant
    message continued three ways (the markers llama.cpp's handlers write: Kimi K3's response section, GPT-OSS's
    final channel, Gemma 4's "thought\n")."""
    from llamatwist.api.chatformat import build_formatter
    from llamatwist.config import ServerConfig
    from llamatwist.engine.model import Model

    vocab = Model(model_path).vocab
    bos, eos = (vocab.token_to_piece(t, special=True).decode() for t in (vocab.bos, vocab.eos))
    config = ServerConfig(jinja=True)
    tools_differ, prefill_differ, plain_differ = set(), set(), set()
    for path, (_, theirs) in pinned_templates.items():
        fmt = build_formatter(config, None, path.read_text(), bos, eos, vocab.add_bos, vocab.add_eos)
        ours = [_prompt(fmt, body) for body in (*WITH_TOOLS, *WITHOUT_TOOLS)]
        n = len(WITH_TOOLS)
        if ours[:n] != theirs[:n]:
            tools_differ.add(path.stem)
        if ours[n:n + 3] != theirs[n:n + 3]:
            plain_differ.add(path.stem)
        if ours[n + 3:] != theirs[n + 3:]:
            prefill_differ.add(path.stem)
    assert tools_differ == TOOLS_DIFFER, sorted(tools_differ ^ TOOLS_DIFFER)
    assert not plain_differ, sorted(plain_differ)
    assert prefill_differ == PREFILL_DIFFER, sorted(prefill_differ ^ PREFILL_DIFFER)
    assert len(pinned_templates) - len(tools_differ | prefill_differ) >= 55


# One template per way llama.cpp's parsers space a thinking block: its template analysis (Qwen 3 and MiniMax-M2
# read the whitespace the template writes after each marker with it, GLM 4.6 after the end one, DeepSeek R1's
# reasoning starts with the prompt's "\n" after <think>), and its hand-written parsers that keep all of it
# (Kimi K2, LFM2, DeepSeek V3.2) or skip some (Gemma 4 and MiniMax-M3 before the reasoning, Ministral 3 before
# the answer, Qwen 3.5 both); Apriel 1.6, whose reasoning starts with the prompt's "Here are my reasoning steps:";
# the templates whose markers llama.cpp's analysis patches (Nemotron Nano v2, Laguna); and RWKV-World, whose end
# marker its thinking-off prompt spaces
SPACING_TEMPLATES = ["Qwen-Qwen3-0.6B", "MiniMax-M2", "GLM-4.6", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
                     "ByteDance-Seed-OSS", "Kimi-K2-Thinking", "LFM2.5-8B-A1B", "deepseek-ai-DeepSeek-V3.2",
                     "google-gemma-4-31B-it", "MiniMax-M3", "mistralai-Ministral-3-14B-Reasoning-2512", "Qwen3.5-4B",
                     "Apriel-1.6-15b-Thinker-fixed", "NVIDIA-Nemotron-Nano-v2", "poolside-Laguna-XS.2", "llama-cpp-rwkv-world"]
# ...and prompts that close the block (thinking off), whose block llama-server reads from the prompt: a block the
# model writes anyway is content (Hunyuan 3 thinks only when asked)
THINKING_OFF = {"enable_thinking": False}
# ...and templates without thinking markers whose hand-written parser skips a reply's leading whitespace (Qwen3-
# Coder's: a <think> block it writes is content; Ministral 3's, which Devstral's template gets) or reads a thinking
# block anyway (Ministral 3's [THINK], Kimi K2's <think>)
PLAIN_TEMPLATES = ["Qwen3-Coder", "unsloth-mistral-Devstral-Small-2507", "Kimi-K2-Instruct"]
SPACING_CASES = [*((name, {}) for name in SPACING_TEMPLATES), ("Qwen-Qwen3-0.6B", THINKING_OFF), ("tencent-Hy3", {}),
                 *((name, {}) for name in PLAIN_TEMPLATES)]


def _replies(start: str, end: str, opened: bool) -> list[str]:
    """Replies with whitespace in every place it may go: around and inside a thinking block, none, an empty one."""
    s = "" if opened else start
    return [f"{s}\nHm.\n{end}\n\nHello.", f"{s}Hm.{end}Hello.", f"{s}\n\n  Hm.  \n\n{end}\n\n  Hello.  \n",
            f"{s}\n{end}\n\nHello.", "  Hello.\n"]


@pytest.mark.parametrize(("name", "kwargs"), SPACING_CASES, ids=lambda v: v if isinstance(v, str) else str(v or ""))
def test_reasoning_and_content_are_spaced_as_llama_servers(model_path: str, llama_server: list[str], name: str,
                                                          kwargs: dict[str, Any]) -> None:
    """The same reply split by llama-server (made to write it by a raw grammar, which constrains its whole reply)
    and by llamatwist's chat path (the plan its route makes, the reply streamed a character at a time): the
    same reasoning_content and content, whitespace and all."""
    from llamatwist.api.chatformat import build_formatter
    from llamatwist.api.openai.chat import build_prompt, parse_chat
    from llamatwist.api.openai.tools import MessageStream, message_json
    from llamatwist.config import ServerConfig
    from llamatwist.engine.model import Model

    path = REPO / "third_party" / "llama.cpp" / "models" / "templates" / f"{name}.jinja"
    vocab = Model(model_path).vocab
    bos, eos = (vocab.token_to_piece(t, special=True).decode() for t in (vocab.bos, vocab.eos))
    fmt = build_formatter(ServerConfig(jinja=True), None, path.read_text(), bos, eos, vocab.add_bos, vocab.add_eos)
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 60, "temperature": 0,
                            "chat_template_kwargs": kwargs}
    prompt = build_prompt(fmt, body, parse_chat(body, SamplingDefaults(), 1))
    assert prompt.plan is not None
    syntax = prompt.plan.syntax
    replies = _replies(*(prompt.thinking_tags if all(prompt.thinking_tags) else THINK), syntax.thinking_forced_open)
    srv = Server(["-m", model_path, "-c", "4096", "-np", "1", "--jinja", "--chat-template-file", str(path),
                  "--no-warmup"], command=llama_server)
    try:
        theirs = [srv.post("/v1/chat/completions", {**body, "grammar": "root ::= " + json.dumps(reply)}).json()
                  ["choices"][0]["message"] for reply in replies]
    finally:
        srv.stop()
    for reply, their in zip(replies, theirs, strict=True):
        stream = MessageStream(syntax)
        deltas = [d for ch in reply for d in stream.feed(ch)]
        msg, last = stream.finish()
        deltas += last
        ours = message_json(msg)
        keys = ("content", "reasoning_content")
        assert {k: ours.get(k) for k in keys} == {k: their.get(k) for k in keys}, (name, reply)
        for key in keys:  # the stream's deltas add up to the final message
            assert "".join(d.get(key) or "" for d in deltas) == (ours.get(key) or ""), (name, reply, key)
