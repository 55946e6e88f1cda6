"""TextStream: UTF-8 boundaries and stop strings (pure, no model)."""

from __future__ import annotations

from llamatwist.runtime.text import TextStream, find_partial_stop, utf8_valid_prefix


def test_utf8_valid_prefix_holds_back_split_characters() -> None:
    llama = "🦙".encode()
    assert utf8_valid_prefix(b"abc") == 3
    assert utf8_valid_prefix(b"ab" + llama[:2]) == 2
    assert utf8_valid_prefix(b"ab" + llama) == 6
    assert utf8_valid_prefix("é".encode()[:1]) == 0


def test_split_multibyte_character_is_sent_whole() -> None:
    s = TextStream()
    data = "a🦙b".encode()
    out = []
    for i in range(len(data)):
        s.feed(data[i : i + 1])
        out.append(s.take())
    assert "".join(out) == "a🦙b"
    assert "" in out  # some bytes were held back


def test_partial_stop_is_held_back_then_released() -> None:
    s = TextStream(stops=("STOP",))
    s.feed(b"hello ST")
    assert s.take() == "hello "
    s.feed(b"ill")
    assert s.take() == "STill"
    assert s.stop is None


def test_stop_across_tokens_truncates() -> None:
    s = TextStream(stops=("\n\n", "END"))
    for piece in (b"one", b" two\n", b"\nthree"):
        s.feed(piece)
    assert s.stop is not None and s.stop.word == "\n\n"
    assert s.take(final=True) == "one two"
    assert s.text == "one two"


def test_earliest_stop_wins() -> None:
    s = TextStream(stops=("b", "a"))
    s.feed(b"xxab")
    assert s.stop is not None and s.stop.word == "a" and s.text == "xx"


def test_find_partial_stop() -> None:
    assert find_partial_stop("hello wor", ["world"]) == 6
    assert find_partial_stop("hello", ["xyz"]) == 5
    assert find_partial_stop("", ["a"]) == 0
