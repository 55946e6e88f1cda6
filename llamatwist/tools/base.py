"""What every server tool is: its description for GET /tools, and one call of it for POST /tools.

A tool runs on a worker thread (never the reactor, never the decode thread) and returns a plain JSON object.
A failure the model should read (a missing file, a command's exit status) is part of that object, as
``{"error": "..."}``, with HTTP 200, as llama-server does. A request the client got wrong (a missing or mistyped
parameter) raises ``ToolParamError``, which the route answers with a 400.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

__all__ = ["ServerTool", "ToolParamError", "ToolStream", "UnknownTool", "function_definition"]


class ToolParamError(ValueError):
    """The call's parameters are missing or of the wrong type: the client's mistake (400)."""


class UnknownTool(LookupError):
    """No such tool, or it cannot stream (llama-server answers both with a 404)."""


class ToolStream(Protocol):
    """Where a streaming tool (``support_stream``) writes its output as it comes."""

    def push(self, chunk: str) -> None: ...

    def alive(self) -> bool:
        """False once the client has gone: the tool should stop."""
        ...


class ServerTool(ABC):
    name: str
    display_name: str
    permission_write: bool = False
    support_stream: bool = False  # POST /tools with "stream": true is allowed
    uses_cwd: bool = False  # resolves paths and runs against the working directory (the x-tool-cwd header)
    kind: str = "server"  # "server" for the built-in tools, "mcp" for an MCP server's

    @abstractmethod
    def definition(self) -> dict[str, Any]:
        """The OpenAI-style function definition the model is given."""

    @abstractmethod
    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        """Runs the tool. ``params`` may hold "cwd", "runtime" and "resp_type", set by the route from headers."""

    def to_json(self) -> dict[str, Any]:
        """One entry of GET /tools, as llama-server lists it."""
        return {
            "display_name": self.display_name,
            "tool": self.name,
            "type": self.kind,
            "permissions": {"write": self.permission_write},
            "uses_cwd": self.uses_cwd,
            "definition": self.definition(),
        }


def function_definition(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}
