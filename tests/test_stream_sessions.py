"""Resumable streams (X-Conversation-Id, GET/DELETE /v1/stream, POST /v1/streams/lookup) on a real server and
through a router: a stream outlives its client and replays byte for byte."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from openai import OpenAI

from tests.conftest import Server

PROMPT = "Once upon a time, in a land far away, there lived a"


def conv() -> str:
    return f"conv-{uuid.uuid4()}"


def events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(chunk[6:]) for chunk in raw.split(b"\n\n") if chunk.startswith(b"data: {")]


def start(srv: Server, cid: str, path: str = "/completion", n: int = 3, **body: Any) -> list[bytes]:
    """Start a stream with X-Conversation-Id, read `n` events, then leave."""
    r = requests.post(srv.url + path, json={"stream": True, **body}, headers={"X-Conversation-Id": cid},
                      stream=True, timeout=60)
    assert r.status_code == 200, r.text
    lines = r.iter_lines()
    got: list[bytes] = []
    for line in lines:
        if line:
            got.append(line)
        if len(got) >= n:
            break
    r.close()
    return got


def lookup(srv: Server, *ids: str) -> list[dict[str, Any]]:
    r = requests.post(srv.url + "/v1/streams/lookup", json={"conversation_ids": list(ids)}, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json())


def wait_done(srv: Server, cid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = lookup(srv, cid)
        if found and found[0]["is_done"]:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"stream {cid} not done: {lookup(srv, cid)}")


def replay(srv: Server, cid: str, offset: int = 0) -> requests.Response:
    return requests.get(srv.url + "/v1/stream", params={"conv_id": cid, "from": offset}, timeout=120)


def test_a_stream_outlives_its_client_and_replays(server: Server) -> None:
    cid = conv()
    body = {"prompt": PROMPT, "n_predict": 40, "temperature": 0, "ignore_eos": True}
    first = start(server, cid, **body)
    done = wait_done(server, cid)
    assert done["conversation_id"] == cid and done["completed_at"] >= done["started_at"] > 0
    r = replay(server, cid)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert len(r.content) == done["total_bytes"]
    assert r.content.startswith(b"\n\n".join(first))  # the same bytes the client saw before it left
    got = events(r.content)
    assert got[-1]["stop"] is True and got[-1]["tokens_predicted"] == 40  # generated to the end, unwatched
    want = server.post("/completion", body).json()["content"]
    assert "".join(e["content"] for e in got) == want
    assert replay(server, cid, done["total_bytes"] - 10).content == r.content[-10:]


def test_reattach_to_a_live_stream(server: Server) -> None:
    cid = conv()
    start(server, cid, prompt=PROMPT, n_predict=150, ignore_eos=True)
    r = replay(server, cid)  # still generating: replays, then follows it to the end
    got = events(r.content)
    assert got[-1]["stop"] is True and got[-1]["tokens_predicted"] == 150
    assert sum(1 for e in got if not e.get("stop")) == 150


def test_chat_stream_through_the_openai_client(server: Server) -> None:
    cid = conv()
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0, stream=True,
        extra_headers={"X-Conversation-Id": cid})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    wait_done(server, cid)
    raw = replay(server, cid).content
    assert raw.endswith(b"data: [DONE]\n\n")
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events(raw) if e["choices"]) == text


def test_delete_stops_the_generation(server: Server) -> None:
    cid = conv()
    start(server, cid, prompt=PROMPT, n_predict=3000, ignore_eos=True)
    assert lookup(server, cid)[0]["is_done"] is False
    r = requests.delete(server.url + "/v1/stream", params={"conv_id": cid}, timeout=30)
    assert r.status_code == 204
    deadline = time.monotonic() + 10
    while any(s["is_processing"] for s in server.get("/slots").json()):
        assert time.monotonic() < deadline, "the generation was not stopped"
        time.sleep(0.1)
    assert lookup(server, cid) == []
    assert replay(server, cid).status_code == 404
    assert requests.delete(server.url + "/v1/stream", params={"conv_id": cid}, timeout=30).status_code == 204


def test_a_new_request_replaces_the_conversations_stream(server: Server) -> None:
    cid = conv()
    start(server, cid, prompt=PROMPT, n_predict=3000, ignore_eos=True)
    start(server, cid, n=1000, prompt="Hello", n_predict=4)  # read to its end
    raw = replay(server, cid).content
    assert events(raw)[-1]["tokens_predicted"] == 4  # the new one's, from its start
    deadline = time.monotonic() + 10
    while any(s["is_processing"] for s in server.get("/slots").json()):  # the old one was stopped
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_mistakes(server: Server) -> None:
    def error(r: requests.Response) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["message"]

    assert error(requests.get(server.url + "/v1/stream", timeout=10)) == (400, "Missing conversation id in path")
    assert error(replay(server, "no-such-conversation")) == (404, "Stream not found or expired")
    cid = conv()
    start(server, cid, prompt=PROMPT, n_predict=2)
    wait_done(server, cid)
    r = requests.get(server.url + "/v1/stream", params={"conv_id": cid, "from": "x"}, timeout=10)
    assert error(r) == (400, "Invalid 'from' offset")
    assert requests.post(server.url + "/v1/streams/lookup", data=b"{", timeout=10).status_code == 400
    assert lookup(server, "no-such-conversation") == []
    # only the ids asked about: no listing
    assert requests.post(server.url + "/v1/streams/lookup", json={"conversation_ids": []}, timeout=10).json() == []
    # without the header a client that leaves still cancels its generation
    r2 = requests.post(server.url + "/completion", json={"prompt": PROMPT, "n_predict": 3000, "ignore_eos": True,
                                                         "stream": True}, stream=True, timeout=60)
    next(line for line in r2.iter_lines() if line)
    r2.close()
    deadline = time.monotonic() + 10
    while any(s["is_processing"] for s in server.get("/slots").json()):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_through_a_router(tmp_path: Path, model_path: str, make_server: Any) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "smol.gguf").symlink_to(model_path)
    router = make_server("--models-dir", str(models), "-c", "1024", "-np", "2", "-t", "2")
    cid = conv()
    start(router, cid, "/v1/chat/completions", model="smol", messages=[{"role": "user", "content": "Hi"}],
          max_tokens=40, ignore_eos=True)
    done = wait_done(router, cid)  # asked of the model whose server holds it
    raw = replay(router, cid).content  # no ?model=: the router remembers where the conversation went
    assert len(raw) == done["total_bytes"] and raw.endswith(b"data: [DONE]\n\n")
    assert requests.delete(router.url + "/v1/stream", params={"conv_id": cid}, timeout=30).status_code == 204
    assert replay(router, cid).status_code == 404
    assert lookup(router, cid) == []


def test_sessions_are_bounded() -> None:
    from twisted.internet.task import Clock

    from llamatwist.api import stream_sessions as ss

    sessions = ss.StreamSessions(clock=Clock())
    stopped: list[str] = []
    for i in range(ss.MAX_SESSIONS + 3):
        session = sessions.create(f"c{i}")
        session.on_cancel.append(lambda i=i: stopped.append(f"c{i}"))
        if i < 2:
            sessions.finish(session)  # the two oldest are done: they go first, without a cancel
    assert sessions.get("c0") is None and sessions.get("c1") is None and sessions.get("c2") is None
    assert stopped == ["c2"]  # then the oldest running one, stopped
    assert sessions.get(f"c{ss.MAX_SESSIONS + 2}") is not None
    session = sessions.create("big")
    session.append(b"x" * (ss.MAX_BYTES + 10))
    assert session.dropped == 10 and session.total == ss.MAX_BYTES + 10 and session.read_from(10) == b"x" * ss.MAX_BYTES
