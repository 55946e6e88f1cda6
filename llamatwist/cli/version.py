# -*- test-case-name: tests.test_cli -*-
"""What ``--version`` prints: the package version and the pinned llama.cpp commit."""

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


def version_text() -> str:
    """What --version prints."""
    return f"{PROG} {_package_version()}\nllama.cpp commit {_llama_cpp_commit()}\n"
