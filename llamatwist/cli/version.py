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
    # llama_pin.json sits at the repository root, beside the package.
    pin = Path(__file__).resolve().parents[2] / "llama_pin.json"
    try:
        commit = json.loads(pin.read_text(encoding="utf-8"))["commit"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    return str(commit)


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
