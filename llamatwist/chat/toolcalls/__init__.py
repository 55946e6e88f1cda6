"""Tool calls and reasoning in model output: format detection, prompting plans, parsers, stream deltas.

Pure Python; imports nothing from the rest of llamatwist except ``llamatwist.chat``. The API layer
(``llamatwist.api.openai.chat``) uses exactly this surface:

    plan = plan_tools(template_source, tools, tool_choice=..., parallel_tool_calls=..., ...)
    # plan.grammar / plan.json_schema -> constraint; plan.system_prompt -> prepended; plan.syntax -> parser
    msg = parse_output(text_so_far, plan.syntax, partial=True)     # re-parse on every stream step
    for delta in message_deltas(prev_msg, msg): ...                 # OpenAI chat.completion.chunk deltas
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatSyntax", "ParsedMessage", "ToolCallOut", "ToolPlan", "message_deltas", "parse_output", "plan_tools"]


@dataclass(frozen=True)
class ToolCallOut:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = ""  # the model's own id when the format has one; the API layer fills in the rest


@dataclass(frozen=True)
class ParsedMessage:
    content: str = ""
    reasoning_content: str = ""
    tool_calls: tuple[ToolCallOut, ...] = ()


@dataclass(frozen=True)
class ChatSyntax:
    """How to parse one response: the detected format plus the request's reasoning settings."""

    format: str = "content-only"
    reasoning_format: str = "auto"  # none | auto | deepseek | deepseek-legacy
    thinking_forced_open: bool = False  # the rendered prompt already opened the thinking block
    parse_tool_calls: bool = True


@dataclass(frozen=True)
class ToolPlan:
    """What the API layer needs to run one chat request with tools/reasoning."""

    syntax: ChatSyntax
    json_schema: Any = None  # constrain the whole output to this schema (generic format)
    grammar: str | None = None  # or to this llguidance (lark) grammar
    system_prompt: str = ""  # text to add to (or as) the system message, e.g. the generic format's instructions
    additional_stops: tuple[str, ...] = ()
    preserved_tokens: tuple[str, ...] = field(default=())


def plan_tools(template_source: str, tools: list[dict[str, Any]] | None, **options: Any) -> ToolPlan:
    raise NotImplementedError


def parse_output(text: str, syntax: ChatSyntax, *, partial: bool) -> ParsedMessage:
    raise NotImplementedError


def message_deltas(prev: ParsedMessage, cur: ParsedMessage) -> list[dict[str, Any]]:
    raise NotImplementedError
