"""Chat templates: Jinja (model/CLI-provided) and built-in, selected and applied the way llama-server does.

Reference behaviour (llama.cpp, pinned in third_party/): ``common/chat.cpp`` (``common_chat_templates_init``,
``common_chat_templates_apply_jinja``/``_legacy``, ``common_chat_template_direct_apply_impl``),
``common/jinja/`` (the Jinja dialect: globals, filters, lenient undefined), ``tools/server/server-common.cpp``
(``oaicompat_chat_params_parse``: prefill, continuation, kwargs) and ``common/arg.cpp`` (``--chat-template``
verification).

Rules the HTTP layer must follow (see ``render_chat``):

* Tokenize ``RenderedChat.prompt`` with ``add_special=True, parse_special=True``.
* BOS is never doubled: pass the vocab's ``add_bos``/``add_eos`` flags to ``render_chat``; when ``add_bos`` is
  set and a Jinja template's output starts with the BOS token text, that text is removed (the tokenizer adds the
  real BOS), and likewise a trailing EOS text when ``add_eos`` is set. See ``strip_bos``.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser

from .builtin import BUILTIN_NAMES, apply_builtin, detect_builtin
from .errors import ChatInputError, TemplateError
from .messages import ChatMessage, Tool, parse_messages, parse_tools
from .sandbox import ENV, describe_render_error, traced
from .toolcalls.formats import detect_family
from .toolcalls.model import HandlerContinuation
from .workarounds import marker_patches

__all__ = [
    "CHATML_TEMPLATE_SRC",
    "BuiltinTemplate",
    "ChatTemplate",
    "Continuation",
    "RenderedChat",
    "TemplateCaps",
    "parse_continuation",
    "render_chat",
    "select_template",
    "strip_bos",
    "strip_eos",
    "template_messages",
    "verify_template",
]

#: llama.cpp's fallback when the model has no template (CHATML_TEMPLATE_SRC in common/chat.cpp, verbatim: the
#: ``\n`` inside the Jinja string literals are real newlines).
CHATML_TEMPLATE_SRC = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\n' -}}\n"
    "{%- endif -%}"
)

# Template source patches llama.cpp applies before compiling (common_chat_templates_init): both remove checks
# that reject valid conversations.
_SOURCE_PATCHES: tuple[tuple[str, str, str], ...] = (
    (
        "<|channel|>",  # gpt-oss
        (
            '{%- if "<|channel|>analysis<|message|>" in message.content or '
            '"<|channel|>final<|message|>" in message.content %}'
        ),
        "{%- if false %}",
    ),
    (
        "[TOOL_CALLS]",  # Mistral
        (
            "{%- if (message['content'] is none or message['content'] == '' or "
            "message['content']|length == 0) and (message['tool_calls'] is not defined or "
            "message['tool_calls'] is none or message['tool_calls']|length == 0) %}"
        ),
        "{%- if false %}",
    ),
)

_NO_JINJA_NOTE = "\nnote: llama.cpp was started without --jinja, we only support commonly used templates"


# --- BOS / EOS ---------------------------------------------------------------------------------------------


def strip_bos(text: str, bos_token: str) -> tuple[str, bool]:
    """Remove a leading ``bos_token`` text; return ``(text, had_bos)``.

    llama-server's rule (``common_chat_template_direct_apply_impl``): many templates start with
    ``{{ bos_token }}``, and the prompt is later tokenized with ``add_special=true, parse_special=true``, so the
    tokenizer would add a BOS *and* parse the template's BOS text into a second one. When the vocab's
    ``add_bos`` flag (``llama_vocab_get_add_bos``) is set, the BOS text at the very start of the rendered Jinja
    output is therefore cut off, once. Nothing else is touched: a BOS text elsewhere stays, and with
    ``add_bos`` false the template's BOS text is the only BOS. Built-in (non-Jinja) templates never get this
    treatment (they do not emit a leading BOS). An empty ``bos_token`` strips nothing.
    """
    if bos_token and text.startswith(bos_token):
        return text[len(bos_token) :], True
    return text, False


def strip_eos(text: str, eos_token: str) -> tuple[str, bool]:
    """Remove a trailing ``eos_token`` text (applied when the vocab's ``add_eos`` flag is set); see ``strip_bos``."""
    if eos_token and text.endswith(eos_token):
        return text[: -len(eos_token)], True
    return text, False


# --- capabilities ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateCaps:
    """What a Jinja template handles, found by rendering probe conversations (llama.cpp ``jinja::caps``).

    llama.cpp watches which input values the template touches; Python's Jinja cannot, so each probe checks
    whether a marker in the input reaches the output instead. The caps drive the same input rewrites as
    llama.cpp: array content is joined with "\\n" for string-only templates and strings are wrapped as a text
    part for typed-only ones; a system message is merged into the next message when the system role is not
    supported; tool-call arguments are passed as objects when the template renders objects.
    """

    supports_string_content: bool = True
    supports_typed_content: bool = False
    supports_system_role: bool = True
    supports_object_arguments: bool = False
    reacts_to_enable_thinking: bool = False
    supports_tools: bool = True
    supports_tool_calls: bool = True
    supports_parallel_tool_calls: bool = True
    supports_preserve_reasoning: bool = False  # reasoning_content deeper in the history is kept
    supports_reasoning_effort: bool = False

    def as_map(self) -> dict[str, bool]:
        """llama-server's /props ``chat_template_caps``."""
        return {name: getattr(self, name) for name in sorted(_LLAMA_CAPS)}


_LLAMA_CAPS = ("supports_object_arguments", "supports_parallel_tool_calls", "supports_preserve_reasoning",
               "supports_reasoning_effort", "supports_string_content", "supports_system_role", "supports_tool_calls",
               "supports_tools", "supports_typed_content")
_STRING_MARKER = "STRING_MARKER_c4f1"
_LIST_USES = frozenset({"array_access", "selectattr"})  # what llama.cpp counts as using the content as parts
_SYSTEM_MARKER = "SYSTEM_MARKER_c4f1"
_ARG_MARKER = "ARG_MARKER_c4f1"
_TOOL_MARKER = "TOOL_MARKER_c4f1"  # the offered tool's name
_CALL_MARKERS = ("CALL_MARKER_c4f1", "CALL2_MARKER_c4f1")  # the names of the history's tool calls
_REASONING_MARKER = "REASONING_MARKER_c4f1"


_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": _TOOL_MARKER,
        "description": "Tool description",
        "parameters": {
            "type": "object",
            "properties": {"arg": {"type": "string", "description": "Arg description"}},
            "required": ["arg"],
        },
    },
}


def _tool_conversation(n_calls: int, arguments: Any) -> list[dict[str, Any]]:
    """llama.cpp's tool probes: a turn with ``n_calls`` calls (each named by its marker), a tool reply, a reply."""
    calls = [{"id": f"call0000{i + 1}", "type": "function",
              "function": {"name": _CALL_MARKERS[i], "arguments": copy.deepcopy(arguments)}} for i in range(n_calls)]
    return [
        {"role": "user", "content": "User message"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": "Tool response", "tool_call_id": "call00001"},
        {"role": "assistant", "content": "The tool response was 'tool response'"},
        {"role": "user", "content": "User message"},
    ]


# --- templates ---------------------------------------------------------------------------------------------


class ChatTemplate:
    """A Jinja chat template, compiled once, rendered in the sandbox with llama.cpp's variables and helpers.

    Globals/filters: ``raise_exception``, ``strftime_now(fmt)`` (local time), ``tojson`` (``ensure_ascii``,
    ``indent``, ``separators``, ``sort_keys``), ``namespace``, ``{% break %}``/``{% continue %}``,
    ``{% generation %}``, plus Jinja's own. ``trim_blocks``/``lstrip_blocks`` are on (what HF templates are
    written for, and llama.cpp's lexer defaults).
    """

    is_jinja = True
    name: str | None = None

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        for marker, needle, replacement in _SOURCE_PATCHES:
            if marker in source and needle in source:
                source = source.replace(needle, replacement)
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"chat template parsing error: {exc.message} (template line {exc.lineno})", status=500
            ) from None
        except Exception as exc:  # noqa: BLE001  # anything else the compiler throws is a bad template too
            raise TemplateError(f"chat template parsing error: {type(exc).__name__}: {exc}", status=500) from None

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
        enable_thinking: bool | None = None,
        now: datetime | None = None,
    ) -> str:
        """Render ``messages`` (already in template shape) as-is; raise ``TemplateError`` on any template error.

        Context, as llama.cpp builds it: ``messages``, ``bos_token``, ``eos_token``, ``enable_thinking`` (when
        given), ``tools`` (only when a non-empty list is given: otherwise *undefined*, as in llama.cpp, so
        ``tools is defined`` is false), then every ``extra`` key (chat_template_kwargs etc.; they override the
        above), then ``add_generation_prompt = true`` only when requested (undefined otherwise). ``now`` fixes
        the clock of ``strftime_now``. Nothing is stripped here; ``render_chat`` applies the BOS/EOS rule.
        """
        # Deep copies: templates may append/pop on lists, and render_chat renders the same inputs twice.
        context: dict[str, Any] = {
            "messages": copy.deepcopy([dict(m) for m in messages]),
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if enable_thinking is not None:
            context["enable_thinking"] = enable_thinking
        if tools:
            context["tools"] = copy.deepcopy(list(tools))
        if extra:
            context.update(copy.deepcopy(dict(extra)))
        if add_generation_prompt:
            context["add_generation_prompt"] = True
        _apply_reasoning_aliases(context)
        if now is not None:
            fixed = now
            context["strftime_now"] = lambda fmt: fixed.strftime(str(fmt))
        try:
            return self._template.render(context)
        except Exception as exc:  # noqa: BLE001  # every template failure becomes one TemplateError
            raise TemplateError(describe_render_error(exc)) from None

    def _probe(
        self, messages: list[dict[str, Any]], *, tools: list[Any] | None = None, enable_thinking: bool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str | None:
        # Like llama.cpp's probes: empty BOS/EOS texts and a defined (by default empty) tools list.
        context = {"tools": tools or [], "bos_token": "", "eos_token": "", **(extra or {})}
        try:
            return self.render(messages, extra=context, enable_thinking=enable_thinking)
        except TemplateError:
            return None

    def _content_caps(self) -> tuple[bool, bool]:
        """Whether message content may be a string and may be typed parts, as llama.cpp decides it: typed when
        the template loops over the content, indexes it or filters it with ``selectattr`` (given a string, or
        an empty list after testing ``is string``); not a string when a string fails, or is used as a list
        and not printed."""
        ops: set[str] = set()
        out = self._probe([{"role": "user", "content": traced(_STRING_MARKER, ops)}])
        typed = bool(ops & _LIST_USES)
        string = out is not None and not (typed and _STRING_MARKER not in out)
        if not typed and "test_is_string" in ops:
            ops = set()
            typed = self._probe([{"role": "user", "content": traced([], ops)}]) is not None and bool(ops & _LIST_USES)
        return string, typed

    @cached_property
    def caps(self) -> TemplateCaps:
        """The template's capabilities (probed once, on first use)."""
        string, typed = self._content_caps()
        system_out = self._probe(
            [{"role": "system", "content": _SYSTEM_MARKER}, {"role": "user", "content": "User message"}]
        )
        object_out = self._probe(_tool_conversation(1, {"arg": _ARG_MARKER}), tools=[_PROBE_TOOL])
        # arguments printed as a Python dict (str() of the object) are not rendered as objects
        object_args = object_out is not None and _ARG_MARKER in object_out and str({"arg": _ARG_MARKER}) not in object_out
        tool_out = object_out if object_args else self._probe(
            _tool_conversation(1, json.dumps({"arg": _ARG_MARKER})), tools=[_PROBE_TOOL])
        args: Any = {"arg": "value"} if object_args else json.dumps({"arg": "value"})
        parallel_out = self._probe(_tool_conversation(2, args), tools=[_PROBE_TOOL])
        thinking_on = self._probe([{"role": "user", "content": "test"}], enable_thinking=True)
        thinking_off = self._probe([{"role": "user", "content": "test"}], enable_thinking=False)
        history = [{"role": "user", "content": "User message"},
                   {"role": "assistant", "content": "Assistant message", "reasoning_content": _REASONING_MARKER},
                   {"role": "user", "content": "User message"},
                   {"role": "assistant", "content": "Assistant message", "reasoning_content": "Reasoning content"},
                   {"role": "user", "content": "User message"}]
        preserved = self._probe(history, enable_thinking=True, extra={"preserve_reasoning": True})
        # llama.cpp sees whether the template reads reasoning_effort; here: whether any level changes the output
        efforts = [self._probe([{"role": "user", "content": "User message"}], enable_thinking=True,
                               extra={"reasoning_effort": effort}) for effort in ("low", "high", "max", "none")]
        return TemplateCaps(
            supports_string_content=string,
            supports_typed_content=typed,
            supports_system_role=system_out is not None and _SYSTEM_MARKER in system_out,
            supports_object_arguments=object_args,
            reacts_to_enable_thinking=None not in (thinking_on, thinking_off) and thinking_on != thinking_off,
            supports_tools=tool_out is not None and _TOOL_MARKER in tool_out,
            supports_tool_calls=tool_out is not None and _CALL_MARKERS[0] in tool_out,
            supports_parallel_tool_calls=parallel_out is not None and _CALL_MARKERS[1] in parallel_out,
            supports_preserve_reasoning=preserved is not None and _REASONING_MARKER in preserved,
            supports_reasoning_effort=len({out for out in efforts if out is not None}) > 1,
        )

    def __repr__(self) -> str:
        return f"ChatTemplate({self.source[:40]!r}...)"


class BuiltinTemplate:
    """One of llama.cpp's built-in formatters (``--no-jinja``, or a built-in name given to ``--chat-template``).

    ``name`` is ``None`` when ``--no-jinja`` meets a template no heuristic recognises: llama-server starts anyway
    and fails each chat request with "this custom template is not supported, try using --jinja" (500).
    """

    is_jinja = False

    def __init__(self, name: str | None, *, source: str = "", bos_token: str = "", eos_token: str = "") -> None:
        self.name = name
        self.source = source or (name or "")
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
        enable_thinking: bool | None = None,
        now: datetime | None = None,
    ) -> str:
        """Format ``{"role", "content"}`` dicts (string content); the other arguments are accepted and ignored."""
        if self.name is None:
            raise TemplateError("this custom template is not supported, try using --jinja", status=500)
        chat = [(str(m.get("role", "")), _legacy_content(m.get("content"))) for m in messages]
        return apply_builtin(self.name, chat, add_generation_prompt)

    def __repr__(self) -> str:
        return f"BuiltinTemplate({self.name!r})"


def _legacy_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        text = ""
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                if text:
                    text += "\n"
                text += str(part.get("text", ""))
        return text
    return ""


AnyTemplate = ChatTemplate | BuiltinTemplate


def _apply_reasoning_aliases(context: dict[str, Any]) -> None:
    # llama.cpp (caps_apply_preserve_reasoning / caps_apply_reasoning_effort) also passes these kwargs under the
    # names various templates read; explicitly given variables win.
    preserve = context.get("preserve_reasoning")
    if isinstance(preserve, bool):
        context.setdefault("preserve_thinking", preserve)
        for name in ("clear_thinking", "truncate_history_thinking", "drop_thinking"):
            context.setdefault(name, not preserve)
    effort = context.get("reasoning_effort")
    if isinstance(effort, str) and effort:
        context.setdefault("reasoning_strength", effort)


# --- selection ---------------------------------------------------------------------------------------------


def verify_template(template: str, *, jinja: bool) -> bool:
    """Whether llama-server accepts ``template`` as a ``--chat-template`` value (``common_chat_verify_template``):
    with Jinja, it compiles and renders one user message "test"; without, a built-in family is recognised."""
    if not jinja:
        return detect_builtin(template) is not None
    try:
        source = CHATML_TEMPLATE_SRC if template in ("", "chatml") else template
        ChatTemplate(source).render([{"role": "user", "content": "test"}], add_generation_prompt=True)
    except TemplateError:
        return False
    return True


def select_template(
    gguf_template: str | None,
    *,
    jinja: bool = True,
    override: str | None = None,
    override_file_text: str | None = None,
    bos_token: str = "",
    eos_token: str = "",
) -> AnyTemplate:
    """Pick the chat template the way llama-server does at start-up.

    * ``override`` (``--chat-template``) or ``override_file_text`` (the contents of ``--chat-template-file``;
      llama-server keeps whichever flag came last, so pass only that one — the file wins if both are given)
      replaces the model's template. It is verified first (``verify_template``); failure raises
      ``TemplateError("error: the supplied chat template is not supported: ...")`` — a start-up error.
    * otherwise the GGUF ``tokenizer.chat_template``; none (or ``"chatml"``) falls back to chatml.
    * ``jinja=True`` (default, llama-server's ``--jinja``): a Jinja source becomes a ``ChatTemplate`` (compile
      errors raise ``TemplateError("chat template parsing error: ...")``). A built-in *name* given as override
      selects that ``BuiltinTemplate``. (Deliberate divergence: llama-server would compile the bare name as a
      one-line Jinja template and send the model the word itself; "chatml" maps to the chatml Jinja source, as
      upstream.)
    * ``jinja=False`` (``--no-jinja``): only built-in formats; the name or template text is mapped to a family
      by ``detect_builtin``. An unrecognised model template still loads (see ``BuiltinTemplate``).

    ``bos_token``/``eos_token`` are the vocab's BOS/EOS token texts (``""`` when the vocab has none).
    """
    chosen = override_file_text if override_file_text is not None else override
    if chosen:
        if not verify_template(chosen, jinja=jinja):
            note = "" if jinja else _NO_JINJA_NOTE
            raise TemplateError(f"error: the supplied chat template is not supported: {chosen}{note}", status=500)
        if jinja and chosen != "chatml" and chosen in BUILTIN_NAMES:
            return BuiltinTemplate(chosen, bos_token=bos_token, eos_token=eos_token)
        source = chosen
    else:
        source = gguf_template or ""
    if source in ("", "chatml"):
        source = CHATML_TEMPLATE_SRC
    if jinja:
        return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token)
    return BuiltinTemplate(detect_builtin(source), source=source, bos_token=bos_token, eos_token=eos_token)


# --- rendering a request -----------------------------------------------------------------------------------


class Continuation:
    """Values of ``continue_final_message`` (llama.cpp ``common_chat_continuation``)."""

    NONE = "none"
    AUTO = "auto"
    REASONING = "reasoning_content"
    CONTENT = "content"


def parse_continuation(value: Any) -> str:
    """``continue_final_message`` from the request: ``true`` → auto, ``"content"``/``"reasoning_content"``,
    anything else (``false``, null, other strings) → none."""
    if value is True:
        return Continuation.AUTO
    if value in (Continuation.REASONING, Continuation.CONTENT):
        return str(value)
    return Continuation.NONE


@dataclass(frozen=True)
class RenderedChat:
    """The prompt for a chat request.

    ``prefilled``: the final message was continued (assistant prefill or ``continue_final_message``), so the
    model writes the rest of it. ``generation_prompt``: the text the template adds for a new assistant turn
    (what follows the conversation in the prompt when ``add_generation_prompt`` is on), useful for parsing the
    reply; ``""`` when the template adds none.
    """

    prompt: str
    prefilled: bool
    generation_prompt: str


def _generation_suffix(without: str, with_: str) -> str:
    # What the generation prompt adds: with_ past its common prefix with without (llama.cpp's definition).
    n = 0
    limit = min(len(without), len(with_))
    while n < limit and without[n] == with_[n]:
        n += 1
    return with_[n:]


_PROBE_REASONING = "REASON_PART I am thinking END_R"
_PROBE_CONTENT = "A_ASST_MSG I can help END_A"


@functools.lru_cache(maxsize=64)
def spaced_reasoning_tags(template: ChatTemplate, tags: tuple[str, str]) -> tuple[str, str]:
    """``tags`` with the whitespace the template writes around an assistant turn's reasoning (Qwen 3:
    ``"<think>\n"`` and ``"\n</think>\n\n"``) and what it writes between the end and the answer, as
    llama.cpp's template analysis finds its markers (with its patches for some templates); the bare tags where
    the template does not show that reasoning."""
    return marker_patches(template.source, _template_spacing(template, tags))


def _template_spacing(template: ChatTemplate, tags: tuple[str, str]) -> tuple[str, str]:
    start, end = tags
    probe = parse_messages([{"role": "user", "content": "U_USER_MSG Hello END_U"},
                            {"role": "assistant", "content": _PROBE_CONTENT, "reasoning_content": _PROBE_REASONING}])
    try:
        text = template.render(template_messages(template, probe), add_generation_prompt=False,
                               tools=[], extra={}, enable_thinking=True, now=datetime.now())
    except TemplateError:
        return tags
    i = text.find(_PROBE_REASONING)
    j = text.find(_PROBE_CONTENT, i + len(_PROBE_REASONING)) if i >= 0 else -1
    s = text.rfind(start, 0, i) if j >= 0 else -1
    if s < 0:
        return _closed_block_spacing(template, tags, probe[:1])
    spaced_start, spaced_end = text[s:i], text[i + len(_PROBE_REASONING):j]
    # the end may run on to what opens the answer (Kimi K3's response section, Muse Glimmer's next message)
    if spaced_start.strip() != start.strip() or not spaced_end.strip().startswith(end.strip()):
        return tags
    return spaced_start, spaced_end


def _closed_block_spacing(template: ChatTemplate, tags: tuple[str, str], probe: list[ChatMessage]) -> tuple[str, str]:
    """A template whose history shows no reasoning but whose generation prompt opens the block, and closes it when
    thinking is off: the end marker as that prompt writes it (RWKV-World's "<think>" and "<think>\n</think>"),
    as llama.cpp's analysis reads it."""
    start, end = tags
    try:
        on, off = (template.render(template_messages(template, probe), add_generation_prompt=True,
                                   tools=[], extra={}, enable_thinking=thinking, now=datetime.now())
                   for thinking in (True, False))
    except TemplateError:
        return tags
    closing = off[len(on):] if off.startswith(on) and on.endswith(start) else ""
    return (start, closing) if closing.strip() == end else tags


def template_messages(template: ChatTemplate, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as llama.cpp hands them to a Jinja template, with its input workarounds applied."""
    caps = template.caps
    out = [m.to_template_json() for m in messages]
    only_string = caps.supports_string_content and not caps.supports_typed_content
    only_typed = caps.supports_typed_content and not caps.supports_string_content
    for msg, parsed in zip(out, messages):
        if only_string and isinstance(msg["content"], list):
            msg["content"] = parsed.legacy_text()  # parts "\n"-joined
        elif only_typed and isinstance(msg["content"], str):
            msg["content"] = [{"type": "text", "text": msg["content"]}]
    if "<|channel|>" not in template.source:  # gpt-oss knows "developer"; every other template gets "system"
        for msg in out:
            if msg["role"] == "developer":
                msg["role"] = "system"
    if not caps.supports_system_role and out and out[0]["role"] == "system":
        first = out.pop(0)
        if out:
            if not isinstance(first["content"], str) or not isinstance(out[0]["content"], str):
                raise TemplateError("[json.exception.type_error.302] type must be string, but is array")
            out[0]["content"] = first["content"] + "\n" + out[0]["content"]
    if caps.supports_object_arguments:
        for msg in out:
            for call in msg.get("tool_calls", ()):
                args = call["function"]["arguments"]
                if isinstance(args, str):
                    try:
                        call["function"]["arguments"] = json.loads(args)
                    except ValueError as exc:
                        raise TemplateError(f"Failed to parse tool call arguments as JSON: {exc}") from None
    family = detect_family(template.source)
    if family is not None and family.adapt_messages is not None:
        out = family.adapt_messages(template.source, out)
    return out


def render_chat(
    template: AnyTemplate,
    messages: Any,
    *,
    add_generation_prompt: bool = True,
    prefill_assistant: bool = True,
    continue_final_message: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    enable_thinking: bool = True,
    reasoning_effort: str | None = None,
    add_bos: bool = False,
    add_eos: bool = False,
    reasoning_tags: tuple[str, str] | None = None,
    handler: HandlerContinuation | None = None,
    now: datetime | None = None,
    roles: Collection[str] | None = None,
) -> RenderedChat:
    """Turn a chat request into a prompt, as llama-server's ``oaicompat_chat_params_parse`` does.

    ``roles``: the message roles accepted (a 400 for any other; None: any, as llama-server).

    ``messages``/``tools``/``tool_choice``/``continue_final_message``/``add_generation_prompt``/
    ``reasoning_effort`` are the request's fields (``messages`` may also be parsed ``ChatMessage``s;
    ``tool_choice`` is only validated here — it shapes the grammar, not the prompt). ``chat_template_kwargs`` is the
    server's ``--chat-template-kwargs`` merged with the request's (request wins); values are JSON values.
    ``enable_thinking``: False for ``--reasoning off``; a boolean ``enable_thinking`` kwarg overrides it.
    ``add_bos``/``add_eos``: the vocab's flags (BOS/EOS rule, see ``strip_bos``). ``reasoning_tags``:
    ``(start, end)`` thinking markers of the template, if known, used when continuing a message (below), spaced
    as the template writes them; ``handler`` replaces them: what llama.cpp's own handler for the format
    writes there (GPT-OSS's channels, Qwen3-Coder's ``<think>\n`` and ``\n</think>\n\n``).

    Prefill (``--prefill-assistant``, on by default): when the request does not set ``continue_final_message``
    and the last message is an assistant message, it is continued: the conversation without it is rendered with
    the generation prompt, then its text is appended (array parts "\\n\\n"-joined) — no end-of-turn, so the
    model carries on from there. Explicit ``continue_final_message`` does the same for the last message of any
    role and requires ``add_generation_prompt: false``. With ``reasoning_tags`` the continued text is
    ``<start> + reasoning_content + <end> + content`` after the generation prompt cut before ``<start>``
    (``"reasoning_content"`` mode stops after the reasoning). Built-in templates prefill the same way.
    (llama-server at this pin drops the prefill for ``--no-jinja`` and renders the final assistant turn as a
    closed message; we keep the documented behaviour.)

    Errors (``ChatError`` subclasses, each with llama-server's text and ``status``):
    400 "Cannot have 2 or more assistant messages at the end of the list." /
    "Cannot set both add_generation_prompt and continue_final_message to true." /
    "Cannot continue an assistant message that contains tool calls." /
    'invalid type for "enable_thinking" (expected boolean, got string)' / message-shape errors (see
    ``parse_messages``) / template render errors (``TemplateError``, 400, "Jinja Exception: <message>" for
    ``raise_exception``) / "Invalid tool_choice: <value>" / "tools param requires --jinja flag" and
    "tool_choice param requires --jinja flag" (built-in template) / "Failed to parse messages: ...",
    "Failed to parse tools: ...", media parts (500s in llama-server; client mistakes, so 400 here);
    500 "this custom template is not supported, try using --jinja" (the server's template).
    """
    msgs, parsed_tools = _read_request(template, messages, tools, tool_choice, roles)
    continuation = parse_continuation(continue_final_message)
    if continuation == Continuation.NONE and prefill_assistant and msgs and msgs[-1].role == "assistant":
        if len(msgs) >= 2 and msgs[-2].role == "assistant":
            raise ChatInputError("Cannot have 2 or more assistant messages at the end of the list.")
        continuation = Continuation.AUTO  # the assistant message is prefilled: no new turn opens
        add_generation_prompt = False
    if continuation != Continuation.NONE and add_generation_prompt:
        raise ChatInputError("Cannot set both add_generation_prompt and continue_final_message to true.")
    if continuation != Continuation.NONE and msgs and msgs[-1].role == "assistant" and msgs[-1].tool_calls:
        raise ChatInputError("Cannot continue an assistant message that contains tool calls.")
    enable_thinking, kwargs = _thinking(chat_template_kwargs, enable_thinking, reasoning_effort)

    continued = msgs[-1] if continuation != Continuation.NONE and msgs else None
    if continued is not None and continuation == Continuation.AUTO:
        only_reasoning = continued.reasoning_content and not continued.content and not continued.content_parts
        continuation = Continuation.REASONING if only_reasoning else Continuation.CONTENT

    render = _renderer(template, msgs[:-1] if continued is not None else msgs, parsed_tools, kwargs,
                       enable_thinking=enable_thinking, add_bos=add_bos, add_eos=add_eos, now=now)
    without_gen = render(False)
    with_gen = render(True)
    generation_prompt = _generation_suffix(without_gen, with_gen)
    if continued is None:
        prompt = with_gen if add_generation_prompt else without_gen
        return RenderedChat(prompt=prompt, prefilled=False, generation_prompt=generation_prompt)

    # Continuation: conversation without the last message, its generation prompt, then the message's text.
    tail = generation_prompt
    content = continued.render_content() if continuation == Continuation.CONTENT else None
    if handler is None and reasoning_tags is not None and reasoning_tags[0]:
        # llama-server's template analysis writes the markers as the template spaces them
        tags = spaced_reasoning_tags(template, reasoning_tags) if isinstance(template, ChatTemplate) else reasoning_tags
        handler = HandlerContinuation(*tags)
    if handler is not None:
        cut = tail.find(handler.start.strip())  # the generation prompt may open the block without the spacing
        tail = (tail if cut < 0 else tail[:cut]) + handler.write(continued.reasoning_content, content)
    elif content is not None:
        tail += content
    return RenderedChat(prompt=without_gen + tail, prefilled=True, generation_prompt=generation_prompt)


def _read_request(
    template: AnyTemplate, messages: Any, tools: Any, tool_choice: Any, roles: Collection[str] | None
) -> tuple[list[ChatMessage], list[Tool]]:
    """The request's messages and tools, parsed; ``tool_choice`` only validated (it shapes the grammar)."""
    # json_value(body, "tool_choice", "auto"): a non-string (e.g. a named-function object) reads as "auto"
    choice = tool_choice if isinstance(tool_choice, str) else "auto"
    if not template.is_jinja:
        if isinstance(tools, list) and tools:
            raise ChatInputError("tools param requires --jinja flag")
        if choice != "auto":
            raise ChatInputError("tool_choice param requires --jinja flag")
    if isinstance(messages, list) and messages and all(isinstance(m, ChatMessage) for m in messages):
        msgs: list[ChatMessage] = list(messages)
    else:
        msgs = parse_messages(messages, roles)
    parsed_tools: list[Tool] = parse_tools(tools)
    if choice not in ("auto", "none", "required"):
        raise ChatInputError(f"Invalid tool_choice: {choice}")
    return msgs, parsed_tools


def _thinking(
    chat_template_kwargs: Mapping[str, Any] | None, enable_thinking: bool, reasoning_effort: str | None
) -> tuple[bool, dict[str, Any]]:
    """Whether thinking is on, and the template's extra variables: a boolean ``enable_thinking`` kwarg overrides
    the server's setting, ``reasoning_effort: "none"`` turns thinking off, any other effort is passed on."""
    kwargs: dict[str, Any] = dict(chat_template_kwargs or {})
    thinking_kwarg = kwargs.get("enable_thinking")
    if thinking_kwarg is True or thinking_kwarg is False:
        enable_thinking = thinking_kwarg
    elif isinstance(thinking_kwarg, str):
        raise ChatInputError('invalid type for "enable_thinking" (expected boolean, got string)')
    if reasoning_effort == "none":
        enable_thinking = False
        kwargs.pop("reasoning_effort", None)
    elif reasoning_effort:
        kwargs["reasoning_effort"] = reasoning_effort
    return enable_thinking, kwargs


def _renderer(
    template: AnyTemplate,
    msgs: list[ChatMessage],
    tools: list[Tool],
    kwargs: dict[str, Any],
    *,
    enable_thinking: bool,
    add_bos: bool,
    add_eos: bool,
    now: datetime | None,
) -> Callable[[bool], str]:
    """Renders ``msgs`` with or without the generation prompt: a Jinja template with llama.cpp's variables and
    input workarounds, and without the BOS/EOS the vocab adds; a built-in one from role/text pairs."""
    if not isinstance(template, ChatTemplate):
        pairs = [{"role": m.role, "content": m.legacy_text()} for m in msgs]
        return lambda add_gen: template.render(pairs, add_generation_prompt=add_gen)

    template_msgs = template_messages(template, msgs)
    tools_json = [t.to_json() for t in tools]
    when = now or datetime.now()
    extra: dict[str, Any] = {"datetime": when.strftime("%b %d %Y"), "date_string": when.strftime("%d %b %Y")}
    family = detect_family(template.source)
    if family is not None and family.template_vars is not None:
        extra.update(family.template_vars(tools_json))
    extra.update(kwargs)

    def render(add_gen: bool) -> str:
        text = template.render(template_msgs, add_generation_prompt=add_gen, tools=tools_json, extra=extra,
                               enable_thinking=enable_thinking, now=when)
        if add_bos:
            text = strip_bos(text, template.bos_token)[0]
        if add_eos:
            text = strip_eos(text, template.eos_token)[0]
        return text

    return render
