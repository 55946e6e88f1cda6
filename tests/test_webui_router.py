"""The web UI against a router and with --ui-config, in a real browser (web/tests/chat.test.mjs: Playwright
driving headless Chromium): on a router (--models-dir) the header's picker lists the models, the chosen one is
named in each chat request and remembered after a reload; /props ui_settings are the settings form's defaults
until the user saves another value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Server
from tests.test_webui import _run_browser

StartServer = Callable[..., Server]


def run_scenario(url: str, name: str) -> None:
    _run_browser(url, scenarios=(name,))


def test_browser_router_model_picker(make_server: StartServer, model_path: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("a", "b"):
        (models / f"{name}.gguf").symlink_to(model_path)
    srv = make_server("--models-dir", str(models), "-c", "1024", "-np", "1", "-t", "2")
    props = srv.get("/props").json()
    assert props["role"] == "router" and props["ui_settings"] == {}
    assert sorted(m["id"] for m in srv.get("/v1/models").json()["data"]) == ["a", "b"]
    run_scenario(srv.url + "/", "router")
    assert srv.proc.poll() is None, srv.log()


def test_browser_ui_settings_are_defaults(make_server: StartServer, model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "1024", "-np", "1", "-t", "2", "--ui-config",
                      '{"temperature": 0.25, "systemMessage": "Be brief.", "pdfAsImage": true, '
                      '"customJson": {"n_probs": 1}}')
    assert srv.get("/props").json()["ui_settings"] == {"temperature": 0.25, "systemMessage": "Be brief.",
                                                       "pdfAsImage": True, "customJson": {"n_probs": 1}}
    run_scenario(srv.url + "/", "uisettings")
