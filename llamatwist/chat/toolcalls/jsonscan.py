r"""A JSON reader for growing prefixes of model output.

``scan_json(text, pos)`` reads one JSON value and returns a ``JNode`` tree even when ``text`` ends inside it.
Every node carries ``text``: its compact canonical serialisation (``separators=(",", ":")``, non-ASCII as
``\uXXXX``: the form llama.cpp's ``dump(-1, ' ', ensure_ascii=true)`` gives tool-call arguments) *up to the
last stable point*. A number or a
``true``/``false``/``null`` literal cut by the end of the input, or half an escape sequence, is left out
until it is complete, so for any prefix ``p`` of ``s`` the text read from ``p`` is a prefix of the text read
from ``s``: streamed argument text only ever grows (llama.cpp's healing-marker dumps behave the same way).
Whitespace between tokens is dropped; numbers keep their source spelling (valid JSON, never re-rounded).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JNode", "JsonSyntaxError", "scan_json", "skip_ws"]

_WS = " \t\n\r"
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_END = re.compile(r"[^-+0-9.eE]")  # a number runs until one of these
_NUMBER_PREFIX = re.compile(r"-?(?:0|[1-9][0-9]*)?(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")
_PLAIN = re.compile(r'[^"\\\x00-\x1f]+')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"true": True, "false": False, "null": None}


class JsonSyntaxError(ValueError):
    """The text is not JSON (as opposed to JSON cut short, which is not an error)."""


@dataclass
class JNode:
    kind: str  # object | array | string | number | literal | none (nothing but whitespace yet)
    text: str = ""  # canonical compact text of the stable part (all of it once complete)
    complete: bool = False
    end: int = 0  # index just past the value in the input (len(input) while incomplete)
    string: str = ""  # strings: the decoded characters read so far
    scalar: Any = None  # numbers and literals, once complete
    members: dict[str, JNode] = field(default_factory=dict)  # objects: keys whose value has started
    items: list[JNode] = field(default_factory=list)  # arrays: items that have started

    def get(self, key: str) -> JNode | None:
        return self.members.get(key) if self.kind == "object" else None

    def value(self) -> Any:
        """The Python value (complete nodes only)."""
        if self.kind == "object":
            return {k: v.value() for k, v in self.members.items()}
        if self.kind == "array":
            return [v.value() for v in self.items]
        return self.string if self.kind == "string" else self.scalar


def skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _escape(s: str) -> str:
    return json.dumps(s)[1:-1]


def scan_json(text: str, pos: int = 0, *, final: bool = False) -> JNode:
    """Read the JSON value starting at ``text[pos]`` (after optional whitespace).

    ``final``: the input will not grow, so a number running to the end of ``text`` is complete. Raises
    ``JsonSyntaxError`` when the text cannot be the start of a JSON value; a value cut short comes back with
    ``complete=False``.
    """
    try:
        return _Reader(text, final).value(skip_ws(text, pos))
    except EOFError:
        return JNode("none", "", False, len(text))


class _Reader:
    def __init__(self, text: str, final: bool) -> None:
        self.s = text
        self.final = final

    def value(self, pos: int) -> JNode:
        s = self.s
        if pos >= len(s):
            raise EOFError
        c = s[pos]
        if c == "{":
            return self.container(pos, "object")
        if c == "[":
            return self.container(pos, "array")
        if c == '"':
            return self.string(pos)
        if c == "-" or c.isdigit():
            return self.number(pos)
        for word, val in _LITERALS.items():
            got = s[pos : pos + len(word)]
            if got == word:
                return JNode("literal", word, True, pos + len(word), scalar=val)
            if word.startswith(got) and pos + len(got) == len(s):
                return JNode("literal", "", False, len(s))
        raise JsonSyntaxError(f"unexpected {c!r} at {pos}")

    def number(self, pos: int) -> JNode:
        if not self.final and not _NUMBER_END.search(self.s, pos):  # more digits may follow
            if not _NUMBER_PREFIX.fullmatch(self.s, pos):
                raise JsonSyntaxError(f"bad number at {pos}")
            return JNode("number", "", False, len(self.s))
        m = _NUMBER.match(self.s, pos)
        if m is None:
            raise JsonSyntaxError(f"bad number at {pos}")
        raw = m.group()
        return JNode("number", raw, True, m.end(), scalar=json.loads(raw))

    def string(self, pos: int) -> JNode:
        s = self.s
        out: list[str] = []
        i = pos + 1
        n = len(s)
        while i < n:
            if run := _PLAIN.match(s, i):  # the common case, a stretch without quotes or escapes, in one step
                out.append(run.group())
                i = run.end()
                continue
            c = s[i]
            if c == '"':
                value = "".join(out)
                return JNode("string", json.dumps(value), True, i + 1, string=value)
            if c == "\\":
                if i + 1 >= n:
                    break
                e = s[i + 1]
                if e == "u":
                    ch, used = self.unicode_escape(i)
                    if ch is None:
                        break
                    out.append(ch)
                    i += used
                    continue
                if e not in _ESCAPES:
                    raise JsonSyntaxError(f"bad escape at {i}")
                out.append(_ESCAPES[e])
                i += 2
                continue
            if c < " ":
                raise JsonSyntaxError(f"control character in string at {i}")
            out.append(c)
            i += 1
        value = "".join(out)
        return JNode("string", '"' + _escape(value), False, n, string=value)

    def unicode_escape(self, i: int) -> tuple[str | None, int]:
        """Decode ``\\uXXXX`` (and a following low surrogate); ``None`` when cut short."""
        s = self.s
        hex4 = s[i + 2 : i + 6]
        if len(hex4) < 4:
            return None, 0
        if not re.fullmatch(r"[0-9a-fA-F]{4}", hex4):
            raise JsonSyntaxError(f"bad unicode escape at {i}")
        code = int(hex4, 16)
        if 0xD800 <= code < 0xDC00:
            nxt = s[i + 6 : i + 12]
            if len(nxt) < 6 and "\\u".startswith(nxt[:2]) and i + 6 + len(nxt) == len(s):
                return None, 0  # the low half may still come
            if re.fullmatch(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}", nxt):
                low = int(nxt[-4:], 16)
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
            return "\ufffd", 6  # a lone surrogate cannot be encoded as UTF-8
        if 0xDC00 <= code < 0xE000:
            return "\ufffd", 6
        return chr(code), 6

    def container(self, pos: int, kind: str) -> JNode:
        s = self.s
        close = "}" if kind == "object" else "]"
        node = JNode(kind)
        parts = ["{" if kind == "object" else "["]
        i = skip_ws(s, pos + 1)
        if i < len(s) and s[i] == close:
            node.text, node.complete, node.end = parts[0] + close, True, i + 1
            return node
        while True:
            if i >= len(s):
                break
            prefix = "," if len(parts) > 1 else ""
            if kind == "object":
                if s[i] != '"':
                    raise JsonSyntaxError(f"expected a key at {i}")
                key = self.string(i)
                if not key.complete:
                    parts.append(prefix + key.text)
                    break
                i = skip_ws(s, key.end)
                if i >= len(s):
                    parts.append(prefix + key.text)
                    break
                if s[i] != ":":
                    raise JsonSyntaxError(f"expected ':' at {i}")
                prefix += key.text + ":"
                i = skip_ws(s, i + 1)
                if i >= len(s):
                    parts.append(prefix)
                    break
            try:
                child = self.value(i)
            except EOFError:
                parts.append(prefix)
                break
            if kind == "object":
                node.members[key.string] = child
            else:
                node.items.append(child)
            parts.append(prefix + child.text)
            if not child.complete:
                break
            i = skip_ws(s, child.end)
            if i >= len(s):
                break
            if s[i] == close:
                parts.append(close)
                node.complete, node.end = True, i + 1
                break
            if s[i] != ",":
                raise JsonSyntaxError(f"expected ',' or {close!r} at {i}")
            i = skip_ws(s, i + 1)
            if i >= len(s):
                parts.append(",")
                break
        node.text = "".join(parts)
        if not node.complete:
            node.end = len(s)
        return node
