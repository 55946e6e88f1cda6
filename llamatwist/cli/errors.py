# -*- test-case-name: tests.test_cli -*-
"""The error a refused command line raises, and how it is reported."""

from __future__ import annotations

import sys
from typing import IO, Final

__all__ = ["PROG", "ConfigError", "report_error"]

PROG: Final = "llamatwist"


class ConfigError(Exception):
    """A command line or environment that llamatwist refuses to run with.

    `exit_code` is the process exit status: 2 for usage errors (unknown flag,
    invalid value; argparse's convention), 1 for flags that llama-server knows
    but llamatwist does not implement yet.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def report_error(err: ConfigError, stream: IO[str] | None = None) -> None:
    """Print `err` the way argparse (usage errors) or llama-server would."""
    out = sys.stderr if stream is None else stream
    if err.exit_code == 2:
        out.write(f"usage: {PROG} [options]\n{PROG}: error: {err.message}\n")
    else:
        out.write(f"error: {err.message}\n")
    out.flush()
