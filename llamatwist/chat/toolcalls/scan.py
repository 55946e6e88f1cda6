"""The scanner every format parser shares: a cursor over the output, what has been read so far, and the
stream rules.

Two exceptions steer a parse. ``Stop``: a partial output ends inside something (a marker, a tool call): what
was read before it stands, the rest waits for more text. ``Broken``: a final output does not fit the format
(or was cut off inside a tool call); ``parse_output`` then reads the whole text as content, as llama.cpp does
(``common_chat_parse`` falls back to ``common_chat_parse_content_only``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .jsonscan import JNode, JsonSyntaxError, scan_json, skip_ws
from .model import ChatSyntax, ParsedMessage, ToolCallOut

__all__ = ["AUTO_PARSER", "KEEP", "Broken", "Scanner", "Spacing", "Stop", "Typing", "partial_marker_start"]


class Stop(Exception):
    """A partial output ends here; keep what was read."""


class Broken(Exception):
    """The output does not fit the format."""


def partial_marker_start(text: str, markers: Iterable[str], start: int = 0) -> int:
    """Where a proper prefix of one of ``markers`` ends ``text`` (``len(text)`` when none does).

    The tail of a streamed output may be the first characters of a marker; it must not be shown as content
    yet (llama.cpp: ``string_find_partial_stop``).
    """
    best = len(text)
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text) - start), 0, -1):
            if text.endswith(marker[:n]):
                best = min(best, len(text) - n)
                break
    return best


#: how a format's parser types a tagged argument's value: as its schema may be a string ("schema": llama.cpp's
#: template analysis, most hand-written parsers), by the JSON types it allows ("types": Qwen3-Coder's; "json":
#: Ling 3's, JSON first unless only strings are allowed), or by the property's own "type" ("declared": Kimi K3's)
Typing = Literal["schema", "types", "json", "declared"]


@dataclass(frozen=True)
class Spacing:
    """What llama.cpp's parser for a format does with the whitespace around a thinking block; the rest of what
    the model writes (inside the reasoning, after the block) reaches the client as it is.

    ``auto_parser``: its template analysis's parser (``common/chat-auto-parser``, for the formats it has no
    hand-written parser for): whitespace before the block is skipped; the whitespace the template writes after
    each marker (``ChatSyntax.think_spacing``: Qwen 3's ``"<think>\n"`` and ``"\n</think>\n\n"``) is read as
    part of that marker where the model writes it; an opened block's reasoning starts with what the generation
    prompt wrote after the marker (``ChatSyntax.forced_lead``). ``reasoning_lstrip``/``content_lstrip``: a
    hand-written parser that skips the whitespace at the start of the reasoning (``<think>`` + space()) or
    before the content. A hand-written parser reads a block only where the reply starts with it, unless
    ``block_after_space`` (Gemma 4's: the whitespace before it is content). ``bare_end``: one that drops an end
    marker the reply starts with (MiniMax-M3's turn without reasoning starts with a bare ``</mm:think>``).
    """

    auto_parser: bool = False
    reasoning_lstrip: bool = False
    content_lstrip: bool = False
    block_after_space: bool = False
    bare_end: bool = False


AUTO_PARSER = Spacing(auto_parser=True)
KEEP = Spacing()


def _skip_chars(text: str, pos: int, chars: str) -> int:
    """Past each of ``chars`` in turn where the text has it (llama.cpp's optional whitespace of a marker)."""
    for c in chars:
        if text.startswith(c, pos):
            pos += 1
        else:
            break
    return pos


def _trailing_ws(marker: str) -> str:
    return marker[len(marker.rstrip()):]


class Scanner:
    def __init__(
        self,
        text: str,
        syntax: ChatSyntax,
        partial: bool,
        think: tuple[str, str] | None = None,
        think_stops: tuple[str, ...] = (),
        spacing: Spacing = KEEP,
        typing: Typing = "schema",
    ) -> None:
        self.text = text
        self.syntax = syntax
        self.partial = partial
        self.think = think  # the family's thinking markers
        self.think_stops = think_stops  # markers that also end a thinking block (left for the format to read)
        self.spacing = spacing
        self.typing = typing  # how the format's parser types tagged argument values (formats._reads_text)
        self.pos = 0
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ToolCallOut] = []

    def result(self) -> ParsedMessage:
        reasoning = "".join(self.reasoning)
        # whitespace alone is no reasoning (an empty block: Qwen 3's <think>\n\n</think> without thinking)
        return ParsedMessage("".join(self.content), reasoning if reasoning.strip() else "", tuple(self.calls))

    # -- failing ---------------------------------------------------------------------------------------------

    def incomplete(self) -> Stop | Broken:
        """What to raise when the text ends inside a structure: wait for more, or give up on a final text."""
        return Stop() if self.partial else Broken()

    # -- cursor ----------------------------------------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_ws(self) -> None:
        self.pos = skip_ws(self.text, self.pos)

    def skip_trailing_ws(self) -> None:
        """Whitespace after a format's last element ends the reply (llama.cpp's parsers drop it)."""
        if self.text[self.pos :].isspace():
            self.pos = len(self.text)

    def rest(self) -> str:
        out = self.text[self.pos :]
        self.pos = len(self.text)
        return out

    def startswith(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def consume(self, literal: str, *, ws: bool = True) -> bool:
        """Consume ``literal`` (after optional whitespace); a partial text ending inside it stops the parse."""
        start = self.pos
        if ws:
            self.skip_ws()
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        if self.partial and literal.startswith(self.text[self.pos :]):
            raise Stop
        self.pos = start
        return False

    def expect(self, literal: str) -> None:
        if not self.consume(literal):
            raise self.incomplete() if self.at_end() else Broken()

    def find(self, markers: Iterable[str], *, prelude: bool = True, stop_on_partial: bool = True) -> str | None:
        """Move past the earliest of ``markers`` (the longest one on a tie) and return it.

        ``prelude``: the text skipped on the way is content. When no marker is found, nothing moves, unless
        the partial text ends in what may be the start of a marker: then the prelude before it is content
        and the parse stops there.
        """
        markers = tuple(markers)
        best: tuple[int, int, str] | None = None
        for m in markers:
            i = self.text.find(m, self.pos)
            if i >= 0 and (best is None or (i, -len(m)) < (best[0], best[1])):
                best = (i, -len(m), m)
        if best is not None:
            i, _, m = best
            if prelude:
                self.add_content(self.text[self.pos : i])
            self.pos = i + len(m)
            return m
        if self.partial and stop_on_partial:
            cut = partial_marker_start(self.text, markers, self.pos)
            if cut < len(self.text):
                if prelude:
                    self.add_content(self.text[self.pos : cut])
                self.pos = cut
                raise Stop
        return None

    def until(self, markers: Iterable[str]) -> tuple[str, str | None]:
        """The text up to the earliest marker (and that marker), moving past both. A partial text that may end
        inside a marker gives up to it and no marker; so does a text without any."""
        markers = tuple(markers)
        start = self.pos
        found = self.find(markers, prelude=False, stop_on_partial=False)
        if found is not None:
            return self.text[start : self.pos - len(found)], found
        end = partial_marker_start(self.text, markers, start) if self.partial else len(self.text)
        self.pos = len(self.text)
        return self.text[start:end], None

    # -- output ----------------------------------------------------------------------------------------------

    def add_content(self, text: str) -> None:
        if text:
            self.content.append(text)

    def add_reasoning(self, text: str, start: str, end: str, closed: bool) -> None:
        if not text:
            return
        if self.syntax.reasoning_in_content:
            self.add_content(start + text + (end if closed else ""))
        else:
            self.reasoning.append(text)

    def add_call(self, name: str, arguments: str, call_id: str = "") -> None:
        self.calls.append(ToolCallOut(name, arguments, call_id))

    # -- reasoning -------------------------------------------------------------------------------------------

    def reasoning_block(self) -> bool:
        """Read leading thinking blocks (or the one the prompt opened) as reasoning, spaced as the format's
        ``Spacing`` says."""
        sp, text = self.spacing, self.text
        if self.syntax.reasoning_format == "none" or self.think is None:
            if self.syntax.unwrap_block and self.think is not None and self.pos == 0:
                body, found = self.until((self.think[1], *self.think_stops))
                if found is not None and found != self.think[1]:
                    self.pos -= len(found)  # a call ends the block (Ling 3)
                self.add_content(body)
            elif self.syntax.content_lead and self.pos == 0:
                self.add_content(self.syntax.content_lead)
            # a hand-written parser that skips the space before its content does so either way, and so does
            # llama.cpp's template analysis (a reply without tools or thinking is not parsed at all)
            elif sp.content_lstrip or sp.auto_parser:
                self.pos = skip_ws(text, self.pos)
            return False
        start, end = self.think
        if sp.auto_parser and self.syntax.thinking_closed:
            return False  # the block was the prompt's: a block the model writes anyway is content
        open_ws, close_ws = (_trailing_ws(m) for m in self.syntax.think_spacing) if sp.auto_parser else ("", "")
        cursor = skip_ws(text, self.pos) if sp.auto_parser or sp.block_after_space else self.pos
        lead = ""
        if text.startswith(start, cursor):
            if not sp.auto_parser:
                self.add_content(text[self.pos : cursor])
            cursor += len(start)
        elif self.syntax.thinking_forced_open and self.pos == 0:
            cursor, lead = 0, self.syntax.forced_lead if sp.auto_parser else ""
        elif self.partial and cursor < len(text) and (start.startswith(text[cursor:])
                                                      or sp.bare_end and end.startswith(text[cursor:])):
            self.pos = len(text)  # maybe the start of a thinking block: wait
            raise Stop
        elif sp.bare_end and text.startswith(end, cursor):
            self.pos = cursor + len(end)
            return False
        else:
            if sp.auto_parser or sp.content_lstrip:
                self.pos = skip_ws(text, self.pos)
            return False
        while True:
            self.pos = cursor
            body, found = self.until((end, *self.think_stops))
            body = lead + body
            lead = ""
            body = body[_skip_chars(body, 0, open_ws):]
            if sp.reasoning_lstrip:
                body = body.lstrip()
            self.add_reasoning(body, start, end, closed=found is not None or not self.partial)
            if found is None:
                if self.partial:
                    raise Stop
                return True
            if found != end:  # e.g. Qwen going straight from its thoughts to <tool_call>
                self.pos -= len(found)
                return True
            after = _skip_chars(text, self.pos, close_ws)
            cursor = skip_ws(text, self.pos)
            if not text.startswith(start, cursor):  # no second block (GPT-OSS-like formats may have several)
                self.pos = cursor if sp.content_lstrip else after
                if self.partial and start.startswith(text[cursor:]):  # whitespace so far: what comes next?
                    raise Stop
                return True
            cursor += len(start)

    # -- JSON ------------------------------------------------------------------------------------------------

    def json(self) -> JNode:
        """Read a JSON value at the cursor (after whitespace); the cursor moves past what was read."""
        try:
            node = scan_json(self.text, self.pos, final=not self.partial)
        except JsonSyntaxError:
            raise Broken from None
        self.pos = node.end
        return node

    def call_from_object(self, node: JNode, name_key: str, args_key: str, id_key: str | None = None) -> None:
        """Add the call a JSON object describes; an incomplete object adds what is sure and stops.

        The call appears once its name is complete (never a half name); its arguments then grow as text.
        """
        if node.kind != "object":
            raise self.incomplete() if not node.complete and node.kind == "none" else Broken()
        name = node.get(name_key)
        if name is None or not name.complete:
            if node.complete:
                raise Broken
            raise self.incomplete()
        if name.kind != "string" or not name.string:
            raise Broken
        call_id = node.get(id_key) if id_key else None
        ident = call_id.string if call_id is not None and call_id.kind == "string" and call_id.complete else ""
        self.add_call(name.string, arguments_text(node.get(args_key), node.complete), ident)
        if not node.complete:
            raise self.incomplete()

    def calls_from_json(self, node: JNode, name_key: str, args_key: str, id_key: str | None = None) -> None:
        """An object or an array of objects, each one call."""
        if node.kind != "array":
            self.call_from_object(node, name_key, args_key, id_key)
            return
        for item in node.items:
            self.call_from_object(item, name_key, args_key, id_key)
        if not node.complete:
            raise self.incomplete()


def arguments_text(args: JNode | None, done: bool) -> str:
    """Tool-call arguments as JSON text: objects in canonical compact form, strings (already JSON text) as
    they are; missing arguments of a finished call are ``{}``."""
    if args is None:
        return "{}" if done else ""
    if args.kind == "string":
        return args.string
    if args.kind == "none":
        return ""
    return args.text


def args_json(value: object) -> str:
    """Arguments built from Python values, in the same canonical form as ``arguments_text``."""
    return json.dumps(value, separators=(",", ":"))
