"""The real chat templates of each family (llama.cpp's ``models/templates``) with tools.

For every template: ``plan_tools`` detects the family; rendering tools and a history with an assistant tool
call and its ``role: tool`` result shows all three in the prompt; and the assistant turn the template itself
writes for that call parses back (with the family's parser) into that very call. Templates that show no tools
get the generic format, whose plan carries them in the system prompt and rewrites the history.

The templates come from the pinned llama.cpp tree, which the build places in ``third_party/`` (``pip install``
runs it; ``build_native.place_source()`` extracts it on a fresh clone). A missing template fails the test.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llamatwist.chat import CHATML_TEMPLATE_SRC, render_chat, select_template
from llamatwist.chat.template import ChatTemplate, spaced_reasoning_tags
from llamatwist.chat.toolcalls import ParsedMessage, parse_output, plan_tools, polyfill_history

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string", "description": "City name"}},
                "required": ["location"],
            },
        },
    }
]
USER = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {
    "role": "assistant",
    "content": None,  # as OpenAI clients send it
    # Mistral's templates insist on 9 alphanumeric characters
    "tool_calls": [{"id": "abc123XYZ", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}],
}  # fmt: skip
RESULT = {"role": "tool", "tool_call_id": "abc123XYZ", "name": "get_weather", "content": "22 degrees and sunny"}
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "</s>", "<｜end▁of▁sentence｜>", "<|END_OF_TURN_TOKEN|>",
               "<|end_of_text|>", "<turn|>", "<|end|>", "<|return|>", "<|call|>", "<|tool_response>", "<sep>",
               "<seed:eos>", "<|observation|>", "<|role_end|>", "</assistant>", "[e~[", "<end_of_sentence>",
               "<SPECIAL_12>", "<|begin|>", "<｜hy_", "<|START_OF_TURN_TOKEN|>")  # fmt: skip

# template -> (family, shows the tool definitions, the assistant turn it writes parses back)
TEMPLATES: dict[str, tuple[str, bool, bool]] = {
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": ("hermes", True, True),
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": ("hermes", True, True),
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("hermes", True, True),
    "Qwen-Qwen3-0.6B.jinja": ("hermes", True, True),
    "Qwen-QwQ-32B.jinja": ("hermes", True, True),
    "ibm-granite-granite-4.0.jinja": ("hermes", True, True),
    "Qwen3-Coder.jinja": ("qwen3-coder", True, True),
    "Qwen3.5-4B.jinja": ("qwen3-coder", True, True),
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja": ("qwen3-coder", True, True),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": ("llama3-builtin", True, True),
    "meta-llama-Llama-3.3-70B-Instruct.jinja": ("llama3-builtin", True, True),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("llama3", True, True),
    # its template shows the tools it is handed as `functions` (llama.cpp's handler for it before the pin)
    "fireworks-ai-llama-3-firefunction-v2.jinja": ("firefunction-v2", True, True),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ("mistral", True, True),
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": ("mistral", True, True),
    "unsloth-mistral-Devstral-Small-2507.jinja": ("mistral", True, True),
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": ("mistral", True, True),
    "meetkai-functionary-medium-v3.1.jinja": ("functionary-v3.1", True, True),
    "meetkai-functionary-medium-v3.2.jinja": ("functionary-v3.2", True, True),
    "llama-cpp-deepseek-r1.jinja": ("deepseek-r1", True, True),
    # the official R1 distill templates show no tools (llama.cpp recommends its own, above)
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": ("deepseek-r1", False, True),
    "deepseek-ai-DeepSeek-V3.1.jinja": ("deepseek-v3.1", False, True),
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": ("command-r7b", True, True),
    # Granite 3.3 renders no earlier tool calls, only its instruction to write <|tool_call|>[...]
    "ibm-granite-granite-3.3-2B-Instruct.jinja": ("granite", True, False),
    "openai-gpt-oss-120b.jinja": ("gpt-oss", True, True),
    "google-gemma-4-31B-it.jinja": ("gemma4", True, True),
    "google-gemma-4-31B-it-interleaved.jinja": ("gemma4", True, True),
    "unsloth-Apriel-1.5.jinja": ("apriel", True, True),
    "Apriel-1.6-15b-Thinker-fixed.jinja": ("apriel-1.6", True, True),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("generic", False, False),
    # formats the pinned llama.cpp reads with its template analysis (autoparser)
    "GLM-4.6.jinja": ("glm-4.5", True, True),
    "GLM-4.7-Flash.jinja": ("glm-4.5", True, True),
    "Spark2.5.jinja": ("glm-4.5", True, True),
    "inclusionai-ling-3.0-flash.jinja": ("ling3", True, True),
    "poolside-Laguna-S-2.1.jinja": ("glm-4.5", True, True),
    "poolside-Laguna-XS-2.1.jinja": ("glm-4.5", True, True),
    "poolside-Laguna-XS.2.jinja": ("glm-4.5", True, True),
    "MiniMax-M2.jinja": ("minimax-m2", True, True),
    "deepseek-ai-DeepSeek-V3.2.jinja": ("deepseek-dsml", True, True),
    "deepseek-ai-DeepSeek-V4.jinja": ("deepseek-dsml", True, True),
    "deepseek-ai-DeepSeek-V4-Flash-0731.jinja": ("deepseek-dsml", True, True),
    "Kimi-K2-Instruct.jinja": ("kimi-k2", True, True),
    "Kimi-K2-Thinking.jinja": ("kimi-k2", True, True),
    "moonshotai-Kimi-K2.jinja": ("kimi-k2", True, True),
    "ByteDance-Seed-OSS.jinja": ("seed-oss", True, True),
    "MiniMax-M1.jinja": ("minimax-m1", True, True),
    "NVIDIA-Nemotron-Nano-v2.jinja": ("nemotron-v2", True, True),
    "upstage-Solar-Open-100B.jinja": ("solar-open", True, True),
    "openbmb-MiniCPM5-1B.jinja": ("minicpm5", True, True),
    "Cohere2MoE.jinja": ("command-r7b", True, True),
    "tencent-Hy3.jinja": ("hunyuan3", True, True),
    "LFM2.5-8B-A1B.jinja": ("lfm2", True, True),
    # these two show the tool list but write no earlier call
    "LFM2-8B-A1B.jinja": ("lfm2", True, False),
    "LFM2.5-Instruct.jinja": ("lfm2", True, False),
    "GigaChat3-10B-A1.8B.jinja": ("gigachat3", True, True),
    "GigaChat3.1-10B-A1.8B.jinja": ("gigachat3.1", True, True),
    "Apertus-8B-Instruct.jinja": ("apertus", True, True),
    "CohereForAI-c4ai-command-r-plus-tool_use.jinja": ("command-r-plus", True, True),
    "Kimi-K3.jinja": ("kimi-k3", True, True),
    "MiniMax-M3.jinja": ("minimax-m3", True, True),
    "muse-glimmer.jinja": ("muse-glimmer", True, True),
}
# templates only detected: the R1 Distill Llama one drops an assistant tool call from the history
DETECT_ONLY = {"deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": "deepseek-r1", "google-gemma-2-2b-it.jinja": "generic"}


@pytest.fixture(scope="module")
def template_dir() -> Path:
    import build_native

    root = build_native.place_source()  # a fresh clone has no third_party/ yet: extract the pinned sdist
    path = root / "models" / "templates"
    assert path.is_dir(), f"llama.cpp templates missing at {path}"
    return path


def load(template_dir: Path, name: str) -> str:
    path = template_dir / name
    assert path.is_file(), f"template {name} missing from the pinned llama.cpp tree ({template_dir})"
    return path.read_text()


def render(source: str, messages: list[dict[str, Any]], **options: Any) -> Any:
    template = select_template(source, jinja=True, bos_token="<s>", eos_token="</s>")
    return render_chat(template, messages, tools=TOOLS, **options)


def assistant_turn(source: str) -> tuple[str, str, bool]:
    """The text the template writes for the assistant's tool call, the generation prompt before it, and whether
    that text starts inside a thinking block the generation prompt opened."""
    before = render(source, [USER])
    after = render(source, [USER, CALL], add_generation_prompt=False, prefill_assistant=False).prompt
    n = 0
    while n < min(len(before.prompt), len(after)) and before.prompt[n] == after[n]:
        n += 1
    # the generation prompt may open a thinking block the history turn does not have: back off to the marker
    tag = before.prompt.rfind("<", 0, n)
    if tag >= 0 and ">" not in before.prompt[tag:n] and "｜" not in before.prompt[tag:n]:
        n = tag
    elif before.prompt[n - 1 : n] == "<":
        n -= 1
    # Command R+ writes its instructions after the history, so the two renderings part before the role token
    turn = after[n:].removeprefix("<|CHATBOT_TOKEN|>")
    cut = min([turn.find(m) for m in END_OF_TURN if m in turn] or [len(turn)])
    # GigaChat 3 ends a message with the marker a "function call" message also starts with
    return turn[:cut].removesuffix("<|message_sep|>\n\n"), before.generation_prompt, n >= len(before.prompt)


def test_every_native_family_has_a_template() -> None:
    families = {family for family, _, _ in TEMPLATES.values()}
    assert families >= {"hermes", "qwen3-coder", "llama3", "llama3-builtin", "mistral", "functionary-v3.1",
                        "functionary-v3.2", "deepseek-r1", "deepseek-v3.1", "command-r7b", "granite", "gpt-oss",
                        "gemma4", "glm-4.5", "minimax-m2", "deepseek-dsml", "kimi-k2", "seed-oss",
                        "minimax-m1", "nemotron-v2", "solar-open", "minicpm5", "hunyuan3", "lfm2",
                        "gigachat3", "gigachat3.1", "apertus", "command-r-plus", "kimi-k3", "minimax-m3", "muse-glimmer",
                        "ling3", "firefunction-v2", "generic"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_detect_and_render(template_dir: Path, name: str) -> None:
    family, shows_tools, _ = TEMPLATES[name]
    source = load(template_dir, name)
    plan = plan_tools(source, TOOLS)
    assert plan.syntax.format == family
    messages = [USER, CALL, RESULT]
    if family == "generic":
        assert plan.json_schema is not None and plan.polyfill_history
        messages = [{"role": "system", "content": plan.system_prompt}, *polyfill_history(messages)]
    prompt = render(source, messages).prompt
    assert "get_weather" in prompt and "Paris" in prompt and "22 degrees and sunny" in prompt, prompt
    assert ("Get the current weather in a city" in prompt) == (shows_tools or family == "generic"), prompt


@pytest.mark.parametrize("name", sorted(DETECT_ONLY))
def test_detect_only(template_dir: Path, name: str) -> None:
    assert plan_tools(load(template_dir, name), TOOLS).syntax.format == DETECT_ONLY[name]


@pytest.mark.parametrize("name", sorted(n for n, (_, _, back) in TEMPLATES.items() if back))
def test_template_call_parses_back(template_dir: Path, name: str) -> None:
    source = load(template_dir, name)
    turn, generation_prompt, inside = assistant_turn(source)
    plan = plan_tools(source, TOOLS, generation_prompt=generation_prompt)
    # a turn of a non-thinking reply may start by closing an empty thinking block (DeepSeek V3.1, Qwen 3.5)
    forced = (inside and plan.syntax.thinking_forced_open) or turn.lstrip().startswith(plan.thinking_end_tag or "\0")
    syntax = replace(plan.syntax, thinking_forced_open=forced)
    msg = parse_output(turn, syntax, partial=False)
    assert [(c.name, json.loads(c.arguments)) for c in msg.tool_calls] == [("get_weather", {"location": "Paris"})], (
        turn,
        msg,
    )
    assert msg.content.strip() == "", msg


# what llama-server answers for "The user asks.\n</think>\n\nIt is sunny." after each generation prompt
_FORCED = ParsedMessage("\n\nIt is sunny.", "\nThe user asks.\n")  # the prompt's "<think>\n" starts the reasoning


@pytest.mark.parametrize(
    ("name", "forced", "expected"),
    [("Qwen-QwQ-32B.jinja", True, _FORCED), ("llama-cpp-deepseek-r1.jinja", True, _FORCED),
     ("Qwen3.5-4B.jinja", True, ParsedMessage("It is sunny.", "The user asks.\n")),  # its parser skips spaces
     ("Qwen-Qwen3-0.6B.jinja", False, None), ("Qwen-Qwen2.5-7B-Instruct.jinja", False, None)],
)  # fmt: skip
def test_thinking_forced_open(template_dir: Path, name: str, forced: bool, expected: ParsedMessage | None) -> None:
    source = load(template_dir, name)
    rendered = render(source, [USER])
    spacing = spaced_reasoning_tags(ChatTemplate(source), ("<think>", "</think>"))
    plan = plan_tools(source, TOOLS, generation_prompt=rendered.generation_prompt, think_spacing=spacing)
    assert plan.syntax.thinking_forced_open is forced
    # Qwen 2.5 writes no thinking block, so its plan has no markers (for a reasoning budget or a prefill)
    thinks = "<think>" in source
    assert (plan.thinking_start_tag, plan.thinking_end_tag) == (("<think>", "</think>") if thinks else ("", ""))
    msg = parse_output("The user asks.\n</think>\n\nIt is sunny.", plan.syntax, partial=False)
    if forced:
        assert msg == expected
    off = plan_tools(source, TOOLS, generation_prompt=rendered.generation_prompt, enable_thinking=False)
    assert not off.syntax.thinking_forced_open


def test_qwen3_thinking_disabled_prompt_is_closed(template_dir: Path) -> None:
    source = load(template_dir, "Qwen-Qwen3-0.6B.jinja")
    rendered = render(source, [USER], chat_template_kwargs={"enable_thinking": False})
    assert not plan_tools(source, TOOLS, generation_prompt=rendered.generation_prompt).syntax.thinking_forced_open


def test_generic_chatml_smollm2() -> None:
    """SmolLM2's plain ChatML template: the generic format, tools listed in the system prompt."""
    plan = plan_tools(CHATML_TEMPLATE_SRC, TOOLS, tool_choice="required")
    assert plan.syntax.format == "generic" and plan.polyfill_history
    assert "Respond in JSON format" in plan.system_prompt and '"get_weather"' in plan.system_prompt
    assert plan.json_schema["required"] == ["tool_call"]  # required: no "response" branch
    history = polyfill_history([USER, CALL, RESULT])
    assert json.loads(history[1]["content"]) == {
        "tool_call": {"name": "get_weather", "arguments": {"location": "Paris"}, "id": "abc123XYZ"}
    }
    assert history[2]["role"] == "user" and json.loads(history[2]["content"])["tool_response"]["content"] == (
        "22 degrees and sunny"
    )
    prompt = render(CHATML_TEMPLATE_SRC, [{"role": "system", "content": plan.system_prompt}, *history]).prompt
    assert "Get the current weather in a city" in prompt and "22 degrees and sunny" in prompt


def test_tool_choice_options() -> None:
    two = [*TOOLS, {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    auto = plan_tools(CHATML_TEMPLATE_SRC, two)
    assert [b["required"] for b in auto.json_schema["anyOf"]] == [["tool_call"], ["response"]]
    named = plan_tools(CHATML_TEMPLATE_SRC, two, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.json_schema["properties"]["tool_call"]["properties"]["name"]["const"] == "get_time"
    parallel = plan_tools(CHATML_TEMPLATE_SRC, two, tool_choice="required", parallel_tool_calls=True)
    assert parallel.json_schema["properties"]["tool_calls"]["minItems"] == 1
    none = plan_tools(CHATML_TEMPLATE_SRC, two, tool_choice="none")
    assert none.syntax.format == "content-only" and none.json_schema is None and not none.syntax.parse_tool_calls
    with pytest.raises(ValueError, match="not in tools"):
        plan_tools(CHATML_TEMPLATE_SRC, two, tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ValueError, match="reasoning format"):
        plan_tools(CHATML_TEMPLATE_SRC, two, reasoning_format="bogus")
    assert plan_tools(CHATML_TEMPLATE_SRC, None).syntax.format == "content-only"
    assert plan_tools(CHATML_TEMPLATE_SRC, two, some_future_option=1).syntax.format == "generic"


def test_native_plans(template_dir: Path) -> None:
    hermes = plan_tools(load(template_dir, "Qwen-Qwen2.5-7B-Instruct.jinja"), TOOLS)
    assert hermes.json_schema is None and hermes.grammar is None and "<tool_call>" in hermes.preserved_tokens
    llama = plan_tools(load(template_dir, "meta-llama-Llama-3.1-8B-Instruct.jinja"), TOOLS)
    assert llama.additional_stops == ("<|eom_id|>",)
    gpt = plan_tools(load(template_dir, "openai-gpt-oss-120b.jinja"), TOOLS, reasoning_format="deepseek-legacy",
                     stream=True)  # fmt: skip
    assert gpt.syntax.reasoning_in_content and gpt.thinking_start_tag == "<|channel|>analysis<|message|>"
    # tool_choice none keeps the family's reasoning markers but parses no calls
    cmd = plan_tools(
        load(template_dir, "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja"), TOOLS, tool_choice="none"
    )
    assert cmd.syntax.format == "command-r7b" and not cmd.syntax.parse_tool_calls
    text = "<|START_THINKING|>hm<|END_THINKING|><|START_RESPONSE|>Hi<|END_RESPONSE|>"
    assert parse_output(text, cmd.syntax, partial=False) == ParsedMessage("Hi", "hm")


def test_phi4_detection() -> None:
    """No Phi-4 template ships with the pinned llama.cpp: detection from Phi-4-mini's tool markers."""
    source = "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' }}"
    assert plan_tools(source, TOOLS).syntax.format == "phi-4"


def test_referenced_parameters_are_typed_as_their_definitions(template_dir: Path) -> None:
    """A parameter that is a ``$ref`` (Pydantic's nested models) is typed as what it refers to when Qwen3-Coder's
    untyped XML values are read: a referenced string stays a string (before, "123" became the number 123)."""
    source = load(template_dir, "Qwen3-Coder.jinja")
    tool = {"type": "function", "function": {"name": "save", "parameters": {
        "type": "object", "$defs": {"Code": {"type": "string"}, "Opts": {"type": "object"}},
        "properties": {"code": {"$ref": "#/$defs/Code"}, "opts": {"$ref": "#/$defs/Opts"}}}}}  # fmt: skip
    plan = plan_tools(source, [tool])
    turn = ("<tool_call>\n<function=save>\n<parameter=code>\n123\n</parameter>\n<parameter=opts>\n{\"a\": 1}\n"
            "</parameter>\n</function>\n</tool_call>")
    msg = parse_output(turn, plan.syntax, partial=False)
    assert [json.loads(c.arguments) for c in msg.tool_calls] == [{"code": "123", "opts": {"a": 1}}]
