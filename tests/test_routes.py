"""Klein names each endpoint after its handler function: two route modules with
same-named handlers would silently replace one another. Keep names unique."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

API = Path(__file__).resolve().parent.parent / "llamatwist" / "api"


def _route_handlers() -> list[tuple[str, str]]:
    found = []
    for path in sorted(API.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for dec in node.decorator_list:
                    if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "route":
                        found.append((node.name, str(path.relative_to(API))))
                        break
    return found


def test_route_handler_names_are_unique() -> None:
    handlers = _route_handlers()
    assert len(handlers) > 10
    counts = Counter(name for name, _ in handlers)
    dupes = {name: [f for n, f in handlers if n == name] for name, c in counts.items() if c > 1}
    assert not dupes, f"handlers sharing a Klein endpoint name: {dupes}"
