"""SSE pings (llama-server's ``sse_ping_interval`` / ``--sse-ping-interval``): a ``:`` comment after that many
seconds without an event, so that clients and proxies keep a silent stream (a queued request, a long
prompt) open."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from llamatwist.api.streaming import SSEStream


def test_pings_follow_silence_only() -> None:
    clock, request = Clock(), DummyRequest([b""])
    sse = SSEStream(request, 5, clock)
    clock.advance(4.9)
    assert request.written == []
    clock.advance(0.1)
    assert request.written == [b":\n\n"]
    clock.advance(3)
    sse.send({"a": 1})  # an event restarts the silence
    clock.advance(4.9)
    assert len(request.written) == 2
    clock.advance(0.1)
    assert request.written[-1] == b":\n\n"
    request.finish()
    clock.advance(60)
    assert len(request.written) == 3 and not clock.getDelayedCalls()


def test_no_pings_when_disabled() -> None:
    clock, request = Clock(), DummyRequest([b""])
    SSEStream(request, -1, clock)
    clock.advance(100)
    assert request.written == [] and not clock.getDelayedCalls()


def _stream_lines(url: str, body: dict[str, Any]) -> list[bytes]:
    with requests.post(url, json={**body, "stream": True}, stream=True, timeout=120) as r:
        assert r.status_code == 200
        return [ln for ln in r.iter_lines() if ln]


def _wait_busy(srv: Any) -> None:
    """Until the one slot is taken (a thread's request may reach the server after the next one)."""
    deadline = time.monotonic() + 60
    while not any(s["is_processing"] for s in srv.get("/slots").json()):
        assert time.monotonic() < deadline, "the busy request never took the slot"
        time.sleep(0.02)


def test_a_queued_stream_is_pinged(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "1", "-c", "1024", "-t", "2", "--sse-ping-interval", "1")
    busy = threading.Thread(target=srv.post, args=("/completion", {"prompt": "Count:", "n_predict": 500,
                                                                  "ignore_eos": True}))
    busy.start()
    _wait_busy(srv)
    try:
        # the one slot is busy for seconds: this stream waits silently, and is pinged meanwhile
        lines = _stream_lines(srv.url + "/completion", {"prompt": "Hi", "n_predict": 2})
        first_data = next(i for i, ln in enumerate(lines) if ln.startswith(b"data: "))
        assert first_data > 0 and all(ln == b":" for ln in lines[:first_data])
        assert json.loads(lines[-1][6:])["stop"] is True
        # per request: -1 turns them off
        busy2 = threading.Thread(target=srv.post, args=("/completion", {"prompt": "Count:", "n_predict": 500,
                                                                       "ignore_eos": True}))
        busy.join()
        busy2.start()
        _wait_busy(srv)
        quiet = _stream_lines(srv.url + "/completion", {"prompt": "Hi", "n_predict": 2, "sse_ping_interval": -1})
        assert not any(ln == b":" for ln in quiet)
        busy2.join()
    finally:
        busy.join()
    r = srv.post("/completion", {"prompt": "Hi", "n_predict": 1, "sse_ping_interval": -5})
    assert r.status_code == 400 and "sse_ping_interval" in r.json()["error"]["message"]
