"""API keys, CORS, --api-prefix, the body limit and TLS (llamatwist.api.security, service).

Pure helpers and the resource are tested in-process; the rest against real
server processes on the default model.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.test.requesthelper import DummyRequest

from llamatwist.api import security
from llamatwist.api.security import (
    MAX_BODY_BYTES,
    PUBLIC_PATHS,
    SecureResource,
    SecurityPolicy,
    allow_origin,
    api_key_valid,
    body_limited_request,
    origin_is_localhost,
    presented_api_key,
    route_path,
)
from llamatwist.config import ServerConfig
from tests.conftest import Server

INVALID_KEY = {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}
ANTHROPIC_INVALID_KEY = {"type": "error", "error": {"type": "authentication_error", "message": "Invalid API Key", "code": 401}}
CORS_PREFLIGHT = {
    "access-control-allow-credentials": "false",  # the default "*" grants no credentials (issue 19)
    "access-control-allow-methods": "GET, POST, DELETE, OPTIONS",
    "access-control-allow-headers": "*",
}

StartServer = Callable[..., Server]


# --------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        (b"Bearer k1", None, b"k1"),
        (b"k1", None, b"k1"),  # llama-server takes the bare key too
        (None, b"k2", b"k2"),
        (None, b"Bearer k2", b"k2"),
        (b"", b"k2", b"k2"),  # an empty Authorization falls back to X-Api-Key
        (b"Bearer nope", b"k2", b"nope"),  # a non-empty Authorization wins
        (b"bearer k1", None, b"bearer k1"),  # the scheme is case-sensitive
        (b"Bearer  k1", None, b" k1"),
        (None, None, b""),
    ],
)
def test_presented_api_key(authorization: bytes | None, x_api_key: bytes | None, expected: bytes) -> None:
    assert presented_api_key(authorization, x_api_key) == expected


def test_api_key_valid() -> None:
    keys = (b"k1", b"k2")
    assert api_key_valid(b"k1", keys)
    assert api_key_valid(b"k2", keys)
    for wrong in (b"", b"k", b"k12", b"K1", b"k1 "):
        assert not api_key_valid(wrong, keys)
    assert not api_key_valid(b"", ())
    assert not api_key_valid(b"", (b"",))  # an empty key never opens anything


def test_api_key_compared_with_every_key_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    assert api_key_valid(b"k1", (b"k1", b"k2", b"k3"))
    assert len(calls) == 3  # no early exit on the first key's match
    assert {len(a) for a, _ in calls} | {len(b) for _, b in calls} == {32}  # digests: lengths do not leak


@pytest.mark.parametrize(
    ("origin", "local"),
    [
        ("http://localhost:5173", True),
        ("http://127.0.0.1", True),
        ("https://[::1]:8443", True),
        ("http://LOCALHOST", True),
        ("http://localhost.example.com", False),
        ("http://example.com", False),
        ("null", False),
        ("http://[::1", False),  # unparsable
    ],
)
def test_origin_is_localhost(origin: str, local: bool) -> None:
    assert origin_is_localhost(origin) is local


@pytest.mark.parametrize(
    ("origins", "credentials", "origin", "expected"),
    [
        ("*", True, "https://app.example", "*"),  # never echoed: no credentials for any origin (issue 19)
        ("*", True, None, "*"),
        ("*", False, "https://app.example", "*"),
        ("*", False, None, "*"),
        ("localhost", True, "http://localhost:3000", "http://localhost:3000"),
        ("localhost", True, "https://evil.example", None),
        ("localhost", True, None, None),
        ("https://a.example", True, "https://b.example", "https://a.example"),  # sent as it is
        ("https://a.example", True, None, "https://a.example"),
        ("https://a.example, https://b.example", True, "https://b.example", "https://b.example"),
        ("https://a.example,https://b.example", False, "https://c.example", None),
    ],
)
def test_allow_origin(origins: str, credentials: bool, origin: str | None, expected: str | None) -> None:
    assert allow_origin(origins, credentials, origin) == expected


def test_route_path() -> None:
    assert route_path([b"health"], ()) == b"/health"
    assert route_path([b""], ()) == b"/"
    assert route_path([b"v1", b"models"], ()) == b"/v1/models"
    assert route_path([b"api", b"health"], (b"api",)) == b"/health"
    assert route_path([b"api"], (b"api",)) == b"/"
    assert route_path([b"health"], (b"api",)) is None
    assert route_path([b"apix", b"health"], (b"api",)) is None  # whole segments only
    assert route_path([b"a", b"b", b"x"], (b"a", b"b")) == b"/x"


def test_public_paths_are_llama_servers() -> None:
    # server-http.cpp: get_public_endpoints = /health, /v1/health + frontend paths ("/" and the UI's assets, here
    # the page, completion.js and the modules the page loads: pdf.js and its data files, the MCP client, Mermaid;
    # sw.js).
    from llamatwist.webui import PDFJS_DATA

    assert len(PDFJS_DATA) >= 170 and "pdfjs/wasm/openjpeg.wasm" in PDFJS_DATA
    assert frozenset({b"/health", b"/v1/health", b"/", b"/index.html", b"/completion.js", b"/pdf.min.mjs",
                      b"/pdf.worker.min.mjs", b"/mcp.min.mjs", b"/mermaid.min.js", b"/sw.js",
                      *(f"/{path}".encode() for path in PDFJS_DATA)}) == PUBLIC_PATHS


def test_policy_from_config() -> None:
    config = ServerConfig(api_keys=("k1", "", "k2"), api_prefix="/a/b", cors_origins="localhost")
    policy = SecurityPolicy.from_config(config)
    assert policy.api_keys == (b"k1", b"k2")
    assert policy.prefix == (b"a", b"b")
    assert policy.cors_origins == "localhost"
    assert SecurityPolicy.from_config(ServerConfig()) == SecurityPolicy()


def test_api_keys_hidden_from_repr() -> None:
    assert "secret" not in repr(ServerConfig(api_keys=("secret",)))


# --------------------------------------------------------------------------
# The resource, in-process


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[list[bytes], list[bytes]]] = []

    def render(self, request: Any) -> bytes:
        self.seen.append((list(request.prepath), list(request.postpath)))
        return b"app"


def render(
    policy: SecurityPolicy,
    path: str,
    method: bytes = b"GET",
    headers: dict[bytes, bytes] | None = None,
    ready: bool = True,
) -> tuple[DummyRequest, bytes | int, Recorder]:
    app = Recorder()
    resource = SecureResource(app, policy, is_ready=lambda: ready)
    request = DummyRequest([s.encode() for s in path.lstrip("/").split("/")])
    request.method = method
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    return request, resource.render(request), app  # type: ignore[arg-type]


def status(request: DummyRequest) -> int:
    return int(request.responseCode or 200)


def test_resource_passes_through_without_keys() -> None:
    request, body, app = render(SecurityPolicy(), "/props")
    assert (status(request), body) == (200, b"app")
    assert app.seen == [([], [b"props"])]


def test_resource_api_keys() -> None:
    policy = SecurityPolicy(api_keys=(b"k1",))
    for path in ("/health", "/v1/health", "/"):
        assert render(policy, path)[1] == b"app", path
    request, body, app = render(policy, "/props")
    assert status(request) == 401
    assert isinstance(body, bytes)
    assert json.loads(body) == INVALID_KEY
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json; charset=utf-8"]
    assert app.seen == []
    assert render(policy, "/props", headers={b"authorization": b"Bearer k1"})[1] == b"app"
    assert render(policy, "/props", headers={b"x-api-key": b"k1"})[1] == b"app"


def test_resource_preflight_is_never_blocked() -> None:
    policy = SecurityPolicy(api_keys=(b"k1",), prefix=(b"api",))
    request, body, app = render(policy, "/anything", b"OPTIONS", {b"origin": b"https://x.example"}, ready=False)
    assert (status(request), body, app.seen) == (200, b"", [])
    headers = request.responseHeaders
    assert headers.getRawHeaders(b"access-control-allow-origin") == [b"*"]
    assert headers.getRawHeaders(b"access-control-allow-credentials") == [b"false"]
    assert headers.getRawHeaders(b"access-control-allow-methods") == [b"GET, POST, DELETE, OPTIONS"]
    assert headers.getRawHeaders(b"access-control-allow-headers") == [b"*"]


@pytest.mark.parametrize("method", [b"OPTIONS", b"GET"])
def test_resource_credentials_only_for_named_origins(method: bytes) -> None:
    for origins in ("https://x.example", "https://y.example, https://x.example", "localhost"):
        origin = b"http://localhost:3000" if origins == "localhost" else b"https://x.example"
        policy = SecurityPolicy(cors_origins=origins)
        headers = render(policy, "/health", method, {b"origin": origin})[0].responseHeaders
        assert headers.getRawHeaders(b"access-control-allow-origin") == [origin], origins
        assert headers.getRawHeaders(b"access-control-allow-credentials") == [b"true"], origins
        assert headers.getRawHeaders(b"vary") == [b"Origin"]
    # another origin gets no header at all; with --no-cors-credentials a named origin gets no credentials
    headers = render(SecurityPolicy(cors_origins="localhost"), "/health", method,
                     {b"origin": b"https://evil.example"})[0].responseHeaders  # fmt: skip
    assert not headers.hasHeader(b"access-control-allow-origin")
    assert headers.getRawHeaders(b"access-control-allow-credentials") in (None, [b"false"])
    headers = render(SecurityPolicy(cors_origins="https://x.example", cors_credentials=False), "/health", method,
                     {b"origin": b"https://x.example"})[0].responseHeaders  # fmt: skip
    assert headers.getRawHeaders(b"access-control-allow-credentials") in (None, [b"false"])


def test_resource_loading_gate_comes_before_the_key_check() -> None:
    policy = SecurityPolicy(api_keys=(b"k1",))
    request, body, _ = render(policy, "/props", ready=False)
    assert status(request) == 503  # as llama-server: "Loading model" before "Invalid API Key"
    assert isinstance(body, bytes)
    assert b"Loading model" in body
    assert render(policy, "/", ready=False)[1] == b"app"  # the UI path loads


def test_resource_prefix() -> None:
    policy = SecurityPolicy(prefix=(b"api", b"v2"))
    request, body, app = render(policy, "/api/v2/health")
    assert body == b"app"
    assert app.seen == [([b"api", b"v2"], [b"health"])]  # Klein routes postpath
    request, body, app = render(policy, "/health")
    assert status(request) == 404
    assert app.seen == []


def test_resource_prefix_with_keys() -> None:
    policy = SecurityPolicy(api_keys=(b"k1",), prefix=(b"api",))
    assert render(policy, "/api/health")[1] == b"app"  # public under the prefix
    assert status(render(policy, "/health")[0]) == 401  # nothing told without a key
    assert status(render(policy, "/health", headers={b"x-api-key": b"k1"})[0]) == 404


def make_channel(limit: int) -> tuple[Any, StringTransport, list[bytes]]:
    bodies: list[bytes] = []

    class Echo(Resource):
        isLeaf = True

        def render_POST(self, request: Request) -> bytes:
            assert request.content is not None
            bodies.append(request.content.read())
            return b"ok"

    site = Site(Echo(), requestFactory=body_limited_request(limit))
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, bodies


def test_body_limit_content_length() -> None:
    channel, transport, bodies = make_channel(10)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 413 Payload Too Large\r\n")
    assert b"100 Continue" not in out
    assert b'"code": 413' in out
    assert b'"type": "invalid_request_error"' in out
    assert transport.disconnecting
    channel.dataReceived(b"0123456789a")  # the rest is ignored
    assert bodies == []


def test_body_limit_chunked() -> None:
    channel, transport, bodies = make_channel(10)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    channel.dataReceived(b"6\r\n012345\r\n")
    assert transport.value() == b""
    channel.dataReceived(b"6\r\n6789ab\r\n0\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert transport.disconnecting
    assert bodies == []


def test_body_at_the_limit_is_accepted() -> None:
    channel, transport, bodies = make_channel(10)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789")
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    assert bodies == [b"0123456789"]
    assert MAX_BODY_BYTES == 100 * 1024 * 1024  # cpp-httplib's CPPHTTPLIB_PAYLOAD_MAX_LENGTH


# --------------------------------------------------------------------------
# Real servers


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the app registers (GET before POST)."""
    from llamatwist.api.app import build_app
    from llamatwist.api.http import ApiContext

    app = build_app(ApiContext(config=ServerConfig(), engine=None, model_path="x"))  # type: ignore[arg-type]
    routes = []
    for rule in app.url_map.iter_rules():
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<{arg}>", "x")
        for method in sorted(rule.methods or ()):
            if method in ("GET", "POST", "DELETE"):
                routes.append((method, "".join(c if c not in "<>" else "" for c in path)))
    return routes


REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/completion"): {"json": {"prompt": "Hi", "n_predict": 1}},
    ("POST", "/tokenize"): {"json": {"content": "Hi"}},
    ("POST", "/detokenize"): {"json": {"tokens": [1]}},
}
EXPECTED_OK = [
    ("GET", "/health"), ("GET", "/v1/health"), ("GET", "/props"), ("GET", "/models"), ("GET", "/v1/models"),
    ("GET", "/slots"), ("GET", "/metrics"), ("POST", "/completion"), ("POST", "/tokenize"), ("POST", "/detokenize"),
]  # fmt: skip
PUBLIC = {"/health", "/v1/health", "/", "/index.html", "/completion.js", "/pdf.min.mjs", "/pdf.worker.min.mjs",
          "/mcp.min.mjs", "/mermaid.min.js", "/sw.js"}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text("# comment line, not a key\n\nk3\r\n#k4\n")
    return path


@pytest.fixture(scope="module")
def keyed(model_path: str, key_file: Path) -> Iterator[Server]:
    srv = Server(
        ["-m", model_path, "-np", "1", "-c", "512", "-t", "1", "--metrics",
         "--api-key", "k1,k2", "--api-key-file", str(key_file)]
    )  # fmt: skip
    yield srv
    srv.stop()


def call(srv: Server, method: str, path: str, headers: dict[str, str]) -> requests.Response:
    kw = REQUESTS.get((method, path), {"json": {}} if method == "POST" else {})
    return requests.request(method, srv.url + path, headers=headers, timeout=60, **kw)


@pytest.mark.parametrize(("method", "path"), EXPECTED_OK)
def test_every_route_with_and_without_key(keyed: Server, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-Api-Key": "nope"}, {"Authorization": "Bearer"}):
        r = call(keyed, method, path, headers)
        if path in PUBLIC:
            assert r.status_code == 200, (headers, r.text)
        else:
            assert r.status_code == 401, (headers, r.text)
            assert r.json() == INVALID_KEY
            assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    good = (
        {"Authorization": "Bearer k1"},
        {"X-Api-Key": "k2"},
        {"Authorization": "Bearer k3"},
        {"Authorization": "k2"},
    )
    for headers in good:
        r = call(keyed, method, path, headers)
        assert r.status_code == 200, (headers, r.text)


def test_every_registered_route_needs_a_key(keyed: Server) -> None:
    routes = app_routes()
    assert set(EXPECTED_OK) <= set(routes)
    for method, path in routes:
        r = call(keyed, method, path, {})
        if path in PUBLIC:
            assert r.status_code == 200, (method, path)
        elif path.startswith("/v1/messages"):  # Anthropic's routes answer in Anthropic's error shape
            assert (r.status_code, r.json()) == (401, ANTHROPIC_INVALID_KEY), (method, path)
        elif path.startswith("/api/"):  # and Ollama's in Ollama's
            assert (r.status_code, r.json()) == (401, {"error": "Invalid API Key"}), (method, path)
        else:
            assert (r.status_code, r.json()) == (401, INVALID_KEY), (method, path)


def test_ui_data_files_are_public(keyed: Server) -> None:
    """pdf.js fetches its data files without the key, as it fetches pdf.js: they are UI assets."""
    assert keyed.get("/pdfjs/wasm/openjpeg.wasm").content[:4] == b"\0asm"
    assert keyed.get("/pdfjs/cmaps/no-such.bcmap").status_code == 401  # not one of them: the key is needed


def test_unknown_route_and_key_precedence(keyed: Server) -> None:
    r = keyed.get("/no/such/route")
    assert (r.status_code, r.json()) == (401, INVALID_KEY)
    r = keyed.get("/no/such/route", headers={"Authorization": "Bearer k1"})
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"
    # Authorization, when sent, is the key: X-Api-Key is not looked at.
    r = keyed.get("/props", headers={"Authorization": "Bearer nope", "X-Api-Key": "k1"})
    assert r.status_code == 401
    # The comment lines of the key file are no keys.
    assert keyed.get("/props", headers={"Authorization": "Bearer #k4"}).status_code == 401
    assert keyed.get("/props", headers={"Authorization": "Bearer # comment line, not a key"}).status_code == 401


def test_cors(keyed: Server) -> None:
    origin = "https://app.example"
    r = keyed.get("/health", headers={"Origin": origin})
    assert r.status_code == 200
    # the default ("*", --cors-credentials): any origin may read, none with credentials (issue 19)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in r.headers
    r = keyed.get("/props", headers={"Origin": origin})
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == "*"  # so a browser can read the 401

    r = requests.options(
        keyed.url + "/v1/models",
        headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"},
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 200  # no key needed for a preflight
    assert r.text == ""
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    for name, value in CORS_PREFLIGHT.items():
        assert r.headers[name] == value


def test_body_over_the_limit(keyed: Server) -> None:
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=30) as sock:
        sock.sendall(
            b"POST /completion HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\n"
            b'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{"prompt": "' % (MAX_BODY_BYTES + 1)
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    error = json.loads(body)["error"]
    assert (error["code"], error["type"]) == (413, "invalid_request_error")
    assert keyed.get("/health").status_code == 200  # the server is fine


def wait_for(url: str, srv: Server, timeout: float = 120.0, **kw: Any) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"server exited ({srv.proc.returncode}):\n{srv.log()}")
        try:
            r = requests.get(url, timeout=2, **kw)
            if r.status_code == 200:
                return r
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise TimeoutError(srv.log())


def test_api_prefix(make_server: StartServer, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "1", "-c", "512", "-t", "1", "--api-prefix", "/api", wait=False)
    wait_for(srv.url + "/api/health", srv)
    assert srv.get("/health").status_code == 404
    assert srv.get("/api/v1/models").json()["object"] == "list"
    r = srv.post("/api/tokenize", {"content": "Hi"})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"]
    assert srv.post("/tokenize", {"content": "Hi"}).status_code == 404
    assert srv.get("/apihealth").status_code == 404
    assert f"listening on http://127.0.0.1:{srv.port}" in srv.log()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_tls(make_server: StartServer, model_path: str, tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    srv = make_server(
        "-m", model_path, "-np", "1", "-c", "512", "-t", "1", "--ssl-key-file", str(key), "--ssl-cert-file", str(cert),
        "--api-key", "k1", wait=False,
    )  # fmt: skip
    url = f"https://127.0.0.1:{srv.port}"
    assert wait_for(url + "/health", srv, verify=str(cert)).json() == {"status": "ok"}
    r = requests.post(url + "/tokenize", json={"content": "Hi"}, headers={"Authorization": "Bearer k1"},
                      verify=str(cert), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert requests.get(url + "/props", verify=str(cert), timeout=30).status_code == 401
    with pytest.raises(requests.ConnectionError):  # plain HTTP on the TLS port
        requests.get(f"http://127.0.0.1:{srv.port}/health", timeout=5)
    assert f"listening on https://127.0.0.1:{srv.port}" in srv.log()


def startup_error(make_server: StartServer, *args: str) -> str:
    srv = make_server(*args, wait=False)
    assert srv.proc.wait(60) == 1
    return srv.log()


def test_tls_startup_errors(make_server: StartServer, model_path: str, tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    base = ("-m", model_path, "--log-disable")
    text = startup_error(make_server, *base, "--ssl-key-file", str(key))
    assert "error: --ssl-key-file and --ssl-cert-file must be given together" in text
    text = startup_error(make_server, *base, "--ssl-cert-file", str(cert))
    assert "must be given together" in text
    missing = tmp_path / "missing.pem"
    text = startup_error(make_server, *base, "--ssl-key-file", str(missing), "--ssl-cert-file", str(cert))
    assert f"error: cannot read SSL key file {missing}" in text
    text = startup_error(make_server, *base, "--ssl-key-file", str(cert), "--ssl-cert-file", str(cert))
    assert "invalid PEM private key" in text
    (tmp_path / "other").mkdir()
    other_key, _ = self_signed(tmp_path / "other")
    text = startup_error(make_server, *base, "--ssl-key-file", str(other_key), "--ssl-cert-file", str(cert))
    assert "does not match the certificate" in text
    text = startup_error(make_server, *base, "--ssl-key-file", str(key), "--ssl-cert-file", str(key))
    assert "invalid PEM certificate" in text
    assert "Traceback" not in text


def test_api_key_file_errors(make_server: StartServer, tmp_path: Path) -> None:
    missing = tmp_path / "none.txt"
    text = startup_error(make_server, "--api-key-file", str(missing))
    assert f"error: failed to open file '{missing}'" in text
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    assert "contains no API key" in startup_error(make_server, "--api-key-file", str(empty))


def test_no_request_is_lost_to_not_done_yet() -> None:
    # SecureResource hands Klein's NOT_DONE_YET back to the Site untouched.
    class Later(Resource):
        isLeaf = True

        def render(self, request: Any) -> int:
            return NOT_DONE_YET

    resource = SecureResource(Later(), SecurityPolicy())
    assert resource.render(DummyRequest([b"x"])) == NOT_DONE_YET  # type: ignore[arg-type]
