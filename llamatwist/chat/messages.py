"""OpenAI chat messages and tools, parsed and validated the way llama-server does.

llama-server validates in two passes and this module keeps both, with their messages and status codes:

1. ``oaicompat_chat_params_parse`` (tools/server/server-common.cpp) checks the raw JSON and throws
   ``std::invalid_argument`` (→ 400), except for media parts without a multimodal projector, which are
   ``std::runtime_error`` (→ 500 there). With a projector, `extract_media` replaces each media part by a
   media marker part (``oaicompat_content_load_media``) and lists its source for the route to load.
2. ``common_chat_msgs_parse_oaicompat`` (common/chat.cpp) builds the messages and wraps any failure as
   ``std::runtime_error("Failed to parse messages: ...")`` (→ 500 there).

The texts are llama-server's, but every one of these is the client's mistake, so llamatwist answers all of
them 400 (issue 19: no client mistake is a 5xx). A role no chat template knows (`ROLES`) is a 400 too, where
llama-server passes it to the template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamatwist.media import MEDIA_MARKER

from .errors import ChatInputError

__all__ = [
    "ROLES",
    "ChatMessage",
    "ContentPart",
    "MediaRef",
    "Tool",
    "ToolCall",
    "extract_media",
    "join_text_parts",
    "json_type",
    "parse_messages",
    "parse_tools",
    "template_roles",
]

# The roles every request may use: llama.cpp's common_chat_role_from_string (system, user, assistant, tool),
# "developer" (which llama-server maps to system for templates without it) and OpenAI's legacy "function".
# A template adds the roles it names itself (`template_roles`: Llama 3's "ipython", Granite's "tool_response").
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

_QUOTED_NAME = re.compile(r"""['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")


def template_roles(source: str) -> frozenset[str]:
    """`ROLES` plus every quoted name in a chat template's source: a role the template compares
    ``message['role']`` with is one of them (a superset, which is all a check for typos needs)."""
    return ROLES | frozenset(_QUOTED_NAME.findall(source))


_NO_MMPROJ_HINT = (" input is not supported: this server has no multimodal projector for it - hint: if this is "
                   "unexpected, you may need to provide the mmproj (--mmproj)")

# content part type -> the media kind it carries (llama-server's oaicompat_content_load_media)
_MEDIA_PARTS = {"image_url": "image", "input_audio": "audio", "input_video": "video", "video_url": "video"}
_ENCODERS = {"image": "vision", "audio": "audio", "video": "vision"}  # the projector part each media kind needs


@dataclass(frozen=True)
class ContentPart:
    """One element of an array ``content``: ``{"type": "text", "text": ...}``, or a ``media_marker`` whose
    text is the media marker (a media part `extract_media` replaced)."""

    type: str
    text: str


class _MarkerPart(dict[str, Any]):
    """The part `extract_media` puts where a media part was. Its own class, so that the checks below accept
    a ``media_marker`` part only from `extract_media`, never from a client's JSON."""


@dataclass(frozen=True)
class MediaRef:
    """A media part of a request: what to load (``url``: a data: URI, a file:// or http(s) URL, or raw
    base64) and where it was (``where``, for error messages)."""

    kind: str  # "image" | "audio" | "video"
    url: str
    where: str


def _media_url(part: Mapping[str, Any], kind_key: str, where: str) -> str:
    value = part.get(kind_key)
    if kind_key == "image_url":
        # {"url": ...} as OpenAI; a bare string as some clients (and the Responses API) write it
        url = value if isinstance(value, str) else value.get("url") if isinstance(value, Mapping) else None
        if not isinstance(url, str) or not url:
            raise ChatInputError(f"{where}.image_url.url is required (a data: URI or a file:// or http(s) URL)")
        return url
    # input_audio {"data": base64, "format": "wav"|"mp3"} (or "url", as llama-server also reads); video alike
    if not isinstance(value, Mapping):
        raise ChatInputError(f"{where}.{kind_key} must be an object with 'data' (base64) or 'url'")
    url = value.get("data", value.get("url"))
    if not isinstance(url, str) or not url:
        raise ChatInputError(f"{where}.{kind_key}.data is required (base64-encoded media)")
    fmt = value.get("format")
    if kind_key == "input_audio" and fmt is not None and fmt not in ("wav", "mp3", "flac"):
        raise ChatInputError(f"{where}.input_audio.format must be 'wav', 'mp3' or 'flac'")
    return url


def extract_media(messages: Any, kinds: Collection[str]) -> tuple[Any, list[MediaRef]]:
    """``messages`` with each media part (``image_url``, ``input_audio``, ``input_video``/``video_url``)
    replaced by a media marker part, and those parts' sources in order; ``kinds``: the media kinds the
    server's projector takes (a part of another kind is a 400 saying so). Malformed messages are left as they
    are for `parse_messages` to refuse; without media, ``messages`` itself is returned."""
    if not isinstance(messages, list):
        return messages, []
    refs: list[MediaRef] = []
    out: list[Any] = []
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if not isinstance(content, list):
            out.append(msg)
            continue
        parts: list[Any] = []
        for j, part in enumerate(content):
            kind_key = part.get("type") if isinstance(part, Mapping) else None
            kind = _MEDIA_PARTS.get(kind_key) if isinstance(kind_key, str) else None
            if kind is None:
                parts.append(part)
                continue
            if kind not in kinds:
                if kind == "video" and "image" in kinds:
                    raise ChatInputError("video input is not supported: this server's libmtmd was built without "
                                         "video support (MTMD_VIDEO)")
                if kinds:  # a projector is loaded: the hint to add one would mislead
                    raise ChatInputError(f"{kind} input is not supported: this server's multimodal projector has "
                                         f"no {_ENCODERS[kind]} encoder")
                raise ChatInputError(kind + _NO_MMPROJ_HINT)
            assert isinstance(kind_key, str)
            where = f"messages[{i}].content[{j}]"
            refs.append(MediaRef(kind, _media_url(part, kind_key, where), where))
            parts.append(_MarkerPart(type="media_marker", text=MEDIA_MARKER))
        out.append({**msg, "content": parts})
    return (out, refs) if refs else (messages, [])


def _is_marker(part: Any) -> bool:
    return isinstance(part, _MarkerPart)


@dataclass(frozen=True)
class ToolCall:
    """An assistant tool call; ``arguments`` is kept as the JSON text (objects are serialised), as llama.cpp does."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class Tool:
    """A ``{"type": "function", "function": {...}}`` tool definition, reduced to what llama.cpp keeps."""

    name: str
    description: str = ""
    parameters: Any = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # llama.cpp re-serialises tools in this exact shape (common_chat_tools_to_json_oaicompat): extra
        # fields of the request (e.g. "strict") do not reach the template.
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def join_text_parts(parts: Sequence[ContentPart], delimiter: str, prefix: str = "") -> str:
    """Concatenate text parts the llama.cpp way: the delimiter goes only between non-empty accumulated text
    and the next part, so leading empty parts add no delimiter. Media markers join as text (the legacy
    templates' and the prefilled text's rule)."""
    text = prefix
    for part in parts:
        if part.type not in ("text", "media_marker"):
            continue
        if text:
            text += delimiter
        text += part.text
    return text


def _join_around_markers(parts: Sequence[ContentPart]) -> str:
    """A message with media as one string (llama.cpp ``to_json_oaicompat`` when it ``contains_media``):
    parts "\n"-joined, but no newline before or after a media marker."""
    text = ""
    after_marker = False
    for part in parts:
        if part.type == "media_marker":
            text += part.text
            after_marker = True
            continue
        if not after_marker and text:
            text += "\n"
        text += part.text
        after_marker = False
    return text


@dataclass(frozen=True)
class ChatMessage:
    """A parsed chat message (llama.cpp ``common_chat_msg``).

    Exactly one of ``content`` / ``content_parts`` is meaningful: string content fills ``content``; array
    content fills ``content_parts``; null or missing content leaves both empty.
    """

    role: str
    content: str = ""
    content_parts: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning_content: str = ""
    name: str = ""
    tool_call_id: str = ""

    def render_content(self, delimiter: str = "\n\n") -> str:
        """The message text; array parts joined by ``delimiter`` (llama.cpp ``render_content``, used for the
        prefilled assistant text)."""
        if self.content:
            return self.content
        return join_text_parts(self.content_parts, delimiter)

    def legacy_text(self) -> str:
        """The text the built-in (non-Jinja) templates see: ``content`` then the parts, "\\n"-joined."""
        return join_text_parts(self.content_parts, "\n", prefix=self.content)

    def to_template_json(self) -> dict[str, Any]:
        """The message as a Jinja template sees it (llama.cpp ``to_json_oaicompat(concat_typed_text=false)``).

        ``content`` is always present (never null): a string, or the list of typed parts. Optional keys are
        present only when non-empty.
        """
        out: dict[str, Any] = {"role": self.role}
        if self.content:
            out["content"] = self.content
        elif any(p.type == "media_marker" for p in self.content_parts):
            out["content"] = _join_around_markers(self.content_parts)  # a template never sees media parts
        elif self.content_parts:
            out["content"] = [{"type": p.type, "text": p.text} for p in self.content_parts]
        else:
            out["content"] = ""
        if self.reasoning_content:
            out["reasoning_content"] = self.reasoning_content
        if self.name:
            out["name"] = self.name
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            calls = []
            for tc in self.tool_calls:
                call: dict[str, Any] = {"type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}
                if tc.id:
                    call["id"] = tc.id
                calls.append(call)
            out["tool_calls"] = calls
        return out


# --- nlohmann::json look-alikes, so error texts match llama-server's ---------------------------------------


def _dump(value: Any, indent: int | None = None) -> str:
    # nlohmann::json objects are std::map-backed (sorted keys); dump() is compact unless indented.
    if indent is None:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent)


def json_type(value: Any) -> str:
    """The type name nlohmann::json uses in its errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


class _ParseError(Exception):
    pass


def _at(obj: Mapping[str, Any], key: str) -> Any:
    if key not in obj:
        raise _ParseError(f"[json.exception.out_of_range.403] key '{key}' not found")
    return obj[key]


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _ParseError(f"[json.exception.type_error.302] type must be string, but is {json_type(value)}")
    return value


def _json_value_str(obj: Any, key: str) -> str:
    # llama-server's json_value(): the default when the key is missing, null or of the wrong type.
    if isinstance(obj, Mapping):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return ""


# --- messages ------------------------------------------------------------------------------------------------


def _check_raw_messages(messages: Any) -> None:
    """First pass: oaicompat_chat_params_parse (400s, plus 500 for media without mmproj)."""
    if messages is None:
        raise ChatInputError("'messages' is required")
    if not isinstance(messages, list):
        raise ChatInputError("Expected 'messages' to be an array")
    for msg in messages:
        has = isinstance(msg, Mapping)
        role = _json_value_str(msg, "role")
        if role != "assistant" and not (has and "content" in msg):
            raise ChatInputError("All non-assistant messages must contain 'content'")
        if role == "assistant":
            if not ("content" in msg or "tool_calls" in msg):
                raise ChatInputError("Assistant message must contain either 'content' or 'tool_calls'!")
            if "content" not in msg:
                continue
        content = msg["content"]
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise ChatInputError("Expected 'content' to be a string or an array")
        for part in content:
            if _is_marker(part):
                continue
            kind = _json_value_str(part, "type")
            if kind == "image_url":
                raise ChatInputError("image" + _NO_MMPROJ_HINT)
            if kind == "input_audio":
                raise ChatInputError("audio" + _NO_MMPROJ_HINT)
            if kind in ("input_video", "video_url"):
                raise ChatInputError("video" + _NO_MMPROJ_HINT)
            if kind != "text":
                raise ChatInputError("unsupported content[].type")


def _parse_tool_call(tool_call: Any) -> ToolCall:
    if not isinstance(tool_call, Mapping) or "type" not in tool_call:
        raise _ParseError("Missing tool call type: " + _dump(tool_call))
    if tool_call["type"] != "function":
        raise _ParseError("Unsupported tool call type: " + _dump(tool_call))
    if "function" not in tool_call:
        raise _ParseError("Missing tool call function: " + _dump(tool_call))
    fn = tool_call["function"]
    if not isinstance(fn, Mapping) or "name" not in fn:
        raise _ParseError("Missing tool call name: " + _dump(tool_call))
    args = _at(fn, "arguments")
    return ToolCall(
        name=_as_str(fn["name"]),
        arguments=args if isinstance(args, str) else _dump(args),
        id=_as_str(tool_call["id"]) if "id" in tool_call else "",
    )


def _parse_message(message: Any, roles: Collection[str] | None) -> ChatMessage:
    """Second pass: common_chat_msgs_parse_oaicompat."""
    if not isinstance(message, Mapping):
        raise _ParseError("Expected 'message' to be an object, got " + _dump(message))
    if "role" not in message:
        raise _ParseError("Missing 'role' in message: " + _dump(message))
    role = message["role"]
    if not isinstance(role, str):
        raise _ParseError("'role' must be a string, got " + _dump(role))
    if roles is not None and role not in roles:
        raise _ParseError(f"unknown role {_dump(role)} (known: {', '.join(sorted(ROLES))})")
    content = ""
    parts: list[ContentPart] = []
    has_content = "content" in message
    has_tool_calls = "tool_calls" in message
    if has_content:
        raw = message["content"]
        if isinstance(raw, str):
            content = raw
        elif isinstance(raw, list):
            for part in raw:
                if not isinstance(part, Mapping) or "type" not in part:
                    raise _ParseError("Missing content part type: " + _dump(part))
                if _is_marker(part):
                    parts.append(ContentPart("media_marker", MEDIA_MARKER))
                    continue
                if part["type"] != "text":
                    raise _ParseError("Unsupported content part type: " + _dump(part["type"]))
                parts.append(ContentPart("text", _as_str(_at(part, "text"))))
        elif raw is not None:
            raise _ParseError(
                "Invalid 'content' type: expected string or array, got "
                + _dump(raw)
                + " (ref: https://github.com/ggml-org/llama.cpp/issues/8367)"
            )
    calls: list[ToolCall] = []
    if has_tool_calls:
        raw_calls = message["tool_calls"]
        # nlohmann iterates null as empty, an object by its values and a scalar as itself.
        if raw_calls is None:
            items: list[Any] = []
        elif isinstance(raw_calls, list):
            items = raw_calls
        elif isinstance(raw_calls, Mapping):
            items = list(raw_calls.values())
        else:
            items = [raw_calls]
        calls = [_parse_tool_call(tc) for tc in items]
    if not has_content and not has_tool_calls:
        raise _ParseError(
            "Expected 'content' or 'tool_calls' (ref: https://github.com/ggml-org/llama.cpp/issues/8367 & "
            "https://github.com/ggml-org/llama.cpp/issues/12279)"
        )
    return ChatMessage(
        role=role,
        content=content,
        content_parts=tuple(parts),
        tool_calls=tuple(calls),
        reasoning_content=_as_str(message["reasoning_content"]) if "reasoning_content" in message else "",
        name=_as_str(message["name"]) if "name" in message else "",
        tool_call_id=_as_str(message["tool_call_id"]) if "tool_call_id" in message else "",
    )


def parse_messages(messages: Any, roles: Collection[str] | None = None) -> list[ChatMessage]:
    """Validate and parse the request's ``messages`` (pass ``None`` when the key is missing); ``roles``: the
    roles accepted (`template_roles` of the template that renders them; None: any).

    Raises ``ChatInputError`` (400) with llama-server's text: the request-shape checks ("'messages' is
    required", "All non-assistant messages must contain 'content'", "unsupported content[].type", ...),
    image/audio/video parts ("image input is not supported - hint: ...", this server has no multimodal
    projector) and "Failed to parse messages: ..." (a missing or unknown role, a non-string text, a
    malformed tool call, ...).
    """
    _check_raw_messages(messages)
    try:
        return [_parse_message(m, roles) for m in messages]
    except _ParseError as exc:
        raise ChatInputError(f"Failed to parse messages: {exc}") from None


# --- tools ---------------------------------------------------------------------------------------------------


def parse_tools(tools: Any) -> list[Tool]:
    """Parse the request's ``tools`` (``None``/missing → no tools), as common_chat_tools_parse_oaicompat.

    Failures raise ``ChatInputError`` (400; llama-server's runtime_error, a 500 there):
    "Failed to parse tools: <why>; tools = <the tools, indented>".
    """
    if tools is None:
        return []
    out: list[Tool] = []
    try:
        if not isinstance(tools, list):
            raise _ParseError("Expected 'tools' to be an array, got " + _dump(tools))
        for tool in tools:
            if not isinstance(tool, Mapping) or "type" not in tool:
                raise _ParseError("Missing tool type: " + _dump(tool))
            if tool["type"] != "function":
                raise _ParseError("Unsupported tool type: " + _dump(tool))
            if "function" not in tool:
                raise _ParseError("Missing tool function: " + _dump(tool))
            fn = tool["function"]
            if not isinstance(fn, Mapping):
                raise _ParseError(f"[json.exception.type_error.304] cannot use at() with {json_type(fn)}")
            description = fn.get("description", "")
            parameters = fn.get("parameters", {})
            out.append(
                Tool(
                    name=_as_str(_at(fn, "name")),
                    description=_as_str(description) if description is not None else "",
                    parameters=parameters if parameters is not None else {},
                )
            )
    except _ParseError as exc:
        raise ChatInputError(f"Failed to parse tools: {exc}; tools = {_dump(tools, indent=2)}") from None
    return out
