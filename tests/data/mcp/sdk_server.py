"""An MCP stdio server written with the official SDK (its FastMCP; MCPServer since mcp 2)."""

from __future__ import annotations

import os
import sys
import time

try:
    from mcp.server.fastmcp import FastMCP as Server
    from mcp.server.fastmcp.exceptions import ToolError
except ImportError:  # mcp >= 2 renamed FastMCP
    from mcp.server.mcpserver import MCPServer as Server  # type: ignore[no-redef]
    from mcp.server.mcpserver.exceptions import ToolError  # type: ignore[no-redef]

app = Server("llamatwist-test")


@app.tool()
def echo(message: str) -> str:
    """Echo back the message."""
    return message


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def parts() -> list[str]:
    """Two text parts."""
    return ["first", "second"]


@app.tool()
def fail() -> str:
    """Raises an unexpected exception."""
    raise ValueError("boom")


@app.tool()
def refuse() -> str:
    """Raises the SDK's ToolError."""
    raise ToolError("not allowed")


@app.tool()
def env(name: str) -> str:
    """An environment variable of the server."""
    return os.environ.get(name, "<unset>")


@app.tool()
def cwd() -> str:
    """The server's working directory."""
    return os.getcwd()


@app.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@app.tool()
def sleep(seconds: float) -> str:
    """Sleeps, then answers."""
    time.sleep(seconds)
    return f"slept {seconds}"


@app.tool()
def crash() -> str:
    """Exits the server without answering."""
    sys.stderr.write("dying now\n")
    sys.stderr.flush()
    os._exit(3)


if __name__ == "__main__":
    app.run()
