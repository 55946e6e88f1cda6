"""Tool calls and reasoning in model output: format detection, prompting plans, parsers, stream deltas.

Pure Python; imports nothing from the rest of llamatwist except ``llamatwist.chat``. The API layer
(``llamatwist.api.openai.chat``) uses exactly this surface:

    plan = plan_tools(template_source, tools, tool_choice=..., parallel_tool_calls=..., ...)
    # plan.grammar / plan.json_schema -> constraint; plan.system_prompt -> prepended; plan.syntax -> parser
    msg = parse_output(text_so_far, plan.syntax, partial=True)     # re-parse on every stream step
    for delta in message_deltas(prev_msg, msg): ...                 # OpenAI chat.completion.chunk deltas

Tool-call ids: ``ToolCallOut.id`` is the model's own id where the format has one (Mistral, Command-R,
generic parallel calls), else ``""``; the API layer assigns ids to the others.
"""

from __future__ import annotations

from .deltas import message_deltas
from .generic import polyfill_history
from .model import ChatSyntax, ParsedMessage, ToolCallOut, ToolPlan
from .parse import parse_output
from .plan import plan_tools

__all__ = [
    "ChatSyntax",
    "ParsedMessage",
    "ToolCallOut",
    "ToolPlan",
    "message_deltas",
    "parse_output",
    "plan_tools",
    "polyfill_history",
]
