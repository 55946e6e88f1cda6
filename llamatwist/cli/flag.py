# -*- test-case-name: tests.test_cli -*-
"""What one implemented flag is, and the sections ``-h`` shows them in.

The flags themselves are in common_flags.py, sampling_flags.py and
server_flags.py, grouped as llama-server's own ``-h`` groups them (common,
sampling, example-specific params; llama.cpp's common/arg.cpp). ``-h`` shows
them in llamatwist's sections (`SECTIONS`), in that group order within each.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from llamatwist.cli.convert import Converter

__all__ = [
    "G_CHAT", "G_COMPUTE", "G_HTTP", "G_LOG", "G_MODEL", "G_SAMPLING", "G_SERVER", "SECTIONS", "Flag",
]


class Flag(NamedTuple):
    """One implemented llama-server flag.

    `convert` None makes it an on/off flag: `neg` names switch it off, and
    with no `neg` it is a switch that can only turn its field on.
    """

    names: tuple[str, ...]
    field: str  # ServerConfig field; "sampling.<name>" for SamplingDefaults
    section: str  # the -h section (one of SECTIONS)
    help: str
    env: str | None = None
    convert: Converter | None = None
    neg: tuple[str, ...] = ()
    metavar: str = "N"
    default: str | None = None  # shown by -h instead of the config default
    append: bool = False  # repeatable: the values add up in a list
    nargs: int | None = None  # values per use (then a list each time; metavar names them, space-separated)
    const: str | None = None  # the value when the flag comes alone (the seed's bare `-fa`)
    env_alias: str | None = None  # an older llama-server's name of its variable, read too

    @property
    def envs(self) -> tuple[str, ...]:
        """Its variables: llama-server's name first."""
        return tuple(e for e in (self.env, self.env_alias) if e)


G_MODEL: Final = "model"
G_SERVER: Final = "server"
G_COMPUTE: Final = "context, batching and compute"
G_HTTP: Final = "HTTP: security, CORS and limits"
G_CHAT: Final = "chat and prompt templates"
G_SAMPLING: Final = "sampling (defaults for each request)"
G_LOG: Final = "logging"
G_SPEC: Final = "speculative decoding"

#: the -h sections, in order
SECTIONS: Final = (G_MODEL, G_SERVER, G_HTTP, G_CHAT, G_COMPUTE, G_SAMPLING, G_SPEC, G_LOG)
