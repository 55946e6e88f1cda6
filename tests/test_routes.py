"""Klein names each endpoint after its handler function: two route modules with
same-named handlers would silently replace one another. Keep names unique."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any

import requests

API = Path(__file__).resolve().parent.parent / "llamatwist" / "api"
ROUTER = API.parent / "router"


def _route_handlers(paths: list[Path] | None = None) -> list[tuple[str, str]]:
    found = []
    for path in paths if paths is not None else sorted(API.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for dec in node.decorator_list:
                    if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "route":
                        found.append((node.name, str(path.relative_to(API.parent))))
                        break
    return found


def test_route_handler_names_are_unique() -> None:
    handlers = _route_handlers()
    assert len(handlers) > 10
    counts = Counter(name for name, _ in handlers)
    dupes = {name: [f for n, f in handlers if n == name] for name, c in counts.items() if c > 1}
    assert not dupes, f"handlers sharing a Klein endpoint name: {dupes}"


def test_router_handler_names_are_unique() -> None:
    """The router's app: its own routes, the web UI's and Vertex AI's."""
    handlers = _route_handlers([*sorted(ROUTER.glob("*.py")), API / "webui.py", API / "vertex.py"])
    assert len(handlers) > 10
    counts = Counter(name for name, _ in handlers)
    assert all(c == 1 for c in counts.values()), counts


def test_features_it_runs_without_answer_403(server: Any) -> None:
    """llama-server's answer on /tools (without --tools) and /cors-proxy (without --ui-mcp-proxy)."""
    for method in ("get", "post"):
        for path in ("/tools", "/cors-proxy"):
            r = getattr(requests, method)(server.url + path, timeout=10)
            assert r.status_code == 403
            assert r.json()["error"] == {"code": 403, "message": "this feature is disabled", "type": "feature_disabled"}
