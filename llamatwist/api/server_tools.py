# -*- test-case-name: tests.test_server_tools -*-
"""/tools (the server tools of --tools and the MCP servers) and /cors-proxy (the web UI's MCP proxy,
--ui-mcp-proxy), as llama-server serves them, on a model's server and on the router alike.

Without them both answer llama-server's 403 ``feature_disabled``. They let whoever can reach the server read
and write files and run commands as the server's user: --tools limits CORS to localhost origins unless
--cors-origins says otherwise, and --api-key guards them like every other route.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from klein import Klein
from twisted.internet import reactor as default_reactor
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.web.client import Agent, BrowserLikeRedirectAgent, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from llamatwist.api.errors import BadGateway, FeatureDisabled, InvalidRequest
from llamatwist.api.http import handler, query_param, read_json, send_json
from llamatwist.api.params import optional
from llamatwist.api.relay import relay
from llamatwist.api.streaming import SSEStream
from llamatwist.tools.service import ToolsService

__all__ = ["ToolCall", "parse_proxy_target", "parse_tool_call", "register"]

log = logging.getLogger("llamatwist.tools")

PROXY_HEADER_PREFIX = b"x-llama-server-proxy-header-"
_NOT_FORWARDED = frozenset({b"accept-encoding", b"transfer-encoding", b"content-length"})
PROXY_TIMEOUT = 600  # seconds to connect, as llama-server's proxy


@dataclass
class ToolCall:
    """A parsed POST /tools body, the headers' settings folded into ``params`` (as llama-server does)."""

    tool: str
    params: dict[str, Any]
    stream: bool


def parse_tool_call(body: dict[str, Any], headers: dict[str, str]) -> ToolCall:
    """``{"tool", "params", "stream"}``; the x-tool-cwd, x-tool-runtime and x-resp-type headers (lower-cased
    keys) set "cwd", "runtime" and "resp_type": the model cannot set them in its arguments."""
    tool = body.get("tool")
    if not isinstance(tool, str):
        raise InvalidRequest("'tool' is required and must be a string")
    params = optional(body, "params", {})
    if not isinstance(params, dict):
        raise InvalidRequest("'params' must be an object")
    stream = optional(body, "stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean")
    params = {k: v for k, v in params.items() if k not in ("cwd", "runtime", "resp_type")}
    for header, key in (("x-tool-cwd", "cwd"), ("x-tool-runtime", "runtime"), ("x-resp-type", "resp_type")):
        if headers.get(header):
            params[key] = headers[header]
    return ToolCall(tool, params, stream)


def parse_proxy_target(url: str | None) -> bytes:
    """The ?url= of /cors-proxy, checked as llama-server checks it; the URL to request (path "/" if none)."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https"):
        if not parts.hostname:
            raise InvalidRequest("invalid target URL: missing host")
        raise InvalidRequest(f"unsupported URL scheme in target URL: {parts.scheme}")
    if not parts.hostname:
        raise InvalidRequest("invalid target URL: missing host")
    if parts.password:
        raise InvalidRequest("authentication in target URL is not supported")
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise InvalidRequest("invalid target URL: bad port") from None
    path = parts.path or "/"
    target = parts._replace(path=path, fragment="").geturl()
    try:
        return target.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidRequest("invalid target URL: not ASCII (percent-encode it)") from None


def register(app: Klein, tools: ToolsService | None, proxy: bool, reactor: Any = None) -> None:
    reactor = reactor or default_reactor

    @app.route("/tools", methods=["GET"])
    @handler
    async def list_tools(request: Request) -> Any:
        if tools is None:
            raise FeatureDisabled("this feature is disabled")
        return send_json(request, tools.box.listing())

    @app.route("/tools", methods=["POST"])
    @handler
    async def call_tool(request: Request) -> Any:
        if tools is None:
            raise FeatureDisabled("this feature is disabled")
        headers = {k.decode("latin-1").lower(): v[-1].decode("utf-8", "replace")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        call = parse_tool_call(read_json(request), headers)
        tool = tools.box.find(call.tool, call.stream)
        if "runtime" not in call.params and tools.box.runtime is not None:
            # on the tools' threads: a container that died is started again there
            call.params["runtime"] = await tools.run(tools.box.runtime.spec)
        if not call.stream:
            return send_json(request, await tools.run(tool.invoke, call.params))
        return await _stream(request, tools, tool.invoke, call.params)

    async def _stream(request: Request, service: ToolsService, invoke: Any, params: dict[str, Any]) -> bytes:
        sse = SSEStream(request)

        class Stream:  # the tool's side, on its thread
            def push(self, chunk: str) -> None:
                if chunk:
                    reactor.callFromThread(sse.send, {"chunk": chunk})

            def alive(self) -> bool:
                return not sse.closed

        done: dict[str, Any] = {"done": True}
        try:
            await service.run(invoke, params, Stream())  # its result is not sent: the chunks were
        except Exception as exc:  # noqa: BLE001  # the stream's last event says what failed
            done["error"] = str(exc) or type(exc).__name__
        sse.send(done)
        return b""

    agent = BrowserLikeRedirectAgent(Agent(reactor, connectTimeout=PROXY_TIMEOUT))  # type: ignore[arg-type]

    @app.route("/cors-proxy", methods=["GET", "POST"])
    @handler
    async def cors_proxy(request: Request) -> Any:
        if not proxy:
            raise FeatureDisabled("this feature is disabled")
        url = parse_proxy_target(query_param(request, "url"))
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            lower = name.lower()
            if lower.startswith(PROXY_HEADER_PREFIX) and len(lower) > len(PROXY_HEADER_PREFIX):
                forwarded = name[len(PROXY_HEADER_PREFIX):]
                if forwarded.lower() not in _NOT_FORWARDED and forwarded.lower() != b"host":
                    headers.setRawHeaders(forwarded, values)
        body = request.content.read() if request.content is not None else b""
        log.info("proxying %s request to %s", request.method.decode(), url.decode())
        try:
            await relay(request, agent, request.method, url, headers, body)
        except (ConnectError, DNSLookupError, TimeoutError, ResponseFailed) as exc:
            raise BadGateway(f"proxy error: {exc}") from None
        return None
