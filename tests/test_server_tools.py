"""/tools, /cors-proxy and the flags behind them (--tools, --agent, --mcp-servers-*, --ui-mcp-proxy), on real
servers: the real engine, real HTTP, real MCP servers (tests/data/mcp), a real HTTP server behind the proxy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.server_tools import ToolCall, parse_proxy_target, parse_tool_call
from tests.conftest import REPO, Server

MCP_SERVER = REPO / "tests" / "data" / "mcp" / "sdk_server.py"
TOOL_NAMES = ["read_file", "file_glob_search", "grep_search", "exec_shell_command", "write_file", "edit_file",
              "get_info"]
COMMON = ["-np", "2", "-c", "1024", "-t", "2"]


def _mcp_json(**servers: dict[str, Any]) -> str:
    return json.dumps({"mcpServers": servers})


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tools")
    (root / "notes.txt").write_text("alpha\nbeta\ngamma\n")
    return root


@pytest.fixture(scope="module")
def agent(model_path: str) -> Iterator[Server]:
    """--agent (every built-in tool and the MCP proxy) and an MCP server."""
    srv = Server(["-m", model_path, *COMMON, "--agent", "--api-key", "k1",
                  "--mcp-servers-json", _mcp_json(echo={"command": sys.executable, "args": [str(MCP_SERVER)]})])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def plain(model_path: str) -> Iterator[Server]:
    srv = Server(["-m", model_path, *COMMON])
    yield srv
    srv.stop()


KEY = {"Authorization": "Bearer k1"}


def _call(srv: Server, tool: str, params: dict[str, Any], headers: dict[str, str] | None = None,
          **extra: Any) -> requests.Response:
    return srv.post("/tools", {"tool": tool, "params": params, **extra}, headers={**KEY, **(headers or {})})


def _sse(response: requests.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


# -- the route's parsing (pure) ------------------------------------------------------------------------------

def test_parse_tool_call_takes_the_headers_not_the_model() -> None:
    call = parse_tool_call({"tool": "read_file", "params": {"path": "a", "cwd": "/etc", "runtime": "ssh:x",
                                                             "resp_type": "base64"}},
                           {"x-tool-cwd": "/srv", "x-resp-type": "base64"})
    assert call == ToolCall("read_file", {"path": "a", "cwd": "/srv", "resp_type": "base64"}, False)
    assert parse_tool_call({"tool": "get_info"}, {}) == ToolCall("get_info", {}, False)


@pytest.mark.parametrize(("url", "target"), [
    ("http://127.0.0.1:8080", b"http://127.0.0.1:8080/"),
    ("https://example.com/mcp?x=1#frag", b"https://example.com/mcp?x=1"),
    ("http://[::1]:9/a", b"http://[::1]:9/a"),
])
def test_parse_proxy_target(url: str, target: bytes) -> None:
    assert parse_proxy_target(url) == target


@pytest.mark.parametrize(("url", "message"), [
    (None, "invalid target URL: missing host"),
    ("example.com/x", "invalid target URL: missing host"),
    ("file:///etc/passwd", "invalid target URL: missing host"),
    ("gopher://h/", "unsupported URL scheme in target URL: gopher"),
    ("http://u:p@h/", "authentication in target URL is not supported"),
    ("http://h:port/", "invalid target URL: bad port"),
    ("http://h/\u00e9", "invalid target URL: not ASCII (percent-encode it)"),
])
def test_parse_proxy_target_refuses(url: str | None, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        parse_proxy_target(url)


# -- without the flags: llama-server's 403 ------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [("GET", "/tools"), ("POST", "/tools"), ("GET", "/cors-proxy"),
                                              ("POST", "/cors-proxy")])
def test_disabled_without_flags(plain: Server, method: str, path: str) -> None:
    r = requests.request(method, plain.url + path + "?url=http://127.0.0.1:1/", json={"tool": "get_info"},
                         timeout=30)
    assert r.status_code == 403
    assert r.json() == {"error": {"code": 403, "message": "this feature is disabled", "type": "feature_disabled"}}
    assert plain.get("/props").json()["cors_proxy_enabled"] is False


# -- the listing --------------------------------------------------------------------------------------------

def test_listing_has_every_builtin_and_the_mcp_tools(agent: Server) -> None:
    assert agent.get("/tools").status_code == 401  # guarded by --api-key like every route
    tools = agent.get("/tools", headers=KEY).json()
    names = [t["tool"] for t in tools]
    assert names[:7] == TOOL_NAMES  # llama-server's order, then the MCP servers'
    assert {"echo_echo", "echo_add"} <= set(names[7:])
    shell = tools[names.index("exec_shell_command")]
    assert shell["type"] == "server" and shell["permissions"] == {"write": True} and shell["uses_cwd"] is True
    assert shell["definition"]["function"]["name"] == "exec_shell_command"
    assert shell["definition"]["function"]["parameters"]["required"] == ["command"]
    mcp = tools[names.index("echo_add")]
    assert mcp["type"] == "mcp" and mcp["display_name"] == "echo_add" and mcp["permissions"] == {"write": False}
    assert set(mcp["definition"]["function"]["parameters"]["properties"]) == {"a", "b"}
    assert agent.get("/props", headers=KEY).json()["cors_proxy_enabled"] is True


# -- calls --------------------------------------------------------------------------------------------------

def test_read_file_with_cwd_header(agent: Server, work: Path) -> None:
    r = _call(agent, "read_file", {"path": "notes.txt", "start_line": 2, "append_loc": True},
              {"X-Tool-Cwd": str(work)})
    assert r.status_code == 200, r.text
    assert r.json() == {"plain_text_response": "2\u2192beta\n3\u2192gamma\n"}
    # the model cannot choose the directory: "cwd" in its params is dropped
    r = _call(agent, "read_file", {"path": "notes.txt", "cwd": str(work)})
    assert r.status_code == 200 and "error" in r.json()


def test_base64_read_needs_the_header(agent: Server, work: Path) -> None:
    r = _call(agent, "read_file", {"path": str(work / "notes.txt")}, {"X-Resp-Type": "base64"})
    assert r.json() == {"base64": "YWxwaGEKYmV0YQpnYW1tYQo=", "size_bytes": 17}


def test_write_then_edit_then_grep(agent: Server, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.py"
    r = _call(agent, "write_file", {"path": str(target), "content": "x = 1\ny = 2\n"})
    assert r.json() == {"result": "file written successfully", "path": str(target), "bytes": 12}
    r = _call(agent, "edit_file", {"path": str(target), "edits": [{"old_text": "y = 2", "new_text": "y = 3"}]})
    assert r.status_code == 200 and "error" not in r.json(), r.text
    assert target.read_text() == "x = 1\ny = 3\n"
    r = _call(agent, "grep_search", {"path": str(tmp_path), "pattern": "y = 3"})
    text = r.json()["plain_text_response"]
    assert "a.py" in text and "Total matches: 1" in text


def test_shell_command(agent: Server, work: Path) -> None:
    r = _call(agent, "exec_shell_command", {"command": "cat notes.txt; exit 3"}, {"X-Tool-Cwd": str(work)})
    assert r.json() == {"plain_text_response": "alpha\nbeta\ngamma\n\n[exit code: 3]"}


def test_shell_command_streams(agent: Server) -> None:
    r = _call(agent, "exec_shell_command", {"command": "echo one; sleep 0.3; echo two"}, stream=True)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    events = _sse(r)
    assert events[-1] == {"done": True}
    text = "".join(e["chunk"] for e in events[:-1])
    assert text == "one\ntwo\n\n[exit code: 0]"
    assert len(events) >= 3  # the output came in more than one piece


def test_stream_stops_the_command_when_the_client_leaves(agent: Server, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    with requests.post(agent.url + "/tools", json={"tool": "exec_shell_command", "stream": True, "params": {
            "command": f"echo started; sleep 2; touch {marker}"}}, headers=KEY, stream=True, timeout=30) as r:
        first = next(line for line in r.iter_lines() if line)
        assert json.loads(first[6:]) == {"chunk": "started\n"}
    time.sleep(3)
    assert not marker.exists()  # the shell was stopped with its client
    assert _call(agent, "get_info", {}).status_code == 200


def test_a_long_call_blocks_nothing_else(agent: Server) -> None:
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(_call, agent, "exec_shell_command", {"command": "sleep 3; echo done"})
        time.sleep(0.3)
        started = time.monotonic()
        r = agent.post("/completion", {"prompt": "Hi", "n_predict": 2}, headers=KEY)
        took = time.monotonic() - started
        assert r.status_code == 200 and not slow.done() and took < 2.5
        assert slow.result().json()["plain_text_response"].startswith("done\n")


def test_mcp_tool_call(agent: Server) -> None:
    r = _call(agent, "echo_add", {"a": 2, "b": 40})
    assert r.status_code == 200, r.text
    assert r.json() == {"plain_text_response": "42"}
    r = _call(agent, "echo_refuse", {})
    assert r.status_code == 200 and "not allowed" in r.json()["error"]


# -- bad calls: a clear 4xx, and the server keeps serving ---------------------------------------------------

@pytest.mark.parametrize(("body", "status", "message"), [
    ({"tool": "no_such_tool"}, 404, 'unknown tool "no_such_tool"'),
    ({"tool": "read_file", "stream": True, "params": {"path": "x"}}, 404,
     'tool "read_file" does not support stream = true'),
    ({"params": {}}, 400, "'tool' is required and must be a string"),
    ({"tool": "read_file", "params": ["x"]}, 400, "'params' must be an object"),
    ({"tool": "read_file", "stream": "yes"}, 400, "'stream' must be a boolean"),
])
def test_bad_calls(agent: Server, body: dict[str, Any], status: int, message: str) -> None:
    r = agent.post("/tools", body, headers=KEY)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["message"] == message and error["code"] == status and error["type"] == "invalid_request_error"


def test_bad_params_are_400(agent: Server) -> None:
    r = _call(agent, "read_file", {})
    assert r.status_code == 400 and "path" in r.json()["error"]["message"]
    r = _call(agent, "exec_shell_command", {"command": ["ls"]})
    assert r.status_code == 400 and "command" in r.json()["error"]["message"]
    # a mistyped optional parameter takes its default, as llama-server's json_value does
    r = _call(agent, "exec_shell_command", {"command": "echo hi", "timeout": "soon"})
    assert r.json() == {"plain_text_response": "hi\n\n[exit code: 0]"}
    r = agent.post("/tools", data=b"{not json", headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 400
    r = _call(agent, "get_info", {}, {"X-Tool-Runtime": "nonsense:1"})
    assert r.status_code == 400 and "unknown tool runtime: nonsense:1" in r.json()["error"]["message"]


def test_failures_the_model_reads_are_200(agent: Server, tmp_path: Path) -> None:
    r = _call(agent, "read_file", {"path": str(tmp_path / "missing.txt")})
    assert r.status_code == 200 and r.json() == {"error": f"cannot stat file: {tmp_path / 'missing.txt'}"}


def test_generation_still_served(agent: Server) -> None:
    r = agent.post("/completion", {"prompt": "Hello", "n_predict": 4}, headers=KEY)
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 4
    assert len(agent.get("/slots", headers=KEY).json()) == 2


# -- CORS: tools limit it to localhost origins --------------------------------------------------------------

def test_cors_defaults_to_localhost(agent: Server) -> None:
    r = agent.get("/tools", headers={**KEY, "Origin": "http://localhost:5173"})
    assert r.headers.get("Access-Control-Allow-Origin") == "http://localhost:5173"
    r = agent.get("/tools", headers={**KEY, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "using localhost as default CORS origin" in agent.log()
    assert "security: MCP proxy (experimental), server tools (experimental), MCP servers (experimental) " \
           "enabled" in agent.log()


# -- /cors-proxy --------------------------------------------------------------------------------------------

class _Target(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def _record(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        _Target.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                             "body": body})
        return body

    def do_GET(self) -> None:
        self._record()
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/final")
            self.end_headers()
            return
        payload = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", "*")  # the far side's CORS never reaches the client
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        body = self._record()
        if self.path == "/empty":
            self.send_response(204)
            self.end_headers()
            return
        self.send_response(201)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_proxy_get_forwards_only_proxy_headers(agent: Server, target: str) -> None:
    _Target.seen.clear()
    r = agent.get(f"/cors-proxy?url={target}/mcp?x=1", headers={
        **KEY, "X-Llama-Server-Proxy-Header-Authorization": "Bearer far", "X-Secret": "stays here"})
    assert r.status_code == 200 and r.json() == {"path": "/mcp?x=1"}
    assert r.headers["X-Upstream"] == "yes" and "Access-Control-Allow-Origin" not in r.headers
    sent = _Target.seen[-1]["headers"]
    assert sent["Authorization"] == "Bearer far"
    assert "X-Secret" not in sent and "Authorization" not in {k for k in sent if k.lower() == "x-secret"}


def test_proxy_post_redirect_and_no_content(agent: Server, target: str) -> None:
    r = agent.post(f"/cors-proxy?url={target}/echo", data=b'{"jsonrpc":"2.0"}',
                   headers={**KEY, "X-Llama-Server-Proxy-Header-Content-Type": "application/json"})
    assert r.status_code == 201 and r.content == b'{"jsonrpc":"2.0"}'
    assert _Target.seen[-1]["headers"]["Content-Type"] == "application/json"
    r = agent.post(f"/cors-proxy?url={target}/empty", data=b"{}", headers=KEY)
    assert r.status_code == 204 and r.content == b""
    r = agent.get(f"/cors-proxy?url={target}/moved", headers=KEY)
    assert r.status_code == 200 and r.json() == {"path": "/final"}


@pytest.mark.parametrize(("url", "status", "message"), [
    ("", 400, "invalid target URL: missing host"),
    ("ftp://example.com/x", 400, "unsupported URL scheme in target URL: ftp"),
    ("http://user:pw@127.0.0.1/", 400, "authentication in target URL is not supported"),
    ("http://127.0.0.1:1/", 502, "proxy error"),
])
def test_proxy_bad_targets(agent: Server, url: str, status: int, message: str) -> None:
    r = agent.get("/cors-proxy", params={"url": url} if url else None, headers=KEY)
    assert r.status_code == status
    assert message in r.json()["error"]["message"]


# -- start-up -----------------------------------------------------------------------------------------------

def _start(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamatwist", *args], check=False, capture_output=True,
                          text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize(("args", "message"), [
    (["--tools", "read_file,nope"], 'unknown tool "nope". available tools: read_file, file_glob_search'),
    (["--tools", "all", "--tools-runtime", "vm:x"], "tools setup failed: unknown tool runtime: vm:x"),
    (["--mcp-servers-json", "{not json"], "MCP config"),
    (["--mcp-servers-config", "/nonexistent/mcp.json"], "failed to open MCP config file: /nonexistent/mcp.json"),
    (["--tools", "all", "--tools-runtime", "podman:busybox"], "podman"),  # no podman on the machine
])
def test_bad_configuration_stops_start_up(model_path: str, args: list[str], message: str) -> None:
    done = _start("-m", model_path, "--port", "0", *args)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr + done.stdout


def test_only_named_tools_and_explicit_cors(model_path: str) -> None:
    srv = Server(["-m", model_path, *COMMON, "--tools", "read_file,get_info", "--cors-origins", "https://ui.example"])
    try:
        assert [t["tool"] for t in srv.get("/tools").json()] == ["read_file", "get_info"]
        info = srv.post("/tools", {"tool": "get_info", "params": {}}).json()
        assert info["cwd"] == str(REPO)  # the server's working directory
        r = srv.get("/tools", headers={"Origin": "https://ui.example"})
        assert r.headers.get("Access-Control-Allow-Origin") == "https://ui.example"
        assert srv.get("/cors-proxy?url=http://127.0.0.1:1/").status_code == 403  # no --ui-mcp-proxy
        assert "using localhost as default CORS origin" not in srv.log()
    finally:
        srv.stop()


def test_agent_with_explicit_tools_wins(model_path: str) -> None:
    srv = Server(["-m", model_path, *COMMON, "--agent", "--tools", "get_info", "--no-ui-mcp-proxy"])
    try:
        assert [t["tool"] for t in srv.get("/tools").json()] == ["get_info"]
        assert srv.get("/props").json()["cors_proxy_enabled"] is False
    finally:
        srv.stop()


def test_router_serves_the_tools_itself(model_path: str, tmp_path: Path) -> None:
    """The router offers /tools and /cors-proxy; its models' servers start without the tool flags (they would
    start the MCP servers again)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "smol.gguf").symlink_to(model_path)
    srv = Server(["--models-dir", str(models), *COMMON, "--tools", "get_info", "--ui-mcp-proxy"])
    try:
        assert [t["tool"] for t in srv.get("/tools").json()] == ["get_info"]
        assert srv.get("/props").json()["cors_proxy_enabled"] is True
        r = srv.post("/v1/chat/completions", {"model": "smol", "max_tokens": 2,
                                              "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200, r.text
        child = srv.get("/props", params={"model": "smol"}).json()
        assert child["cors_proxy_enabled"] is False
        assert "--tools" not in " ".join(json.dumps(m) for m in srv.get("/models").json()["data"])
    finally:
        srv.stop()
