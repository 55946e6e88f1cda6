"""Tool calls and reasoning in model output: format detection, prompting plans, parsers, stream deltas.

Pure Python; imports nothing from the rest of llamatwist except ``llamatwist.chat``. The API layer
(``llamatwist.api.openai.chat``) uses exactly this surface:

    plan = plan_tools(template_source, tools, tool_choice=..., parallel_tool_calls=..., ...)
    # plan.grammar / plan.json_schema -> constraint; plan.system_prompt -> prepended; plan.syntax -> parser
    # plan.forced_call -> forced_call_grammar(plan.forced_call, control_tokens) -> constraint (tool_choice
    # required or named, native formats)
    # plan.polyfill_history -> render polyfill_history(messages) instead of the messages
    msg = parse_output(text_so_far, plan.syntax, partial=True)     # re-parse on every stream step
    for delta in message_deltas(prev_msg, msg): ...                 # OpenAI chat.completion.chunk deltas

Formats (``ChatSyntax.format``; detection in ``formats.py``, llama.cpp's order): ``hermes`` (Hermes 2/3, Qwen
2.5/3, Granite 4), ``qwen3-coder`` (XML parameters; Qwen3-Coder, Qwen 3.5, Nemotron 3), ``llama3``,
``llama3-builtin``, ``mistral`` (Nemo JSON array, Small 3.2/Devstral ``[ARGS]``, Magistral ``[THINK]``),
``functionary-v3.1``, ``functionary-v3.2``, ``deepseek-r1``, ``deepseek-v3.1``, ``command-r7b``, ``granite``
(3.x), ``gpt-oss`` (harmony), ``gemma4``, ``phi-4``, ``apriel``; ``generic`` (JSON-constrained, any other template
with tools) and ``content-only`` (``<think>`` still split off).

Tool-call ids: ``ToolCallOut.id`` is the model's own id where the format has one (Mistral, Command-R,
generic parallel calls), else ``""``; the API layer assigns ids to the others.
"""

from __future__ import annotations

from .deltas import message_deltas
from .forced import ForcedCall, forced_call_grammar
from .generic import polyfill_history
from .model import ChatSyntax, ParsedMessage, ToolCallOut, ToolPlan
from .parse import parse_output
from .plan import plan_tools

__all__ = [
    "ChatSyntax",
    "ForcedCall",
    "ParsedMessage",
    "ToolCallOut",
    "ToolPlan",
    "forced_call_grammar",
    "message_deltas",
    "parse_output",
    "plan_tools",
    "polyfill_history",
]
