"""What a request (or the server default) asks to constrain output to."""

from __future__ import annotations

import dataclasses
import json
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

    @property
    def text(self) -> str:
        """The grammar as generation_settings echo it (llama-server: the GBNF it samples with): a grammar as given;
        a schema as llguidance's Lark form, which llama.cpp's llguidance build takes as a grammar too."""
        if self.grammar is not None:
            return self.grammar
        if self.empty:
            return ""
        schema = {"type": "object"} if self.json_object else self.json_schema
        text = schema if isinstance(schema, str) else json.dumps(schema)
        return "%llguidance {}\nstart: %json " + text
