"""What a request (or the server default) asks to constrain output to."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["ConstraintSpec"]


@dataclasses.dataclass(frozen=True)
class ConstraintSpec:
    grammar: str | None = None  # GBNF (or Lark)
    json_schema: Any = None  # dict, bool or JSON text
    json_object: bool = False  # any JSON object

    @property
    def empty(self) -> bool:
        return self.grammar is None and self.json_schema is None and not self.json_object
