# -*- test-case-name: tests.test_openai -*-
"""The server's chat formatter: the model's (or the configured) chat template,
selected once when the model is ready, applied to each chat request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.params import optional
from llamatwist.chat import RenderedChat, render_chat, select_template, template_roles
from llamatwist.chat.template import AnyTemplate, ChatTemplate, TemplateCaps, TemplateError, spaced_reasoning_tags
from llamatwist.chat.toolcalls.formats import THINK, Family, detect_family
from llamatwist.chat.toolcalls.model import HandlerContinuation
from llamatwist.config import ServerConfig

__all__ = ["ChatFormatter", "ReasoningDefaults", "add_system_prompt", "build_formatter"]


def add_system_prompt(messages: Any, text: str) -> Any:
    """``messages`` with ``text`` appended to the first system message (blank line between), or a new one."""
    if not text or not isinstance(messages, list):
        return messages
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") == "system":
        content = first.get("content")
        if isinstance(content, str):
            merged: Any = f"{content}\n\n{text}" if content else text
        elif isinstance(content, list):
            merged = [*content, {"type": "text", "text": text}]
        else:
            merged = text
        return [{**first, "content": merged}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


@dataclass(frozen=True)
class ReasoningDefaults:
    """The server's reasoning flags: --reasoning-format, --reasoning-budget, --reasoning-budget-message."""

    format: str = "auto"
    budget: int = -1
    budget_message: str = ""


@dataclass(frozen=True)
class ChatFormatter:
    template: AnyTemplate
    prefill_assistant: bool
    add_bos: bool
    add_eos: bool
    cli_kwargs: dict[str, Any] = field(default_factory=dict)
    reasoning: ReasoningDefaults = field(default_factory=ReasoningDefaults)
    skip_parsing: bool = False  # --skip-chat-parsing: a reply is all content, whatever the template

    @property
    def source(self) -> str:
        return getattr(self.template, "source", "") or ""

    @property
    def is_jinja(self) -> bool:
        return bool(getattr(self.template, "is_jinja", False))

    @cached_property
    def caps(self) -> dict[str, bool]:
        """llama-server's /props ``chat_template_caps``: the Jinja template's, a built-in's source parsed as one."""
        template: Any = self.template
        if not isinstance(template, ChatTemplate) and self.source:
            try:
                template = ChatTemplate(self.source)
            except TemplateError:
                template = None
        return (template.caps if isinstance(template, ChatTemplate) else TemplateCaps()).as_map()

    @cached_property
    def family(self) -> Family | None:
        """The format family of the template's source (a built-in template's too)."""
        return detect_family(self.source)

    @property
    def _jinja_family(self) -> Family | None:
        return self.family if self.is_jinja else None

    @cached_property
    def may_think(self) -> bool:
        """The template has a thinking block, so replies are parsed for reasoning: ``<think>``, a template
        that reads enable_thinking (unless its format has no thinking markers: Apertus), or its format
        family's own markers (GPT-OSS's analysis channel, Seed-OSS's ``<seed:think>``, Mistral's ``[THINK]``)."""
        if "<think>" in self.source:
            return True
        family = self.family
        if family is not None and family.think is None:
            return False
        caps = getattr(self.template, "caps", None)
        if caps is not None and caps.reacts_to_enable_thinking:
            return True
        return bool(family is not None and family.thinks_without_tools and family.thinks_in(self.source))

    @cached_property
    def parses_plain(self) -> bool:
        """Replies are parsed even without tools or thinking: llama.cpp's own parser for the template's format
        skips a reply's leading whitespace (Qwen3-Coder, Devstral)."""
        family = self._jinja_family
        return family is not None and family.spacing.content_lstrip and family.handwritten(self.source)

    @cached_property
    def continuation(self) -> HandlerContinuation | None:
        """What llama.cpp's handler for this template's format writes for a continued message (GPT-OSS, Gemma 4,
        Kimi K2, LFM2, Qwen3-Coder, DeepSeek V4, ...), whatever the request's tools; None: the plan's markers."""
        family = self._jinja_family
        return family.continuation_in(self.source) if family is not None else None

    @cached_property
    def think_spacing(self) -> tuple[str, str] | None:
        """The thinking markers of the template's format with the whitespace the template writes around them,
        which llama.cpp's parser reads as part of them (None: the template has no Jinja source to show it)."""
        family = self._jinja_family
        think = family.think if family is not None else THINK
        if think is None or not isinstance(self.template, ChatTemplate):
            return None
        return spaced_reasoning_tags(self.template, think)

    def template_kwargs(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """--chat-template-kwargs (and -rea, --reasoning-effort) merged with the request's; request wins."""
        kwargs = body.get("chat_template_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise InvalidRequest("'chat_template_kwargs' must be an object")
        return {**self.cli_kwargs, **kwargs}

    def enable_thinking(self, body: Mapping[str, Any]) -> bool:
        """Whether the template is asked to think: a boolean enable_thinking kwarg, else on unless
        reasoning_effort is "none" (the same rule render_chat applies) or the template has no thinking block
        (llama-server's default is whether its parser found one)."""
        if body.get("reasoning_effort") == "none":
            return False
        value = self.template_kwargs(body).get("enable_thinking")
        return value if isinstance(value, bool) else self.may_think

    def render_chat(
        self,
        body: Mapping[str, Any],
        system_prompt: str = "",
        reasoning_tags: tuple[str, str] = ("", ""),
        messages: Any = None,
    ) -> RenderedChat:
        """The prompt for a chat request (a bad request is an InvalidRequest or a ChatError), with ``system_prompt``
        (e.g. tool-call instructions) added to the system message; ``reasoning_tags`` wrap a prefilled
        assistant message's reasoning_content; ``messages`` replace the request's (e.g. tool-call history
        rewritten for a template that shows none)."""
        add_generation_prompt = optional(body, "add_generation_prompt", True)
        kwargs = self.template_kwargs(body)
        if not isinstance(add_generation_prompt, bool):
            raise InvalidRequest("'add_generation_prompt' must be a boolean")
        return render_chat(
            self.template,
            add_system_prompt(body.get("messages") if messages is None else messages, system_prompt),
            add_generation_prompt=add_generation_prompt,
            prefill_assistant=self.prefill_assistant,
            continue_final_message=body.get("continue_final_message"),
            tools=body.get("tools"),
            tool_choice=body.get("tool_choice"),
            chat_template_kwargs=kwargs,
            reasoning_effort=body.get("reasoning_effort"),
            enable_thinking=self.may_think,
            add_bos=self.add_bos,
            add_eos=self.add_eos,
            reasoning_tags=reasoning_tags if all(reasoning_tags) else None,
            handler=self.continuation,
            roles=self.roles,
        )

    @cached_property
    def roles(self) -> frozenset[str]:
        """The message roles a request may use: the common ones and those the template names (issue 19)."""
        return template_roles(self.source)


def build_formatter(
    config: ServerConfig,
    gguf_template: str | None,
    template_file_text: str | None,
    bos_text: str,
    eos_text: str,
    add_bos: bool,
    add_eos: bool,
) -> ChatFormatter:
    """Raises llamatwist.chat.TemplateError for an unusable template (a start-up failure)."""
    template = select_template(
        gguf_template,
        jinja=config.jinja,
        override=config.chat_template,
        override_file_text=template_file_text,
        bos_token=bos_text,
        eos_token=eos_text,
    )
    return ChatFormatter(
        template=template,
        prefill_assistant=config.prefill_assistant,
        add_bos=add_bos,
        add_eos=add_eos,
        cli_kwargs={"preserve_reasoning": config.reasoning_preserve, **_reasoning_kwargs(config),
                    **config.chat_template_kwargs},
        reasoning=ReasoningDefaults(config.reasoning_format, config.reasoning_budget,
                                    config.reasoning_budget_message),
        skip_parsing=config.skip_chat_parsing,
    )


def _reasoning_kwargs(config: ServerConfig) -> dict[str, Any]:
    # -rea on|off and --reasoning-effort reach the template as kwargs, as llama-server's defaults
    out: dict[str, Any] = {}
    if config.reasoning != "auto":
        out["enable_thinking"] = config.reasoning == "on"
    if config.reasoning_effort is not None:
        out["reasoning_effort"] = config.reasoning_effort
    return out
