"""The web UI's replies survive a page reload, in a real browser (web/tests/chat.test.mjs, scenario "resume":
Playwright driving headless Chromium): the chat request carries ``X-Conversation-Id`` (the conversation's id),
so the server goes on generating when the page goes; the reloaded page finds the stream (``POST
v1/streams/lookup``), replays it from its first byte (``GET v1/stream``) and follows it to the end, saving the
reply the server generated; stop on a resumed reply stops the server's generation (``DELETE v1/stream``); a
stream the server no longer has leaves the saved reply, marked interrupted. On a router (``--models-dir``) the
same routes, without a model, reach the model the conversation's request went to."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Server
from tests.test_webui_router import run_scenario

StartServer = Callable[..., Server]


def assert_idle(srv: Server, slots_path: str = "/slots") -> None:
    """Nothing left generating: the stopped reply's generation ended at the server, not only in the page."""
    deadline = time.monotonic() + 60
    while True:
        slots = srv.get(slots_path).json()
        if not any(s["is_processing"] for s in slots) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not any(s["is_processing"] for s in slots), slots
    assert srv.proc.poll() is None, srv.log()
    assert srv.get("/health").json() == {"status": "ok"}


def test_browser_reply_survives_a_reload(make_server: StartServer, model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "2048", "-np", "2", "-t", "2")
    run_scenario(srv.url + "/", "resume")
    assert_idle(srv)


def test_browser_reply_survives_a_reload_on_a_router(make_server: StartServer, model_path: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").symlink_to(model_path)
    srv = make_server("--models-dir", str(models), "-c", "2048", "-np", "2", "-t", "2")
    run_scenario(srv.url + "/", "resume")
    assert_idle(srv, "/slots?model=a")
