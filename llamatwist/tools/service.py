# -*- test-case-name: tests.test_server_tools -*-
"""The tools' lifetime in the server: calls run on a thread pool of their own, so that a shell command that
takes a minute holds none of the threads tokenization and file reads use; stopping closes the MCP servers and
the tools runtime."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.python.threadpool import ThreadPool

from llamatwist.config import ServerConfig
from llamatwist.errors import StartupError
from llamatwist.tools.registry import ToolBox, build_toolbox

__all__ = ["ToolsService", "tools_service"]

T = TypeVar("T")

log = logging.getLogger("llamatwist.tools")

MAX_CALLS = 8  # tool calls running at once; more wait for a thread


class ToolsService(Service):
    def __init__(self, box: ToolBox, reactor: Any) -> None:
        self.box = box
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=MAX_CALLS, name="tools")

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]

        def close() -> None:
            self.box.close()  # first: a call waiting on an MCP server returns at once
            self._pool.stop()  # then wait for the calls still running (a shell ends by its timeout)

        # off the reactor: killing the MCP servers and removing a container take their time
        return deferToThread(close)

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)


def tools_service(config: ServerConfig, reactor: Any) -> ToolsService | None:
    """The tools of --tools and the MCP servers, set up now (a start-up error stops the server, exit 1), or None
    when there are none."""
    features = [name for name, on in (("MCP proxy (experimental)", config.ui_mcp_proxy),
                                      ("server tools (experimental)", bool(config.server_tools)),
                                      ("tools runtime (experimental)", bool(config.tools_runtime)),
                                      ("MCP servers (experimental)",
                                       bool(config.mcp_servers_config or config.mcp_servers_json))) if on]
    if features:
        log.warning("security: %s enabled - do not expose to untrusted environments", ", ".join(features))
    try:
        box = build_toolbox(config.server_tools, config.tools_runtime, config.mcp_servers_config,
                            config.mcp_servers_json)
    except (ValueError, OSError, RuntimeError) as exc:
        raise StartupError(f"tools setup failed: {exc}") from None
    return None if box is None else ToolsService(box, reactor)
