"""Start-up failures shown to the user as one line, without a traceback."""

from __future__ import annotations

__all__ = ["StartupError"]


class StartupError(Exception):
    """The server cannot start; the message says why."""
