"""Issue 19 item 5, the security review as tests, on one real server with TLS, an API key, --slot-save-path
and --path. What tests/test_security.py covers already (every route needs the key, the key compare in
constant time, CORS headers, the body limit, TLS start-up) is not repeated here."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Server
from tests.test_security import self_signed, wait_for

KEY = "sekret-7f3a9c41d2e8"
WRONG = "wr0ng-b1e62c90aa4f"
AUTH = {"Authorization": f"Bearer {KEY}"}


class TlsServer:
    def __init__(self, srv: Server, cert: Path, slots: Path, static: Path, outside: Path) -> None:
        self.srv, self.cert, self.slots, self.static, self.outside = srv, cert, slots, static, outside
        self.url = f"https://127.0.0.1:{srv.port}"

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("headers", AUTH)
        return requests.request(method, self.url + path, verify=str(self.cert), timeout=60, **kw)


@pytest.fixture(scope="module")
def tls(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    base = tmp_path_factory.mktemp("sec")
    key, cert = self_signed(base)
    slots, static, outside = base / "slots", base / "static", base / "outside"
    for d in (slots, static, outside):
        d.mkdir()
    (static / "index.html").write_text("<html>ui</html>")
    (static / "app.js").write_text("ok")
    (outside / "secret.txt").write_text("outside the root")
    srv = Server(
        ["-m", model_path, "-c", "512", "-np", "2", "-t", "1", "-v", "--api-key", KEY, "--slot-save-path", str(slots),
         "--path", str(static), "--ssl-key-file", str(key), "--ssl-cert-file", str(cert)], wait=False,
    )  # fmt: skip
    try:
        wait_for(f"https://127.0.0.1:{srv.port}/health", srv, verify=str(cert))
        yield TlsServer(srv, cert, slots, static, outside)
    finally:
        srv.stop()


def test_tls_below_1_2_is_refused(tls: TlsServer) -> None:
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old versions at all
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", tls.srv.port), timeout=30) as sock, \
                pytest.raises(ssl.SSLError) as info:  # fmt: skip
            ctx.wrap_socket(sock).do_handshake()
        # the server's refusal (a protocol_version alert), not this client's own configuration
        assert "ALERT_PROTOCOL_VERSION" in str(info.value) or "unsupported protocol" in str(info.value), info.value
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = ssl.create_default_context(cafile=str(tls.cert))
        ctx.check_hostname = False
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", tls.srv.port), timeout=30) as sock, \
                ctx.wrap_socket(sock) as conn:  # fmt: skip
            assert conn.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


def test_static_files_are_public_and_cannot_escape_path(tls: TlsServer) -> None:
    assert tls.request("GET", "/app.js", headers={}).text == "ok"  # the UI's files need no key
    os.symlink(tls.outside / "secret.txt", tls.static / "link.txt")
    os.symlink(tls.outside, tls.static / "linkdir")
    for path in ("/link.txt", "/linkdir/secret.txt", "/../outside/secret.txt", "/%2e%2e/outside/secret.txt",
                 "/..%2foutside%2fsecret.txt", "/%2e%2e%2foutside/secret.txt", "/.%2e/outside/secret.txt",
                 "/app.js%00.html", "/%5c..%5coutside%5csecret.txt"):  # fmt: skip
        for headers in ({}, AUTH):
            r = tls.request("GET", path, headers=headers)
            assert r.status_code in (401, 404), (path, r.status_code)
            assert "outside the root" not in r.text, path
    # and with the key, an API path is still the API, never a file
    assert tls.request("GET", "/props").json()["total_slots"] == 2


def test_slot_file_names_cannot_escape(tls: TlsServer) -> None:
    assert tls.request("POST", "/completion", json={"prompt": "Hi", "n_predict": 2, "id_slot": 0}).status_code == 200
    for name in ("../x.bin", "/tmp/x.bin", "a/b.bin", "..", ".", ".hidden", "x\x00.bin", "a\\b.bin", "",
                 "x" * 256, 5, None, ["x"]):  # fmt: skip
        for action in ("save", "restore"):
            r = tls.request("POST", f"/slots/0?action={action}", json={"filename": name})
            assert r.status_code == 400, (name, action, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"
    assert sorted(os.listdir(tls.slots)) == []  # nothing written anywhere
    assert not Path("/tmp/x.bin").exists()


def test_slot_files_are_never_read_through_symlinks(tls: TlsServer) -> None:
    saved = tls.request("POST", "/slots/0?action=save", json={"filename": "real.bin"})
    assert saved.status_code == 200, saved.text
    # a valid slot file outside the directory, reached by a link inside it: refused
    shutil.move(tls.slots / "real.bin", tls.outside / "real.bin")
    os.symlink(tls.outside / "real.bin", tls.slots / "link.bin")
    r = tls.request("POST", "/slots/1?action=restore", json={"filename": "link.bin"})
    assert r.status_code == 400 and "symbolic link" in r.json()["error"]["message"], r.text
    os.mkfifo(tls.slots / "fifo.bin")  # would block a reader forever
    r = tls.request("POST", "/slots/1?action=restore", json={"filename": "fifo.bin"})
    assert r.status_code == 400 and "not a regular file" in r.json()["error"]["message"], r.text
    # saving to a link's name replaces the link: the file it pointed to is untouched
    before = (tls.outside / "real.bin").read_bytes()
    assert tls.request("POST", "/slots/0?action=save", json={"filename": "link.bin"}).status_code == 200
    assert not (tls.slots / "link.bin").is_symlink()
    assert (tls.outside / "real.bin").read_bytes() == before
    assert tls.request("POST", "/slots/1?action=restore", json={"filename": "link.bin"}).status_code == 200


def test_keys_are_never_logged(tls: TlsServer) -> None:
    # -v logs every request; neither the right key nor a wrong one may reach the log, however it is sent
    for headers in (AUTH, {"X-Api-Key": KEY}, {"Authorization": KEY}, {"Authorization": f"Bearer {WRONG}"},
                    {"X-Api-Key": WRONG}, {"Authorization": WRONG}):  # fmt: skip
        tls.request("GET", "/props", headers=headers)
        tls.request("POST", "/tokenize", headers=headers, json={"content": "Hi"})
        tls.request("GET", "/no/such/path", headers=headers)
    tls.request("GET", f"/props?api_key={WRONG}", headers=AUTH)
    log = tls.srv.log()
    assert "unauthorized" in log.lower()  # the 401s were logged, without the keys
    assert KEY not in log and WRONG not in log
    assert f"{KEY[:6]}" not in log  # not even a prefix


def test_every_route_still_needs_the_key_over_tls(tls: TlsServer) -> None:
    # /metrics, /slots and POST /props, named in the issue, on this server too
    for method, path in (("GET", "/metrics"), ("GET", "/slots"), ("POST", "/props"), ("POST", "/slots/0?action=erase"),
                         ("GET", "/lora-adapters"), ("GET", "/openapi.json")):  # fmt: skip
        r = tls.request(method, path, headers={}, json={})
        assert r.status_code == 401, (method, path, r.status_code)
    assert tls.request("GET", "/health", headers={}).status_code == 200
