# -*- test-case-name: tests.test_cli -*-
"""What ``--version`` prints: the package version, the pinned llama.cpp commit, the backend and its devices."""

from __future__ import annotations

import json
from pathlib import Path

from llamatwist.cli.errors import PROG

__all__ = ["version_text"]


def _package_version() -> str:
    import llamatwist

    version = getattr(llamatwist, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib import metadata

    try:
        return metadata.version("llamatwist")
    except metadata.PackageNotFoundError:
        return "unknown"


def _llama_cpp_commit() -> str:
    # An installed package carries the pin beside its libraries (setup.py copies it there); a checkout that
    # was never built has it only at the repository root.
    here = Path(__file__).resolve()
    for pin in (here.parents[1] / "native" / "lib" / "llama_pin.json", here.parents[2] / "llama_pin.json"):
        try:
            return str(json.loads(pin.read_text(encoding="utf-8"))["commit"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return "unknown"


def _backend_lines() -> list[str]:
    # --version must answer even when the native libraries do not load: say why instead.
    try:
        from llamatwist.engine.model import backend_name, devices

        found = devices()
    except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
        return [f"backend: unavailable ({exc})"]
    lines = [f"backend: {backend_name(found)}"]
    lines += [f"device: {d.name} ({d.kind}): {d.description}, {d.total // (1024 * 1024)} MiB" for d in found]
    return lines


def version_text() -> str:
    """What --version prints."""
    return "\n".join([f"{PROG} {_package_version()}", f"llama.cpp commit {_llama_cpp_commit()}",
                      *_backend_lines()]) + "\n"
