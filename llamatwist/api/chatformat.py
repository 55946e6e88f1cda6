# -*- test-case-name: tests.test_openai -*-
"""The server's chat formatter: the model's (or the configured) chat template,
selected once when the model is ready, applied to each chat request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llamatwist.api.errors import ApiError
from llamatwist.chat import ChatError, render_chat, select_template
from llamatwist.chat.template import AnyTemplate
from llamatwist.config import ServerConfig

__all__ = ["ChatFormatter", "build_formatter", "chat_api_error"]


def chat_api_error(err: ChatError) -> ApiError:
    api = ApiError(err.message)
    api.code = err.status
    api.type = err.error_type
    return api


@dataclass(frozen=True)
class ChatFormatter:
    template: AnyTemplate
    prefill_assistant: bool
    add_bos: bool
    add_eos: bool
    cli_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return getattr(self.template, "source", "") or ""

    def render(self, body: Mapping[str, Any]) -> str:
        """The prompt for a chat request; a bad request or template is an ApiError."""
        kwargs = body.get("chat_template_kwargs") or {}
        add_generation_prompt = body.get("add_generation_prompt", True)
        try:
            if not isinstance(kwargs, dict):
                raise ApiError("'chat_template_kwargs' must be an object")
            if not isinstance(add_generation_prompt, bool):
                raise ApiError("'add_generation_prompt' must be a boolean")
            rendered = render_chat(
                self.template,
                body.get("messages"),
                add_generation_prompt=add_generation_prompt,
                prefill_assistant=self.prefill_assistant,
                continue_final_message=body.get("continue_final_message"),
                tools=body.get("tools"),
                tool_choice=body.get("tool_choice"),
                chat_template_kwargs={**self.cli_kwargs, **kwargs},
                reasoning_effort=body.get("reasoning_effort"),
                add_bos=self.add_bos,
                add_eos=self.add_eos,
            )
        except ChatError as err:
            raise chat_api_error(err) from None
        except ApiError as err:
            err.code, err.type = 400, "invalid_request_error"
            raise
        return rendered.prompt


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
        cli_kwargs={"preserve_reasoning": True, **config.chat_template_kwargs},
    )
