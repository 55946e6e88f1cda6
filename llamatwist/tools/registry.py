# -*- test-case-name: tests.test_server_tools -*-
"""The tools one server offers at /tools: the built-in ones --tools names, then each MCP server's.

Set up once at start-up, as llama-server does: a tools runtime that owns a container starts it now, and each
MCP server is started once to list its tools (a name that collides with one already offered is skipped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from llamatwist.tools.base import ServerTool, ToolStream, UnknownTool, function_definition
from llamatwist.tools.builtin import BUILTIN_TOOL_NAMES, build_tools
from llamatwist.tools.mcp import McpManager, McpToolDef, load_configs
from llamatwist.tools.runtime import ToolsRuntime, make_tools_runtime

__all__ = ["McpTool", "ToolBox", "build_toolbox"]

log = logging.getLogger("llamatwist.tools")


class McpTool(ServerTool):
    """One tool of an MCP server, offered as ``<server>_<tool>``."""

    kind = "mcp"

    def __init__(self, spec: McpToolDef, manager: McpManager) -> None:
        self.spec = spec
        self.manager = manager
        self.name = self.display_name = f"{spec.server_name}_{spec.name}"

    def definition(self) -> dict[str, Any]:
        schema = self.spec.input_schema if isinstance(self.spec.input_schema, dict) else {}
        return function_definition(self.name, self.spec.description, schema)

    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        # the headers' cwd/runtime/resp_type mean nothing to an MCP server: only the model's arguments go
        arguments = {k: v for k, v in params.items() if k not in ("cwd", "runtime", "resp_type")}
        should_stop = None if stream is None else (lambda: not stream.alive())
        return self.manager.call_tool(self.spec.server_name, self.spec.name, arguments, should_stop)


@dataclass
class ToolBox:
    tools: list[ServerTool] = field(default_factory=list)
    mcp: McpManager | None = None
    runtime: ToolsRuntime | None = None  # the --tools-runtime isolate, or None: the host

    def listing(self) -> list[dict[str, Any]]:
        return [tool.to_json() for tool in self.tools]

    def find(self, name: str, stream: bool) -> ServerTool:
        for tool in self.tools:
            if tool.name == name:
                if stream and not tool.support_stream:
                    raise UnknownTool(f'tool "{name}" does not support stream = true')
                return tool
        raise UnknownTool(f'unknown tool "{name}"')

    def close(self) -> None:
        if self.mcp is not None:
            self.mcp.shutdown()
        if self.runtime is not None:
            self.runtime.close()


def build_toolbox(enabled: tuple[str, ...], runtime: str | None, mcp_config: str | None,
                  mcp_json: str | None) -> ToolBox | None:
    """The tools to offer, or None when there are none (then /tools is llama-server's 403). ValueError: a bad
    runtime or MCP configuration, which stops the start-up."""
    configs = load_configs(mcp_config, mcp_json)
    if not enabled and not configs:
        return None
    unknown = [name for name in enabled if name != "all" and name not in BUILTIN_TOOL_NAMES]
    if unknown:
        raise ValueError(f'unknown tool "{unknown[0]}". available tools: {", ".join(BUILTIN_TOOL_NAMES)}')
    box = ToolBox()
    try:
        if runtime:
            box.runtime = make_tools_runtime(runtime)
        box.tools = [t for t in build_tools() if "all" in enabled or t.name in enabled]
        if configs:
            box.mcp = McpManager()
            box.mcp.start(configs)
            offered = {t.name for t in box.tools}
            added = 0
            for spec in box.mcp.list_tools():
                tool = McpTool(spec, box.mcp)
                if tool.name in offered:
                    log.warning('MCP tool "%s" from server "%s" collides with an existing tool, skipping',
                                tool.name, spec.server_name)
                    continue
                offered.add(tool.name)
                box.tools.append(tool)
                added += 1
            if added:
                log.info("Added %d MCP tools", added)
    except BaseException:
        box.close()
        raise
    return box
