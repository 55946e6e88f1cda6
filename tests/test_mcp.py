"""llamatwist.tools.mcp against real MCP servers run as child processes: one written with the official SDK
(tests/data/mcp/sdk_server.py) and a hand-written one (raw_server.py) for misbehaviour an SDK server cannot produce.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llamatwist.tools.mcp import (
    COOLDOWN_SECONDS,
    DEFAULT_TIMEOUT_MS,
    MCP_PROTOCOL_VERSION,
    WARMUP_TIMEOUT_SECONDS,
    McpManager,
    McpProtocolError,
    McpServerConfig,
    McpStdioTransport,
    McpToolDef,
    load_configs,
    parse_config,
)

DATA = Path(__file__).parent / "data" / "mcp"
RAW = str(DATA / "raw_server.py")
SDK = str(DATA / "sdk_server.py")
LOGGER = "llamatwist.tools.mcp"


def raw(name: str = "raw", mode: str = "ok", **kw: Any) -> McpServerConfig:
    return McpServerConfig(name=name, command=sys.executable, args=[RAW, mode], **kw)


@contextmanager
def started(*configs: McpServerConfig, **manager_kw: Any) -> Iterator[McpManager]:
    manager = McpManager(**manager_kw)
    try:
        manager.start(configs)
        yield manager
    finally:
        manager.shutdown()


def text_of(result: dict[str, Any]) -> str:
    assert set(result) == {"plain_text_response"}, result
    return str(result["plain_text_response"])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_for(predicate: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# --- configuration ------------------------------------------------------------------------------------------------

def test_parse_reads_every_key_and_defaults() -> None:
    doc = {"mcpServers": {
        "full": {"command": "srv", "args": ["-v", "x"], "env": {"A": "1", "B": ""}, "cwd": "/tmp",
                 "timeout_ms": 1500, "type": "stdio", "url": "ignored"},
        "bare": {"command": "other"},
    }}
    assert parse_config(json.dumps(doc)) == [
        McpServerConfig("full", "srv", ["-v", "x"], {"A": "1", "B": ""}, "/tmp", 1500),
        McpServerConfig("bare", "other", [], {}, "", 30000),
    ]
    assert DEFAULT_TIMEOUT_MS == 30000 and MCP_PROTOCOL_VERSION == "2024-11-05"
    assert (COOLDOWN_SECONDS, WARMUP_TIMEOUT_SECONDS) == (5.0, 10.0)
    manager = McpManager()
    assert (manager.cooldown_s, manager.warmup_timeout_s) == (5.0, 10.0)


def test_parse_skips_and_ignores(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    doc = {"mcpServers": {
        "nocommand": {"args": ["x"]},
        "empty": {"command": ""},
        "string": "srv", "number": 3, "null": None, "list": ["srv"],
        "oddtypes": {"command": "srv", "args": "not-a-list", "env": ["not", "an", "object"], "timeout": 5},
    }}
    assert parse_config(json.dumps(doc)) == [McpServerConfig("oddtypes", "srv")]  # "timeout" is not a key
    skipped = [r.getMessage() for r in caplog.records if "has no command, skipping" in r.getMessage()]
    assert len(skipped) == 6 and "MCP server 'nocommand' has no command, skipping" in skipped


@pytest.mark.parametrize("doc", [
    "{}", "[]", '"x"', "null", "1", '{"mcpServers": []}', '{"mcpServers": null}', '{"mcpServers": "srv"}',
    '{"mcpServers": {}}', '{"servers": {"a": {"command": "srv"}}}',
])
def test_parse_documents_without_servers(doc: str) -> None:
    assert parse_config(doc) == []


@pytest.mark.parametrize("text", [
    "", "   ", "not valid json", "{", '{"mcpServers": {}} extra', '{"mcpServers": {},}', '{"a": NaN}',
    '{"a": Infinity}', '// comment\n{}', "{'mcpServers': {}}", '{"a": "\\ud800"}', '{"a": "\ud800"}',
    '{"a": "tab\there"}',
])
def test_parse_rejects_bad_json(text: str) -> None:
    with pytest.raises(ValueError, match="^invalid JSON: "):
        parse_config(text)


@pytest.mark.parametrize(("entry", "message"), [
    ({"command": 5}, '"command" must be a string, but is number'),
    ({"command": None}, '"command" must be a string, but is null'),
    ({"command": ["srv"]}, '"command" must be a string, but is array'),
    ({"command": "srv", "cwd": 1}, '"cwd" must be a string, but is number'),
    ({"command": "srv", "timeout_ms": "500"}, '"timeout_ms" must be a number, but is string'),
    ({"command": "srv", "timeout_ms": None}, '"timeout_ms" must be a number, but is null'),
    ({"command": "srv", "timeout_ms": {}}, '"timeout_ms" must be a number, but is object'),
    ({"command": "srv", "args": [1]}, '"args\\[0\\]" must be a string, but is number'),
    ({"command": "srv", "args": ["a", None]}, '"args\\[1\\]" must be a string, but is null'),
    ({"command": "srv", "env": {"A": 1}}, '"env.A" must be a string, but is number'),
    ({"command": "srv", "env": {"A": True}}, '"env.A" must be a string, but is boolean'),
    ({"cwd": False}, '"cwd" must be a string, but is boolean'),  # checked before the entry is skipped
    ({"args": [{}]}, '"args\\[0\\]" must be a string, but is object'),  # so are args
])
def test_parse_rejects_wrong_types(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^MCP server 'bad': " + message):
        parse_config(json.dumps({"mcpServers": {"ok": {"command": "srv"}, "bad": entry}}))


@pytest.mark.parametrize(("value", "expected"), [
    (250, 250), (True, 1), (False, 0), (1.9, 1), (-2.5, -2), (0, 0), (-1, -1), (2**32 + 500, 500),
])
def test_parse_timeout_converts_like_a_cast_to_int(value: Any, expected: int) -> None:
    [cfg] = parse_config(json.dumps({"mcpServers": {"s": {"command": "srv", "timeout_ms": value}}}))
    assert cfg.timeout_ms == expected


def test_parse_keeps_order_bom_and_last_duplicate_key() -> None:
    text = '\ufeff{"mcpServers": {"b": {"command": "1"}, "a": {"command": "2"}, "b": {"command": "3"}}}'
    assert [(c.name, c.command) for c in parse_config(text)] == [("b", "3"), ("a", "2")]


def test_load_configs_combines_file_then_inline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"a": {"command": "from-file"}, "b": {"command": "b"}}}))
    inline = json.dumps({"mcpServers": {"a": {"command": "from-inline"}, "c": {"command": "c"}}})
    configs = load_configs(str(path), inline)
    assert [(c.name, c.command) for c in configs] == [("a", "from-file"), ("b", "b"), ("c", "c")]
    assert "MCP config: duplicate server name 'a', skipping" in caplog.text
    assert load_configs(None, None) == [] and load_configs("", "") == []
    assert [c.name for c in load_configs(None, inline)] == ["a", "c"]
    caplog.clear()
    assert load_configs(None, '{"mcpServers": {}}') == []
    assert "MCP config: no servers found in JSON" in caplog.text


def test_load_configs_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^failed to open MCP config file: /nonexistent/path.json$"):
        load_configs("/nonexistent/path.json", None)
    with pytest.raises(ValueError, match="^failed to parse MCP config JSON: invalid JSON: "):
        load_configs(None, "not valid json")
    with pytest.raises(ValueError, match="^failed to parse MCP config JSON: MCP server 'x': \"command\" must be"):
        load_configs(None, '{"mcpServers": {"x": {"command": 1}}}')
    with pytest.raises(ValueError, match="^failed to parse MCP config JSON: invalid JSON: "):
        load_configs(str(tmp_path), None)  # a directory reads as nothing
    bad_utf8 = tmp_path / "latin1.json"
    bad_utf8.write_bytes(b'{"mcpServers": {"x": {"command": "caf\xe9"}}}')
    with pytest.raises(ValueError, match="^failed to parse MCP config JSON: invalid JSON: "):
        load_configs(str(bad_utf8), None)
    # the file is read before the inline JSON, and its error stops there
    with pytest.raises(ValueError, match="failed to open"):
        load_configs(str(tmp_path / "missing.json"), '{"mcpServers": {"a": {"command": "srv"}}}')


# --- against the official SDK -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[McpManager, Path]]:
    workdir = tmp_path_factory.mktemp("sdk-cwd").resolve()
    configs = [
        McpServerConfig("sdk", sys.executable, [SDK], {"MCP_TEST_VAR": "from-config"}, str(workdir), 20000),
        McpServerConfig("sdk2", sys.executable, [SDK]),
    ]
    with started(*configs) as manager:
        with ThreadPoolExecutor(2) as pool:  # spawn both now, so the timings below measure calls only
            for result in pool.map(lambda name: manager.call_tool(name, "echo", {"message": "up"}), ["sdk", "sdk2"]):
                assert result == {"plain_text_response": "up"}
        yield manager, workdir


def test_sdk_tools_listed_with_schema(sdk: tuple[McpManager, Path]) -> None:
    manager, _ = sdk
    assert not manager.empty()
    tools = manager.list_tools()
    names = ["echo", "add", "parts", "fail", "refuse", "env", "cwd", "pid", "sleep", "crash"]
    assert [(t.server_name, t.name) for t in tools] == [("sdk", n) for n in names] + [("sdk2", n) for n in names]
    echo = tools[0]
    assert echo.description == "Echo back the message."
    assert echo.input_schema["type"] == "object"
    assert echo.input_schema["properties"]["message"]["type"] == "string"
    assert echo.input_schema["required"] == ["message"]
    assert tools[1].input_schema["properties"]["a"]["type"] == "integer"


def test_sdk_calls_return_results(sdk: tuple[McpManager, Path]) -> None:
    manager, _ = sdk
    assert manager.call_tool("sdk", "echo", {"message": "hello world"}) == {"plain_text_response": "hello world"}
    assert manager.call_tool("sdk", "echo", {"message": "héllo ✓ 中文"}) == {"plain_text_response": "héllo ✓ 中文"}
    assert manager.call_tool("sdk", "add", {"a": 3, "b": 5}) == {"plain_text_response": "8"}
    assert manager.call_tool("sdk2", "parts", {}) == {"plain_text_response": "first\nsecond"}


def test_sdk_tool_errors(sdk: tuple[McpManager, Path]) -> None:
    manager, _ = sdk
    failed = manager.call_tool("sdk", "fail", {})
    assert set(failed) == {"error"} and failed["error"].startswith("Error executing tool fail")
    assert manager.call_tool("sdk", "refuse", {}) == {"error": "Error executing tool refuse: not allowed"}
    unknown = manager.call_tool("sdk", "nope", {})
    assert set(unknown) == {"error"} and "nope" in unknown["error"]
    missing_arg = manager.call_tool("sdk", "echo", {})
    assert set(missing_arg) == {"error"} and "message" in missing_arg["error"]
    assert manager.call_tool("sdk", "echo", {"message": "still fine"}) == {"plain_text_response": "still fine"}


def test_sdk_env_and_cwd(sdk: tuple[McpManager, Path]) -> None:
    manager, workdir = sdk
    assert text_of(manager.call_tool("sdk", "env", {"name": "MCP_TEST_VAR"})) == "from-config"
    assert text_of(manager.call_tool("sdk", "env", {"name": "PATH"})) == os.environ["PATH"]  # merged over ours
    assert text_of(manager.call_tool("sdk", "cwd", {})) == str(workdir)
    assert text_of(manager.call_tool("sdk2", "env", {"name": "MCP_TEST_VAR"})) == "<unset>"
    assert text_of(manager.call_tool("sdk2", "cwd", {})) == os.getcwd()


def test_sdk_concurrent_calls(sdk: tuple[McpManager, Path]) -> None:
    manager, _ = sdk
    begin = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda name: manager.call_tool(name, "sleep", {"seconds": 1.0}), ["sdk", "sdk2"]))
    elapsed = time.monotonic() - begin
    assert results == [{"plain_text_response": "slept 1.0"}] * 2
    assert elapsed < 1.8, f"two servers were called one after the other ({elapsed:.2f}s)"
    # many callers on one server: each gets the reply to its own request
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: manager.call_tool("sdk", "echo", {"message": f"m{i}"}), range(24)))
    assert replies == [{"plain_text_response": f"m{i}"} for i in range(24)]


def test_sdk_crash_mid_call_respawns(sdk: tuple[McpManager, Path], caplog: pytest.LogCaptureFixture) -> None:
    manager, _ = sdk
    caplog.set_level(logging.WARNING, logger=LOGGER)
    before = int(text_of(manager.call_tool("sdk2", "pid", {})))
    assert manager.call_tool("sdk2", "crash", {}) == {"error": "transport closed"}
    after = int(text_of(manager.call_tool("sdk2", "pid", {})))
    assert after != before and gone(before)  # respawned, and the dead one reaped
    assert "MCP 'sdk2' is no longer alive" in caplog.text and "dying now" in caplog.text


def test_sdk_cancelled_by_should_stop(sdk: tuple[McpManager, Path]) -> None:
    manager, _ = sdk
    begin = time.monotonic()
    result = manager.call_tool("sdk", "sleep", {"seconds": 3}, should_stop=lambda: time.monotonic() - begin > 0.3)
    assert result == {"error": "cancelled"}
    assert time.monotonic() - begin < 1.5
    # the late reply to the cancelled call is not taken for the next one's
    assert manager.call_tool("sdk", "echo", {"message": "next"}) == {"plain_text_response": "next"}


# --- protocol, against the hand-written server --------------------------------------------------------------------

def test_handshake_and_request_shapes() -> None:
    with started(raw()) as manager:
        assert [(t.name, t.description) for t in manager.list_tools()] == [
            ("echo", "Echo back the message"), ("record", "All messages received so far")]
        manager.call_tool("raw", "echo", {"message": "x", "nan": float("nan"), "nested": [float("inf")]})
        seen = json.loads(text_of(manager.call_tool("raw", "record", {})))
    assert seen == [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "llama.cpp", "version": "1.0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        # ids restart with each process: the warmup's server got 1 and 2 too
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "echo", "arguments": {"message": "x", "nan": None, "nested": [None]}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "record", "arguments": {}}},
    ]


def test_noise_before_the_reply_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with started(raw()) as manager:
        assert manager.call_tool("raw", "garbage", {}) == {"plain_text_response": "after garbage"}
        assert manager.call_tool("raw", "flood", {"count": 5000}) == {"plain_text_response": "after flood"}
        assert manager.call_tool("raw", "oversize", {}) == {"plain_text_response": "after oversize"}
        assert "dropping oversized line" in caplog.text
        assert manager.call_tool("raw", "echo", {"message": "ok"}) == {"plain_text_response": "ok"}


@pytest.fixture(scope="module")
def shared_raw() -> Iterator[McpManager]:
    with started(raw()) as manager:
        yield manager


@pytest.mark.parametrize(("reply", "expected"), [
    ({"result": {"content": [{"type": "text", "text": ""}, {"type": "text", "text": "b"},
                             {"type": "image", "data": "AAAA", "mimeType": "image/png"}, "junk", {"text": "untyped"},
                             {"type": "text", "text": "c"}, {"type": "text"}]}},
     {"plain_text_response": "b\nc\n"}),
    ({"result": {"content": [{"type": "text", "text": "bad thing"}], "isError": True}}, {"error": "bad thing"}),
    ({"result": {"content": [], "isError": True}}, {"error": "MCP tool returned an error"}),
    ({"result": {"content": [{"type": "text", "text": "fine"}], "isError": False}}, {"plain_text_response": "fine"}),
    ({"result": {}}, {"plain_text_response": ""}),
    ({"result": {"content": "not a list"}}, {"plain_text_response": ""}),
    ({"result": "odd"}, {"plain_text_response": ""}),
    ({"result": None}, {"plain_text_response": ""}),
    ({"error": {"code": -32000, "message": "went wrong"}}, {"error": "went wrong"}),
    ({"error": {"code": -32000}}, {"error": "unknown error"}),
    ({"error": "plain string"}, {"error": "plain string"}),
    ({"error": 42}, {"error": "unknown error"}),
    ({"error": {"message": "error wins"}, "result": {}}, {"error": "error wins"}),
    ({}, {"error": "invalid response from MCP server"}),
])
def test_result_shapes(shared_raw: McpManager, reply: dict[str, Any], expected: dict[str, Any]) -> None:
    assert shared_raw.call_tool("raw", "result", {"reply": reply}) == expected


@pytest.mark.parametrize(("reply", "message"), [
    ({"error": {"message": 5}}, '"message" must be a string, but is number'),
    ({"result": {"isError": "yes"}}, '"isError" must be a boolean, but is string'),
    ({"result": {"content": [{"type": 1}]}}, '"type" must be a string, but is number'),
    ({"result": {"content": [{"type": "text", "text": None}]}}, '"text" must be a string, but is null'),
])
def test_ill_typed_replies_raise(shared_raw: McpManager, reply: dict[str, Any], message: str) -> None:
    with pytest.raises(McpProtocolError, match=message):
        shared_raw.call_tool("raw", "result", {"reply": reply})
    assert shared_raw.call_tool("raw", "echo", {"message": "alive"}) == {"plain_text_response": "alive"}
    with pytest.raises(McpProtocolError, match="not valid UTF-8"):
        shared_raw.call_tool("raw", "echo", {"message": "\ud800"})


def test_timeout_then_stale_reply_is_skipped() -> None:
    with started(raw(timeout_ms=300)) as manager:
        begin = time.monotonic()
        assert manager.call_tool("raw", "silent", {}) == {"error": "request timed out"}
        assert 0.25 < time.monotonic() - begin < 2.0
        # the server answers "slow" after the deadline: that reply must not be taken for the echo's
        assert manager.call_tool("raw", "slow", {"seconds": 0.6}) == {"error": "request timed out"}
        time.sleep(0.4)
        assert manager.call_tool("raw", "echo", {"message": "mine"}) == {"plain_text_response": "mine"}


def test_server_that_never_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    begin = time.monotonic()
    with started(raw("mute", "silent", timeout_ms=300), raw("capped", "silent"), warmup_timeout_s=0.6) as manager:
        assert time.monotonic() - begin < 3.0  # the warmup gives up: at timeout_ms, or at the warmup cap
        assert manager.list_tools() == []
        assert "'mute' listed no tools: initialize failed: request timed out" in caplog.text
        assert "'capped' listed no tools: initialize failed: cancelled" in caplog.text
        assert manager.call_tool("mute", "echo", {}) == {"error": "initialize failed: request timed out"}


@pytest.mark.parametrize(("mode", "tools", "error"), [
    ("noinit", [], "initialize failed: not ready"),
    ("listfail", [], None),
    ("weirdtools", [McpToolDef("raw", "", "", None), McpToolDef("raw", "bare", "", None),
                    McpToolDef("raw", "nullschema", "d", None)], None),  # and no second page
])
def test_odd_servers(mode: str, tools: list[McpToolDef], error: str | None) -> None:
    with started(raw(mode=mode)) as manager:
        assert manager.list_tools() == tools
        result = manager.call_tool("raw", "echo", {"message": "hi"})
        assert result == ({"error": error} if error else {"plain_text_response": "hi"})


def test_ill_typed_tool_list_fails_start() -> None:
    manager = McpManager()
    with pytest.raises(McpProtocolError, match="MCP server 'raw' tool: \"name\" must be a string, but is number"):
        manager.start([raw(mode="badtools")])
    manager.shutdown()


# --- process lifetime ---------------------------------------------------------------------------------------------

def test_missing_command_is_not_fatal_and_cools_down(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ghost = McpServerConfig("ghost", "this_executable_does_not_exist_12345")
    with started(ghost, raw("good")) as manager:
        assert [t.server_name for t in manager.list_tools()] == ["good", "good"]
        assert "MCP warmup: failed to spawn 'ghost'" in caplog.text
        caplog.clear()
        assert manager.call_tool("ghost", "echo", {}) == {"error": "MCP server unavailable: ghost"}
        assert "MCP 'ghost': failed to start" in caplog.text
        caplog.clear()
        assert manager.call_tool("ghost", "echo", {}) == {"error": "MCP server unavailable: ghost"}
        assert "ghost" not in caplog.text  # cooling down: not even tried
        assert manager.call_tool("good", "echo", {"message": "fine"}) == {"plain_text_response": "fine"}
        assert manager.call_tool("nosuch", "echo", {}) == {"error": "MCP server unavailable: nosuch"}


def test_respawn_after_cooldown(tmp_path: Path) -> None:
    later = tmp_path / "later"
    with started(raw(cwd=str(later)), cooldown_s=0.5) as manager:
        assert manager.list_tools() == []  # no such directory: the spawn fails
        assert manager.call_tool("raw", "cwd", {}) == {"error": "MCP server unavailable: raw"}
        later.mkdir()
        assert manager.call_tool("raw", "cwd", {}) == {"error": "MCP server unavailable: raw"}  # cooling down
        time.sleep(0.6)
        assert manager.call_tool("raw", "cwd", {}) == {"plain_text_response": str(later.resolve())}


def test_server_exiting_at_start_is_respawned_each_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with started(raw(mode="exit"), cooldown_s=60) as manager:
        assert manager.list_tools() == []
        for _ in range(3):  # the spawn itself works, so there is no cooldown: each call tries a new process
            assert manager.call_tool("raw", "echo", {}) == {"error": "initialize failed: transport closed"}
        assert caplog.text.count("MCP 'raw' is no longer alive") == 2


def test_transport_diagnostics_keep_stderr() -> None:
    transport = McpStdioTransport(raw(mode="exit"))
    assert transport.start()
    try:
        assert wait_for(lambda: not transport.is_alive())
        assert wait_for(lambda: "last stderr: fatal: cannot start" in transport.diagnostics())
        assert transport.call_tool("echo", {}) == {"error": "initialize failed: transport closed"}
        assert transport.diagnostics().startswith("initialize failed: transport closed; last stderr: fatal")
    finally:
        transport.close()
        transport.close()  # idempotent
    assert not McpStdioTransport(McpServerConfig("x", "/no/such/binary")).start()


def test_crash_mid_call_then_respawn() -> None:
    with started(raw()) as manager:
        first = json.loads(text_of(manager.call_tool("raw", "pid", {})))["pid"]
        assert manager.call_tool("raw", "crash", {}) == {"error": "transport closed"}
        second = json.loads(text_of(manager.call_tool("raw", "pid", {})))["pid"]
        assert second != first and gone(first)


def test_env_and_cwd_reach_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_PARENT_ONLY", "parent")
    monkeypatch.setenv("MCP_OVERRIDDEN", "parent")
    env = {"MCP_OVERRIDDEN": "config", "MCP_NEW": "new"}
    with started(raw("plain"), raw("custom", env=env, cwd=str(tmp_path))) as manager:
        def var(server: str, name: str) -> str:
            return text_of(manager.call_tool(server, "env", {"name": name}))

        assert [var("custom", n) for n in ("MCP_PARENT_ONLY", "MCP_OVERRIDDEN", "MCP_NEW")] == ["parent", "config", "new"]
        assert [var("plain", n) for n in ("MCP_PARENT_ONLY", "MCP_OVERRIDDEN", "MCP_NEW")] == ["parent", "parent", "<unset>"]
        assert text_of(manager.call_tool("custom", "cwd", {})) == str(tmp_path.resolve())
        assert text_of(manager.call_tool("plain", "cwd", {})) == os.getcwd()


def test_command_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "mcp-raw-test-server"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{RAW}" "$@"\n')
    script.chmod(0o755)
    # a relative path is taken from the child's working directory
    relative = McpServerConfig("rel", "./mcp-raw-test-server", cwd=str(bindir))
    # a bare name is looked up on our PATH, not on the PATH given to the child
    on_child_path = McpServerConfig("childpath", "mcp-raw-test-server", env={"PATH": str(bindir)})
    with started(relative, on_child_path) as manager:
        assert manager.call_tool("rel", "echo", {"message": "rel"}) == {"plain_text_response": "rel"}
        assert manager.call_tool("childpath", "echo", {}) == {"error": "MCP server unavailable: childpath"}
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    on_our_path = McpServerConfig("ourpath", "mcp-raw-test-server", env={"PATH": "/nonexistent"})
    with started(on_our_path) as manager:
        assert manager.call_tool("ourpath", "env", {"name": "PATH"}) == {"plain_text_response": "/nonexistent"}


def test_shutdown_kills_children_and_cancels_calls() -> None:
    manager = McpManager()
    manager.start([raw("a"), raw("b")])
    pids = [json.loads(text_of(manager.call_tool(name, "pid", {})))["pid"] for name in ("a", "b")]
    result: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: result.update(manager.call_tool("a", "silent", {})))
    caller.start()
    time.sleep(0.3)
    begin = time.monotonic()
    manager.shutdown()
    caller.join(timeout=3)
    assert time.monotonic() - begin < 2.0 and not caller.is_alive()
    assert result == {"error": "cancelled"}
    assert all(gone(pid) for pid in pids)
    assert manager.call_tool("a", "echo", {}) == {"error": "MCP server unavailable: a"}
    manager.shutdown()  # idempotent


def test_grandchild_holding_pipes_does_not_hang_teardown() -> None:
    begin = time.monotonic()
    manager = McpManager()
    manager.start([raw(mode="grandchild")])  # the warmup's server is stopped while its grandchild lives on
    grandchildren = []
    try:
        assert time.monotonic() - begin < 3.0
        info = json.loads(text_of(manager.call_tool("raw", "pid", {})))
        grandchildren.append(info["grandchild"])
        begin = time.monotonic()
        manager.shutdown()
        assert time.monotonic() - begin < 2.0
        assert gone(info["pid"]) and not gone(info["grandchild"])
    finally:
        manager.shutdown()
        for pid in grandchildren:
            os.kill(pid, 9)


def test_manager_configs() -> None:
    manager = McpManager()
    assert manager.empty() and manager.list_tools() == []
    manager.start([])
    assert manager.empty()
    with started(raw("dup"), raw("dup", mode="noinit")) as manager:
        assert not manager.empty()
        assert [t.name for t in manager.list_tools()] == ["echo", "record"]  # the first "dup" won
