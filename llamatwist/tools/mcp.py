# -*- test-case-name: tests.test_mcp -*-
"""The MCP client behind --mcp-servers-config / --mcp-servers-json, as llama-server's server-mcp.cpp.

An MCP server here is a child process speaking JSON-RPC 2.0 on its stdin and stdout, one message per line (the
stdio transport of the Model Context Protocol). ``McpManager.start`` spawns every configured server once, lists its
tools and stops it again; ``McpManager.call_tool`` spawns it anew on demand and keeps it running, respawning it when
it has died. Failures to spawn are logged, never fatal, and cool down for a few seconds before the next try.

Threads, not asyncio: tool calls come from worker threads and block until the reply, a timeout or cancellation.
Each child has three pump threads (stdout -> replies, requests -> stdin, stderr -> log) that poll their pipe and so
never hang teardown, even when a grandchild holds the pipes open. POSIX only: pipes are polled with ``selectors``.

The tools keep their bare names here; the caller offers them as ``<server>_<tool>``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeVar

from llamatwist.chat.messages import json_type

__all__ = [
    "COOLDOWN_SECONDS", "DEFAULT_TIMEOUT_MS", "MCP_CLIENT_INFO", "MCP_PROTOCOL_VERSION", "WARMUP_TIMEOUT_SECONDS",
    "McpManager", "McpProtocolError", "McpServerConfig", "McpStdioTransport", "McpToolDef", "McpTransport",
    "load_configs", "parse_config", "parse_cursor_format",
]

log = logging.getLogger("llamatwist.tools.mcp")

MCP_PROTOCOL_VERSION = "2024-11-05"  # what llama-server puts in "initialize"
MCP_CLIENT_INFO = {"name": "llama.cpp", "version": "1.0"}  # its clientInfo, kept so servers see the same client
DEFAULT_TIMEOUT_MS = 30000  # per request (initialize, tools/list, tools/call) unless "timeout_ms" says otherwise
COOLDOWN_SECONDS = 5.0  # a server that failed to spawn is not tried again before this
WARMUP_TIMEOUT_SECONDS = 10.0  # start-up tool discovery per server, so a mute one cannot stall the start-up

_POLL_S = 0.05  # how often blocked pumps and waiting calls look at their stop condition
_MAX_LINE = 8 * 1024 * 1024  # a longer line from the child is dropped, so one without '\n' cannot grow memory
_ERR_TAIL_MAX = 4096  # characters of the child's stderr kept for diagnostics
_REPLY_QUEUE_MAX = 65536  # unsolicited messages pile up between calls; beyond this the oldest are dropped
_READ_CHUNK = 65536

_INT_MIN = -(2**31)

ShouldStop = Callable[[], bool]
T = TypeVar("T")


class McpProtocolError(ValueError):
    """An MCP server's reply has a field of the wrong JSON type (a non-string tool name or error message, a non-boolean
    isError...), or a request cannot be encoded. llama-server's JSON library throws there too, so this is raised,
    not folded into an ``{"error": ...}`` result: its /tools answers such a call with a 400 carrying the message."""


# --- configuration -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class McpServerConfig:
    """One entry of ``mcpServers``: a stdio server to spawn."""

    name: str  # the key under "mcpServers", e.g. "filesystem"
    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # merged over the parent's environment
    cwd: str = ""  # "" = the parent's working directory
    timeout_ms: int = DEFAULT_TIMEOUT_MS  # per request; <= 0 times out at once


@dataclass(frozen=True)
class McpToolDef:
    """A tool one server advertises."""

    server_name: str
    name: str  # bare: the caller adds the "<server>_" prefix
    description: str
    input_schema: Any  # JSON Schema of the arguments as the server sent it, or None when it sent none


def parse_config(json_text: str) -> list[McpServerConfig]:
    """The servers of a Cursor-style ``{"mcpServers": {name: {...}}}`` document.

    As llama-server reads it: a document without an ``mcpServers`` object gives no servers; an entry without a
    (non-empty) ``command``, or that is not an object, is skipped with a warning; ``args`` that is not an array and
    ``env`` that is not an object are ignored. ValueError: not JSON, or a key present with the wrong type
    (``command``/``cwd``/``args[i]``/``env`` values not strings, ``timeout_ms`` not a number or boolean).
    """
    try:
        doc = _loads(json_text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    return parse_cursor_format(doc)


def parse_cursor_format(doc: Any) -> list[McpServerConfig]:
    """``parse_config`` on an already parsed document."""
    servers = doc.get("mcpServers") if isinstance(doc, dict) else None
    if not isinstance(servers, dict):
        return []
    result: list[McpServerConfig] = []
    for name, entry in servers.items():
        where = f"MCP server '{name}'"
        # read in llama-server's order, so that the first bad key is the one reported
        command = _value(entry, "command", "", where, ValueError)
        cwd = _value(entry, "cwd", "", where, ValueError)
        timeout_ms = _value_int(entry, "timeout_ms", DEFAULT_TIMEOUT_MS, where)
        args: list[str] = []
        env: dict[str, str] = {}
        if isinstance(entry, dict) and isinstance(entry.get("args"), list):
            for i, arg in enumerate(entry["args"]):
                if not isinstance(arg, str):
                    raise _bad_type(where, f"args[{i}]", "a string", arg, ValueError)
                args.append(arg)
        if isinstance(entry, dict) and isinstance(entry.get("env"), dict):
            for key, val in entry["env"].items():
                if not isinstance(val, str):
                    raise _bad_type(where, f"env.{key}", "a string", val, ValueError)
                env[key] = val
        if not command:
            log.warning("MCP server '%s' has no command, skipping", name)
            continue
        result.append(McpServerConfig(name, command, args, env, cwd, timeout_ms))
    return result


def load_configs(config_path: str | None, inline_json: str | None) -> list[McpServerConfig]:
    """The servers of --mcp-servers-config (a file) then --mcp-servers-json, as llama-server combines them: a name
    already taken, by the file or earlier in the same document, is skipped with a warning; a source without servers
    is only warned about. An empty string counts as not given.

    ValueError: "failed to open MCP config file: <path>" when the file cannot be read, "failed to parse MCP config
    JSON: ..." for a bad document."""
    configs: list[McpServerConfig] = []

    def append(text: str) -> None:
        try:
            parsed = parse_config(text)
        except ValueError as exc:
            raise ValueError(f"failed to parse MCP config JSON: {exc}") from None
        if not parsed:
            log.warning("MCP config: no servers found in JSON")
        for cfg in parsed:
            # get_or_create and the registry key on the name, across both sources
            if any(c.name == cfg.name for c in configs):
                log.warning("MCP config: duplicate server name '%s', skipping", cfg.name)
                continue
            configs.append(cfg)

    if config_path:
        try:
            with open(config_path, "rb") as f:
                data = f.read()
        except IsADirectoryError:
            data = b""  # llama-server's ifstream opens a directory and reads nothing: an empty-document error
        except OSError:
            raise ValueError(f"failed to open MCP config file: {config_path}") from None
        # surrogateescape keeps bad UTF-8 visible to _loads, which rejects it as llama-server's parser does
        append(data.decode("utf-8", "surrogateescape"))
    if inline_json:
        append(inline_json)
    return configs


# --- JSON as llama-server's library sees it -----------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid literal {name!r}")


def _loads(text: str) -> Any:
    """json.loads as strict as nlohmann::json: no NaN/Infinity, no text that is not UTF-8 (lone surrogates, raw or
    escaped); a leading BOM is skipped, as nlohmann does."""
    text = text.removeprefix("\ufeff")
    if _SURROGATE.search(text):
        raise ValueError("invalid UTF-8 in the input")
    value = json.loads(text, parse_constant=_reject_constant)
    stack = [value]
    while stack:  # "\ud800" escapes decode to lone surrogates: look at every string
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValueError("invalid \\u escape: unpaired UTF-16 surrogate")
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return value


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None: nlohmann writes them as null, json.dumps would write NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps(message: dict[str, Any]) -> bytes:
    """One compact JSON-RPC message, UTF-8 (no newline: the writer frames it)."""
    try:
        return json.dumps(_finite(message), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        raise McpProtocolError("cannot send a string that is not valid UTF-8 to an MCP server") from None


def _bad_type(where: str, key: str, expected: str, value: Any, error: type[ValueError]) -> ValueError:
    return error(f'{where}: "{key}" must be {expected}, but is {json_type(value)}')


# llama-server reads fields with common_json::value(key, default): a non-object or a missing key gives the default,
# a present key of another type throws. These do the same, raising `error`.

_TYPE_NAMES: dict[type, str] = {str: "a string", bool: "a boolean"}
_T = TypeVar("_T", str, bool)


def _value(obj: Any, key: str, default: _T, where: str, error: type[ValueError]) -> _T:
    """``obj[key]`` when it is of the default's type; the default when absent."""
    if not isinstance(obj, dict) or key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, type(default)):
        raise _bad_type(where, key, _TYPE_NAMES[type(default)], value, error)
    return value


def _value_int(obj: Any, key: str, default: int, where: str) -> int:
    """An ``int`` field: any number or boolean converts, as C++'s static_cast<int> would."""
    if not isinstance(obj, dict) or key not in obj:
        return default
    value = obj[key]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return (value + 2**31) % 2**32 + _INT_MIN  # a 64-bit integer keeps its low 32 bits
    if isinstance(value, (int, float)):
        # nlohmann holds anything else as a double; out of int range the cast gives INT_MIN on the usual CPUs
        truncated = math.trunc(value)
        return truncated if _INT_MIN <= truncated < 2**31 else _INT_MIN
    raise _bad_type(where, key, "a number", value, ValueError)


def _same_id(reply_id: Any, request_id: int) -> bool:
    # nlohmann compares numbers across int/float, but never a boolean with a number
    return isinstance(reply_id, (int, float)) and not isinstance(reply_id, bool) and reply_id == request_id


def _rpc_failure(message: str) -> dict[str, Any]:
    """The reply send_rpc makes up when none came."""
    return {"error": {"code": -32603, "message": message}}


def _rpc_error_message(resp: dict[str, Any]) -> str:
    error = resp.get("error")
    if isinstance(error, dict):
        return _value(error, "message", "unknown error", "MCP error reply", McpProtocolError)
    if isinstance(error, str):
        return error
    return "unknown error"


def _result_to_response(result: Any) -> dict[str, Any]:
    """A tools/call result in the /tools shape: its text parts joined by newlines, as ``plain_text_response``, or as
    ``error`` when the result is flagged isError. Other parts (images, resources...) are dropped, as llama-server
    drops them."""
    text = ""
    if isinstance(result, dict) and isinstance(result.get("content"), list):
        for part in result["content"]:
            if isinstance(part, dict) and _value(part, "type", "", "MCP content part", McpProtocolError) == "text":
                if text:
                    text += "\n"
                text += _value(part, "text", "", "MCP text part", McpProtocolError)
    if _value(result, "isError", False, "MCP tool result", McpProtocolError):
        return {"error": text or "MCP tool returned an error"}
    return {"plain_text_response": text}


# --- transport ----------------------------------------------------------------------------------------------------

class _Pipe(Generic[T]):
    """A message queue between threads with two ends that close apart, like llama-server's server_pipe: a closed
    write end is EOF for the reader, a closed read end makes writes fail (a broken pipe)."""

    def __init__(self, max_size: int = 0) -> None:
        self._cond = threading.Condition()
        self._items: deque[T] = deque(maxlen=max_size or None)  # full: appending drops the oldest
        self._writer_closed = False
        self._reader_closed = False

    def close_write(self) -> None:
        with self._cond:
            self._writer_closed = True
            self._cond.notify_all()

    def close_read(self) -> None:
        with self._cond:
            self._reader_closed = True
            self._cond.notify_all()

    def write(self, item: T) -> bool:
        with self._cond:
            if self._reader_closed:
                return False
            self._items.append(item)
            self._cond.notify()
            return True

    def read(self, should_stop: ShouldStop | None, close_on_stop: bool = True) -> T | None:
        """The next item, or None at EOF or once ``should_stop()``. ``close_on_stop``: the stop means this reader is
        gone for good, so the writer is told the pipe is broken; without it the stop is just a deadline."""
        with self._cond:
            while True:
                if self._items:
                    return self._items.popleft()
                if self._writer_closed:
                    return None
                if should_stop is not None and should_stop():
                    if close_on_stop:
                        self._reader_closed = True
                        self._cond.notify_all()
                    return None
                self._cond.wait(_POLL_S)


class McpTransport(ABC):
    """One MCP session (llama-server's server_mcp_transport): the JSON-RPC side, over two queues of serialized
    messages. A subclass moves those messages to and from the server and frames them."""

    def __init__(self, name: str, timeout_ms: int) -> None:
        self.name = name
        self.timeout_ms = timeout_ms
        self.to_server: _Pipe[bytes] = _Pipe()
        self.from_server: _Pipe[bytes] = _Pipe()
        # per transport, held across the wait for a reply: a shared one would stall every server behind a slow call
        self._rpc_lock = threading.Lock()
        self._next_id = 1  # a fresh transport per spawn, so ids restart at 1 with each process
        self._initialized = False
        self._tools: list[McpToolDef] = []
        self._error_lock = threading.Lock()  # diagnostics() must not wait for an in-flight call
        self._last_error = ""

    @abstractmethod
    def start(self) -> bool:
        """Starts the server; False (and the reason in diagnostics()) when it cannot."""

    @abstractmethod
    def close(self) -> None:
        """Stops the server and waits for it; idempotent."""

    @abstractmethod
    def is_alive(self) -> bool:
        """Whether the server still runs; never blocks behind a call."""

    def diagnostics(self) -> str:
        """What went wrong last, for the log."""
        return self._get_error()

    def _get_error(self) -> str:
        with self._error_lock:
            return self._last_error

    def _set_error(self, message: str) -> None:
        with self._error_lock:
            self._last_error = message

    def list_tools(self, should_stop: ShouldStop | None = None) -> list[McpToolDef]:
        """The server's tools (one tools/list, no pagination: llama-server reads only the first page); [] when the
        server fails, with the reason in diagnostics(). McpProtocolError: a tool's name or description is not a
        string."""
        with self._rpc_lock:
            if not self._ensure_init(should_stop):
                return []
            if self._tools:
                return list(self._tools)
            resp = self._send_rpc({"jsonrpc": "2.0", "id": self._take_id(), "method": "tools/list"}, should_stop)
            if "result" not in resp:
                self._set_error("tools/list failed: " + _rpc_error_message(resp))
                return []
            result = resp["result"]
            tools: list[McpToolDef] = []
            if isinstance(result, dict) and isinstance(result.get("tools"), list):
                for entry in result["tools"]:
                    where = f"MCP server '{self.name}' tool"
                    tools.append(McpToolDef(
                        server_name=self.name,
                        name=_value(entry, "name", "", where, McpProtocolError),
                        description=_value(entry, "description", "", where, McpProtocolError),
                        input_schema=entry.get("inputSchema") if isinstance(entry, dict) else None,
                    ))
            self._tools = tools
            return list(tools)

    def call_tool(self, tool_name: str, arguments: Any, should_stop: ShouldStop | None = None) -> dict[str, Any]:
        """One tools/call: ``{"plain_text_response": text}`` or ``{"error": message}``. McpProtocolError: see there."""
        with self._rpc_lock:
            if not self._ensure_init(should_stop):
                return {"error": self._get_error()}  # the RPC error alone, without the stderr diagnostics() adds
            request = {
                "jsonrpc": "2.0",
                "id": self._take_id(),
                "method": "tools/call",
                "params": {"name": tool_name, "arguments": arguments},
            }
            resp = self._send_rpc(request, should_stop)
            if "error" in resp:
                return {"error": _rpc_error_message(resp)}
            if "result" in resp:
                return _result_to_response(resp["result"])
            return {"error": "invalid response from MCP server"}

    # both below run with _rpc_lock held

    def _take_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def _ensure_init(self, should_stop: ShouldStop | None) -> bool:
        """The initialize handshake, once per session (tried again on the next call if it failed)."""
        if self._initialized:
            return True
        request = {
            "jsonrpc": "2.0",
            "id": self._take_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": MCP_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": dict(MCP_CLIENT_INFO),
            },
        }
        resp = self._send_rpc(request, should_stop)
        if "result" not in resp:
            self._set_error("initialize failed: " + _rpc_error_message(resp))
            return False
        # a notification: no id, no reply to wait for
        self.to_server.write(_dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        self._initialized = True
        return True

    def _send_rpc(self, request: dict[str, Any], should_stop: ShouldStop | None) -> dict[str, Any]:
        """Sends a request and waits for the reply with its id, up to timeout_ms; a reply made up as
        ``{"error": {"code": -32603, "message": "transport closed" | "request timed out" | "cancelled"}}`` when
        none comes. Lines that are not JSON, notifications and replies to earlier, timed-out requests are skipped."""
        if not self.to_server.write(_dumps(request)):
            return _rpc_failure("transport closed")
        request_id = request["id"]
        deadline = time.monotonic() + self.timeout_ms / 1000

        def stop() -> bool:
            return (should_stop is not None and should_stop()) or time.monotonic() >= deadline

        while (frame := self.from_server.read(stop, close_on_stop=False)) is not None:
            try:
                reply = _loads(frame.decode("utf-8"))
            except (ValueError, RecursionError):
                reply = None  # not JSON: skipped
            if isinstance(reply, dict) and "id" in reply and _same_id(reply["id"], request_id):
                return reply
            if time.monotonic() >= deadline:
                break  # a flood of notifications must not outrun the deadline
        if should_stop is not None and should_stop():
            return _rpc_failure("cancelled")
        if time.monotonic() >= deadline:
            return _rpc_failure("request timed out")
        return _rpc_failure("transport closed")


def _resolve_command(command: str) -> str:
    """The program to run. A bare name is looked up on the parent's PATH, not on the PATH of the child's "env" (as
    llama-server's spawn does); a path is run as is, relative to the child's working directory."""
    if os.sep in command or (os.altsep and os.altsep in command):
        return command
    found = shutil.which(command, path=os.environ.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "not found on PATH", command)
    return found


def _pump_lines(fd: int, keep_going: Callable[[], bool], on_line: Callable[[bytes], bool]) -> None:
    """Calls ``on_line`` with each non-empty line read from ``fd`` (without "\\n" or a trailing "\\r") until EOF, an
    error, ``keep_going()`` turning false or ``on_line`` returning False. Polled, not blocking: a grandchild can hold
    the pipe's write end open after the child is killed, and a blocking read would then hang the teardown."""
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    partial = bytearray()  # the line being received
    skipping = False  # inside an over-long line: discard up to its newline
    try:
        while keep_going():
            if not selector.select(_POLL_S):
                continue
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not chunk:
                break  # EOF: the child and everything that inherited the pipe closed it
            pos = 0
            if skipping:
                newline = chunk.find(b"\n")
                if newline < 0:
                    continue
                pos, skipping = newline + 1, False
            while (newline := chunk.find(b"\n", pos)) >= 0:
                line = bytes(partial) + chunk[pos:newline] if partial else chunk[pos:newline]
                partial.clear()
                pos = newline + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line and not on_line(line):
                    return
            partial += chunk[pos:]
            if len(partial) > _MAX_LINE:
                log.warning("MCP: dropping oversized line (> %d bytes) from child pipe", _MAX_LINE)
                partial.clear()
                skipping = True
    finally:
        selector.close()


def _write_all(fd: int, data: bytes, keep_going: Callable[[], bool]) -> bool:
    """Writes all of ``data`` to a non-blocking ``fd``, waiting for room while ``keep_going()``. False on an error (the
    child is gone) or when stopped before the end."""
    view = memoryview(data)
    selector: selectors.BaseSelector | None = None
    try:
        while view and keep_going():
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                if selector is None:  # the pipe is full: rare for JSON-RPC, so only then is a selector made
                    selector = selectors.DefaultSelector()
                    selector.register(fd, selectors.EVENT_WRITE)
                selector.select(_POLL_S)
                continue
            except OSError:
                return False
            if written <= 0:
                return False
            view = view[written:]
        return not view
    finally:
        if selector is not None:
            selector.close()


class McpStdioTransport(McpTransport):
    """A server run as a child process, JSON-RPC one message per line on its stdio (llama-server's
    server_mcp_stdio). Its stderr is drained to the debug log, and the end of it kept for diagnostics()."""

    def __init__(self, config: McpServerConfig) -> None:
        super().__init__(config.name, config.timeout_ms)
        self.config = config
        self.from_server = _Pipe(max_size=_REPLY_QUEUE_MAX)
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._running = threading.Event()  # cleared by close(), or by a pump when the child's stdio ends
        self._closing = threading.Event()  # set by close(): stops the stderr pump too
        self._close_lock = threading.Lock()
        self._err_lock = threading.Lock()
        self._err_tail = ""

    @property
    def pid(self) -> int | None:
        """The child's process id while it is running (for diagnostics and tests)."""
        proc = self._proc
        return None if proc is None else proc.pid

    def start(self) -> bool:
        cfg = self.config
        try:
            executable = _resolve_command(cfg.command)
            env = {**os.environ, **cfg.env} if cfg.env else None  # none given: the parent's, untouched
            proc = subprocess.Popen(
                [cfg.command, *cfg.args], executable=executable, env=env, cwd=cfg.cwd or None,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._set_error(f"failed to spawn '{cfg.command}': {exc}")
            log.warning("MCP '%s': failed to spawn '%s': %s", cfg.name, cfg.command, exc)
            return False
        stdin, stdout, stderr = _pipes(proc)
        for stream in (stdin, stdout, stderr):
            os.set_blocking(stream.fileno(), False)
        self._proc = proc
        self._running.set()
        self._threads = [
            threading.Thread(target=self._reader_loop, args=(stdout.fileno(),), name=f"mcp-{cfg.name}-reader",
                             daemon=True),
            threading.Thread(target=self._writer_loop, args=(stdin.fileno(),), name=f"mcp-{cfg.name}-writer",
                             daemon=True),
            threading.Thread(target=self._errlog_loop, args=(stderr.fileno(),), name=f"mcp-{cfg.name}-stderr",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return True

    def close(self) -> None:
        with self._close_lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            self._running.clear()
            self._closing.set()
            self.to_server.close_write()  # wakes the writer
            self.from_server.close_write()  # wakes a call waiting for a reply
            with contextlib.suppress(OSError):
                proc.kill()  # SIGKILL, as llama-server: a server gets no say in its shutdown
            for thread in self._threads:
                thread.join()
            self._threads = []
            proc.wait()  # reaped, or it stays a zombie for the life of the server
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError, ValueError):
                        stream.close()

    def is_alive(self) -> bool:
        return self._running.is_set()

    def diagnostics(self) -> str:
        out = super().diagnostics()
        with self._err_lock:
            if self._err_tail:
                out = (out + "; " if out else "") + "last stderr: " + self._err_tail
        return out

    def _reader_loop(self, fd: int) -> None:
        _pump_lines(fd, self._running.is_set, self.from_server.write)
        self._running.clear()
        self.to_server.close_write()  # stops the writer
        self.from_server.close_write()  # EOF for a call waiting for a reply

    def _writer_loop(self, fd: int) -> None:
        def stopped() -> bool:
            return not self._running.is_set()

        while (message := self.to_server.read(stopped)) is not None:
            if not _write_all(fd, message + b"\n", self._running.is_set):
                break  # the child is gone, or closing
        self._running.clear()
        self.to_server.close_read()  # further requests fail at once
        self.from_server.close_write()  # wakes a call waiting for a reply

    def _errlog_loop(self, fd: int) -> None:
        # drained, or a chatty child blocks on a full pipe. Unlike llama-server's, this pump runs until EOF rather than
        # until stdout ends, so the last words of a crashing server reach diagnostics() (close() still stops it)
        def on_line(line: bytes) -> bool:
            text = line.decode("utf-8", "replace")
            log.debug("MCP '%s' stderr: %s", self.name, text)
            with self._err_lock:
                self._err_tail = (self._err_tail + text + "\n")[-_ERR_TAIL_MAX:]
            return True

        _pump_lines(fd, lambda: not self._closing.is_set(), on_line)


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes], IO[bytes]]:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None  # all three are PIPE
    return proc.stdin, proc.stdout, proc.stderr


# --- manager ------------------------------------------------------------------------------------------------------

class McpManager:
    """The configured MCP servers of one llama server (llama-server's server_mcp)."""

    def __init__(self, *, cooldown_s: float = COOLDOWN_SECONDS,
                 warmup_timeout_s: float = WARMUP_TIMEOUT_SECONDS) -> None:
        self.cooldown_s = cooldown_s
        self.warmup_timeout_s = warmup_timeout_s
        self._configs: list[McpServerConfig] = []
        self._lock = threading.Lock()  # guards the three below
        # a transport handed to a call stays usable by it even if it is evicted meanwhile: the call just fails
        self._transports: dict[str, McpTransport] = {}
        self._dead_until: dict[str, float] = {}  # spawn-failure cooldown, time.monotonic()
        self._registry: list[McpToolDef] = []
        self._stopping = threading.Event()

    def start(self, configs: Iterable[McpServerConfig]) -> None:
        """Adds the servers (a name already there is skipped with a warning), then spawns each server once, lists
        its tools (for up to WARMUP_TIMEOUT_SECONDS) and stops it. A server that cannot be spawned or does not answer
        is logged and offers no tools; it is still tried again on a call. McpProtocolError: a server listed a tool
        whose name or description is not a string (llama-server's start-up fails there too)."""
        with self._lock:
            for cfg in configs:
                if self._find_config(cfg.name) is not None:
                    log.warning("MCP config: duplicate server name '%s', skipping", cfg.name)
                    continue
                self._configs.append(cfg)
            configs_now = list(self._configs)
        if not configs_now:
            return
        discovered: list[McpToolDef] = []
        for cfg in configs_now:
            transport = self._create_transport(cfg)
            if not transport.start():
                log.warning("MCP warmup: failed to spawn '%s': %s", cfg.name, transport.diagnostics())
                continue
            try:
                tools = transport.list_tools(self._warmup_stop(time.monotonic() + self.warmup_timeout_s))
                if not tools and transport.diagnostics():
                    log.warning("MCP warmup: '%s' listed no tools: %s", cfg.name, transport.diagnostics())
            finally:
                transport.close()
            log.info("MCP warmup: '%s' discovered %d tools", cfg.name, len(tools))
            discovered.extend(tools)
        with self._lock:
            self._registry = discovered

    def empty(self) -> bool:
        """True until start() was given at least one server."""
        return not self._configs

    def list_tools(self) -> list[McpToolDef]:
        """The tools found at start()."""
        with self._lock:
            return list(self._registry)

    def call_tool(self, server_name: str, tool_name: str, arguments: Any,
                  should_stop: ShouldStop | None = None) -> dict[str, Any]:
        """Calls a tool, spawning its server if it is not running (or has died). Returns ``{"plain_text_response":
        text}`` or ``{"error": message}``: "MCP server unavailable: <server>" when the server cannot be spawned (then
        for COOLDOWN_SECONDS), is unknown, or the manager is shut down. ``should_stop`` cancels the wait for the
        reply, as shutdown() does. McpProtocolError: see there."""
        transport = self._get_or_create(server_name)
        if transport is None:
            return {"error": f"MCP server unavailable: {server_name}"}

        def stop() -> bool:
            return self._stopping.is_set() or (should_stop is not None and should_stop())

        return transport.call_tool(tool_name, arguments, stop)

    def shutdown(self) -> None:
        """Cancels the calls in flight (they answer "cancelled" at once), refuses new ones and kills every running
        server. Idempotent."""
        self._stopping.set()
        with self._lock:
            transports = list(self._transports.values())
            self._transports.clear()
        for transport in transports:
            transport.close()

    def _create_transport(self, cfg: McpServerConfig) -> McpTransport:
        """The one place that names a concrete transport."""
        return McpStdioTransport(cfg)

    def _find_config(self, name: str) -> McpServerConfig | None:
        return next((c for c in self._configs if c.name == name), None)

    def _warmup_stop(self, deadline: float) -> ShouldStop:
        return lambda: self._stopping.is_set() or time.monotonic() >= deadline

    def _get_or_create(self, name: str) -> McpTransport | None:
        """The running transport of a server, spawning one if there is none or it died; None during the cooldown
        after a failed spawn, for an unknown server, or once shut down."""
        to_close: list[McpTransport] = []
        result: McpTransport | None = None
        with self._lock:
            if self._stopping.is_set():
                return None
            now = time.monotonic()
            dead_until = self._dead_until.get(name)
            if dead_until is not None:
                if now < dead_until:
                    return None
                del self._dead_until[name]
            current = self._transports.get(name)
            if current is not None:
                if current.is_alive():
                    return current
                log.warning("MCP '%s' is no longer alive: %s", name, current.diagnostics())
                to_close.append(current)
                del self._transports[name]
            cfg = self._find_config(name)
            if cfg is not None:
                fresh = self._create_transport(cfg)
                if fresh.start() and fresh.is_alive():
                    self._transports[name] = fresh
                    result = fresh
                else:
                    log.warning("MCP '%s': failed to start: %s", name, fresh.diagnostics())
                    to_close.append(fresh)
                    self._dead_until[name] = now + self.cooldown_s
        for transport in to_close:
            transport.close()  # blocking, so outside the lock
        return result
