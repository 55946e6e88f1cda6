"""``plan_tools``: pick the output format for a template and build what a request needs to use it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llamatwist.constrain.schema import resolve_refs

from .forced import FORCED_FAMILIES, ForcedCall
from .formats import FAMILIES, Family, detect_family
from .generic import generic_schema, generic_system_prompt
from .model import ChatSyntax, ToolPlan

__all__ = ["REASONING_FORMATS", "plan_tools"]

REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")


def _functions(tools: Sequence[Any] | None) -> list[dict[str, Any]]:
    """The ``function`` objects of OpenAI tools (dicts, or ``llamatwist.chat.Tool``s)."""
    out = []
    for tool in tools or ():
        if hasattr(tool, "to_json"):
            tool = tool.to_json()
        if (
            isinstance(tool, dict)
            and tool.get("type", "function") == "function"
            and isinstance(tool.get("function"), dict)
        ):
            out.append(tool["function"])
    return out


def _chosen(functions: list[dict[str, Any]], tool_choice: Any) -> tuple[list[dict[str, Any]], bool]:
    """The tools the model may call and whether it must call one."""
    if tool_choice is None or tool_choice == "auto":
        return functions, False
    if tool_choice == "none":
        return [], False
    if tool_choice == "required":
        return functions, True
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        picked = [f for f in functions if f.get("name") == name]
        if not picked:
            raise ValueError(f"tool_choice names a function that is not in tools: {name!r}")
        return picked, True
    raise ValueError(f"Invalid tool_choice: {tool_choice!r}")


def _thinking_tags(family: Family, template_source: str) -> tuple[str, str] | None:
    """The family's thinking markers, when this template uses them (Qwen 2.5 is Hermes but never thinks)."""
    return family.think if family.thinks_in(template_source) else None


@dataclass(frozen=True)
class _PromptBlock:
    """What the generation prompt wrote of the thinking block: ``after`` its last start marker (None: it opened
    none), and whether that includes the end marker. Open, the output starts inside the block (DeepSeek R1,
    Qwen3 with thinking on); closed, the template closed it itself (thinking off)."""

    start: str = ""
    after: str | None = None
    closed: bool = False

    @property
    def open(self) -> bool:
        return self.after is not None and not self.closed

    @property
    def text(self) -> str:
        """The block as the prompt wrote it, start marker included ("" where it opened none)."""
        return self.start + self.after if self.after is not None else ""


def _prompt_block(tags: tuple[str, str] | None, generation_prompt: str) -> _PromptBlock:
    i = generation_prompt.rfind(tags[0]) if tags is not None else -1
    if tags is None or i < 0:
        return _PromptBlock()
    after = generation_prompt[i + len(tags[0]):]
    return _PromptBlock(tags[0], after, tags[1] in after)


def plan_tools(
    template_source: str,
    tools: Sequence[Any] | None,
    *,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = False,
    reasoning_format: str = "auto",
    enable_thinking: bool = True,
    generation_prompt: str = "",
    stream: bool = False,
    json_schema: Any = None,
    think_spacing: tuple[str, str] | None = None,
    **_later: Any,
) -> ToolPlan:
    """Decide how one chat request prompts for and parses tool calls and reasoning.

    ``template_source``: the Jinja chat template the request renders with. ``tools``: the request's OpenAI
    ``tools`` (dicts or parsed ``Tool``s). ``tool_choice``: ``auto | none | required`` or
    ``{"type": "function", "function": {"name": ...}}`` (only that tool, and a call is required).
    ``generation_prompt``: the rendered prompt's tail (``RenderedChat.generation_prompt``), to see whether it
    opened a thinking block. ``stream``: with ``reasoning_format="deepseek-legacy"`` llama-server keeps the
    thinking block in the streamed content. ``json_schema``: a ``response_format`` schema; with tools it
    becomes the generic format's ``response`` schema, as in llama.cpp. ``think_spacing``: the template's
    thinking markers with the whitespace it writes around them (``chat.template.spaced_reasoning_tags``).

    Native formats (detected from the template like llama.cpp) are parsed as the model writes them and get no
    grammar; every other template with tools gets the generic format: ``json_schema`` constrains the reply
    and ``system_prompt`` (llama.cpp's instruction, after the tool list when the template does not show tools)
    goes into the system message; ``polyfill_history`` says the template cannot show earlier tool calls
    (see ``polyfill_history()``). Raises ``ValueError`` for a
    bad ``tool_choice`` or ``reasoning_format``; other keyword options are ignored (room to grow).
    """
    if reasoning_format not in REASONING_FORMATS:
        raise ValueError(f"Unknown reasoning format: {reasoning_format}")
    functions, required = _chosen(_functions(tools), tool_choice)
    family = detect_family(template_source)
    use_generic = bool(functions) and (family is None or (json_schema is not None and family.name != "generic"))
    if use_generic or family is None:
        family = FAMILIES["generic"] if use_generic else FAMILIES["content-only"]
    tags = _thinking_tags(family, template_source)
    block = _prompt_block(tags, generation_prompt)
    forced_open = reasoning_format != "none" and enable_thinking and block.open
    syntax = ChatSyntax(
        format=family.name,
        reasoning_format=reasoning_format,
        thinking_forced_open=forced_open,
        thinking_closed=block.closed,
        think_spacing=think_spacing or tags or ("", ""),
        forced_lead=(block.after or "") if forced_open else "",
        content_lead=block.text if reasoning_format == "none" and not family.none_unwraps else "",
        unwrap_block=reasoning_format == "none" and family.none_unwraps and block.open,
        reads_thinking=family.think is None or tags is not None,
        parse_tool_calls=bool(functions),
        reasoning_in_content=stream and reasoning_format == "deepseek-legacy",
        tool_parameters={f["name"]: resolve_refs(f.get("parameters") or {}) for f in functions if "name" in f},
    )
    if use_generic:
        schema = generic_schema(functions, parallel=parallel_tool_calls, required=required, response_schema=json_schema)
        return ToolPlan(
            syntax,
            json_schema=schema,
            system_prompt=generic_system_prompt(
                [{"type": "function", "function": f} for f in functions], template_source
            ),
            polyfill_history="tool_calls" not in template_source,
        )
    marks = family.think if family.think and syntax.reads_thinking else ("", "")
    forced = None
    if required and family.name in FORCED_FAMILIES:
        # llama-server constrains a required call to the template's syntax (a model would rather chat)
        forced = ForcedCall(family.name, tuple(functions), template_source)
    return ToolPlan(
        syntax,
        forced_call=forced,
        additional_stops=family.stops if functions else (),
        preserved_tokens=family.preserved if functions or family.think else (),
        thinking_start_tag=marks[0],
        thinking_end_tag=marks[1],
    )
