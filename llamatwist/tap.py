# -*- test-case-name: tests.test_cli -*-
"""``twistd -n llamatwist ARGS``: the llamatwist server as a twistd plugin.

ARGS are llama-server's flags, passed verbatim to the start-up the
``llamatwist`` command uses (llamatwist.cli.startup), so they mean exactly
what they mean to ``llamatwist ARGS``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.python import usage

from llamatwist import cli

if TYPE_CHECKING:
    from twisted.application.service import MultiService

    from llamatwist.config import ServerConfig

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """Takes llama-server's command line as it is.

    usage.Options' getopt cannot express flags like ``-np`` or ``-no-kvu``,
    so parseOptions bypasses it and hands the whole list to cli.configure.
    """

    synopsis = "[llama-server options]"
    longdesc = "Run the llama-server compatible server; see --help for the flags."

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.argv: list[str] = []
        self.config: ServerConfig | None = None

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            # The same message and status as the llamatwist command, rather
            # than twistd's usage dump.
            self.config = cli.configure(self.argv, os.environ)
        except cli.StartupFailed as failed:
            raise SystemExit(failed.exit_code) from None
        self.postOptions()  # type: ignore[no-untyped-call]

    def getUsage(self, width: int | None = None) -> str:
        return cli.build_parser(prog="twistd [options] llamatwist").format_help()


def makeService(options: Options) -> MultiService:
    """Build the server's service (twistd starts it and runs the reactor)."""
    try:
        config = options.config or cli.configure(options.argv, os.environ)  # None: parseOptions was not called
        service = cli.build_service(config, under_twistd=True)
    except cli.StartupFailed as failed:
        raise SystemExit(failed.exit_code) from None
    from twisted.internet import reactor

    cli.stop_once_on_signals(reactor)  # twistd runs the reactor: its signal handlers are read then
    return service
