"""The data the tool-call package hands around (re-exported by the package)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatSyntax", "HandlerContinuation", "ParsedMessage", "ToolCallOut", "ToolPlan"]


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
class HandlerContinuation:
    """What llama.cpp's own handler for a format writes for a continued assistant message, after the generation
    prompt (cut before ``start`` where it opened the block): ``start``, the reasoning, ``end`` and the content."""

    start: str
    end: str
    bare_end: bool = False  # a message without reasoning gets only the end marker (DeepSeek V4's "</think>")
    keeps_reasoning: bool = True  # False: the reasoning is dropped (Functionary v3.2 writes "all\n" and the content)

    def write(self, reasoning: str, content: str | None) -> str:
        """The text for ``reasoning`` and ``content`` (None: the message goes on thinking)."""
        reasoning = reasoning if self.keeps_reasoning else ""
        start = "" if self.bare_end and not reasoning else self.start
        return start + reasoning + ("" if content is None else self.end + content)


@dataclass(frozen=True)
class ChatSyntax:
    """How to parse one response: the detected format plus the request's reasoning settings."""

    format: str = "content-only"
    reasoning_format: str = "auto"  # none | auto | deepseek | deepseek-legacy
    thinking_forced_open: bool = False  # the rendered prompt already opened the thinking block
    # ...or opened and closed it (thinking off: Qwen 3's "<think>\n\n</think>\n\n"); llama.cpp's template-
    # analysis parser then reads that block from the prompt and all of the reply as content
    thinking_closed: bool = False
    # the thinking markers with the whitespace the template writes after them (Qwen 3: "<think>\n" and
    # "\n</think>\n\n"), and what the generation prompt wrote after the marker of a block it opened (DeepSeek
    # R1: "\n"): how llama.cpp's template-analysis parser spaces reasoning and content (scan.Spacing)
    think_spacing: tuple[str, str] = ("", "")
    forced_lead: str = ""
    # reasoning_format "none" after a prompt that opened (or opened and closed) the block: llama-server parses
    # the prompt's block with the reply, so the content starts with it (DeepSeek R1's "<think>\n")
    content_lead: str = ""
    # ...or its hand-written parser reads the block the prompt opened as content, dropping its end marker
    # (Kimi K3, Ling 3)
    unwrap_block: bool = False
    # False: the template has none of its format's thinking markers, so a block the model writes is content, as
    # llama.cpp's parser for it finds no block to read (Qwen3-Coder, Qwen 2.5)
    reads_thinking: bool = True
    parse_tool_calls: bool = True
    # llama-server sets this for deepseek-legacy when streaming: the thinking block stays in content, tags included
    reasoning_in_content: bool = False
    # tool name -> its parameters schema, local $refs resolved once per request (plan.py), so that each property
    # stands alone; formats that write arguments as untyped text (Qwen3-Coder XML) type them by it
    tool_parameters: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ToolPlan:
    """What the API layer needs to run one chat request with tools/reasoning."""

    syntax: ChatSyntax
    json_schema: Any = None  # constrain the whole output to this schema (generic format)
    grammar: str | None = None  # or to this llguidance (lark) grammar
    # or, for a required call in a native format, to one call in its syntax (``forced.forced_call_grammar``,
    # rendered by the API layer, which knows the vocabulary's control tokens)
    forced_call: Any = None
    system_prompt: str = ""  # text to add to (or as) the system message, e.g. the generic format's instructions
    additional_stops: tuple[str, ...] = ()
    preserved_tokens: tuple[str, ...] = field(default=())
    # the format's thinking markers ("" when it has none): for --reasoning-budget and to see whether the
    # rendered prompt opened the block
    thinking_start_tag: str = ""
    thinking_end_tag: str = ""
    # the template renders no tool calls/results: pass the messages through ``polyfill_history`` first
    polyfill_history: bool = False
