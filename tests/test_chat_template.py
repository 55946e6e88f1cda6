"""llamatwist.chat: message parsing, Jinja/built-in templates, selection and prompt building (pure, no model).

Expected strings come from llama.cpp: src/llama-chat.cpp (built-in formats), tests/test-chat-template.cpp (the
upstream table at the end of this file) and tools/server (error texts and status codes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import pytest

from llamatwist.chat import (
    BUILTIN_NAMES,
    CHATML_TEMPLATE_SRC,
    BuiltinTemplate,
    ChatError,
    ChatInputError,
    ChatTemplate,
    TemplateError,
    apply_builtin,
    detect_builtin,
    parse_messages,
    render_chat,
    select_template,
    strip_bos,
    verify_template,
)
from llamatwist.chat.sandbox import ENV

# tokenizer.chat_template of SmolLM2-135M-Instruct (the default test model), verbatim from its GGUF.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

# A template that takes typed (array) content, like the multimodal ones.
TYPED_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}[{{ p.text }}]{% endfor %}{% endif %}"
    "{% endfor %}"
)

# gemma-2's template: no system role.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

NOW = datetime(2024, 7, 26, 9, 30)


def user(text: str) -> dict[str, object]:
    return {"role": "user", "content": text}


def chat(template: ChatTemplate | BuiltinTemplate, messages: object, **kwargs: object) -> str:
    return render_chat(template, messages, now=NOW, **kwargs).prompt  # type: ignore[arg-type]


def smollm2() -> ChatTemplate:
    return ChatTemplate(SMOLLM2_TEMPLATE, bos_token="<|im_start|>", eos_token="<|im_end|>")


def jinja(source: str, **kwargs: str) -> ChatTemplate:
    return ChatTemplate(source, **kwargs)


# --- the default model's template ----------------------------------------------------------------------------


def test_smollm2_template_renders_chatml_with_default_system() -> None:
    assert chat(smollm2(), [user("Hi")]) == (SMOLLM2_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_template_with_system_and_history() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        user("Hello"),
        {"role": "assistant", "content": "Hi there"},
        user("How are you?"),
    ]
    assert chat(smollm2(), messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_add_generation_prompt_false() -> None:
    assert chat(smollm2(), [user("Hi")], add_generation_prompt=False) == (
        SMOLLM2_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_generation_prompt_is_reported() -> None:
    rendered = render_chat(smollm2(), [user("Hi")], now=NOW)
    assert rendered.generation_prompt == "<|im_start|>assistant\n"
    assert not rendered.prefilled


def test_developer_role_becomes_system_for_jinja_templates() -> None:
    messages = [{"role": "developer", "content": "Rules."}, user("Hi")]
    assert chat(smollm2(), messages).startswith("<|im_start|>system\nRules.<|im_end|>\n<|im_start|>user\nHi")


def test_system_message_merged_when_template_has_no_system_role() -> None:
    template = jinja(GEMMA_TEMPLATE, bos_token="<bos>")
    assert not template.caps.supports_system_role
    messages = [{"role": "system", "content": "Be brief."}, user("Hello")]
    assert chat(template, messages) == (
        "<bos><start_of_turn>user\nBe brief.\nHello<end_of_turn>\n<start_of_turn>model\n"
    )


# --- content parts -------------------------------------------------------------------------------------------


def test_text_parts_joined_with_newline_for_string_templates() -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    prompt = chat(smollm2(), [{"role": "user", "content": parts}])
    assert "<|im_start|>user\nfirst\nsecond<|im_end|>" in prompt


def test_empty_leading_part_adds_no_newline() -> None:
    parts = [{"type": "text", "text": ""}, {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert "<|im_start|>user\na\nb<|im_end|>" in chat(smollm2(), [{"role": "user", "content": parts}])


def test_typed_templates_receive_the_parts() -> None:
    template = jinja(TYPED_TEMPLATE)
    assert template.caps.supports_typed_content and template.caps.supports_string_content
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert chat(template, [{"role": "user", "content": parts}, user("c")]) == "<user>[a][b]<user>c"


@pytest.mark.parametrize(("body", "string", "typed"), [
    # llama.cpp counts what a template does with the content: a for loop, an index or selectattr is typed use
    ("{% if c is string %}{{ c }}{% else %}{% for p in c %}{{ p.text }}{% endfor %}{% endif %}", True, True),
    ("{{ c[0].text }}", False, True),  # a string content fails here
    ("{% if c is string %}{{ c }}{% else %}{{ (c | selectattr('type', 'equalto', 'text') | first).text }}{% endif %}",
     True, True),
    # the loop only runs for a non-empty list, and llama.cpp probes with an empty one: no typed use (LFM2.5)
    ("{% if c is string %}{{ c }}{% elif c %}{% for p in c %}{{ p.text }}{% endfor %}{% endif %}", True, False),
    ("{{ c if c is string else c | tojson }}", True, False),  # tojson walks the list, but is no typed use
    ("{{ c }}", True, False),
])
def test_content_caps_count_what_the_template_does_with_the_content(body: str, string: bool, typed: bool) -> None:
    template = jinja("{% for m in messages %}{% set c = m.content %}" + body + "{% endfor %}")
    assert (template.caps.supports_string_content, template.caps.supports_typed_content) == (string, typed)


def test_null_content_renders_as_empty_string() -> None:
    messages = [user("Hi"), {"role": "assistant", "content": None}, user("Again")]
    assert "<|im_start|>assistant\n<|im_end|>" in chat(smollm2(), messages, prefill_assistant=False)


def test_builtin_templates_join_parts_with_newline() -> None:
    parts = [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]
    assert chat(BuiltinTemplate("llama3"), [{"role": "user", "content": parts}]) == (
        "<|start_header_id|>user<|end_header_id|>\n\nx\ny<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, "image input is not supported"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "audio input is not supported"),
    ],
)
def test_media_parts_are_rejected_like_llama_server_without_mmproj(part: dict[str, object], message: str) -> None:
    with pytest.raises(ChatInputError) as info:
        parse_messages([{"role": "user", "content": [{"type": "text", "text": "look"}, part]}])
    assert str(info.value).startswith(message)
    assert "you may need to provide the mmproj" in str(info.value)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("messages", "message", "status"),
    [
        (None, "'messages' is required", 400),
        ({"role": "user"}, "Expected 'messages' to be an array", 400),
        ([{"role": "user"}], "All non-assistant messages must contain 'content'", 400),
        ([{"role": "assistant"}], "Assistant message must contain either 'content' or 'tool_calls'!", 400),
        ([{"role": "user", "content": 5}], "Expected 'content' to be a string or an array", 400),
        ([{"role": "user", "content": [{"type": "video"}]}], "unsupported content[].type", 400),
        (
            [{"content": "x"}],
            'Failed to parse messages: Missing \'role\' in message: {"content":"x"}',
            400,
        ),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            "Failed to parse messages: [json.exception.out_of_range.403] key 'text' not found",
            400,
        ),
        (
            [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}],
            'Failed to parse messages: Missing tool call name: {"function":{"arguments":"{}"},"type":"function"}',
            400,
        ),
    ],
)
def test_message_validation_errors(messages: object, message: str, status: int) -> None:
    with pytest.raises(ChatInputError) as info:
        parse_messages(messages)
    assert str(info.value) == message
    assert info.value.status == status
    assert isinstance(info.value, ChatError)


def test_parsed_message_fields() -> None:
    [msg] = parse_messages(
        [
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "hmm",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
                ],
            }
        ]
    )
    assert msg.tool_calls[0].arguments == '{"a":1}'  # objects are kept as compact JSON text
    assert msg.to_template_json() == {
        "role": "assistant",
        "content": "",
        "reasoning_content": "hmm",
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"a":1}'}, "id": "c1"}],
    }


# --- assistant prefill / continuation ------------------------------------------------------------------------


def test_assistant_prefill_continues_the_last_message() -> None:
    rendered = render_chat(smollm2(), [user("Count"), {"role": "assistant", "content": "1, 2,"}], now=NOW)
    assert rendered.prefilled
    assert rendered.prompt == SMOLLM2_SYSTEM + ("<|im_start|>user\nCount<|im_end|>\n<|im_start|>assistant\n1, 2,")


def test_prefill_ignores_add_generation_prompt_from_the_request() -> None:
    messages = [user("Count"), {"role": "assistant", "content": "1,"}]
    assert chat(smollm2(), messages, add_generation_prompt=True).endswith("<|im_start|>assistant\n1,")


def test_prefill_joins_parts_with_blank_line() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    prompt = chat(smollm2(), [user("x"), {"role": "assistant", "content": parts}])
    assert prompt.endswith("<|im_start|>assistant\na\n\nb")


def test_prefill_disabled_renders_a_closed_assistant_turn() -> None:
    messages = [user("Count"), {"role": "assistant", "content": "1, 2,"}]
    rendered = render_chat(smollm2(), messages, prefill_assistant=False, now=NOW)
    assert not rendered.prefilled
    assert rendered.prompt.endswith("<|im_start|>assistant\n1, 2,<|im_end|>\n<|im_start|>assistant\n")


def test_two_trailing_assistant_messages_are_rejected() -> None:
    messages = [user("a"), {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(ChatInputError) as info:
        render_chat(smollm2(), messages)
    assert str(info.value) == "Cannot have 2 or more assistant messages at the end of the list."
    assert info.value.status == 400
    # without prefill the same list is fine
    render_chat(smollm2(), messages, prefill_assistant=False)


def test_explicit_continue_final_message_needs_add_generation_prompt_false() -> None:
    messages = [user("Write"), {"role": "assistant", "content": "Once"}]
    with pytest.raises(ChatInputError, match="Cannot set both add_generation_prompt and continue_final_message"):
        render_chat(smollm2(), messages, continue_final_message=True)
    prompt = chat(smollm2(), messages, continue_final_message=True, add_generation_prompt=False)
    assert prompt.endswith("<|im_start|>assistant\nOnce")


def test_cannot_continue_a_tool_call_message() -> None:
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [user("x"), {"role": "assistant", "content": "", "tool_calls": [call]}]
    with pytest.raises(ChatInputError, match="Cannot continue an assistant message that contains tool calls."):
        render_chat(smollm2(), messages)


def test_prefill_with_builtin_template() -> None:
    messages = [user("Hi"), {"role": "assistant", "content": "Hel"}]
    assert chat(BuiltinTemplate("chatml"), messages) == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHel")


def test_prefill_with_reasoning_tags() -> None:
    messages = [user("Hi"), {"role": "assistant", "content": "Answer", "reasoning_content": "think"}]
    prompt = chat(smollm2(), messages, reasoning_tags=("<think>", "</think>"))
    assert prompt.endswith("<|im_start|>assistant\n<think>think</think>Answer")


# A template that spaces its markers ("<think>\nR\n</think>\n\n") but opens the block bare in its generation
# prompt (Laguna): the prefill replaces that opening, it does not write a second one
SPACED_THINKER = (
    "{%- for m in messages -%}<{{ m.role }}>{%- if m.reasoning_content -%}<think>\n{{ m.reasoning_content }}\n"
    "</think>\n\n{% endif %}{{ m.content }}</{{ m.role }}>{%- endfor -%}"
    "{%- if add_generation_prompt -%}<assistant><think>{%- endif -%}"
)


def test_prefill_writes_the_templates_spaced_markers_once() -> None:
    template = ChatTemplate(SPACED_THINKER)
    messages = [user("Hi"), {"role": "assistant", "content": "Answer", "reasoning_content": "think"}]
    prompt = chat(template, messages, reasoning_tags=("<think>", "</think>"))
    assert prompt == "<user>Hi</user><assistant><think>\nthink\n</think>\n\nAnswer"
    thinking = chat(template, [user("Hi"), {"role": "assistant", "content": "", "reasoning_content": "hm"}],
                    reasoning_tags=("<think>", "</think>"))
    assert thinking == "<user>Hi</user><assistant><think>\nhm"


# --- BOS / EOS -----------------------------------------------------------------------------------------------


def test_strip_bos() -> None:
    assert strip_bos("<s>[INST] hi", "<s>") == ("[INST] hi", True)
    assert strip_bos("[INST] <s>", "<s>") == ("[INST] <s>", False)
    assert strip_bos("<s>x", "") == ("<s>x", False)


def test_leading_bos_text_removed_only_when_the_tokenizer_adds_bos() -> None:
    template = jinja(
        "{{ bos_token }}{% for m in messages %}[{{ m.content }}]{{ eos_token }}{% endfor %}",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert chat(template, [user("a")]) == "<s>[a]</s>"
    assert chat(template, [user("a")], add_bos=True) == "[a]</s>"
    assert chat(template, [user("a")], add_bos=True, add_eos=True) == "[a]"


# --- the Jinja dialect ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('{"a": 1, "b": [1, 2]}|tojson', '{"a": 1, "b": [1, 2]}'),
        ('{"a": [1, 2]}|tojson(indent=2)', '{\n  "a": [\n    1,\n    2\n  ]\n}'),
        ('{"a": 1, "b": 2}|tojson(separators=(",", ":"))', '{"a":1,"b":2}'),
        ('{"b": 1, "a": 2}|tojson(sort_keys=true)', '{"a": 2, "b": 1}'),
        ('"é<&>"|tojson', '"é<&>"'),
        ('"é"|tojson(ensure_ascii=true)', '"\\u00e9"'),
        ("none|tojson", "null"),
        ("[1, 2]|map('string')|list|tojson", '["1", "2"]'),
    ],
)
def test_tojson_matches_python_json_dumps(expression: str, expected: str) -> None:
    assert jinja("{{ " + expression + " }}").render([]) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # Functionary v3.1's tool lines: Markup + text would escape the text
        ("""{{ "Use '"|safe + name + "'\n"|safe + {"a": "b"}|tojson }}""", 'Use \'get "x"\'\n{"a": "b"}'),
        ("{{ name|e + '<' }}", "get &#34;x&#34;<"),  # |e escapes its own value only
        ("{{ name|safe }}", 'get "x"'),
    ],
)
def test_safe_and_escape_make_plain_text_as_in_llama_cpp(source: str, expected: str) -> None:
    assert ENV.from_string(source).render(name='get "x"') == expected


def test_raise_exception_names_the_message() -> None:
    template = jinja("{{ raise_exception('Conversation roles must alternate') }}")
    with pytest.raises(TemplateError) as info:
        render_chat(template, [user("x")])
    assert str(info.value) == "Jinja Exception: Conversation roles must alternate"
    assert info.value.status == 400


def test_jinja_runtime_error_becomes_template_error() -> None:
    with pytest.raises(TemplateError, match="Error rendering chat template: .*template line 2"):
        jinja("ok\n{{ messages[0].content + 1 }}").render([user("x")])


def test_syntax_error_at_load() -> None:
    with pytest.raises(TemplateError, match="chat template parsing error") as info:
        jinja("{% for m in messages %}")
    assert info.value.status == 500


def test_strftime_now_and_date_variables() -> None:
    template = jinja("{{ strftime_now('%Y-%m-%d') }}|{{ date_string }}|{{ datetime }}")
    assert chat(template, [user("x")]) == "2024-07-26|26 Jul 2024|Jul 26 2024"
    assert jinja("{{ strftime_now('%Y') }}").render([]) == str(datetime.now().year)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ messages.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ raise_exception.__globals__ }}",
        "{{ messages.clear() }}",
        "{{ 'x' * 100000000 }}",
    ],
)
def test_sandbox_blocks_escapes(source: str) -> None:
    with pytest.raises(TemplateError):
        jinja(source).render([user("x")])


def test_helpers_real_templates_use() -> None:
    source = (
        "{%- set ns = namespace(n=0) -%}"
        "{%- for m in messages -%}"
        "{%- if loop.index0 == 2 %}{% break %}{% endif -%}"
        "{%- if m.role == 'system' %}{% continue %}{% endif -%}"
        "{%- set ns.n = ns.n + 1 -%}"
        "{% generation %}{{ m.content.strip().split(',')[0].title() }}{% endgeneration %};"
        "{%- endfor -%}"
        "{%- set acc = [] -%}{%- set _ = acc.append(ns.n) -%}"
        "{{ acc }}{{ {'k': 'v'}.items()|list|length }}{{ 'x'.startswith('x') }}"
    )
    messages: list[dict[str, object]] = [{"role": "system", "content": "s"}, user(" hello world, there "), user("z")]
    assert jinja(source).render(messages) == "Hello World;[1]1True"


def test_undefined_is_lenient_like_llama_cpp() -> None:
    source = "[{{ missing.attr.chain }}][{{ none }}][{{ 'a' + missing }}][{{ tools is defined }}]"
    assert jinja(source).render([]) == "[][][a][False]"


def test_context_variables_and_kwargs() -> None:
    source = (
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt is defined }}|{{ enable_thinking }}|"
        "{{ custom }}|{{ tools|length if tools is defined else 'no tools' }}|{{ clear_thinking }}"
    )
    template = jinja(source, bos_token="<s>", eos_token="</s>")
    prompt = chat(template, [user("x")], chat_template_kwargs={"custom": [1, 2], "preserve_reasoning": True})
    assert prompt == "<s>|</s>|True|True|[1, 2]|no tools|False"
    kwargs = {"enable_thinking": False}
    assert chat(template, [user("x")], add_generation_prompt=False, chat_template_kwargs=kwargs).startswith(
        "<s>|</s>|False|False|"
    )


def test_enable_thinking_kwarg_must_be_boolean() -> None:
    with pytest.raises(ChatInputError, match='invalid type for "enable_thinking"') as info:
        render_chat(smollm2(), [user("x")], chat_template_kwargs={"enable_thinking": "false"})
    assert info.value.status == 400


def test_tools_reach_the_template_normalised() -> None:
    template = jinja("{{ tools|tojson }}")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}, "extra": 1}]
    assert json.loads(chat(template, [user("x")], tools=tools)) == [
        {"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object"}}}
    ]


def test_bad_tools_are_rejected() -> None:
    with pytest.raises(ChatInputError, match="^Failed to parse tools: Missing tool function") as info:
        render_chat(smollm2(), [user("x")], tools=[{"type": "function"}])
    assert info.value.status == 400


def test_tool_call_arguments_become_objects_for_templates_that_render_objects() -> None:
    template = jinja(
        "{% for m in messages %}{% for c in m.tool_calls|default([]) %}"
        "{% for k, v in c.function.arguments|items %}{{ k }}={{ v }}{% endfor %}{% endfor %}{% endfor %}"
    )
    assert template.caps.supports_object_arguments
    call = {"type": "function", "function": {"name": "f", "arguments": '{"city": "Paris"}'}}
    messages = [user("x"), {"role": "assistant", "tool_calls": [call]}, {"role": "tool", "content": "ok"}]
    assert chat(template, messages) == "city=Paris"


def test_string_argument_templates_keep_arguments_as_text() -> None:
    template = jinja(
        "{% for m in messages %}{% for c in m.tool_calls|default([]) %}{{ c.function.arguments }}"
        "{% endfor %}{% endfor %}"
    )
    assert not template.caps.supports_object_arguments
    call = {"type": "function", "function": {"name": "f", "arguments": {"city": "Paris"}}}
    assert chat(template, [user("x"), {"role": "assistant", "tool_calls": [call]}, user("y")]) == '{"city":"Paris"}'


def test_tool_choice_is_validated() -> None:
    with pytest.raises(ChatInputError, match="^Invalid tool_choice: sometimes$") as info:
        render_chat(smollm2(), [user("x")], tool_choice="sometimes")
    assert info.value.status == 400
    render_chat(smollm2(), [user("x")], tool_choice={"type": "function", "function": {"name": "f"}})
    with pytest.raises(ChatInputError, match="tool_choice param requires --jinja flag"):
        render_chat(BuiltinTemplate("chatml"), [user("x")], tool_choice="required")


def test_reasoning_effort_none_disables_thinking() -> None:
    template = jinja("{{ enable_thinking }}/{{ reasoning_effort|default('-') }}")
    assert chat(template, [user("x")], reasoning_effort="high") == "True/high"
    assert chat(template, [user("x")], reasoning_effort="none") == "False/-"


def test_parsed_messages_are_accepted() -> None:
    assert chat(smollm2(), parse_messages([user("Hi")])) == chat(smollm2(), [user("Hi")])


def test_builtin_template_rejects_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(ChatInputError, match="tools param requires --jinja flag") as info:
        render_chat(BuiltinTemplate("chatml"), [user("x")], tools=tools)
    assert info.value.status == 400


# --- selection -----------------------------------------------------------------------------------------------


def test_select_uses_the_gguf_template() -> None:
    template = select_template(SMOLLM2_TEMPLATE, jinja=True)
    assert isinstance(template, ChatTemplate)
    assert template.source == SMOLLM2_TEMPLATE


def test_select_falls_back_to_chatml() -> None:
    for gguf in (None, "", "chatml"):
        template = select_template(gguf)
        assert isinstance(template, ChatTemplate) and template.source == CHATML_TEMPLATE_SRC
        assert chat(template, [user("Hi")]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_select_override_by_name_and_by_source() -> None:
    by_name = select_template(SMOLLM2_TEMPLATE, override="llama3")
    assert isinstance(by_name, BuiltinTemplate) and by_name.name == "llama3"
    by_source = select_template(SMOLLM2_TEMPLATE, override="{{ messages[0].content }}!")
    assert chat(by_source, [user("hey")]) == "hey!"
    from_file = select_template(None, override_file_text="<{{ messages|length }}>")
    assert chat(from_file, [user("a"), user("b")]) == "<2>"


def test_select_rejects_a_broken_override() -> None:
    with pytest.raises(TemplateError, match="^error: the supplied chat template is not supported: {% if %}"):
        select_template(None, override="{% if %}")


def test_select_no_jinja_detects_the_family() -> None:
    template = select_template(SMOLLM2_TEMPLATE, jinja=False)
    assert isinstance(template, BuiltinTemplate) and template.name == "chatml"
    assert chat(template, [user("Hi")]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert select_template(None, jinja=False, override="gemma").name == "gemma"


def test_no_jinja_rejects_an_unknown_override() -> None:
    with pytest.raises(TemplateError) as info:
        select_template(SMOLLM2_TEMPLATE, jinja=False, override="{{ messages[0].content }}")
    assert str(info.value) == (
        "error: the supplied chat template is not supported: {{ messages[0].content }}\n"
        "note: llama.cpp was started without --jinja, we only support commonly used templates"
    )


def test_no_jinja_unknown_model_template_fails_each_request() -> None:
    template = select_template("{{ messages[0].content }}", jinja=False)
    assert isinstance(template, BuiltinTemplate) and template.name is None
    with pytest.raises(TemplateError, match="this custom template is not supported, try using --jinja") as info:
        render_chat(template, [user("x")])
    assert info.value.status == 500


def test_verify_template() -> None:
    assert verify_template("chatml", jinja=False) and verify_template("chatml", jinja=True)
    assert verify_template("{{ raise_exception('no') }}", jinja=False) is False
    assert verify_template("{{ raise_exception('no') }}", jinja=True) is False
    assert verify_template("hello {{ x }}", jinja=True)


# --- built-in templates --------------------------------------------------------------------------------------

S = "You are a helpful assistant"
CONVERSATION = (("system", S), ("user", "Hello"), ("assistant", "Hi there"), ("user", "How are you?"))

# llm_chat_apply_template's output for CONVERSATION with add_ass=true, one per built-in name.
BUILTIN_EXPECTED = {
    "chatml": (
        f"<|im_start|>system\n{S}<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there"
        "<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"
    ),
    "llama2": f"[INST] {S}\nHello [/INST]Hi there</s>[INST] How are you? [/INST]",
    "llama2-sys": f"[INST] <<SYS>>\n{S}\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] How are you? [/INST]",
    "llama2-sys-bos": f"[INST] <<SYS>>\n{S}\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] How are you? [/INST]",
    "llama2-sys-strip": f"[INST] <<SYS>>\n{S}\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] How are you? [/INST]",
    "mistral-v1": f" [INST] {S}\n\nHello [/INST] Hi there</s> [INST] How are you? [/INST]",
    "mistral-v3": f"[INST] {S}\n\nHello[/INST] Hi there</s>[INST] How are you?[/INST]",
    "mistral-v3-tekken": f"[INST]{S}\n\nHello[/INST]Hi there</s>[INST]How are you?[/INST]",
    "mistral-v7": f"[SYSTEM_PROMPT] {S}[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>[INST] How are you?[/INST]",
    "mistral-v7-tekken": f"[SYSTEM_PROMPT]{S}[/SYSTEM_PROMPT][INST]Hello[/INST]Hi there</s>[INST]How are you?[/INST]",
    "phi3": (
        f"<|system|>\n{S}<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nHow are you?"
        "<|end|>\n<|assistant|>\n"
    ),
    "phi4": (
        f"<|im_start|>system<|im_sep|>{S}<|im_end|><|im_start|>user<|im_sep|>Hello<|im_end|><|im_start|>assistant"
        "<|im_sep|>Hi there<|im_end|><|im_start|>user<|im_sep|>How are you?<|im_end|><|im_start|>assistant<|im_sep|>"
    ),
    "falcon3": f"<|system|>\n{S}\n<|user|>\nHello\n<|assistant|>\nHi there\n<|user|>\nHow are you?\n<|assistant|>\n",
    "zephyr": (
        f"<|system|>\n{S}<|endoftext|>\n<|user|>\nHello<|endoftext|>\n<|assistant|>\nHi there<|endoftext|>\n"
        "<|user|>\nHow are you?<|endoftext|>\n<|assistant|>\n"
    ),
    "monarch": (
        f"system\n{S}</s>\n<s>user\nHello</s>\n<s>assistant\nHi there</s>\n<s>user\nHow are you?</s>\n<s>assistant\n"
    ),
    "gemma": (
        f"<start_of_turn>user\n{S}\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"
    ),
    "orion": f"Human: {S}\n\nHello\n\nAssistant: </s>Hi there</s>Human: How are you?\n\nAssistant: </s>",
    "openchat": (
        f"{S}<|end_of_turn|>GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant: Hi there<|end_of_turn|>"
        "GPT4 Correct User: How are you?<|end_of_turn|>GPT4 Correct Assistant:"
    ),
    "vicuna": f"{S}\n\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: How are you?\nASSISTANT:",
    "vicuna-orca": f"SYSTEM: {S}\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: How are you?\nASSISTANT:",
    "deepseek": (
        f"{S}### Instruction:\nHello\n### Response:\nHi there\n<|EOT|>\n### Instruction:\nHow are you?\n### Response:\n"
    ),
    "deepseek2": f"{S}\n\nUser: Hello\n\nAssistant: Hi there<｜end▁of▁sentence｜>User: How are you?\n\nAssistant:",
    "deepseek3": f"{S}\n\n<｜User｜>Hello<｜Assistant｜>Hi there<｜end▁of▁sentence｜><｜User｜>How are you?<｜Assistant｜>",
    "deepseek-ocr": f"{S}HelloHi thereHow are you?",
    "command-r": (
        f"<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{S}<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello"
        "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>How are you?<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
    ),
    "llama3": (
        f"<|start_header_id|>system<|end_header_id|>\n\n{S}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "Hello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\n"
    ),
    "chatglm3": f"[gMASK]sop<|system|>\n {S}<|user|>\n Hello<|assistant|>\n Hi there<|user|>\n How are you?<|assistant|>",
    "chatglm4": f"[gMASK]<sop><|system|>\n{S}<|user|>\nHello<|assistant|>\nHi there<|user|>\nHow are you?<|assistant|>\n",
    "glmedge": f"<|system|>\n{S}<|user|>\nHello<|assistant|>\nHi there<|user|>\nHow are you?<|assistant|>",
    "minicpm": f"{S}<用户>Hello<AI>Hi there<用户>How are you?<AI>",
    "exaone3": (
        f"[|system|]{S}[|endofturn|]\n[|user|]Hello\n[|assistant|]Hi there[|endofturn|]\n[|user|]How are you?\n"
        "[|assistant|]"
    ),
    "exaone4": (
        f"[|system|]{S}[|endofturn|]\n[|user|]Hello\n[|assistant|]Hi there[|endofturn|]\n[|user|]How are you?\n"
        "[|assistant|]"
    ),
    "exaone-moe": (
        f"<|system|>\n{S}<|endofturn|>\n<|user|>\nHello<|endofturn|>\n<|assistant|>\nHi there<|endofturn|>\n"
        "<|user|>\nHow are you?<|endofturn|>\n<|assistant|>\n"
    ),
    "rwkv-world": f"System: {S}\n\nUser: Hello\n\nAssistant: Hi there\n\nUser: How are you?\n\nAssistant:",
    "granite": (
        f"<|start_of_role|>system<|end_of_role|>{S}<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hello"
        "<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>Hi there<|end_of_text|>\n<|start_of_role|>user"
        "<|end_of_role|>How are you?<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"
    ),
    "gigachat": (
        f"<s>{S}<|message_sep|>user<|role_sep|>Hello<|message_sep|>available functions<|role_sep|>[]<|message_sep|>"
        "assistant<|role_sep|>Hi there<|message_sep|>user<|role_sep|>How are you?<|message_sep|>"
        "available functions<|role_sep|>[]<|message_sep|>assistant<|role_sep|>"
    ),
    "megrez": (
        f"<|role_start|>system<|role_end|>{S}<|turn_end|><|role_start|>user<|role_end|>Hello<|turn_end|>"
        "<|role_start|>assistant<|role_end|>Hi there<|turn_end|><|role_start|>user<|role_end|>How are you?"
        "<|turn_end|><|role_start|>assistant<|role_end|>"
    ),
    "yandex": " Пользователь: Hello\n\n Ассистент: Hi there\n\n Пользователь: How are you?\n\n Ассистент:[SEP]",
    "bailing": (
        f"<role>SYSTEM</role>{S}<role>HUMAN</role>Hello<role>ASSISTANT</role>Hi there<role>HUMAN</role>How are you?"
        "<role>ASSISTANT</role>"
    ),
    "bailing-think": (
        f"<role>SYSTEM</role>{S}<role>HUMAN</role>Hello<role>ASSISTANT</role>Hi there<role>HUMAN</role>How are you?"
        "<role>ASSISTANT</role><think>"
    ),
    "bailing2": (
        f"<role>SYSTEM</role>{S}<|role_end|><role>HUMAN</role>Hello<|role_end|><role>ASSISTANT</role>Hi there"
        "<|role_end|><role>HUMAN</role>How are you?<|role_end|><role>ASSISTANT</role>"
    ),
    "llama4": (
        f"<|header_start|>system<|header_end|>\n\n{S}<|eot|><|header_start|>user<|header_end|>\n\nHello<|eot|>"
        "<|header_start|>assistant<|header_end|>\n\nHi there<|eot|><|header_start|>user<|header_end|>\n\n"
        "How are you?<|eot|><|header_start|>assistant<|header_end|>\n\n"
    ),
    "smolvlm": (
        f"<|im_start|>{S}\n\nUser: Hello<end_of_utterance>\nAssistant: Hi there<end_of_utterance>\n"
        "User: How are you?<end_of_utterance>\nAssistant:"
    ),
    "hunyuan-moe": (
        f"<|startoftext|>{S}<|extra_4|><|startoftext|>Hello<|extra_0|>Hi there<|eos|><|startoftext|>How are you?"
        "<|extra_0|>"
    ),
    "gpt-oss": (
        f"<|start|>system<|message|>{S}<|end|><|start|>user<|message|>Hello<|end|><|start|>assistant<|message|>"
        "Hi there<|return|><|start|>user<|message|>How are you?<|end|><|start|>assistant"
    ),
    "hunyuan-dense": (
        f"{S}<｜hy_place▁holder▁no▁3｜><｜hy_User｜>Hello<｜hy_Assistant｜><｜hy_Assistant｜>Hi there"
        "<｜hy_place▁holder▁no▁2｜><｜hy_User｜>How are you?<｜hy_Assistant｜>"
    ),
    "hunyuan-vl": (
        f"<｜hy_begin▁of▁sentence｜>{S}<｜hy_place▁holder▁no▁3｜>Hello<｜hy_User｜>Hi there<｜hy_Assistant｜>"
        "How are you?<｜hy_User｜>"
    ),
    "kimi-k2": (
        f"<|im_system|>system<|im_middle|>{S}<|im_end|><|im_user|>user<|im_middle|>Hello<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|>Hi there<|im_end|><|im_user|>user<|im_middle|>How are you?<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|>"
    ),
    "seed_oss": (
        f"<seed:bos>system\n{S}<seed:eos><seed:bos>user\nHello<seed:eos><seed:bos>assistant\nHi there<seed:eos>"
        "<seed:bos>user\nHow are you?<seed:eos><seed:bos>assistant\n"
    ),
    "grok-2": (
        f"System: {S}<|separator|>\n\nHuman: Hello<|separator|>\n\nAssistant: Hi there<|separator|>\n\n"
        "Human: How are you?<|separator|>\n\nAssistant:"
    ),
    "pangu-embedded": (
        f"[unused9]系统：{S}[unused10][unused9]用户：Hello[unused10][unused9]助手：Hi there[unused10]"
        "[unused9]用户：How are you?[unused10][unused9]助手："
    ),
    "solar-open": (
        f"<|begin|>system<|content|>{S}<|end|><|begin|>user<|content|>Hello<|end|><|begin|>assistant<|content|>"
        "Hi there<|end|><|begin|>user<|content|>How are you?<|end|><|begin|>assistant"
    ),
}
BUILTIN_EXPECTED["granite-4.0"] = BUILTIN_EXPECTED["granite-4.1"] = BUILTIN_EXPECTED["granite"]


def test_every_builtin_name_is_covered() -> None:
    assert set(BUILTIN_EXPECTED) == set(BUILTIN_NAMES)
    assert list(BUILTIN_NAMES) == sorted(BUILTIN_NAMES)


@pytest.mark.parametrize("name", sorted(BUILTIN_EXPECTED))
def test_builtin_format(name: str) -> None:
    assert apply_builtin(name, CONVERSATION, True) == BUILTIN_EXPECTED[name]
    # the name detects itself, and a BuiltinTemplate renders the same through render_chat
    assert detect_builtin(name) == name
    messages = [{"role": role, "content": content} for role, content in CONVERSATION]
    assert chat(BuiltinTemplate(name), messages) == BUILTIN_EXPECTED[name]


def test_builtin_without_generation_prompt() -> None:
    assert apply_builtin("llama3", CONVERSATION[:2], False) == (
        f"<|start_header_id|>system<|end_header_id|>\n\n{S}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "Hello<|eot_id|>"
    )
    assert apply_builtin("zephyr", [("user", "x")], False) == "<|user|>\nx<|endoftext|>\n"


@pytest.mark.parametrize(
    ("snippet", "family"),
    [
        ("{{'<|im_start|>' + message['role'] + '\\n'}}", "chatml"),
        ("<|im_start|>{{ role }}<|im_sep|>", "phi4"),
        ("<|im_start|>User:<end_of_utterance>", "smolvlm"),
        ("{{ '[INST] ' + content }}", "llama2"),
        ("[INST] <<SYS>>\\n", "llama2-sys"),
        ("{{ bos_token + '[INST] ' }}<<SYS>>", "llama2-sys-bos"),
        ("[INST] {{ content.strip() }}", "llama2-sys-strip"),
        ("{{ ' [INST] ' + system_message }}", "mistral-v1"),
        ('[AVAILABLE_TOOLS]{{ "[INST]" }}', "mistral-v3-tekken"),
        ("[AVAILABLE_TOOLS]{{'[INST]'}}", "mistral-v3"),
        ("[SYSTEM_PROMPT][INST]", "mistral-v7"),
        ("<|user|>{{ x }}<|end|><|assistant|>", "phi3"),
        ("<|user|>\\n{{ x }}</s><|assistant|>", "falcon3"),
        ("<|user|>{{ x }}<|assistant|>", "glmedge"),
        ("<|user|>{{ x }}<|endoftext|>", "zephyr"),
        ("{{ bos_token + message['role'] }}", "monarch"),
        ("<start_of_turn>", "gemma"),
        ("GPT4 Correct User:", "openchat"),
        ("USER: x ASSISTANT: y", "vicuna"),
        ("SYSTEM: s USER: x ASSISTANT: y", "vicuna-orca"),
        ("### Instruction:\\n <|EOT|>", "deepseek"),
        ("<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "command-r"),
        ("<|start_header_id|>user<|end_header_id|>", "llama3"),
        ("[gMASK]sop<|user|>", "chatglm3"),
        ("[gMASK]<sop><|user|>", "chatglm4"),
        ("<用户>", "minicpm"),
        ("{{ 'Assistant: ' + message['content'] + eos_token }}", "deepseek2"),
        ("<｜User｜><｜Assistant｜><｜end▁of▁sentence｜>", "deepseek3"),
        ("[|system|][|assistant|][|endofturn|]", "exaone3"),
        ("<|start_of_role|>user<|end_of_role|>", "granite"),
        ("<|header_start|>user<|header_end|>", "llama4"),
        ("<|start|>assistant<|channel|>final", "gpt-oss"),
        ("<seed:bos>", "seed_oss"),
        ("mistral-v1", "mistral-v1"),
        ("{{ messages[0].content }}", None),
        ("INVALID TEMPLATE", None),
    ],
)
def test_detection_heuristic(snippet: str, family: str | None) -> None:
    assert detect_builtin(snippet) == family


def test_smollm2_template_is_detected_as_chatml() -> None:
    assert detect_builtin(SMOLLM2_TEMPLATE) == "chatml"
    assert detect_builtin(CHATML_TEMPLATE_SRC) == "chatml"


# --- llama.cpp's own template table (tests/test-chat-template.cpp) -------------------------------------------


@dataclass(frozen=True)
class _Case:
    name: str
    template: str
    legacy: str  # llama_chat_apply_template (the built-in family the heuristic detects)
    jinja: str | None = None  # the Jinja rendering, when it differs from legacy
    jinja_supported: bool = True
    bos: str = ""
    eos: str = ""
    extra: tuple[tuple[str, str], ...] = ()


_UPSTREAM_CONVERSATION = (
    ("system", "You are a helpful assistant"),
    ("user", "Hello"),
    ("assistant", "Hi there"),
    ("user", "Who are you"),
    ("assistant", "   I am an assistant   "),
    ("user", "Another question"),
)


_UPSTREAM_CASES: list[_Case] = [
    _Case(
        name="teknium/OpenHermes-2.5-Mistral-7B",
        template=(
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'"
            "] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assista"
            "nt\\n' }}{% endif %}"
        ),
        legacy=(
            "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
            "Hi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
            "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n"
            "<|im_start|>user\nAnother question<|im_end|>\n"
            "<|im_start|>assistant\n"
        ),
    ),
    _Case(
        name="mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)",
        template=(
            "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.ind"
            "ex0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/"
            "assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['con"
            "tent'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos"
            "_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% "
            "endif %}{% endfor %}"
        ),
        legacy=(
            "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I"
            " am an assistant   </s>[INST] Another question [/INST]"
        ),
        eos="</s>",
    ),
    _Case(
        name="TheBloke/FusionNet_34Bx2_MoE-AWQ",
        template=(
            "{%- for idx in range(0, messages|length) -%}\n"
            "{%- if messages[idx]['role'] == 'user' -%}\n"
            "{%- if idx > 1 -%}\n{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}\n"
            "{%- else -%}\n{{- messages[idx]['content'] + ' [/INST]' -}}\n"
            "{%- endif -%}\n{% elif messages[idx]['role'] == 'system' %}\n"
            "{{- '[INST] <<SYS>>\\n' + messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}\n"
            "{%- elif messages[idx]['role'] == 'assistant' -%}\n"
            "{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}\n"
            "{% endif %}\n{% endfor %}"
        ),
        legacy=(
            "[INST] <<SYS>>\nYou are a helpful assistant\n"
            "<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] Who are you [/INST]   I am an assistant   </s"
            "><s>[INST] Another question [/INST]"
        ),
        jinja=(
            "[INST] <<SYS>>\nYou are a helpful assistant\n"
            "<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Who are you [/INST]    I am an assistant   "
            " </s><s>[INST] Another question [/INST]"
        ),
        bos="<s>",
        eos="</s>",
    ),
    _Case(
        name="bofenghuang/vigogne-2-70b-chat",
        template=(
            "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:]"
            " %}{% set system_message = messages[0]['content'] %}{% elif true == true and not '<<SYS>>'"
            " in messages[0]['content'] %}{% set loop_messages = messages %}{% set system_message = 'Vo"
            "us êtes Vigogne, un assistant IA créé par Zaion Lab. Vous suivez extrêmement bien les inst"
            "ructions. Aidez autant que vous le pouvez.' %}{% else %}{% set loop_messages = messages %}"
            "{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (messag"
            "e['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles mu"
            "st alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and s"
            "ystem_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' "
            "+ message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if me"
            "ssage['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['r"
            "ole'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' }}{% elif message["
            "'role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfo"
            "r %}"
        ),
        legacy=(
            "[INST] <<SYS>>\nYou are a helpful assistant\n"
            "<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]I am an assistant</s>[INST] A"
            "nother question [/INST]"
        ),
        jinja=(
            "[INST] <<SYS>>\nYou are a helpful assistant\n"
            "<</SYS>>\n\nHello [/INST] Hi there </s>[INST] Who are you [/INST] I am an assistant </s>[INS"
            "T] Another question [/INST]"
        ),
        eos="</s>",
    ),
    _Case(
        name="mlabonne/AlphaMonarch-7B",
        template=(
            "{% for message in messages %}{{bos_token + message['role'] + '\\n' + message['content'] + e"
            "os_token + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}"
            "{% endif %}"
        ),
        legacy=(
            "system\nYou are a helpful assistant</s>\n<s>user\n"
            "Hello</s>\n<s>assistant\nHi there</s>\n<s>user\n"
            "Who are you</s>\n<s>assistant\n   I am an assistant   </s>\n"
            "<s>user\nAnother question</s>\n<s>assistant\n"
        ),
        jinja=(
            "<s>system\nYou are a helpful assistant</s>\n"
            "<s>user\nHello</s>\n<s>assistant\nHi there</s>\n"
            "<s>user\nWho are you</s>\n<s>assistant\n   I am an assistant   </s>\n"
            "<s>user\nAnother question</s>\n<s>assistant\n"
        ),
        bos="<s>",
        eos="</s>",
    ),
    _Case(
        name="google/gemma-7b-it",
        template=(
            "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
            "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 "
            "% 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assi"
            "stant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
            "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + "
            "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
            "{{'<start_of_turn>model\\n'}}{% endif %}"
        ),
        legacy=(
            "<start_of_turn>user\nYou are a helpful assistant\n"
            "\nHello<end_of_turn>\n<start_of_turn>model\n"
            "Hi there<end_of_turn>\n<start_of_turn>user\n"
            "Who are you<end_of_turn>\n<start_of_turn>model\n"
            "I am an assistant<end_of_turn>\n<start_of_turn>user\n"
            "Another question<end_of_turn>\n<start_of_turn>model\n"
        ),
        jinja=(
            "<start_of_turn>user\nYou are a helpful assistant\n"
            "Hello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n"
            "<start_of_turn>user\nWho are you<end_of_turn>\n"
            "<start_of_turn>model\nI am an assistant<end_of_turn>\n"
            "<start_of_turn>user\nAnother question<end_of_turn>\n"
            "<start_of_turn>model\n"
        ),
    ),
    _Case(
        name="OrionStarAI/Orion-14B-Chat",
        template=(
            "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if message['r"
            "ole'] == 'user' %}{{ 'Human: ' + message['content'] + '\\n\\nAssistant: ' + eos_token }}{% e"
            "lif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% end"
            "for %}"
        ),
        legacy=(
            "Human: You are a helpful assistant\n\nHello\n"
            "\nAssistant: </s>Hi there</s>Human: Who are you\n"
            "\nAssistant: </s>   I am an assistant   </s>Human: Another question\n"
            "\nAssistant: </s>"
        ),
        jinja=(
            "Human: You are a helpful assistant\nHello\n"
            "\nAssistant: </s>Hi there</s>Human: Who are you\n"
            "\nAssistant: </s>   I am an assistant   </s>Human: Another question\n"
            "\nAssistant: </s>"
        ),
        eos="</s>",
    ),
    _Case(
        name="openchat/openchat-3.5-0106",
        template=(
            "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() +"
            " ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}"
            "{{ 'GPT4 Correct Assistant:' }}{% endif %}"
        ),
        legacy=(
            "You are a helpful assistant<|end_of_turn|>GPT4 Correct User: Hello<|end_of_turn|>GPT4 Corr"
            "ect Assistant: Hi there<|end_of_turn|>GPT4 Correct User: Who are you<|end_of_turn|>GPT4 Co"
            "rrect Assistant:    I am an assistant   <|end_of_turn|>GPT4 Correct User: Another question"
            "<|end_of_turn|>GPT4 Correct Assistant:"
        ),
        jinja=(
            "GPT4 Correct System: You are a helpful assistant<|end_of_turn|>GPT4 Correct User: Hello<|e"
            "nd_of_turn|>GPT4 Correct Assistant: Hi there<|end_of_turn|>GPT4 Correct User: Who are you<"
            "|end_of_turn|>GPT4 Correct Assistant:    I am an assistant   <|end_of_turn|>GPT4 Correct U"
            "ser: Another question<|end_of_turn|>GPT4 Correct Assistant:"
        ),
    ),
    _Case(
        name="deepseek-ai/deepseek-coder-33b-instruct",
        template=(
            "{% if not add_generation_prompt is defined %}\n"
            "{% set add_generation_prompt = false %}\n{% endif %}\n"
            "{%- set ns = namespace(found=false) -%}\n{%- for message in messages -%}\n"
            "    {%- if message['role'] == 'system' -%}\n"
            "        {%- set ns.found = true -%}\n    {%- endif -%}\n"
            "{%- endfor -%}\n{{bos_token}}{%- if not ns.found -%}\n"
            "{{'You are an AI programming assistant, utilizing the Deepseek Coder model, developed by D"
            "eepseek Company, and you only answer questions related to computer science. For politicall"
            "y sensitive questions, security and privacy issues, and other non-computer science questio"
            "ns, you will refuse to answer\\n'}}\n{%- endif %}\n"
            "{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n"
            "{{ message['content'] }}\n    {%- else %}\n"
            "        {%- if message['role'] == 'user' %}\n"
            "{{'### Instruction:\\n' + message['content'] + '\\n'}}\n"
            "        {%- else %}\n{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n"
            "        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
            "{% if add_generation_prompt %}\n{{'### Response:'}}\n"
            "{% endif %}"
        ),
        legacy=(
            "You are a helpful assistant### Instruction:\n"
            "Hello\n### Response:\nHi there\n<|EOT|>\n### Instruction:\n"
            "Who are you\n### Response:\n   I am an assistant   \n"
            "<|EOT|>\n### Instruction:\nAnother question\n"
            "### Response:\n"
        ),
    ),
    _Case(
        name="eachadea/vicuna-13b-1.1",
        template=(
            "{%- for message in messages %}{%- if message['role'] == 'system' -%}{{- '' + message['cont"
            "ent'] + '\n\n' -}}{%- else -%}{%- if message['role'] == 'user' -%}{{-'USER: ' + message['con"
            "tent'] + '\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + '</s>\n"
            "' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{-'ASSISTANT"
            ":'-}}{%- endif -%}"
        ),
        legacy=(
            "You are a helpful assistant\n\nUSER: Hello\n"
            "ASSISTANT: Hi there</s>\nUSER: Who are you\n"
            "ASSISTANT:    I am an assistant   </s>\nUSER: Another question\n"
            "ASSISTANT:"
        ),
    ),
    _Case(
        name="Orca-Vicuna",
        template=(
            "{%- for message in messages %}{%- if message['role'] == 'system' -%}{{-'SYSTEM: ' + messag"
            "e['content'] + '\n' -}}{%- else -%}{%- if message['role'] == 'user' -%}{{-'USER: ' + messag"
            "e['content'] + '\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + '</s>\n"
            "' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{-'ASSISTANT"
            ":'-}}{%- endif -%}"
        ),
        legacy=(
            "SYSTEM: You are a helpful assistant\nUSER: Hello\n"
            "ASSISTANT: Hi there</s>\nUSER: Who are you\n"
            "ASSISTANT:    I am an assistant   </s>\nUSER: Another question\n"
            "ASSISTANT:"
        ),
    ),
    _Case(
        name="CohereForAI/c4ai-command-r-plus",
        template=(
            "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:]"
            " %}{% set system_message = messages[0]['content'] %}{% elif false == true %}{% set loop_me"
            "ssages = messages %}{% set system_message = 'You are Command-R, a brilliant, sophisticated"
            ", AI-assistant trained to assist human users by providing thorough responses. You are trai"
            "ned by Cohere.' %}{% else %}{% set loop_messages = messages %}{% set system_message = fals"
            "e %}{% endif %}{% if system_message != false %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>"
            "' + system_message + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% for message in loop_messages "
            "%}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conver"
            "sation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% set conten"
            "t = message['content'] %}{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|US"
            "ER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% elif message['role'] == 'assi"
            "stant' %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() + '<|END_OF_TURN"
            "_TOKEN|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN"
            "|><|CHATBOT_TOKEN|>' }}{% endif %}"
        ),
        legacy=(
            "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant<|END_OF_TURN_TOKEN|><|S"
            "TART_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATB"
            "OT_TOKEN|>Hi there<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Who are you<|E"
            "ND_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>I am an assistant<|END_OF_TURN_T"
            "OKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Another question<|END_OF_TURN_TOKEN|><|START_OF"
            "_TURN_TOKEN|><|CHATBOT_TOKEN|>"
        ),
    ),
    _Case(
        name="Llama-3",
        template=(
            "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|st"
            "art_header_id|>' + message['role'] + '<|end_header_id|>\n"
            "\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = b"
            "os_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<"
            "|end_header_id|>\n\n' }}"
        ),
        legacy=(
            "<|start_header_id|>system<|end_header_id|>\n"
            "\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
            "\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
            "\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
            "\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
            "\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
            "\nAnother question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
            "\n"
        ),
    ),
    _Case(
        name="Phi-3-mini",
        template=(
            "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|"
            ">' + '\n' + message['content'] + '<|end|>' + '\n"
            "' + '<|assistant|>' + '\n'}}{% elif (message['role'] == 'assistant') %}{{message['content']"
            " + '<|end|>' + '\n'}}{% endif %}{% endfor %}"
        ),
        legacy=(
            "<|system|>\nYou are a helpful assistant<|end|>\n"
            "<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n"
            "<|user|>\nWho are you<|end|>\n<|assistant|>\n"
            "   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n"
            "<|assistant|>\n"
        ),
        jinja=(
            "<|user|>\nYou are a helpful assistant\nHello<|end|>\n"
            "<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n"
            "<|assistant|>\n   I am an assistant   <|end|>\n"
            "<|user|>\nAnother question<|end|>\n<|assistant|>\n"
        ),
    ),
    _Case(
        name="Phi-3-small",
        template=(
            "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n"
            "' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assi"
            "stant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
        ),
        legacy=(
            "<|system|>\nYou are a helpful assistant<|end|>\n"
            "<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n"
            "<|user|>\nWho are you<|end|>\n<|assistant|>\n"
            "   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n"
            "<|assistant|>\n"
        ),
    ),
    _Case(
        name="Phi-3-medium",
        template=(
            "{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n"
            "' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n"
            "'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n"
            "'}}{% endif %}{% endfor %}"
        ),
        legacy=(
            "<|system|>\nYou are a helpful assistant<|end|>\n"
            "<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n"
            "<|user|>\nWho are you<|end|>\n<|assistant|>\n"
            "   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n"
            "<|assistant|>\n"
        ),
        jinja=(
            "<|user|>\nYou are a helpful assistant\nHello<|end|>\n"
            "<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n"
            "<|assistant|>\n   I am an assistant   <|end|>\n"
            "<|user|>\nAnother question<|end|>\n<|assistant|>\n"
        ),
    ),
    _Case(
        name="Phi-3-vision",
        template=(
            "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n"
            "' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt and messages"
            "[-1]['role'] != 'assistant' %}{{- '<|assistant|>\n"
            "' -}}{% endif %}"
        ),
        legacy=(
            "<|system|>\nYou are a helpful assistant<|end|>\n"
            "<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n"
            "<|user|>\nWho are you<|end|>\n<|assistant|>\n"
            "   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n"
            "<|assistant|>\n"
        ),
    ),
    _Case(
        name="ChatGLM3",
        template=(
            "{% for message in messages %}{% if loop.first %}[gMASK]sop<|{{ message['role'] }}|>\n"
            " {{ message['content'] }}{% else %}<|{{ message['role'] }}|>\n"
            " {{ message['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|"
            ">{% endif %}"
        ),
        legacy=(
            "[gMASK]sop<|system|>\n You are a helpful assistant<|user|>\n"
            " Hello<|assistant|>\n Hi there<|user|>\n Who are you<|assistant|>\n"
            "    I am an assistant   <|user|>\n Another question<|assistant|>"
        ),
    ),
    _Case(
        name="ChatGLM4",
        template=(
            "[gMASK]<sop>{% for item in messages %}{% if item['tools'] is defined %}<|system|>\n"
            "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。\n"
            "\n# 可用工具{% set tools = item['tools'] %}{% for tool in tools %}{% if tool['type'] == 'functi"
            "on' %}\n\n## {{ tool['function']['name'] }}\n"
            "\n{{ tool['function'] | tojson(indent=4) }}\n"
            "......{% endif %}{% endfor %}{% endif %}{% if item['content'] %}<|{{ item['role'] }}|>{{ i"
            "tem['metadata'] }}\n{{ item['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt"
            " %}<|assistant|>\n{% endif %}"
        ),
        legacy=(
            "[gMASK]<sop><|system|>\nYou are a helpful assistant<|user|>\n"
            "Hello<|assistant|>\nHi there<|user|>\nWho are you<|assistant|>\n"
            "   I am an assistant   <|user|>\nAnother question<|assistant|>\n"
        ),
    ),
    _Case(
        name="GLMEdge",
        template=(
            "{% for item in messages %}{% if item['role'] == 'system' %}<|system|>\n"
            "{{ item['content'] }}{% elif item['role'] == 'user' %}<|user|>\n"
            "{{ item['content'] }}{% elif item['role'] == 'assistant' %}<|assistant|>\n"
            "{{ item['content'] }}{% endif %}{% endfor %}<|assistant|>"
        ),
        legacy=(
            "<|system|>\nYou are a helpful assistant<|user|>\n"
            "Hello<|assistant|>\nHi there<|user|>\nWho are you<|assistant|>\n"
            "   I am an assistant   <|user|>\nAnother question<|assistant|>"
        ),
    ),
    _Case(
        name="MiniCPM-3B-OpenHermes-2.5-v2-GGUF",
        template=(
            "{% for message in messages %}{% if message['role'] == 'user' %}{{'<用户>' + message['content"
            "'].strip() + '<AI>'}}{% else %}{{message['content'].strip()}}{% endif %}{% endfor %}"
        ),
        legacy=(
            "You are a helpful assistant<用户>Hello<AI>Hi there<用户>Who are you<AI>I am an assistant<用户>An"
            "other question<AI>"
        ),
    ),
    _Case(
        name="DeepSeek-V2",
        template=(
            "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% end"
            "if %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'Use"
            "r: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant:"
            " ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['co"
            "ntent'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{%"
            " endif %}"
        ),
        legacy=(
            "You are a helpful assistant\n\nUser: Hello\n"
            "\nAssistant: Hi there<｜end▁of▁sentence｜>User: Who are you\n"
            "\nAssistant:    I am an assistant   <｜end▁of▁sentence｜>User: Another question\n"
            "\nAssistant:"
        ),
        eos="<｜end▁of▁sentence｜>",
    ),
    _Case(
        name="ibm-granite/granite-3.0-8b-instruct",
        template=(
            "{%- if tools %}\n    {{- '<|start_of_role|>available_tools<|end_of_role|>\n"
            "' }}\n    {%- for tool in tools %}\n    {{- tool | tojson(indent=4) }}\n"
            "    {%- if not loop.last %}\n        {{- '\n"
            "\n' }}\n    {%- endif %}\n    {%- endfor %}\n"
            "    {{- '<|end_of_text|>\n' }}\n{%- endif %}\n"
            "{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n"
            "    {{- '<|start_of_role|>system<|end_of_role|>' + message['content'] + '<|end_of_text|>\n"
            "' }}\n    {%- elif message['role'] == 'user' %}\n"
            "    {{- '<|start_of_role|>user<|end_of_role|>' + message['content'] + '<|end_of_text|>\n"
            "' }}\n    {%- elif message['role'] == 'assistant' %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|>'  + message['content'] + '<|end_of_text"
            "|>\n' }}\n    {%- elif message['role'] == 'assistant_tool_call' %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message['content'] + '<"
            "|end_of_text|>\n' }}\n    {%- elif message['role'] == 'tool_response' %}\n"
            "    {{- '<|start_of_role|>tool_response<|end_of_role|>' + message['content'] + '<|end_of_t"
            "ext|>\n' }}\n    {%- endif %}\n    {%- if loop.last and add_generation_prompt %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|>' }}\n"
            "    {%- endif %}\n{%- endfor %}"
        ),
        legacy=(
            "<|start_of_role|>system<|end_of_role|>You are a helpful assistant<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>Hi there<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Who are you<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>   I am an assistant   <|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Another question<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>"
        ),
    ),
    _Case(
        name="mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1' template with a system prompt)",
        template=(
            "{%- if messages[0]['role'] == 'system' %}\n"
            "    {%- set system_message = messages[0]['content'] %}\n"
            "    {%- set loop_messages = messages[1:] %}\n"
            "{%- else %}\n    {%- set loop_messages = messages %}\n"
            "{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
            "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
            "        {{- raise_exception('After the optional system message, conversation roles must al"
            "ternate user/assistant/user/assistant/...') }}\n"
            "    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
            "        {%- if loop.first and system_message is defined %}\n"
            "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
            "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
            "        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n"
            "        {{- ' ' + message['content'] + eos_token}}\n"
            "    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, "
            "with the exception of an initial optional system message!') }}\n"
            "    {%- endif %}\n{%- endfor %}\n"
        ),
        legacy=(
            " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]"
            "    I am an assistant   </s> [INST] Another question [/INST]"
        ),
        eos="</s>",
    ),
    _Case(
        name="mistralai/Mistral-Large-Instruct-2411 (mistralai 'v7' template)",
        template=(
            "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] '"
            " + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROM"
            "PT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %"
            "}{{ ' ' + message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system"
            " and assistant roles are supported!') }}{% endif %}{% endfor %}"
        ),
        legacy=(
            "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s"
            ">[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another question[/INST]"
        ),
        eos="</s>",
    ),
    _Case(
        name="ai-sage/GigaChat-20B-A3B-instruct",
        template=(
            "{% if messages[0]['role'] == 'system' -%}\n"
            "    {%- set loop_messages = messages[1:] -%}\n"
            "    {%- set system_message = bos_token + messages[0]['content'] + additional_special_token"
            "s[1] -%}\n{%- else -%}\n    {%- set loop_messages = messages -%}\n"
            "    {%- set system_message = bos_token + '' -%}\n"
            "{%- endif -%}\n{%- for message in loop_messages %}\n"
            "    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
            "        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistan"
            "t/...') }}\n    {% endif %}\n    \n    {%- if loop.index0 == 0 -%}\n"
            "        {{ system_message -}}\n    {%- endif -%}\n"
            "    {%- if message['role'] == 'user' -%}\n"
            "        {{ message['role'] + additional_special_tokens[0] + message['content'] + additiona"
            "l_special_tokens[1] -}}\n        {{ 'available functions' + additional_special_tokens[0] + "
            "additional_special_tokens[2] + additional_special_tokens[3]  + additional_special_tokens[1"
            "] -}}\n    {%- endif -%}\n    {%- if message['role'] == 'assistant' -%}\n"
            "        {{ message['role'] + additional_special_tokens[0] + message['content'] + additiona"
            "l_special_tokens[1] -}}\n    {%- endif -%}\n"
            "    {%- if loop.last and add_generation_prompt -%}\n"
            "        {{ 'assistant' + additional_special_tokens[0] -}}\n"
            "    {%- endif -%}\n{%- endfor %}"
        ),
        legacy=(
            "<s>You are a helpful assistant<|message_sep|>user<|role_sep|>Hello<|message_sep|>available"
            " functions<|role_sep|>[]<|message_sep|>assistant<|role_sep|>Hi there<|message_sep|>user<|r"
            "ole_sep|>Who are you<|message_sep|>available functions<|role_sep|>[]<|message_sep|>assista"
            "nt<|role_sep|>   I am an assistant   <|message_sep|>user<|role_sep|>Another question<|mess"
            "age_sep|>available functions<|role_sep|>[]<|message_sep|>assistant<|role_sep|>"
        ),
        jinja_supported=False,
    ),
    _Case(
        name="Infinigence/Megrez-3B-Instruct",
        template=(
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|"
            "role_start|>system<|role_end|>你是Megrez-3B-Instruct，将针对用户的问题给出详细的、积极的回答。<|turn_end|>' }}{% "
            "endif %}{{ '<|role_start|>' + message['role'] + '<|role_end|>' + message['content'] + '<|t"
            "urn_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|role_start|>assistant<|role_e"
            "nd|>' }}{% endif %}"
        ),
        legacy=(
            "<|role_start|>system<|role_end|>You are a helpful assistant<|turn_end|><|role_start|>user<"
            "|role_end|>Hello<|turn_end|><|role_start|>assistant<|role_end|>Hi there<|turn_end|><|role_"
            "start|>user<|role_end|>Who are you<|turn_end|><|role_start|>assistant<|role_end|>   I am a"
            "n assistant   <|turn_end|><|role_start|>user<|role_end|>Another question<|turn_end|><|role"
            "_start|>assistant<|role_end|>"
        ),
    ),
    _Case(
        name="phi-4",
        template=(
            "{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|"
            "im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|"
            "im_start|>user<|im_sep|>' + message['content'] + '<|im_end|><|im_start|>assistant<|im_sep|"
            ">'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|im_end|>'}}{% end"
            "if %}{% endfor %}"
        ),
        legacy=(
            "<|im_start|>system<|im_sep|>You are a helpful assistant<|im_end|><|im_start|>user<|im_sep|"
            ">Hello<|im_end|><|im_start|>assistant<|im_sep|>Hi there<|im_end|><|im_start|>user<|im_sep|"
            ">Who are you<|im_end|><|im_start|>assistant<|im_sep|>   I am an assistant   <|im_end|><|im"
            "_start|>user<|im_sep|>Another question<|im_end|><|im_start|>assistant<|im_sep|>"
        ),
    ),
    _Case(
        name="yandex/YandexGPT-5-Lite-8B-instruct",
        template=(
            "<s>{%- set names = {'assistant': ' Ассистент:', 'user': ' Пользователь:'} %}\n"
            "{%- set tools_prefix = 'Тебе доступны следующие функции:' %}\n"
            "{%- macro __render_tool(tool) %}\n    {%- set name = tool.function.name %}\n"
            "    {%- set description = tool.function.description|default('') %}\n"
            "    {%- set parameters = tool.function.parameters|tojson %}\n"
            "    {{- '\\n' }}function {{ '{' }}'name':'{{ name }}',\n"
            "    {%- if tool.function.description %}'description':'{{ description }}',{% endif %}\n"
            "'parameters':{{ parameters }}\n    {{- '}' }}\n"
            "{%- endmacro %}\n{%- macro __render_tools(tools) %}\n"
            "    {{- tools_prefix }}\n    {%- for tool in tools %}\n"
            "        {{- __render_tool(tool) }}\n    {%- endfor %}\n"
            "    {{- '\\n\\n' }}\n{%- endmacro %}\n{%- macro __render_tool_message(message) %}\n"
            "    {{- '\\n\\nРезультат вызова' }} {{ message.name }}: {{ message.content }} {{ '\\n\\n' }}\n"
            "{%- endmacro %}\n{%- if tools -%}\n    {{- __render_tools(tools) }}\n"
            "{%- endif -%}\n{%- macro __render_user_message(message) %}\n"
            "{{ names.user }} {{ message.content + '\\n\\n' }}\n"
            "{%- endmacro %}\n{%- macro __render_assistant_message(message) %}\n"
            "    {{- names.assistant }}\n    {%- set call = message['function_call'] %}\n"
            "    {%- if call %}\n        {{- '\\n[TOOL_CALL_START]' }}{{ call.name }}{{ '\\n' }}{{ call.ar"
            "guments|tojson }}\n    {%- else %}\n        {{- ' ' + message.content + '\\n\\n' }}\n"
            "    {%- endif %}\n{%- endmacro %}\n{%- if not add_generation_prompt is defined %}\n"
            "{%- set add_generation_prompt = false %}\n"
            "{%- endif %}\n{%- for message in messages %}\n"
            "    {%- if message['role'] == 'user' %}\n        {{- __render_user_message(message) }}\n"
            "    {%- endif %}\n    {%- if message.role == 'assistant' and not loop.last %}\n"
            "        {{- __render_assistant_message(message) }}\n"
            "    {%- endif %}\n    {%- if message.role == 'tool' %}\n"
            "        {{- __render_tool_message(message) }}\n"
            "    {%- endif %}\n    {%- if loop.last %}\n"
            "        {{- ' Ассистент:[SEP]' }}\n    {%- endif %}\n"
            "{%- endfor %}\n"
        ),
        legacy=(
            " Пользователь: Hello\n\n Ассистент: Hi there\n"
            "\n Пользователь: Who are you\n\n Ассистент:    I am an assistant   \n"
            "\n Пользователь: Another question\n\n Ассистент:[SEP]"
        ),
        jinja=(
            "<s> Пользователь: You are a helpful assistant\n"
            "Hello\n\n Ассистент: Hi there\n\n Пользователь: Who are you\n"
            "\n Ассистент:    I am an assistant   \n\n Пользователь: Another question\n"
            "\n Ассистент:[SEP]"
        ),
        bos="<s>",
    ),
    _Case(
        name="inclusionAI/Ling-lite",
        template=(
            "{% for message in messages %}{% set role = message['role'] | lower %}{% if role == 'user' "
            "%}{% set role = 'HUMAN' %}{% endif %}{% set role = role | upper %}{{ '<role>' + role + '</"
            "role>' + message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '<role>ASSISTAN"
            "T</role>' }}{% endif %}"
        ),
        legacy=(
            "<role>SYSTEM</role>You are a helpful assistant<role>HUMAN</role>Hello<role>ASSISTANT</role"
            ">Hi there<role>HUMAN</role>Who are you<role>ASSISTANT</role>   I am an assistant   <role>H"
            "UMAN</role>Another question<role>ASSISTANT</role>"
        ),
    ),
    _Case(
        name="ByteDance-Seed/Seed-OSS-36B-Instruct",
        template=(
            '{# <seed:bos> #}{%- for message in messages %}{%- if message.role in ["user", "system"] %}'
            '{{ bos_token + message.role + "\\n" + message.content + eos_token }}{%- elif message.role ='
            '= "assistant" %}{{ bos_token + message.role }}{%- if message.content is defined and messag'
            'e.content is string and message.content|trim|length > 0 %}{{ "\\n" + message.content|trim +'
            ' eos_token }}{%- endif %}{%- else %}{{ bos_token + message.role + "\\n" + message.content +'
            ' eos_token }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{ bos_token + "assis'
            'tant\\n" }}{%- endif %}'
        ),
        legacy=(
            "<seed:bos>system\nYou are a helpful assistant<seed:eos><seed:bos>user\n"
            "Hello<seed:eos><seed:bos>assistant\nHi there<seed:eos><seed:bos>user\n"
            "Who are you<seed:eos><seed:bos>assistant\n"
            "I am an assistant<seed:eos><seed:bos>user\n"
            "Another question<seed:eos><seed:bos>assistant\n"
        ),
        bos="<seed:bos>",
        eos="<seed:eos>",
    ),
    _Case(
        name="ibm-granite/granite-3.x (tool call)",
        template=(
            "{%- for message in messages %}\n    {%- if message['role'] == 'assistant_tool_call' %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message['content'] + '<"
            "|end_of_text|>\\n' }}\n    {%- else %}\n    {{- '<|start_of_role|>' + message['role'] + '<|en"
            "d_of_role|>' + message['content'] + '<|end_of_text|>\\n' }}\n"
            "    {%- endif %}\n    {%- if loop.last and add_generation_prompt %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|>' }}\n"
            "    {%- endif %}\n{%- endfor %}"
        ),
        legacy=(
            "<|start_of_role|>system<|end_of_role|>You are a helpful assistant<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>Hi there<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Who are you<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>   I am an assistant   <|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Another question<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>What is the weather?<|end_of_text|>\n"
            '<|start_of_role|>assistant_tool_call<|end_of_role|><|tool_call|>[{"name": "get_weather", "'
            'arguments": {"location": "NYC"}}]<|end_of_text|>\n'
            '<|start_of_role|>tool_response<|end_of_role|>{"temperature": 72}<|end_of_text|>\n'
            "<|start_of_role|>assistant<|end_of_role|>"
        ),
        jinja=(
            "<|start_of_role|>system<|end_of_role|>You are a helpful assistant<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>Hi there<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Who are you<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>   I am an assistant   <|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Another question<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>What is the weather?<|end_of_text|>\n"
            '<|start_of_role|>assistant<|end_of_role|><|tool_call|>[{"name": "get_weather", "arguments"'
            ': {"location": "NYC"}}]<|end_of_text|>\n<|start_of_role|>tool_response<|end_of_role|>{"temp'
            'erature": 72}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>'
        ),
        extra=(
            ("user", "What is the weather?"),
            ("assistant_tool_call", '[{"name": "get_weather", "arguments": {"location": "NYC"}}]'),
            ("tool_response", '{"temperature": 72}'),
        ),
    ),
    _Case(
        name="ibm-granite/granite-4.0 (tool call)",
        template=(
            "{%- for message in messages %}\n    {%- if message['role'] == 'assistant_tool_call' %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message['content'] + '<"
            "|end_of_text|>\\n' }}\n    {%- else %}\n    {{- '<|start_of_role|>' + message['role'] + '<|en"
            "d_of_role|>' + message['content'] + '<|end_of_text|>\\n' }}\n"
            "    {%- endif %}\n    {%- if loop.last and add_generation_prompt %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|>' }}\n"
            "    {%- endif %}\n{%- endfor %}\n{# <tool_call> <tools> g4_default_system_message #}"
        ),
        legacy=(
            "<|start_of_role|>system<|end_of_role|>You are a helpful assistant<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>Hi there<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Who are you<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>   I am an assistant   <|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Another question<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>What is the weather?<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|><|tool_call|><tool_call>\n"
            '{"name": "get_weather", "arguments": {"location": "NYC"}}\n'
            '</tool_call><|end_of_text|>\n<|start_of_role|>tool_response<|end_of_role|>{"temperature": 7'
            "2}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"
        ),
        extra=(
            ("user", "What is the weather?"),
            (
                "assistant_tool_call",
                '<tool_call>\n{"name": "get_weather", "arguments": {"location": "NYC"}}\n</tool_call>',
            ),
            ("tool_response", '{"temperature": 72}'),
        ),
    ),
    _Case(
        name="ibm-granite/granite-4.1 (tool call)",
        template=(
            "{%- for message in messages %}\n    {%- if message['role'] == 'assistant_tool_call' %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message['content'] + '<"
            "|end_of_text|>\\n' }}\n    {%- else %}\n    {{- '<|start_of_role|>' + message['role'] + '<|en"
            "d_of_role|>' + message['content'] + '<|end_of_text|>\\n' }}\n"
            "    {%- endif %}\n    {%- if loop.last and add_generation_prompt %}\n"
            "    {{- '<|start_of_role|>assistant<|end_of_role|>' }}\n"
            "    {%- endif %}\n{%- endfor %}\n{# <tool_call> <tools> #}"
        ),
        legacy=(
            "<|start_of_role|>system<|end_of_role|>You are a helpful assistant<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>Hi there<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Who are you<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>   I am an assistant   <|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>Another question<|end_of_text|>\n"
            "<|start_of_role|>user<|end_of_role|>What is the weather?<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|><|tool_call|><tool_call>\n"
            '{"name": "get_weather", "arguments": {"location": "NYC"}}\n'
            '</tool_call><|end_of_text|>\n<|start_of_role|>tool_response<|end_of_role|>{"temperature": 7'
            "2}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"
        ),
        extra=(
            ("user", "What is the weather?"),
            (
                "assistant_tool_call",
                '<tool_call>\n{"name": "get_weather", "arguments": {"location": "NYC"}}\n</tool_call>',
            ),
            ("tool_response", '{"temperature": 72}'),
        ),
    ),
]


@pytest.mark.parametrize("case", _UPSTREAM_CASES, ids=[c.name for c in _UPSTREAM_CASES])
def test_upstream_table_builtin(case: _Case) -> None:
    family = detect_builtin(case.template)
    assert family is not None
    assert apply_builtin(family, _UPSTREAM_CONVERSATION + case.extra, True) == case.legacy


@pytest.mark.parametrize(
    "case",
    [c for c in _UPSTREAM_CASES if c.jinja_supported],
    ids=[c.name for c in _UPSTREAM_CASES if c.jinja_supported],
)
def test_upstream_table_jinja(case: _Case) -> None:
    template = ChatTemplate(case.template, bos_token=case.bos, eos_token=case.eos)
    messages = [{"role": role, "content": content} for role, content in _UPSTREAM_CONVERSATION + case.extra]
    assert chat(template, messages) == (case.jinja if case.jinja is not None else case.legacy)
