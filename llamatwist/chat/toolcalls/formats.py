"""Output formats: one small entry per family, all parsed on the shared ``Scanner``, detected from the
template source in llama.cpp's order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .generic import parse_generic
from .scan import Scanner

__all__ = ["FAMILIES", "Family", "detect_family", "parse_content_only"]

THINK = ("<think>", "</think>")


def parse_content_only(s: Scanner) -> None:
    s.reasoning_block(*THINK)
    s.add_content(s.rest())


@dataclass(frozen=True)
class Family:
    name: str
    parse: Callable[[Scanner], None]
    detect: Callable[[str], bool] = lambda src: False
    think: tuple[str, str] | None = THINK
    stops: tuple[str, ...] = ()
    preserved: tuple[str, ...] = ()


_ALL = [
    Family("generic", parse_generic, think=None),
    Family("content-only", parse_content_only),
]
FAMILIES = {f.name: f for f in _ALL}


def detect_family(src: str) -> Family | None:
    """The native family of a template, or ``None`` (generic with tools, content-only without)."""
    return next((f for f in _ALL if f.detect(src)), None)
