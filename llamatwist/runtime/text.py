# -*- test-case-name: tests.test_text -*-
"""Incremental detokenized text with stop-string handling (pure, no model).

Token pieces may split a UTF-8 character, and a stop string may arrive split
over several tokens: text is only released once it can no longer become part
of a stop string or of a multi-byte character.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["StopMatch", "TextStream", "find_partial_stop", "utf8_valid_prefix"]


def utf8_valid_prefix(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a
    multi-byte character (invalid bytes elsewhere are left to the decoder)."""
    n = len(data)
    # Look back at most 3 bytes for the lead byte of an unfinished character.
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b & 0xC0 == 0x80:  # continuation byte: keep looking for the lead
            continue
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return n - back if need > back else n
    return n


def find_partial_stop(text: str, stops: Sequence[str]) -> int:
    """Index in ``text`` where a suffix starts that is a proper prefix of some
    stop string, or ``len(text)`` when there is none."""
    best = len(text)
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                best = min(best, len(text) - k)
                break
    return best


@dataclass(frozen=True)
class StopMatch:
    word: str
    position: int  # index in the full text where the stop word starts


@dataclass
class TextStream:
    stops: Sequence[str] = ()
    text: str = ""
    _pending: bytes = b""
    _sent: int = 0
    stop: StopMatch | None = field(default=None)

    def feed(self, piece: bytes) -> None:
        """Add a token's bytes; detects a complete stop string."""
        data = self._pending + piece
        cut = utf8_valid_prefix(data)
        self._pending = data[cut:]
        if not cut:
            return
        start = max(0, len(self.text) - max((len(s) for s in self.stops), default=0))
        self.text += data[:cut].decode("utf-8", "replace")
        for word in self.stops:
            pos = self.text.find(word, start)
            if pos != -1 and (self.stop is None or pos < self.stop.position):
                self.stop = StopMatch(word, pos)
        if self.stop is not None:
            self.text = self.text[: self.stop.position]

    def cut(self, position: int) -> None:
        """Drop the text from ``position`` on (never what was already sent)."""
        self.text = self.text[: max(position, self._sent)]
        self._pending = b""

    def take(self, final: bool = False) -> str:
        """Text safe to send now (everything, once ``final``)."""
        if final:
            if self._pending:
                self.text += self._pending.decode("utf-8", "replace")
                self._pending = b""
            end = len(self.text)
        elif self.stop is not None:
            end = len(self.text)
        else:
            end = find_partial_stop(self.text, self.stops)
        end = max(end, self._sent)
        out = self.text[self._sent : end]
        self._sent = end
        return out
