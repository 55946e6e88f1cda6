"""``parse_output``: run a format's parser with the stream rules."""

from __future__ import annotations

from .formats import FAMILIES, THINK
from .model import ChatSyntax, ParsedMessage
from .scan import Broken, Scanner, Stop

__all__ = ["parse_output"]


def parse_output(text: str, syntax: ChatSyntax, *, partial: bool) -> ParsedMessage:
    """Split a model's output (or, with ``partial``, a prefix of it while it streams) into content, reasoning
    and tool calls.

    Partial parses never show what a longer text could take back: a marker cut at the end is held back, a
    tool call appears once its name is complete and its arguments grow as JSON text. A final text that does
    not fit the format (malformed or cut-off tool call) is read as plain content (with its thinking block
    still split off), as llama.cpp does; nothing raises.
    """
    family = FAMILIES.get(syntax.format, FAMILIES["content-only"])
    think = family.think if syntax.reads_thinking else None
    s = Scanner(text, syntax, partial, think, family.think_stops, family.spacing, family.typing)
    try:
        family.parse(s)
    except Stop:
        pass
    except (Broken, ValueError, IndexError, KeyError):
        if partial:
            return s.result()  # a stream keeps what it showed; the final parse decides
        s = Scanner(text, syntax, partial, (think or THINK) if syntax.reads_thinking else None, spacing=family.spacing)
        s.reasoning_block()
        s.add_content(s.rest())
    return s.result()
