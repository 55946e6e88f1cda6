"""An MCP server over Streamable HTTP, written with the official SDK, for the web UI's MCP client.

    python http_server.py PORT [--cors ORIGIN] [--token TOKEN] [--prefix PREFIX]

--cors: answer the browser's CORS checks for ORIGIN (without it a page on another origin cannot reach it, and
must go through llamatwist's /cors-proxy); --token: every request must carry "Authorization: Bearer TOKEN";
--prefix: put before each tool's name. Besides its tools it has a prompt (review) and a resource (notes://today).
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

try:
    from mcp.server.fastmcp import FastMCP as Server
except ImportError:  # mcp >= 2 renamed FastMCP
    from mcp.server.mcpserver import MCPServer as Server  # type: ignore[no-redef]

app = Server("llamatwist-http-test")
CALLS: list[str] = []  # what the tools were asked, for the calls tool to report


def secret_word(topic: str) -> str:
    """The secret word of a topic."""
    CALLS.append(f"secret_word({topic})")
    return f"The secret word for {topic[:12]} is PAPAYA-{len(CALLS)}."


def erase_notes(topic: str) -> str:
    """Erases the notes on a topic."""
    CALLS.append(f"erase_notes({topic})")
    return f"erased {topic[:12]}"


def calls() -> str:
    """The calls this server has answered."""
    return ", ".join(CALLS) or "none"


@app.prompt(description="Ask for a review of some code.")
def review(code: str, language: str = "Python") -> str:
    """A prompt with one required and one optional argument."""
    return f"Please review this {language} code:\n{code}"


@app.resource("notes://today", name="today", description="Today's notes.", mime_type="text/plain")
def today() -> str:
    """A text resource."""
    return "Buy KIWIS and call the plumber."


def add_tools(prefix: str) -> None:
    """The tools, named with `prefix` (two servers in one test need names of their own)."""
    app.add_tool(secret_word, name=prefix + "secret_word", annotations=ToolAnnotations(read_only_hint=True))
    app.add_tool(erase_notes, name=prefix + "erase_notes", annotations=ToolAnnotations(destructive_hint=True))
    app.add_tool(calls, name=prefix + "calls")


class BearerToken:
    """An ASGI middleware that answers 401 to a request without the token (a preflight needs none)."""

    def __init__(self, inner: Any, token: str) -> None:
        self.inner = inner
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            sent = dict(scope["headers"]).get(b"authorization")
            if sent != self.expected:
                await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                return
        await self.inner(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--cors")
    parser.add_argument("--token")
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    add_tools(args.prefix)
    # the page's origin is another port of 127.0.0.1: the SDK's DNS-rebinding guard would refuse it
    web: Any = app.streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    if args.token:
        web = BearerToken(web, args.token)
    if args.cors:
        web = CORSMiddleware(web, allow_origins=[args.cors], allow_methods=["*"], allow_headers=["*"],
                             expose_headers=["Mcp-Session-Id"])
    uvicorn.run(web, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
