"""Tool-call and reasoning parsers: recorded outputs of each native format, parsed whole and streamed.

Every case is parsed whole (``partial=False``) and must give the expected message; then it is streamed:
every prefix, and many random chunkings, re-parsed with ``partial=True``, must only ever grow (content,
reasoning, argument text; no call disappears or is renamed), and the deltas of ``message_deltas`` followed by
the final parse must rebuild exactly the whole-parse result.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from llamatwist.chat.toolcalls import ChatSyntax, ParsedMessage, ToolCallOut, message_deltas, parse_output
from llamatwist.chat.toolcalls.generic import (
    CALL_ID_MAX_LENGTH,
    PARALLEL_CALLS_MIN_CAP,
    generic_schema,
    max_parallel_calls,
)
from llamatwist.chat.toolcalls.jsonscan import scan_json

WEATHER = '{"location":"Paris"}'
WEATHER2 = '{"location":"Paris","unit":"celsius"}'
TIME = '{"tz":"CET"}'
DS_CALL = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```<｜tool▁call▁end｜>"
DS_BEGIN, DS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
V31_CALL = "<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{args}<｜tool▁call▁end｜>"
# what llama.cpp's template analysis finds around Qwen 3's markers; its parser reads that whitespace with them
QWEN3 = {"think_spacing": ("<think>\n", "\n</think>\n\n")}
QWEN_PARAMS = {
    "get_weather": {"type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}}}
}


def call(name: str, args: str, ident: str = "") -> ToolCallOut:
    return ToolCallOut(name, args, ident)


@dataclass
class Case:
    id: str
    format: str
    text: str
    content: str = ""
    reasoning: str = ""
    calls: tuple[ToolCallOut, ...] = ()
    syntax: dict[str, Any] = field(default_factory=dict)

    @property
    def chat_syntax(self) -> ChatSyntax:
        return ChatSyntax(format=self.format, **self.syntax)

    @property
    def expected(self) -> ParsedMessage:
        return ParsedMessage(self.content, self.reasoning, self.calls)


CASES = [
    # -- generic (any template): one JSON object
    Case("generic-response", "generic", '{"response": "Hello, \\"world\\"\\n\\u00e9"}', 'Hello, "world"\n\u00e9'),
    Case("generic-call", "generic", '{"tool_call": {"name": "get_weather", "arguments": {"location": "Paris"}}}',
         calls=(call("get_weather", WEATHER),)),
    Case("generic-parallel", "generic",
         '{"tool_calls": [{"id": "call1", "name": "get_weather", "arguments": {"location": "Paris", "unit": '
         '"celsius"}}, {"id": "call2", "name": "get_time", "arguments": {"tz": "CET"}}]}',
         calls=(call("get_weather", WEATHER2, "call1"), call("get_time", TIME, "call2"))),
    Case("generic-think", "generic", '<think>Plan.</think>\n{"response": "Hi"}', "Hi", "Plan."),
    Case("generic-args-first", "generic", '{"tool_call": {"arguments": {"n": [1, 2.5e3, true, null]}, "name": "f"}}',
         calls=(call("f", '{"n":[1,2.5e3,true,null]}'),)),
    # -- content only, thinking models without tools
    Case("content-plain", "content-only", "Just text, <b>no</b> markers.", "Just text, <b>no</b> markers."),
    Case("content-think", "content-only", "<think>\nLet me see.\n</think>\n\nHello", "Hello", "Let me see.\n",
         syntax=QWEN3),
    # bare markers (GLM 4.7): the whitespace inside and after the block is the model's, and stays
    Case("content-think-bare", "content-only", "<think>\nLet me see.\n</think>\n\nHello", "\n\nHello",
         "\nLet me see.\n"),
    Case("content-think-space-before", "content-only", "\n <think>a</think>b", "b", "a"),
    Case("content-empty-think", "content-only", "<think>\n\n</think>\n\nHello", "Hello", syntax=QWEN3),
    Case("content-space-no-think", "content-only", "  Hello\n", "Hello\n", syntax=QWEN3),
    # the prompt closed the block (thinking off): a block the model writes anyway is content, as it is
    Case("content-thinking-off", "content-only", "<think>\nHm.\n</think>\n\n Hello", "<think>\nHm.\n</think>\n\n Hello",
         syntax={"thinking_closed": True, **QWEN3}),
    Case("kimi-k2-thinking-off", "kimi-k2", "<think>Hm.</think>Hello", "Hello", "Hm.",
         syntax={"thinking_closed": True}),  # a hand-written parser: the reply's own block still splits
    # the generation prompt opened the block with "<think>\n" (DeepSeek R1): that newline starts the reasoning
    Case("content-forced-open", "content-only", "Thinking on.\n</think>\nAnswer", "\nAnswer", "\nThinking on.\n",
         syntax={"thinking_forced_open": True, "forced_lead": "\n"}),
    Case("content-think-none", "content-only", "<think>x</think>y", "<think>x</think>y", syntax={"reasoning_format": "none"}),
    # -- Hermes 2 Pro / Qwen 2.5 / Qwen 3 (<think>)
    Case("hermes-content", "hermes", "Hello! How can I help?", "Hello! How can I help?"),
    Case("hermes-call", "hermes",
         '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}\n</tool_call>',
         calls=(call("get_weather", WEATHER2),)),
    Case("hermes-parallel", "hermes",
         '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>',
         calls=(call("get_weather", WEATHER), call("get_time", TIME))),
    Case("hermes-think-call", "hermes",
         '<think>\nThe user wants the weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
         '{"location": "Paris"}}\n</tool_call>',
         reasoning="The user wants the weather.\n", calls=(call("get_weather", WEATHER),), syntax=QWEN3),
    Case("hermes-around", "hermes",
         'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"location": "Par\\u00eds"}}\n</tool_call>\n'
         "Done.",
         "Let me check.\nDone.", calls=(call("get_weather", '{"location":"Par\\u00eds"}'),)),
    Case("hermes-function-tag", "hermes", '<function=get_time>{"tz": "CET"}</function>', calls=(call("get_time", TIME),)),
    Case("hermes-forced-open", "hermes",
         "I should call a tool.\n</think>\n\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n"
         "</tool_call>",
         reasoning="I should call a tool.\n", calls=(call("get_time", TIME),),
         syntax={"thinking_forced_open": True, "forced_lead": "\n", **QWEN3}),
    Case("qwen3-forced-open-no-end", "hermes",
         'The user wants weather.\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>',
         reasoning="The user wants weather.\n", calls=(call("get_time", TIME),),
         syntax={"thinking_forced_open": True, "forced_lead": "\n", **QWEN3}),
    Case("hermes-legacy-stream", "hermes", "<think>plan</think>Answer", "<think>plan</think>Answer",
         syntax={"reasoning_in_content": True, "reasoning_format": "deepseek-legacy"}),
    Case("hermes-no-tools", "hermes", '<think>a</think><tool_call>{"name": "x"}</tool_call>',
         '<tool_call>{"name": "x"}</tool_call>', "a", syntax={"parse_tool_calls": False}),
    # -- Qwen3-Coder / Qwen 3.5 / Nemotron 3 XML
    Case("qwen3-coder-call", "qwen3-coder",
         "I will check.\n<tool_call>\n<function=get_weather>\n<parameter=location>\nParis\n</parameter>\n"
         "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
         "I will check.\n", calls=(call("get_weather", '{"location":"Paris","days":3}'),),
         syntax={"tool_parameters": QWEN_PARAMS}),
    Case("qwen3-coder-parallel-think", "qwen3-coder",
         "<think>\nTwo calls.\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=location>\nNew York, "
         "NY\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n<parameter=tz>\n"
         '{"name": "CET"}\n</parameter>\n</function>\n</tool_call>',
         reasoning="Two calls.\n",
         calls=(call("get_weather", '{"location":"New York, NY"}'), call("get_time", '{"tz":{"name":"CET"}}')),
         syntax={"tool_parameters": QWEN_PARAMS}),
    Case("qwen3-coder-bare-function", "qwen3-coder",
         "<function=get_weather>\n<parameter=location>\nParis\n</parameter>\n</function>",
         calls=(call("get_weather", WEATHER),), syntax={"tool_parameters": QWEN_PARAMS}),
    # -- Llama 3.x
    Case("llama3-content", "llama3", "The weather is nice.", "The weather is nice."),
    Case("llama3-call", "llama3", '{"name": "get_weather", "parameters": {"location": "Paris"}}',
         calls=(call("get_weather", WEATHER),)),
    Case("llama3-typed-call", "llama3",
         '{"type": "function", "name": "get_time", "parameters": {"tz": "CET"}}', calls=(call("get_time", TIME),)),
    Case("llama3-json-content", "llama3", '{"answer": 42}', '{"answer": 42}'),
    Case("llama3-builtin", "llama3-builtin", '<|python_tag|>brave_search.call(query="weather in Paris")',
         calls=(call("brave_search", '{"query":"weather in Paris"}'),)),
    Case("llama3-builtin-two-args", "llama3-builtin",
         'Searching.<|python_tag|>wolfram_alpha.call(query="2+2", limit=3)',
         "Searching.", calls=(call("wolfram_alpha", '{"query":"2+2","limit":3}'),)),
    Case("llama3-builtin-json", "llama3-builtin", '<|python_tag|>{"name": "get_weather", "parameters": {"location": '
         '"Paris"}}', calls=(call("get_weather", WEATHER),)),
    # -- Mistral Nemo / Small 3.2 / Devstral / Magistral
    Case("mistral-nemo", "mistral",
         '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris"}, "id": "abc123XYZ"}]',
         calls=(call("get_weather", WEATHER, "abc123XYZ"),)),
    Case("mistral-nemo-parallel", "mistral",
         'Sure.[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris"}, "id": "abc123XYZ"}, '
         '{"name": "get_time", "arguments": {"tz": "CET"}, "id": "def456UVW"}]',
         "Sure.", calls=(call("get_weather", WEATHER, "abc123XYZ"), call("get_time", TIME, "def456UVW"))),
    Case("mistral-small-3.2", "mistral",
         '[TOOL_CALLS]get_weather[CALL_ID]abc123XYZ[ARGS]{"location": "Paris"}'
         '[TOOL_CALLS]get_time[CALL_ID]def456UVW[ARGS]{"tz": "CET"}',
         calls=(call("get_weather", WEATHER, "abc123XYZ"), call("get_time", TIME, "def456UVW"))),
    Case("devstral", "mistral", '[TOOL_CALLS]get_weather[ARGS]{"location": "Paris"}', calls=(call("get_weather", WEATHER),)),
    Case("magistral-think", "mistral", "[THINK]Weather needed.[/THINK]It is sunny.", "It is sunny.", "Weather needed."),
    # -- Functionary v3.1 / v3.2
    Case("functionary-v3.1", "functionary-v3.1",
         'Checking.<function=get_weather>{"location": "Paris"}</function><function=get_time>{"tz": "CET"}</function>',
         "Checking.", calls=(call("get_weather", WEATHER), call("get_time", TIME))),
    Case("functionary-v3.1-python", "functionary-v3.1", '<|python_tag|>print("hi")\nx = 1',
         calls=(call("python", '{"code":"print(\\"hi\\")\\nx = 1"}'),)),
    Case("functionary-v3.2-content", "functionary-v3.2", "all\nHello there", "Hello there"),
    Case("functionary-v3.2-calls", "functionary-v3.2",
         'all\nLet me check.>>>get_weather\n{"location": "Paris"}>>>get_time\n{"tz": "CET"}',
         "Let me check.", calls=(call("get_weather", WEATHER), call("get_time", TIME))),
    Case("functionary-v3.2-python", "functionary-v3.2", "python\nprint(1)", calls=(call("python", '{"code":"print(1)"}'),)),
    # -- DeepSeek R1 / V3.1
    Case("deepseek-r1-call", "deepseek-r1",
         "<think>\nLet me think.\n</think>\n\n" + DS_BEGIN + DS_CALL.format(name="get_weather", args='{"location": '
         '"Paris"}') + DS_CALL.format(name="get_time", args='{"tz": "CET"}') + DS_END,
         "\n\n", "\nLet me think.\n", calls=(call("get_weather", WEATHER), call("get_time", TIME))),
    Case("deepseek-r1-forced-open", "deepseek-r1", "Okay, so the user...\n</think>\n\nThe answer is 4.",
         "\n\nThe answer is 4.", "\nOkay, so the user...\n",
         syntax={"thinking_forced_open": True, "forced_lead": "\n"}),
    Case("deepseek-v3.1-call", "deepseek-v3.1",
         "Need weather.</think>Sure." + DS_BEGIN + V31_CALL.format(name="get_weather", args='{"location": "Paris"}')
         + DS_END,
         "Sure.", "Need weather.", (call("get_weather", WEATHER),), syntax={"thinking_forced_open": True}),
    # -- Command R7B
    Case("command-r7b-call", "command-r7b",
         '<|START_THINKING|>I will call get_weather.<|END_THINKING|><|START_ACTION|>[\n    {"tool_call_id": "0", '
         '"tool_name": "get_weather", "parameters": {"location": "Paris"}},\n    {"tool_call_id": "1", "tool_name": '
         '"get_time", "parameters": {"tz": "CET"}}\n]<|END_ACTION|>',
         reasoning="I will call get_weather.", calls=(call("get_weather", WEATHER, "0"), call("get_time", TIME, "1"))),
    Case("command-r7b-response", "command-r7b",
         "<|START_THINKING|>Easy.<|END_THINKING|><|START_RESPONSE|>It is sunny.<|END_RESPONSE|>",
         "It is sunny.", "Easy."),
    # -- Granite 3.x
    Case("granite-think-response", "granite", "<think>Reasoning here.</think><response>Hello!</response>", "Hello!",
         "Reasoning here."),
    Case("granite-call", "granite", '<|tool_call|>[{"name": "get_weather", "arguments": {"location": "Paris"}}]',
         calls=(call("get_weather", WEATHER),)),
    # -- GPT-OSS (harmony)
    Case("gpt-oss-final", "gpt-oss",
         "<|channel|>analysis<|message|>User greets.<|end|><|start|>assistant<|channel|>final<|message|>Hi there!",
         "Hi there!", "User greets."),
    Case("gpt-oss-call", "gpt-oss",
         "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
         'to=functions.get_weather <|constrain|>json<|message|>{"location":"Paris"}',
         reasoning="Need weather.", calls=(call("get_weather", WEATHER),)),
    Case("gpt-oss-call-in-role", "gpt-oss",
         '<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{"tz": "CET"}',
         calls=(call("get_time", TIME),)),
    Case("gpt-oss-analysis-none", "gpt-oss",
         "<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final<|message|>Ok",
         "<|channel|>analysis<|message|>Hm.<|end|>Ok", syntax={"reasoning_format": "none"}),
    # -- Gemma 4
    Case("gemma4-call", "gemma4",
         '<|tool_call>call:get_weather{location:<|"|>Paris, "FR"<|"|>,days:3,opts:{metric:true,tags:[<|"|>a<|"|>]}}'
         "<tool_call|>",
         calls=(call("get_weather", '{"location":"Paris, \\"FR\\"","days":3,"opts":{"metric":true,"tags":["a"]}}'),)),
    Case("gemma4-thought", "gemma4", "<|channel>thought\nThinking...<channel|>The answer.", "The answer.", "Thinking..."),
    # -- Apriel 1.5 (arguments as a JSON string, <thinking>)
    Case("apriel-call", "apriel",
         '<thinking>Weather.</thinking>Checking.\n<tool_calls>[{"name": "get_weather", "arguments": '
         '"{\\"location\\": \\"Paris\\"}"}]</tool_calls>',
         "Checking.\n", "Weather.", (call("get_weather", '{"location": "Paris"}'),)),
    # -- Apriel 1.6: the prompt opened the turn with "Here are my reasoning steps:\n", which starts the reasoning
    Case("apriel-1.6-call", "apriel-1.6",
         'Weather.\n[BEGIN FINAL RESPONSE]\nChecking.\n<tool_calls>[{"name": "get_weather", "arguments": '
         '{"location": "Paris"}}]</tool_calls>',
         "Checking.\n", "Here are my reasoning steps:\nWeather.\n", (call("get_weather", WEATHER),),
         syntax={"thinking_forced_open": True, "forced_lead": "\nHere are my reasoning steps:\n",
                 "think_spacing": ("<|begin_assistant|>\n", "\n[BEGIN FINAL RESPONSE]\n")}),
    # -- Phi-4 mini
    Case("phi-4-call", "phi-4",
         'Calling.<|tool_call|>[{"name": "get_weather", "arguments": {"location": "Paris"}}]<|/tool_call|>',
         "Calling.", calls=(call("get_weather", WEATHER),)),
    # -- formats the pinned llama.cpp reads by template analysis: GLM 4.5-4.7 (and Ling, Laguna, Spark)
    Case("glm-call", "glm-4.5",
         "<think>Weather.</think>\n<tool_call>get_weather\n<arg_key>location</arg_key>\n<arg_value>Paris</arg_value>\n"
         "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>",
         "\n", "Weather.", calls=(call("get_weather", '{"location":"Paris","days":3}'),),
         syntax={"tool_parameters": QWEN_PARAMS}),
    Case("glm-compact-parallel", "glm-4.5",
         "Sure.<tool_call>get_weather<arg_key>location</arg_key><arg_value>Paris</arg_value></tool_call>"
         "<tool_call>get_time</tool_call>",
         "Sure.", calls=(call("get_weather", WEATHER), call("get_time", "{}"))),
    # -- FireFunction v2: " functools[" and a JSON array of calls
    Case("firefunction-v2-parallel", "firefunction-v2",
         'Checking. functools[{"name": "get_weather", "arguments": {"location": "Paris"}}, '
         '{"name": "get_time", "arguments": {"tz": "CET"}}]',
         "Checking. ", calls=(call("get_weather", WEATHER), call("get_time", TIME))),  # llama.cpp keeps the space
    # -- Ling 3.0: GLM's calls; the prompt opened the block, and a call may end it without </think>
    Case("ling3-call-ends-thinking", "ling3",
         "Weather.\n<tool_call>get_weather\n<arg_key>location</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
         "", "Weather.\n", calls=(call("get_weather", WEATHER),), syntax={"thinking_forced_open": True}),
    Case("ling3-none-unwraps", "ling3",
         "Hm.\n</think>\n\nOn it.<tool_call>get_weather\n<arg_key>location</arg_key>\n<arg_value>Paris</arg_value>\n"
         "</tool_call>", "Hm.\n\n\nOn it.", calls=(call("get_weather", WEATHER),),
         syntax={"reasoning_format": "none", "unwrap_block": True}),
    # -- MiniMax-M2
    Case("minimax-m2-call", "minimax-m2",
         '<think>Hm.</think>\n<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="location">Paris'
         '</parameter>\n<parameter name="days">3</parameter>\n</invoke>\n<invoke name="get_time">\n'
         '<parameter name="tz">CET</parameter>\n</invoke>\n</minimax:tool_call>',
         "\n", "Hm.", calls=(call("get_weather", '{"location":"Paris","days":3}'), call("get_time", TIME)),
         syntax={"tool_parameters": QWEN_PARAMS}),
    # -- DeepSeek V3.2 / V4 DSML: string="false" values are JSON where no schema says; llama.cpp's parser ends the
    # content before the "\n\n" that separates it from the calls
    Case("deepseek-dsml-call", "deepseek-dsml",
         'Checking.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="n" '
         'string="false">[1, 2]</｜DSML｜parameter>\n<｜DSML｜parameter name="s" string="true">3</｜DSML｜parameter>'
         '\n</｜DSML｜invoke>\n</｜DSML｜function_calls>',
         "Checking.", calls=(call("f", '{"n":[1,2],"s":"3"}'),)),  # the "\n\n" before the calls is theirs
    Case("deepseek-dsml-v4", "deepseek-dsml",
         '<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_time">\n<｜DSML｜parameter name="tz" string="true">CET'
         '</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>',
         calls=(call("get_time", TIME),)),
    # -- Kimi K2: the id is the template's functions.NAME:N
    Case("kimi-k2-parallel", "kimi-k2",
         "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
         '{"location": "Paris"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1'
         '<|tool_call_argument_begin|>{"tz": "CET"}<|tool_call_end|><|tool_calls_section_end|>',
         calls=(call("get_weather", WEATHER, "functions.get_weather:0"), call("get_time", TIME, "functions.get_time:1"))),
    # -- Seed-OSS (<seed:think>, Qwen3-Coder's XML parameters)
    Case("seed-oss-call", "seed-oss",
         "<seed:think>Weather.</seed:think>\n<seed:tool_call>\n<function=get_weather>\n<parameter=location>Paris"
         "</parameter>\n</function>\n</seed:tool_call>",
         reasoning="Weather.", calls=(call("get_weather", WEATHER),),
         syntax={"tool_parameters": QWEN_PARAMS, "think_spacing": ("<seed:think>", "</seed:think>\n")}),
    # -- MiniMax-M1: JSON objects one per line
    Case("minimax-m1-parallel", "minimax-m1",
         'Checking.\n<tool_calls>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n'
         '{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_calls>',
         "Checking.\n", calls=(call("get_weather", WEATHER), call("get_time", TIME))),
    # -- Nemotron Nano v2: a JSON array after a marker
    Case("nemotron-v2-call", "nemotron-v2",
         '<think>Hm.</think><TOOLCALL>[{"name": "get_time", "arguments": {"tz": "CET"}}]</TOOLCALL>',
         reasoning="Hm.", calls=(call("get_time", TIME),)),
    # -- Solar Open: the id is the model's
    Case("solar-open-parallel", "solar-open",
         "<|tool_calls|><|tool_call:begin|>abc123XYZ<|tool_call:name|>get_weather<|tool_call:args|>"
         '{"location": "Paris"}<|tool_call:end|><|tool_call:begin|>abc123XYW<|tool_call:name|>get_time'
         '<|tool_call:args|>{"tz": "CET"}<|tool_call:end|><|calls|>',
         calls=(call("get_weather", WEATHER, "abc123XYZ"), call("get_time", TIME, "abc123XYW"))),
    # -- MiniCPM 5: <function name=..><param name=..>
    Case("minicpm5-parallel", "minicpm5",
         '<function name="get_weather"><param name="location">Paris</param><param name="days">3</param></function>\n'
         '<function name="get_time"><param name="tz">CET</param></function>',
         calls=(call("get_weather", '{"location":"Paris","days":3}'), call("get_time", TIME)),
         syntax={"tool_parameters": QWEN_PARAMS}),
    # -- Hunyuan 3: GLM-style pairs with :opensource markers
    Case("hunyuan3-call", "hunyuan3",
         "<think:opensource>Hm.</think:opensource><tool_calls:opensource>\n<tool_call:opensource>get_weather"
         "<tool_sep:opensource>\n<arg_key:opensource>location</arg_key:opensource>\n<arg_value:opensource>Paris"
         "</arg_value:opensource>\n</tool_call:opensource>\n</tool_calls:opensource>",
         reasoning="Hm.", calls=(call("get_weather", WEATHER),), syntax={"tool_parameters": QWEN_PARAMS}),
    # -- LFM2: pythonic calls (Python or JSON literals), shown once the list closes
    Case("lfm2-parallel", "lfm2",
         "Sure.<|tool_call_start|>[get_weather(location='Paris', days=3), f(n=[1, -2.5], ok=true, x=None, "
         'd={"a": "b"})]<|tool_call_end|>',
         "Sure.", calls=(call("get_weather", '{"location":"Paris","days":3}'),
                         call("f", '{"n":[1,-2.5],"ok":true,"x":null,"d":{"a":"b"}}'))),
    # -- GigaChat 3 (a "function call" message) and 3.1 (<|function_call|>)
    Case("gigachat3-call", "gigachat3",
         'Checking.<|message_sep|>\n\nfunction call<|role_sep|>\n{"name": "get_weather", "arguments": '
         '{"location": "Paris"}}',
         "Checking.", calls=(call("get_weather", WEATHER),)),
    Case("gigachat3.1-call", "gigachat3.1", '<|function_call|>{"name": "get_time", "arguments": {"tz": "CET"}}',
         calls=(call("get_time", TIME),)),
    Case("gigachat3.1-leading-space", "gigachat3.1",  # its parser skips the whitespace a reply starts with
         ' \n Checking.<|function_call|>{"name": "get_time", "arguments": {"tz": "CET"}}', "Checking.",
         calls=(call("get_time", TIME),)),
    # -- Apertus: {"NAME": {arguments}} objects in a JSON array
    Case("apertus-parallel", "apertus",
         'Sure.<|tools_prefix|>[{"get_weather": {"location": "Paris"}}, {"get_time": {"tz": "CET"}}]<|tools_suffix|>',
         "Sure.", calls=(call("get_weather", WEATHER), call("get_time", TIME))),
    # -- Command R+: Action: and a fenced JSON list
    Case("command-r-plus-call", "command-r-plus",
         'Let me check.\nAction:\n```json\n[\n    {\n        "tool_name": "get_weather",\n        "parameters": '
         '{"location": "Paris"}\n    }\n]```',
         "Let me check.\n", calls=(call("get_weather", WEATHER),)),
    # -- Kimi K3: think, response and tools sections; the prompt opened the think section
    Case("kimi-k3-call", "kimi-k3",
         "Weather.<|close|>think<|sep|><|open|>response<|sep|>Checking.<|close|>response<|sep|><|open|>tools<|sep|>"
         '<|open|>call tool="get_weather" index="1"<|sep|><|open|>argument key="location" type="string"<|sep|>Paris'
         '<|close|>argument<|sep|><|open|>argument key="days" type="number"<|sep|>3<|close|>argument<|sep|>'
         "<|close|>call<|sep|><|close|>tools<|sep|><|close|>message<|sep|>",
         "Checking.", "Weather.", calls=(call("get_weather", '{"location":"Paris","days":3}'),),
         syntax={"tool_parameters": QWEN_PARAMS, "thinking_forced_open": True}),
    Case("kimi-k3-answer", "kimi-k3",
         "Hm.<|open|>response<|sep|>Hello.<|close|>response<|sep|><|close|>message<|sep|>", "Hello.", "Hm.",
         syntax={"thinking_forced_open": True}),
    # -- MiniMax-M3: elements named by their key after a namespace token, nested objects and arrays
    # a turn without reasoning starts with a bare </mm:think> (the template's "thinking disabled" prefix)
    Case("minimax-m3-bare-end", "minimax-m3",
         "</mm:think>On it.]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"get_weather\">"
         "]<]minimax[>[<location>Paris]<]minimax[>[</location>]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>",
         "On it.", calls=(call("get_weather", WEATHER),)),
    Case("minimax-m3-parallel", "minimax-m3",
         "<mm:think>Hm.</mm:think>On it.]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"get_weather\">"
         "]<]minimax[>[<location>Paris]<]minimax[>[</location>]<]minimax[>[<days>3]<]minimax[>[</days>"
         "]<]minimax[>[</invoke>\n]<]minimax[>[<invoke name=\"f\">]<]minimax[>[<opts>]<]minimax[>[<ids>"
         "]<]minimax[>[<item>1]<]minimax[>[</item>]<]minimax[>[<item>2]<]minimax[>[</item>]<]minimax[>[</ids>"
         "]<]minimax[>[<ok>true]<]minimax[>[</ok>]<]minimax[>[</opts>]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>",
         "On it.", "Hm.", calls=(call("get_weather", '{"location":"Paris","days":3}'),
                                  call("f", '{"opts":{"ids":[1,2],"ok":true}}')),
         syntax={"tool_parameters": QWEN_PARAMS}),
    # -- Muse Glimmer: to=self reasoning, to=user answer, to=TOOL calls in ATEM markup
    Case("muse-glimmer-call", "muse-glimmer",
         ' to=self<|message|>Weather.<|eom|><|start|>assistant to=get_weather<|message|><atem:function_calls>\n'
         '<atem:invoke name="get_weather">\n<atem:parameter name="location">Paris</atem:parameter>\n'
         '<atem:parameter name="days">3</atem:parameter>\n</atem:invoke>\n</atem:function_calls><|eom|>',
         reasoning="Weather.", calls=(call("get_weather", '{"location":"Paris","days":3}'),),
         syntax={"tool_parameters": QWEN_PARAMS}),
    Case("muse-glimmer-answer", "muse-glimmer",
         " to=self<|message|>Hm.<|eom|><|start|>assistant to=user<|message|>Hello.<|eot|>", "Hello.", "Hm."),
]  # fmt: skip

NATIVE_FORMATS = {c.format for c in CASES} - {"generic", "content-only"}


def test_every_native_format_has_cases() -> None:
    expected = {"hermes", "qwen3-coder", "llama3", "llama3-builtin", "mistral", "functionary-v3.1",
                "functionary-v3.2", "deepseek-r1", "deepseek-v3.1", "command-r7b", "granite", "gpt-oss", "gemma4",
                "phi-4", "apriel", "apriel-1.6", "glm-4.5", "minimax-m2", "deepseek-dsml", "kimi-k2", "seed-oss", "minimax-m1",
                "nemotron-v2", "solar-open", "minicpm5", "hunyuan3", "lfm2", "gigachat3", "gigachat3.1", "apertus",
                "command-r-plus", "kimi-k3", "minimax-m3", "muse-glimmer", "ling3", "firefunction-v2"}  # fmt: skip
    assert NATIVE_FORMATS == expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_whole(case: Case) -> None:
    assert parse_output(case.text, case.chat_syntax, partial=False) == case.expected
    for tc in case.calls:
        json.loads(tc.arguments)


# -- streaming ------------------------------------------------------------------------------------------------


class Client:
    """What an OpenAI client rebuilds from the deltas."""

    def __init__(self) -> None:
        self.content = ""
        self.reasoning = ""
        self.calls: list[dict[str, str]] = []

    def apply(self, deltas: list[dict[str, Any]]) -> None:
        for d in deltas:
            assert len(d) == 1, d
            self.content += d.get("content", "")
            self.reasoning += d.get("reasoning_content", "")
            for tc in d.get("tool_calls", ()):
                i = tc["index"]
                if "id" in tc:
                    assert tc["type"] == "function" and i <= len(self.calls)
                    if i == len(self.calls):
                        self.calls.append({"id": "", "name": "", "arguments": ""})
                    self.calls[i]["id"] = tc["id"]
                    self.calls[i]["name"] = tc["function"]["name"]
                self.calls[i]["arguments"] += tc["function"]["arguments"]

    def message(self) -> ParsedMessage:
        calls = tuple(ToolCallOut(c["name"], c["arguments"], c["id"]) for c in self.calls)
        return ParsedMessage(self.content, self.reasoning, calls)


def grows(prev: ParsedMessage, cur: ParsedMessage) -> bool:
    if not (cur.content.startswith(prev.content) and cur.reasoning_content.startswith(prev.reasoning_content)):
        return False
    if len(cur.tool_calls) < len(prev.tool_calls):
        return False
    return all(
        a.name == b.name and b.arguments.startswith(a.arguments) for a, b in zip(prev.tool_calls, cur.tool_calls)
    )


def stream(text: str, syntax: ChatSyntax, cuts: list[int]) -> ParsedMessage:
    client = Client()
    prev = ParsedMessage()
    for cut in cuts:
        cur = parse_output(text[:cut], syntax, partial=True)
        assert grows(prev, cur), (text[:cut], prev, cur)
        for tc in cur.tool_calls:
            assert tc.name and not tc.name.endswith(("<", "{")), tc  # never half a name
        client.apply(message_deltas(prev, cur))
        prev = cur
    final = parse_output(text, syntax, partial=False)
    assert grows(prev, final), (prev, final)
    client.apply(message_deltas(prev, final))
    assert client.message() == final
    return final


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_stream_every_prefix(case: Case) -> None:
    assert stream(case.text, case.chat_syntax, list(range(len(case.text) + 1))) == case.expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_stream_random_chunks(case: Case) -> None:
    for seed in range(40):
        rng = random.Random(seed)
        n = len(case.text)
        cuts = sorted(rng.sample(range(1, n), rng.randint(1, min(n - 1, 25)))) if n > 1 else []
        assert stream(case.text, case.chat_syntax, cuts) == case.expected


# -- cut-off and malformed outputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.calls], ids=lambda c: c.id)
def test_truncated_final_never_raises(case: Case) -> None:
    """A model stopped mid-call (token limit): every prefix parses as a final text without an exception, and a
    call cut inside its arguments is not reported as a call."""
    syntax = case.chat_syntax
    for cut in range(len(case.text)):
        msg = parse_output(case.text[:cut], syntax, partial=False)
        for tc in msg.tool_calls:
            json.loads(tc.arguments)  # only complete calls survive a final parse


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"location": }\n</tool_call>'),
        ("hermes", "<tool_call>\nnot json at all\n</tool_call>"),
        ("mistral", '[TOOL_CALLS][{"name": "x", "arguments": {"a": 1},]'),
        ("generic", '{"tool_call": {"name": "x", "arguments": {"a": 1}}} trailing'),
        ("generic", "plain text, not JSON"),
        ("llama3", '{"name": "f", "parameters": {"a": tru}}'),
        ("gemma4", '<|tool_call>call:f{a:<|"|>x<|"|>,}}}<tool_call|>'),
        ("gpt-oss", "no channels at all"),
    ],
)
def test_malformed_is_content(fmt: str, text: str) -> None:
    msg = parse_output(text, ChatSyntax(format=fmt), partial=False)
    assert msg.tool_calls == ()
    assert msg.content == text.strip() or msg.content == text


def test_hermes_malformed_keeps_thinking() -> None:
    msg = parse_output("<think>hm</think><tool_call>{bad</tool_call>", ChatSyntax(format="hermes"), partial=False)
    assert msg == ParsedMessage("<tool_call>{bad</tool_call>", "hm")


def test_generic_truncated_response_keeps_text() -> None:
    msg = parse_output('{"response": "Hello wor', ChatSyntax(format="generic"), partial=False)
    assert msg == ParsedMessage("Hello wor")


def test_unknown_format_is_content() -> None:
    assert parse_output("<think>a</think>b", ChatSyntax(format="no-such"), partial=False) == ParsedMessage("b", "a")


def test_reasoning_format_none_keeps_tags_everywhere() -> None:
    syntax = ChatSyntax(format="hermes", reasoning_format="none")
    text = '<think>x</think>y<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    assert parse_output(text, syntax, partial=False) == ParsedMessage("<think>x</think>y", "", (call("f", "{}"),))


def test_partial_marker_held_back() -> None:
    syntax = ChatSyntax(format="hermes")
    assert parse_output("Hello <tool_c", syntax, partial=True) == ParsedMessage("Hello ")
    assert parse_output("Hello <tool_c", syntax, partial=False) == ParsedMessage("Hello <tool_c")
    assert parse_output('<tool_call>{"name": "get_wea', syntax, partial=True) == ParsedMessage()
    partial = parse_output('<tool_call>{"name": "get_weather", "arguments": {"location": "Pa', syntax, partial=True)
    assert partial.tool_calls == (call("get_weather", '{"location":"Pa'),)


# -- deltas ----------------------------------------------------------------------------------------------------


def test_message_deltas_shapes() -> None:
    a = ParsedMessage("Hel", "th", (call("f", '{"a":'),))
    b = ParsedMessage("Hello", "think", (call("f", '{"a":1}'), call("g", "", "id9")))
    assert message_deltas(a, b) == [
        {"reasoning_content": "ink"},
        {"content": "lo"},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
        {"tool_calls": [{"index": 1, "id": "id9", "type": "function", "function": {"name": "g", "arguments": ""}}]},
    ]
    assert message_deltas(b, b) == []
    # a final fallback that is not an extension adds nothing instead of failing mid-stream
    assert message_deltas(b, ParsedMessage("other")) == []


# -- the JSON scanner --------------------------------------------------------------------------------------------

JSON_SAMPLES = [
    '{"a": [1, -2.5e-3, true, false, null, "x\\ty\\u00e9\\ud83d\\ude00"], "b": {"c": {}}, "d": []}',
    '  ["\\"quoted\\"", "\\\\", "/", "\\/"]',
    '{"emoji": "😀", "nested": [[[]]], "n": 0}',
]


@pytest.mark.parametrize("sample", JSON_SAMPLES)
def test_scan_json_prefixes_only_grow(sample: str) -> None:
    whole = scan_json(sample, final=True)
    assert whole.complete and json.loads(whole.text) == json.loads(sample)
    if "e-" not in sample:  # numbers keep their spelling; the rest is json.dumps' compact form
        assert whole.text == json.dumps(json.loads(sample), separators=(",", ":"))
    for cut in range(len(sample)):
        node = scan_json(sample[:cut])
        assert whole.text.startswith(node.text), (sample[:cut], node.text)


def test_generic_schema_shapes() -> None:
    functions = [
        {"name": "a", "description": "A", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        {"name": "b", "parameters": {"type": "object", "properties": {}}},
    ]
    schema = generic_schema(functions, parallel=False, required=False)
    call_a, call_b = schema["anyOf"][0]["properties"]["tool_call"]["anyOf"]
    assert call_a["properties"]["name"] == {"type": "string", "const": "a"}
    assert call_a["description"] == "A" and "description" not in call_b
    assert schema["anyOf"][1] == {
        "type": "object",
        "properties": {"response": {"type": "string"}},
        "required": ["response"],
    }
    required = generic_schema(functions[:1], parallel=True, required=True)
    items = required["properties"]["tool_calls"]["items"]
    assert required["required"] == ["tool_calls"] and items["required"] == ["id", "name", "arguments"]
    # bounded, unlike llama.cpp's: the grammar closes the array after a few calls and the id after 32 characters
    assert required["properties"]["tool_calls"]["minItems"] == 1
    assert required["properties"]["tool_calls"]["maxItems"] == PARALLEL_CALLS_MIN_CAP == 8
    assert items["properties"]["id"] == {"type": "string", "minLength": 4, "maxLength": CALL_ID_MAX_LENGTH}
    many = [{"name": f"f{i}", "parameters": {"type": "object"}} for i in range(12)]
    assert generic_schema(many, parallel=True, required=True)["properties"]["tool_calls"]["maxItems"] == 12
    assert max_parallel_calls(0) == max_parallel_calls(8) == 8 and max_parallel_calls(9) == 9


def test_generic_schema_validates_outputs() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    functions = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                                                         "required": ["location"]}}]  # fmt: skip
    schema = generic_schema(functions, parallel=False, required=False)
    for case in CASES:
        if case.format == "generic" and case.id in ("generic-response", "generic-call"):
            jsonschema.validate(json.loads(case.text), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool_call": {"name": "other", "arguments": {}}}, schema)


def test_forced_open_partial_is_reasoning() -> None:
    syntax = replace(ChatSyntax(format="deepseek-r1"), thinking_forced_open=True)
    assert parse_output("Still thinking", syntax, partial=True) == ParsedMessage("", "Still thinking")


def test_long_arguments_stream_fast() -> None:
    """Re-parsing the whole output on every token must stay cheap for long arguments (a file's content)."""
    import time

    code = "".join(f"line {i}: print('x' * {i})\\n" for i in range(1500))
    text = '<tool_call>\n{"name": "write_file", "arguments": {"path": "a.py", "content": "' + code + '"}}\n</tool_call>'
    syntax = ChatSyntax(format="hermes")
    started = time.perf_counter()
    final = stream(text, syntax, list(range(0, len(text), 64)))
    assert json.loads(final.tool_calls[0].arguments)["content"].count("\n") == 1500
    assert time.perf_counter() - started < 5, "streaming parse is too slow"


@pytest.mark.parametrize(
    "options",
    [{}, {"tool_choice": "required"}, {"parallel_tool_calls": True},
     {"tool_choice": {"type": "function", "function": {"name": "get_time"}}}],
)  # fmt: skip
def test_generic_schema_compiles_for_llguidance(options: dict[str, Any]) -> None:
    """The server compiles the plan's schema with llguidance, refusing keywords it does not implement."""
    import llguidance as llg

    from llamatwist.chat.toolcalls import plan_tools

    tools = [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
            "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
    ]  # fmt: skip
    schema = plan_tools("", tools, **options).json_schema
    grammar = llg.LLMatcher.grammar_from_json_schema(schema, overrides={"lenient": False})
    assert llg.LLMatcher.validate_grammar(grammar) == ""
