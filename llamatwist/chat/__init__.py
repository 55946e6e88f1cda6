"""Chat templates for the OpenAI chat endpoints: message parsing, Jinja and built-in templates, prompt building.

Pure Python + jinja2; nothing here imports the rest of llamatwist. Typical use::

    template = select_template(model.chat_template(), jinja=True, override=args.chat_template,
                               bos_token=bos_text, eos_token=eos_text)
    rendered = render_chat(template, body.get("messages"), tools=body.get("tools"),
                           add_generation_prompt=body.get("add_generation_prompt", True),
                           continue_final_message=body.get("continue_final_message"),
                           chat_template_kwargs={**server_kwargs, **body.get("chat_template_kwargs", {})},
                           add_bos=vocab_add_bos, add_eos=vocab_add_eos)
    tokens = tokenize(rendered.prompt, add_special=True, parse_special=True)

Errors are ``ChatError`` subclasses whose ``status`` is the HTTP status llama-server answers with.
"""

from __future__ import annotations

from .builtin import BUILTIN_NAMES, apply_builtin, detect_builtin, format_builtin_names
from .errors import ChatError, ChatInputError, TemplateError
from .messages import ChatMessage, ContentPart, Tool, ToolCall, parse_messages, parse_tools, template_roles
from .template import (
    CHATML_TEMPLATE_SRC,
    BuiltinTemplate,
    ChatTemplate,
    Continuation,
    RenderedChat,
    TemplateCaps,
    parse_continuation,
    render_chat,
    select_template,
    strip_bos,
    strip_eos,
    verify_template,
)

__all__ = [
    "BUILTIN_NAMES",
    "CHATML_TEMPLATE_SRC",
    "BuiltinTemplate",
    "ChatError",
    "ChatInputError",
    "ChatMessage",
    "ChatTemplate",
    "ContentPart",
    "Continuation",
    "RenderedChat",
    "TemplateCaps",
    "TemplateError",
    "Tool",
    "ToolCall",
    "apply_builtin",
    "detect_builtin",
    "format_builtin_names",
    "parse_continuation",
    "parse_messages",
    "parse_tools",
    "render_chat",
    "select_template",
    "strip_bos",
    "strip_eos",
    "template_roles",
    "verify_template",
]
