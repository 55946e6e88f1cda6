# -*- test-case-name: tests.test_fit_params -*-
"""``llamatwist-fit-params``: llama.cpp's llama-fit-params. Prints the settings ``--fit`` chooses for a model
on this machine's devices as command-line arguments, ``-c N -ngl N [-ts A,B] [-ot "PATTERN=BUFFER,..."]``,
to start servers with ``-fit off`` and those arguments (no measuring at each start).

It takes llamatwist's flags (-m, -dev, --rpc, -np, -kvu, -ctk, -fitt, -fitc, ...). As llama-fit-params, it
fits the context as a plain context (without the server's limits on its outputs) and exits 1 where no
settings are projected to fit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from llamatwist.cli.startup import StartupFailed, configure, resolve_model

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = configure(args, os.environ)
    except StartupFailed as failed:
        return failed.exit_code
    from llamatwist import logs
    from llamatwist.engine.fit import cli_args
    from llamatwist.models import ModelFetchError
    from llamatwist.runtime.loading import fit_spec
    from llamatwist.server import engine_spec

    logs.setup(config)
    try:
        config = resolve_model(config)
    except ModelFetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    assert config.model is not None
    if not os.path.isfile(config.model):
        print(f"error: model file not found: {config.model}", file=sys.stderr)
        return 1
    _, fitted = fit_spec(engine_spec(config, config.model))
    for note in fitted.notes if fitted else ():
        print(f"fit: {note}", file=sys.stderr)
    if fitted is None or not fitted.ok:
        print("error: failed to fit CLI arguments to free memory", file=sys.stderr)
        return 1
    print(cli_args(fitted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
