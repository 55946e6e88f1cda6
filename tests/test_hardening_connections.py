"""Issue 19 item 3: slow, idle and stalled clients, with raw sockets against a real server (--timeout 3, so a
trickled request meets its deadline within the test)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from llamatwist.api.security import GuardedChannel
from tests.conftest import Server

TIMEOUT = 3  # --timeout: the header and body deadlines here


@pytest.fixture(scope="module")
def srv(model_path: str) -> Iterator[Server]:
    s = Server(["-m", model_path, "-c", "2048", "-np", "2", "-t", "1", "--timeout", str(TIMEOUT)])
    yield s
    s.stop()


def connect(srv: Server, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", srv.port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def answer_of(data: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def quick_request_works(srv: Server, limit: float = 10.0) -> None:
    t0 = time.monotonic()
    r = requests.post(srv.url + "/tokenize", json={"content": "Hi"}, timeout=limit)
    assert r.status_code == 200 and time.monotonic() - t0 < limit


def open_fds(srv: Server) -> int:
    return len(os.listdir(f"/proc/{srv.proc.pid}/fd"))


def test_trickled_headers_get_408_and_do_not_block(srv: Server) -> None:
    socks = [connect(srv) for _ in range(20)]
    t0 = time.monotonic()
    for i, sock in enumerate(socks):
        sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GET /hea")
    # a slowloris keeps sending a byte now and then: the idle timeout alone would never fire
    stop = time.monotonic() + TIMEOUT + 2
    while time.monotonic() < stop:
        quick_request_works(srv)  # others are served meanwhile
        for sock in socks:
            try:
                sock.sendall(b"X")
            except OSError:
                pass
        time.sleep(0.5)
    for sock in socks:
        data = read_all(sock)
        status, body = answer_of(data)
        assert status == 408, data[:200]
        assert "headers did not arrive within 3 seconds" in body["error"]["message"]  # type: ignore[index]
        sock.close()
    assert time.monotonic() - t0 < TIMEOUT + 10


def test_silent_connection_is_closed(srv: Server) -> None:
    sock = connect(srv)
    t0 = time.monotonic()
    status, _ = answer_of(read_all(sock))
    assert status == 408 and TIMEOUT - 0.5 < time.monotonic() - t0 < TIMEOUT + 5
    sock.close()


def test_unfinished_body_gets_408(srv: Server) -> None:
    for path in ("/completion", "/v1/messages"):
        sock = connect(srv)
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"prompt\": " % path.encode())
        t0 = time.monotonic()
        while time.monotonic() - t0 < TIMEOUT + 1:  # trickle: every byte restarts Twisted's idle timer
            try:
                sock.sendall(b" ")
            except OSError:
                break
            time.sleep(0.5)
        status, body = answer_of(read_all(sock))
        assert status == 408, body
        if path == "/v1/messages":  # Anthropic's error shape on its family's path
            assert body["type"] == "error" and "body did not arrive" in body["error"]["message"]  # type: ignore[index]
        else:
            assert body["error"]["code"] == 408  # type: ignore[index]
        sock.close()
    quick_request_works(srv)


def test_oversize_and_malformed_headers(srv: Server) -> None:
    cases = [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),  # one long line
        (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-H: " + b"b" * 8000 + b"\r\nX-I: " + b"c" * 9000 + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(600)) + b"\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400),
        (b"NONSENSE\r\n\r\n", 400),
    ]
    for raw, expected in cases:
        sock = connect(srv)
        sock.sendall(raw)
        status, body = answer_of(read_all(sock))
        assert status == expected, (raw[:60], body)
        assert body["error"]["code"] == expected  # type: ignore[index]
        sock.close()
    quick_request_works(srv)


def test_many_idle_connections_do_not_exhaust_descriptors(srv: Server) -> None:
    before = open_fds(srv)
    socks = [connect(srv) for _ in range(200)]
    quick_request_works(srv)
    time.sleep(TIMEOUT + 2)
    for sock in socks:
        read_all(sock)
        sock.close()
    time.sleep(0.5)
    assert open_fds(srv) <= before + 2  # every one of them closed by the server
    quick_request_works(srv)


def test_connection_cap() -> None:
    # in-process: past max_connections a connection is dropped at once, before any parsing
    from twisted.internet.testing import StringTransport

    cls = type("Capped", (GuardedChannel,), {"max_connections": 2, "open_connections": 0, "header_timeout": None})
    channels = [cls() for _ in range(3)]
    transports = [StringTransport() for _ in range(3)]
    for channel, transport in zip(channels, transports):
        channel.makeConnection(transport)
    assert cls.open_connections == 2
    assert [t.disconnecting or getattr(t, "disconnected", False) for t in transports] == [False, False, True]
    channels[0].connectionLost(None)
    assert cls.open_connections == 1


def test_a_client_that_stops_reading_does_not_stall_others(srv: Server) -> None:
    # n_probs makes every event several KB, so the stream outgrows the kernel's buffers and the 1 MiB bound
    sock = connect(srv, rcvbuf=4096)
    body = json.dumps({"prompt": "Once upon a time", "n_predict": 1500, "stream": True, "n_probs": 100,
                       "ignore_eos": True, "id_slot": 0}).encode()  # fmt: skip
    sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
    sock.recv(1024)  # the stream started; from now on this client reads nothing
    done = threading.Event()
    times: list[float] = []

    def others() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            r = requests.post(srv.url + "/completion", json={"prompt": "Hi", "n_predict": 8, "id_slot": 1}, timeout=60)
            assert r.status_code == 200
            times.append(time.monotonic() - t0)

    worker = threading.Thread(target=others)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the stalled stream's slot is freed when the bound is hit
            slots = requests.get(srv.url + "/slots", timeout=30).json()
            if not slots[0]["is_processing"] and len(times) >= 3:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the stalled stream was never dropped")
    finally:
        done.set()
        worker.join()
    assert "stopped reading its stream" in srv.log()
    assert times and max(times) < 30, times  # the others kept being served while it stalled
    sock.close()
    quick_request_works(srv)
