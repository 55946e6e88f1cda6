"""Operations: SIGTERM drains (503s, in-flight requests finish or end with an error
event after LLAMATWIST_DRAIN_TIMEOUT, exit 0), SIGHUP reopens --log-file, and
twistd daemonized with --pidfile/--logfile starts, serves and stops on kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.conftest import REPO, Server, free_port
from tests.test_packaging_deb import wait_healthy

SMALL = ("-c", "1024", "-np", "2", "-t", "1")


def stream_events(srv: Server, body: dict[str, object], events: list[dict[str, object]],
                  first: threading.Event) -> None:
    with requests.post(srv.url + "/completion", json={**body, "stream": True}, stream=True, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
                first.set()


def start_stream(srv: Server, body: dict[str, object]) -> tuple[threading.Thread, list[dict[str, object]]]:
    events: list[dict[str, object]] = []
    first = threading.Event()
    t = threading.Thread(target=stream_events, args=(srv, body, events, first), daemon=True)
    t.start()
    assert first.wait(60), "no token arrived"
    return t, events


def test_sigterm_drains_then_exits_0(make_server, model_path: str) -> None:  # type: ignore[no-untyped-def]
    srv = make_server("-m", model_path, *SMALL)
    t, events = start_stream(srv, {"prompt": "Once upon a time", "n_predict": 60, "ignore_eos": True})
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # Draining: still listening, but nothing new is taken and the balancer sees 503.
    assert srv.get("/health").status_code == 503
    refused = srv.post("/completion", {"prompt": "Hi", "n_predict": 2})
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "unavailable_error"
    t.join(60)
    assert not t.is_alive()
    # The running request finished normally: all its tokens, then the final event.
    assert events[-1]["stop"] is True and events[-1]["tokens_predicted"] == 60
    assert srv.proc.wait(30) == 0
    log = srv.log()
    assert "draining: waiting up to 30s for 1 request(s)" in log and "engine stopped, model freed" in log


def test_drain_timeout_ends_requests_with_an_error_event(make_server, model_path: str,  # type: ignore[no-untyped-def]
                                                         monkeypatch) -> None:
    monkeypatch.setenv("LLAMATWIST_DRAIN_TIMEOUT", "1")
    srv = make_server("-m", model_path, *SMALL)
    t, events = start_stream(srv, {"prompt": "Count forever:", "n_predict": 100000, "ignore_eos": True})
    signalled = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert not t.is_alive()
    assert time.monotonic() - signalled < 5
    error = events[-1]["error"]
    assert isinstance(error, dict) and "shutting down" in str(error["message"]), events[-1]
    assert srv.proc.wait(30) == 0
    assert "1 request(s) still running after 1s ended with an error" in srv.log()


def test_sighup_reopens_the_log_file(make_server, model_path: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log_file = tmp_path / "llamatwist.log"
    srv = make_server("-m", model_path, *SMALL, "--log-file", str(log_file))
    assert "model loaded" in log_file.read_text()
    rotated = tmp_path / "llamatwist.log.1"
    log_file.rename(rotated)  # logrotate's default (create) mode
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not log_file.exists():
        assert time.monotonic() < deadline, "no new log file after SIGHUP"
        time.sleep(0.05)
    assert srv.post("/completion", {"prompt": "Hi", "n_predict": 2}).status_code == 200
    assert srv.proc.poll() is None
    assert "log file reopened" in log_file.read_text()
    assert "log file reopened" not in rotated.read_text()
    # A second SIGHUP without rotation appends: nothing written so far is lost.
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert log_file.read_text().count("log file reopened") == 2


def test_twistd_daemon_with_pidfile_and_logfile(model_path: str, tmp_path: Path) -> None:
    pidfile, logfile, port = tmp_path / "twistd.pid", tmp_path / "twistd.log", free_port()
    twistd = Path(sys.executable).with_name("twistd")
    # Daemonized: twistd forks, the command returns at once, the daemon writes the pidfile.
    subprocess.run([str(twistd), "--pidfile", str(pidfile), "--logfile", str(logfile), "llamatwist",
                    "-m", model_path, *SMALL, "--port", str(port)], cwd=tmp_path, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, None)
    pid = int(pidfile.read_text())
    r = requests.post(url + "/completion", json={"prompt": "Hello", "n_predict": 4}, timeout=60)
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 4
    os.kill(pid, signal.SIGTERM)  # kill $(cat pidfile)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower():
        assert time.monotonic() < deadline, "the daemon did not stop"
        time.sleep(0.1)
    assert not pidfile.exists()
    log = logfile.read_text()
    assert "model loaded" in log and "engine stopped, model freed" in log and "Main loop terminated" in log


def test_sigterm_under_load_loses_no_accepted_request(make_server, model_path: str) -> None:  # type: ignore[no-untyped-def]
    """4x more requests than slots in flight (half streamed, half waiting for a slot) when SIGTERM comes: every
    one of them completes in full; what arrives after it is a 503; the process exits 0."""
    srv = make_server("-m", model_path, *SMALL)
    n_predict = 24
    body = {"prompt": "Once upon a time", "n_predict": n_predict, "ignore_eos": True}
    results: dict[int, object] = {}

    def plain(i: int) -> None:
        r = requests.post(srv.url + "/completion", json=body, timeout=120)
        results[i] = (r.status_code, r.json().get("tokens_predicted"))

    def streamed(i: int) -> None:
        events: list[dict[str, object]] = []
        stream_events(srv, body, events, threading.Event())
        last = events[-1] if events else {}
        results[i] = (200 if last.get("stop") else 0, last.get("tokens_predicted"))

    workers = [threading.Thread(target=streamed if i % 2 else plain, args=(i,), daemon=True) for i in range(8)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while sum(s["is_processing"] for s in srv.get("/slots").json()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    late = srv.post("/completion", {"prompt": "Hi", "n_predict": 2})
    assert late.status_code == 503
    for w in workers:
        w.join(120)
    assert results == {i: (200, n_predict) for i in range(8)}
    assert srv.proc.wait(30) == 0
