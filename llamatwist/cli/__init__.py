# -*- test-case-name: tests.test_cli -*-
"""Command line of llamatwist: llama-server's flags and LLAMA_ARG_* variables.

Every flag llama-server accepts is known here. The implemented ones are
declared in three tables, grouped as llama-server's ``-h`` groups them:
common_flags.py, sampling_flags.py and server_flags.py (each flag's value
converter is in convert.py); they drive argparse (parser.py), the
environment lookup (environ.py) and ``-h``. All the others are listed in
unimplemented.py and refused loudly rather than silently ignored, so a
command line written for llama-server either means the same thing here or
fails. startup.py is the start-up shared by the ``llamatwist`` command
(`main`) and the twistd plugin (llamatwist/tap.py).

Only argparse and the pure config modules are imported with this package:
``-h`` and ``--version`` must work without the native library, Twisted or a
model.
"""

from llamatwist.cli.convert import parse_api_key_file, parse_csv_row, read_api_key_file
from llamatwist.cli.errors import ConfigError, report_error
from llamatwist.cli.flag import Flag
from llamatwist.cli.parser import FLAGS, build_parser, parse_config, show_default
from llamatwist.cli.server_flags import PRESETS
from llamatwist.cli.startup import (
    StartupFailed,
    build_service,
    configure,
    fatal_errors,
    main,
    resolve_model,
    run_service,
    stop_once_on_signals,
)
from llamatwist.cli.unimplemented import UNIMPLEMENTED
from llamatwist.cli.version import version_text

__all__ = [
    "FLAGS",
    "PRESETS",
    "UNIMPLEMENTED",
    "ConfigError",
    "Flag",
    "StartupFailed",
    "build_parser",
    "build_service",
    "configure",
    "fatal_errors",
    "main",
    "parse_api_key_file",
    "parse_config",
    "parse_csv_row",
    "read_api_key_file",
    "report_error",
    "resolve_model",
    "run_service",
    "show_default",
    "stop_once_on_signals",
    "version_text",
]
