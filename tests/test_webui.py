"""The web UI: headers and routes over plain HTTP, and the chat in a real
browser (web/tests/chat.test.mjs: Playwright driving headless Chromium)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, Server, free_port, wait_port

WEB = REPO / "web"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
StartServer = Callable[..., Server]


def raw_get(server: Server, path: str, **headers: str) -> requests.Response:
    """GET without requests' automatic decompression or Accept-Encoding."""
    session = requests.Session()
    session.headers.clear()
    return session.get(server.url + path, headers=headers, timeout=30, stream=True)


def wait_health(server: Server, prefix: str, timeout: float = 120.0) -> None:
    """Server.wait_ready for a server under --api-prefix."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log()
        try:
            if requests.get(f"{server.url}{prefix}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise TimeoutError(server.log())


@pytest.fixture(scope="module")
def ui_server(model_path: str) -> Server:
    srv = Server(["-m", model_path, "-np", "2", "-c", "2048", "-t", "2"])
    yield srv  # type: ignore[misc]
    srv.stop()


# ---------------------------------------------------------------- plain HTTP


def test_index_gzip_headers(ui_server: Server) -> None:
    r = raw_get(ui_server, "/", **{"Accept-Encoding": "gzip, deflate"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.headers["Cache-Control"] == "no-cache"
    assert "Accept-Encoding" in r.headers["Vary"]
    body = gzip.decompress(r.raw.read())
    assert body.startswith(b"<!doctype html>") and b"llamatwist" in body
    assert b"<script" in body and b'src="http' not in body  # one self-contained file, no CDN


def test_index_plain_when_gzip_not_accepted(ui_server: Server) -> None:
    for accept in (None, "identity", "gzip;q=0"):
        r = raw_get(ui_server, "/index.html", **({"Accept-Encoding": accept} if accept else {}))
        assert r.status_code == 200
        assert "Content-Encoding" not in r.headers
        assert r.raw.read().startswith(b"<!doctype html>")


def test_etag_304(ui_server: Server) -> None:
    etag = raw_get(ui_server, "/").headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    for inm in (etag, "W/" + etag, '"other", ' + etag):
        r = raw_get(ui_server, "/", **{"If-None-Match": inm})
        assert r.status_code == 304 and r.raw.read() == b""
    assert raw_get(ui_server, "/", **{"If-None-Match": '"other"'}).status_code == 200


def test_completion_js(ui_server: Server) -> None:
    r = ui_server.get("/completion.js")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/javascript")
    assert "export async function llamaComplete" in r.text


@pytest.mark.parametrize(
    ("name", "source", "marker"),
    [
        ("pdf.min.mjs", "node_modules/pdfjs-dist/build/pdf.min.mjs", "pdfjsVersion"),
        ("pdf.worker.min.mjs", "node_modules/pdfjs-dist/build/pdf.worker.min.mjs", "pdfjsVersion"),
        ("mcp.min.mjs", "dist-mcp/mcp.min.mjs", "text/event-stream"),
        ("mermaid.min.js", "node_modules/mermaid/dist/mermaid.min.js", 'globalThis["mermaid"]'),
    ],
)
def test_ui_modules(ui_server: Server, name: str, source: str, marker: str) -> None:
    """The modules the page loads on demand (pdf.js to read a PDF, the MCP client to reach MCP servers, Mermaid to
    draw a diagram): the built file, as JavaScript (module scripts and workers need a JavaScript type), gzipped
    when accepted, revalidated by ETag."""
    r = ui_server.get(f"/{name}")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert r.headers["Content-Encoding"] == "gzip" and r.headers["X-Content-Type-Options"] == "nosniff"
    built = WEB / source
    if built.exists():  # after npm ci and the build (CI): that very file
        assert r.content == built.read_bytes()
    assert marker in r.text and ("export" in r.text or not name.endswith(".mjs"))
    assert raw_get(ui_server, f"/{name}", **{"If-None-Match": r.headers["ETag"]}).status_code == 304


@pytest.mark.parametrize(
    ("path", "content_type", "magic"),
    [
        ("pdfjs/cmaps/UniJIS-UCS2-H.bcmap", "application/octet-stream", b"\xe0RCopyright"),
        ("pdfjs/cmaps/Adobe-Japan1-UCS2.bcmap", "application/octet-stream", b"\xe0RC"),
        ("pdfjs/wasm/openjpeg.wasm", "application/wasm", b"\0asm"),
        ("pdfjs/wasm/jbig2.wasm", "application/wasm", b"\0asm"),
        ("pdfjs/wasm/qcms_bg.wasm", "application/wasm", b"\0asm"),
        ("pdfjs/iccs/CGATS001Compat-v2-micro.icc", "application/vnd.iccprofile", b"acsp"),
    ],
)
def test_pdfjs_data_files(ui_server: Server, path: str, content_type: str, magic: bytes) -> None:
    """pdf.js's data files (CMaps for CJK text, WebAssembly decoders for JBIG2 and JPEG 2000 scans and colour
    management, an ICC profile): pdfjs-dist's files, gzipped when accepted, revalidated by ETag."""
    r = ui_server.get(f"/{path}")
    assert r.status_code == 200 and r.headers["Content-Type"] == content_type
    assert r.headers["Content-Encoding"] == "gzip" and magic in r.content[:48]
    source = WEB / "node_modules" / "pdfjs-dist" / path.removeprefix("pdfjs/")
    if source.exists():  # after npm ci (CI): that very file
        assert r.content == source.read_bytes()
    assert raw_get(ui_server, f"/{path}", **{"If-None-Match": r.headers["ETag"]}).status_code == 304


def test_pdfjs_data_files_only_those(ui_server: Server) -> None:
    for path in ("/pdfjs/cmaps/no-such.bcmap", "/pdfjs/wasm/quickjs-eval.wasm", "/pdfjs/build/pdf.min.mjs",
                 "/pdfjs/cmaps/..%2f..%2findex.html", "/pdfjs/fonts/x"):
        r = ui_server.get(path)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", path


def test_service_worker_removes_itself(ui_server: Server) -> None:
    """/sw.js (llama-server's UI is a PWA): the answer to an old worker's update check is a worker that
    unregisters, empties the caches and reloads its pages; never cached, public (the browser sends no key)."""
    r = ui_server.get("/sw.js")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert r.headers["Cache-Control"] == "no-cache"
    for step in ("skipWaiting()", "registration.unregister()", "caches.delete(key)", "client.navigate(client.url)"):
        assert step in r.text


def test_api_routes_win(ui_server: Server) -> None:
    assert ui_server.get("/health").json() == {"status": "ok"}
    r = ui_server.get("/no-such-file")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_no_webui(make_server: StartServer, model_path: str, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("custom")
    srv = make_server("-m", model_path, "-c", "512", "-np", "1", "--no-webui", "--path", str(tmp_path))
    for path in ("/", "/index.html", "/completion.js", "/pdf.min.mjs", "/pdf.worker.min.mjs", "/mcp.min.mjs",
                 "/mermaid.min.js"):
        assert srv.get(path).status_code == 404, path
    assert srv.get("/health").status_code == 200
    # as llama-server: a browser's worker from an earlier UI here can still remove itself
    assert "unregister()" in srv.get("/sw.js").text


def test_path_and_api_prefix_and_key(make_server: StartServer, model_path: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "index.html").write_text("<p>custom ui</p>")
    (site / "app.css").write_text("p{}")
    (site / "sw.js").write_text("// the site's own worker")
    (site / "sub" / "index.html").write_text("sub index")
    (site / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    (site / "link.txt").symlink_to(tmp_path / "outside.txt")
    srv = make_server(
        "-m",
        model_path,
        "-c",
        "512",
        "-np",
        "1",
        "--path",
        str(site),
        "--api-prefix",
        "/llm",
        "--api-key",
        "k1",
        wait=False,
    )
    wait_health(srv, "/llm")
    # the directory replaces the built-in UI; its files are public
    r = srv.get("/llm/")
    assert r.status_code == 200 and r.text == "<p>custom ui</p>"
    assert r.headers["Content-Type"].startswith("text/html")
    assert srv.get("/llm/app.css").headers["Content-Type"].startswith("text/css")
    assert srv.get("/llm/sub/").text == "sub index"
    assert "llamaComplete" in srv.get("/llm/completion.js").text  # built-in, none in the directory
    assert srv.get("/llm/pdf.min.mjs").status_code == 200  # the same for the UI's modules, public too
    assert srv.get("/llm/sw.js").text == "// the site's own worker"  # the directory's own worker wins
    # API routes still need the key and still win
    assert srv.get("/llm/props").status_code == 401
    assert srv.get("/llm/props", headers={"Authorization": "Bearer k1"}).status_code == 200
    assert srv.get("/app.css", headers={"Authorization": "Bearer k1"}).status_code == 404  # outside the prefix
    # no traversal, no hidden files, no symlinks out of the directory
    for path in (
        "/llm/../outside.txt",
        "/llm/%2e%2e/outside.txt",
        "/llm/sub/%2e%2e%2f%2e%2e%2foutside.txt",
        "/llm/..%2foutside.txt",
        "/llm/%2foutside.txt",
        "/llm/.secret",
        "/llm/link.txt",
        "/llm/sub%5c..%5c..%5coutside.txt",
        "/llm/index.html%00.txt",
    ):
        r = requests.get(srv.url + path, timeout=30, headers={"Authorization": "Bearer k1"})
        assert r.status_code in (400, 401, 404), path
        assert "outside" not in r.text and "hidden" not in r.text, path
    # POST never reads files
    assert srv.post("/llm/app.css", headers={"Authorization": "Bearer k1"}).status_code in (404, 405)


def test_path_must_exist(tmp_path: Path) -> None:
    from llamatwist.cli import ConfigError, parse_config

    with pytest.raises(ConfigError, match="static assets path not found"):
        parse_config(["--path", str(tmp_path / "missing")], {})
    config = parse_config(["--path", str(tmp_path), "--no-ui"], {})
    assert config.static_path == str(tmp_path) and config.webui is False
    assert parse_config([], {"LLAMA_ARG_UI": "0"}).webui is False


# ---------------------------------------------------------------- in a browser


def _browser_ready() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "web/node_modules missing (cd web && npm ci)"
    return None


def _run_browser(url: str, env: dict[str, str] | None = None, scenarios: tuple[str, ...] = ()) -> None:
    """web/tests/chat.test.mjs against `url`: its default scenarios, or the ones named."""
    reason = _browser_ready()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    proc = subprocess.run(
        ["node", "tests/chat.test.mjs", *scenarios],
        check=False,
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LLAMATWIST_URL": url, **(env or {})},
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_browser_chat(ui_server: Server) -> None:
    _run_browser(ui_server.url + "/")


def test_browser_api_key(make_server: StartServer, model_path: str) -> None:
    srv = make_server(
        "-m", model_path, "-c", "1024", "-np", "1", "-t", "2", "--api-key", "sekrit", "--api-prefix", "/ui", wait=False
    )
    wait_health(srv, "/ui")
    _run_browser(srv.url + "/ui", {"LLAMATWIST_API_KEY": "sekrit"})


def test_browser_server_tools(make_server: StartServer, model_path: str) -> None:
    """The UI lets the model call the server's tools (--tools): the call runs, its result goes back, the model
    answers; a tool that writes asks first (refused here)."""
    srv = make_server("-m", model_path, "-np", "2", "-c", "2048", "-t", "2", "--tools", "get_info,write_file")
    _run_browser(srv.url + "/", scenarios=("tools",))


@contextmanager
def http_mcp_server(*args: str) -> Iterator[str]:
    """tests/data/mcp/http_server.py (the official SDK's Streamable HTTP server) on a free port: its /mcp URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "data" / "mcp" / "http_server.py"), str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(proc, port, 60, lambda: proc.stderr.read().decode() if proc.stderr else "")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_browser_mcp_servers(make_server: StartServer, model_path: str) -> None:
    """The UI's MCP client (Settings: MCP servers, as llama-server's UI): it connects to a server that allows the
    page and, through /cors-proxy (--ui-mcp-proxy), to one that does not; the model's calls run there and their
    results go back; a destructive tool asks first; headers carry the servers' token (and the proxy takes this
    server's --api-key); bad headers are refused."""
    srv = make_server("-m", model_path, "-np", "2", "-c", "2048", "-t", "2", "--ui-mcp-proxy", "--api-key", "k3y")
    token = "t0ken-for-the-test"
    with http_mcp_server("--cors", srv.url, "--token", token) as near, \
            http_mcp_server("--token", token, "--prefix", "far_") as far:
        env = {"LLAMATWIST_MCP": near, "LLAMATWIST_MCP_FAR": far, "LLAMATWIST_MCP_TOKEN": token,
               "LLAMATWIST_API_KEY": "k3y"}
        _run_browser(srv.url + "/", env, scenarios=("mcp",))


def test_browser_reasoning_picker(make_server: StartServer, model_path: str, tmp_path: Path) -> None:
    """A model whose template thinks: the reasoning picker sets enable_thinking and the budget, and "Skip reasoning"
    ends a running thinking block (reasoning_control) so the model answers."""
    from tests.test_reasoning import THINK_TEMPLATE

    template = tmp_path / "think.jinja"
    template.write_text(THINK_TEMPLATE)
    srv = make_server("-m", model_path, "-np", "2", "-c", "2048", "-t", "2", "--chat-template-file", str(template),
                      "--reasoning-budget-message", " Enough.")
    assert srv.get("/props").json()["supports_thinking"] is True
    _run_browser(srv.url + "/", scenarios=("thinking",))
