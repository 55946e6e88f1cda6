# -*- test-case-name: tests.test_cli -*-
"""Start-up, shared by the ``llamatwist`` command and ``twistd llamatwist``.

`configure` turns the command line into a ServerConfig and `build_service`
sets up logging, resolves the model and builds the server's MultiService;
each reports a failure on stderr and raises StartupFailed with the exit
status. `main` runs the result under the reactor; the twistd plugin
(llamatwist/tap.py) hands it to twistd.

Twisted and the native bindings are imported only once the command line
has been read: ``-h`` and ``--version`` need neither.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamatwist.cli.convert import rpc_servers
from llamatwist.cli.environ import unknown_env, vertex_from_env
from llamatwist.cli.errors import ConfigError, report_error
from llamatwist.cli.parser import FLAGS, parse_config
from llamatwist.config import ServerConfig
from llamatwist.sampling_defaults import synthetic_rates

if TYPE_CHECKING:
    from twisted.application.service import MultiService

__all__ = [
    "ROUTER_CHILD_ENV",
    "StartupFailed",
    "build_service",
    "configure",
    "fatal_errors",
    "main",
    "resolve_model",
    "run_service",
    "stop_once_on_signals",
    "synthetic_acceptance",
]

log = logging.getLogger(__name__)


class StartupFailed(Exception):
    """Start-up stopped; the reason is already reported on stderr."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def resolve_model(config: ServerConfig) -> ServerConfig:
    """`config` with `model` set: no model means the default one, fetched if
    needed (raises llamatwist.models.ModelFetchError when that fails).

    The file itself is checked by make_service, which raises StartupError.
    """
    if config.mmproj_url:
        config = _fetch_mmproj(config)
    if config.model_url:
        # -mu: into -m's path when given, else the cache (never the network with --offline)
        from llamatwist.cli.download import DownloadError, fetch_model, model_url_path
        from llamatwist.models import ModelFetchError, cache_dir

        try:
            dest = Path(config.model) if config.model else model_url_path(config.model_url, cache_dir())
            path = fetch_model(config.model_url, dest, offline=config.offline)
        except DownloadError as err:
            raise ModelFetchError(str(err)) from None
        return dataclasses.replace(config, model=str(path))
    if config.docker_repo:
        from llamatwist.cli.docker import resolve_docker
        from llamatwist.cli.download import DownloadError
        from llamatwist.models import ModelFetchError, cache_dir

        try:
            config = dataclasses.replace(config, model=str(resolve_docker(config.docker_repo, cache_dir(),
                                                                           offline=config.offline)))
        except DownloadError as err:
            raise ModelFetchError(str(err)) from None
    if config.hf_repo or config.hf_repo_draft:
        config = _resolve_hf(config)
    if config.model is not None or config.router_mode:  # -hf of a preset repository: a router
        return config
    from llamatwist.models import ensure_default_model

    return dataclasses.replace(config, model=str(ensure_default_model()))


def _fetch_mmproj(config: ServerConfig) -> ServerConfig:
    """-mmu: the projector into --mmproj's path when given, else the cache (never the network with --offline)."""
    from llamatwist.cli.download import DownloadError, fetch_model, model_url_path
    from llamatwist.models import ModelFetchError, cache_dir

    assert config.mmproj_url is not None
    try:
        dest = Path(config.mmproj) if config.mmproj else model_url_path(config.mmproj_url, cache_dir())
        path = fetch_model(config.mmproj_url, dest, offline=config.offline)
    except DownloadError as err:
        raise ModelFetchError(f"--mmproj-url: {err}") from None
    return dataclasses.replace(config, mmproj=str(path))


def _resolve_hf(config: ServerConfig) -> ServerConfig:
    """-hf and -hfd: paths in the Hugging Face cache (downloaded into it unless --offline), as llama-server's:
    -hf's model with all its shards and the projector beside it; the draft heads a repository ships for the
    types asked (-hf's, when no -md/-hfd names a draft; -hfd's, all of them when no --spec-type is given, the
    first found making the draft and its type), else -hfd's model. An MTP head (mtp-*) is the draft of
    draft-mtp when shipped; without one draft-mtp runs the model's own MTP layers."""
    from llamatwist.cli.download import DownloadError
    from llamatwist.cli.hf import SIDECARS, resolve_hf_files
    from llamatwist.cli.parser import with_draft
    from llamatwist.models import ModelFetchError

    asked = tuple(kind for kind in SIDECARS if f"draft-{kind}" in config.sampling.speculative.types)
    needed = [kind for kind in asked if kind != "mtp"]  # without a head draft-mtp runs the model's own layers
    try:
        if config.hf_repo:
            files = resolve_hf_files(config.hf_repo, config.hf_file, token=config.hf_token, offline=config.offline,
                                     mmproj=config.mmproj_auto and not config.mmproj and not config.mmproj_url,
                                     sidecars=() if config.model_draft or config.hf_repo_draft else asked)
            if files.preset is not None:  # a preset repository: a router serving its presets, as llama-server
                log.warning("NOTE: using preset.ini from HF repo '%s': please only use presets that you can trust! "
                            "Unknown presets may be unsafe", config.hf_repo)
                return dataclasses.replace(config, hf_repo=None, hf_file=None, models_preset=str(files.preset))
            assert files.model is not None
            config = dataclasses.replace(config, model=str(files.model))
            if files.mmproj:
                config = dataclasses.replace(config, mmproj=str(files.mmproj))
            if files.sidecars:
                config = dataclasses.replace(config, model_draft=str(next(iter(files.sidecars.values()))))
            elif needed and not (config.model_draft or config.hf_repo_draft):
                raise ModelFetchError(f"--spec-type draft-{needed[0]} needs a draft model: {config.hf_repo} ships no "
                                      f"{needed[0]}-*.gguf beside its model (give -md or -hfd)")
        if config.hf_repo_draft:
            files = resolve_hf_files(config.hf_repo_draft, config.hf_file_draft, token=config.hf_token,
                                     offline=config.offline, need_model=False,
                                     sidecars=() if config.hf_file_draft else SIDECARS if config.spec_type_default
                                     else asked)
            draft = next(iter(files.sidecars.values()), files.model)
            assert draft is not None
            config = with_draft(config, str(draft))
    except DownloadError as err:
        raise ModelFetchError(str(err)) from None
    return config


def fatal_errors() -> tuple[type[BaseException], ...]:
    """Errors that end startup with a one-line message instead of a traceback.

    Imported lazily: these modules pull in Twisted and the native bindings.
    """
    from twisted.internet.error import CannotListenError

    from llamatwist.errors import StartupError
    from llamatwist.models import ModelFetchError

    return (StartupError, ModelFetchError, CannotListenError)


def _add_rpc_servers(argv: Sequence[str], environ: Mapping[str, str]) -> None:
    """--rpc's servers become devices before the command line is read, so that -dev, -ts and --list-devices
    know them wherever they are written (llama-server registers them when it reaches --rpc)."""
    value = environ.get("LLAMA_ARG_RPC")
    for i, arg in enumerate(argv):
        if arg == "--rpc" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--rpc="):
            value = arg.partition("=")[2]
    try:
        endpoints = rpc_servers(value) if value is not None else ()
    except ValueError:
        return  # parse_config says what is wrong with it
    if endpoints:
        from llamatwist.engine.errors import EngineError
        from llamatwist.engine.rpc import add_servers

        try:
            add_servers(endpoints)
        except EngineError as exc:
            raise ConfigError(f"--rpc: {exc}", exit_code=1) from None


def _config_file_args(environ: Mapping[str, str]) -> list[str]:
    """llama-server's config files (/etc/llama.cpp/config.ini, ~/.config/llama.cpp/config.ini) as arguments,
    each file named on stderr as llama-server logs it, a key no flag knows a warning."""
    from llamatwist.cli.ini import IniError, config_file_args, config_files

    paths = config_files(environ)
    for path in paths:
        print(f"using config file: {path}", file=sys.stderr)
    try:
        args, warnings = config_file_args(paths)
    except IniError as exc:
        raise ConfigError(str(exc), 1) from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return args


def configure(argv: Sequence[str], environ: Mapping[str, str]) -> ServerConfig:
    """parse_config, with a refused command line reported (StartupFailed).

    A LLAMA_ARG_* variable that names no flag is a warning on stderr: llama-server ignores
    it silently, which hides a typo in a compose file. The config files' options come first: the environment
    and the command line win over them.
    """
    try:
        _add_rpc_servers(argv, environ)
        config = parse_config(argv, environ, _config_file_args(environ))
    except ConfigError as err:
        report_error(err)
        raise StartupFailed(err.exit_code) from None
    for name in unknown_env(environ, FLAGS):
        print(f"warning: environment variable {name} names no llama-server flag; ignored", file=sys.stderr)
    vertex = vertex_from_env(environ)
    if vertex is not None:
        routes, port = vertex
        if port != config.port:
            print(f"warning: Google Cloud Vertex AI: AIP_HTTP_PORT {port} overrides the server port {config.port}",
                  file=sys.stderr)
        config = dataclasses.replace(config, vertex=routes, port=port)
    if config.prompts_log_dir:
        # as llama-server, created when the flag is read; a failure is a warning (the files will fail to log)
        from llamatwist.api.prompt_log import create_prompt_log_dir

        if (warning := create_prompt_log_dir(config.prompts_log_dir)) is not None:
            print(warning, file=sys.stderr)
    return config


def build_service(config: ServerConfig, *, under_twistd: bool = False) -> MultiService:
    """Set up logging, resolve the model and build the server's service
    (not started); a failure is reported and raises StartupFailed."""
    from llamatwist import logs

    logs.setup(config, under_twistd=under_twistd)
    fatal = fatal_errors()
    try:
        if not config.router_mode:
            if config.models_dir or config.models_preset:
                log.warning("--models-dir and --models-preset start router mode, which needs no model: ignored with "
                            "-m, -mu, -hf or -dr")
            config = resolve_model(synthetic_acceptance(config))
        if config.router_mode:  # a catalog and no model; or -hf named a preset repository
            from llamatwist.router.service import make_router_service

            return make_router_service(config)
        from llamatwist.server import make_service

        return make_service(config)
    except ConfigError as err:
        report_error(err)
        raise StartupFailed(err.exit_code) from None
    except fatal as err:
        print(f"error: {err}", file=sys.stderr)
        raise StartupFailed(1) from None


def synthetic_acceptance(config: ServerConfig) -> ServerConfig:
    """--spec-synth-len / --spec-synth-rates checked against the speculation they apply to and resolved into
    each draft position's acceptance rate; llama-server's start-up errors (exit status 1) otherwise."""
    length, rates = config.spec_synth_len, config.spec_synth_rates
    if length is None and not rates:
        return config
    spec = config.sampling.speculative
    if not spec.types:  # llama-server: its speculative context is never made
        raise ConfigError("synthetic acceptance requires an initialized speculative decoding context", 1)
    try:
        resolved = synthetic_rates(length, rates, spec.limit)
    except ValueError as exc:
        raise ConfigError(f"failed to initialize speculative decoding context: {exc}", 1) from None
    sampling = dataclasses.replace(config.sampling, speculative=dataclasses.replace(spec, synth_rates=resolved))
    return dataclasses.replace(config, sampling=sampling)


def stop_once_on_signals(reactor: Any) -> None:
    """A second SIGINT/SIGTERM while shutting down (``timeout`` forwarding one, an impatient operator) is
    logged and ignored: Twisted's handlers would stop the stopped reactor again and log a critical
    ReactorNotRunning traceback."""
    stopping: list[str] = []

    def wrap(name: str, handler: Callable[..., None]) -> Callable[..., None]:
        def once(number: int, frame: Any = None) -> None:
            if stopping:
                log.info("received %s again: already shutting down", name)
                return
            stopping.append(name)
            handler(number, frame)
        return once

    reactor.sigInt = wrap("SIGINT", reactor.sigInt)
    reactor.sigTerm = wrap("SIGTERM", reactor.sigTerm)


ROUTER_CHILD_ENV = "LLAMATWIST_ROUTER_CHILD"  # set by the router for its model servers


def stop_with_parent(reactor: Any) -> None:
    """A router's model server stops when the router is gone (killed too, even with SIGKILL), as on SIGTERM,
    rather than live on orphaned: once a second, is its parent still the process that started it?"""
    from twisted.internet.task import LoopingCall

    parent = os.getppid()

    def check() -> None:
        if os.getppid() != parent and reactor.running:
            log.warning("the router that started this server (pid %d) is gone: stopping", parent)
            watch.stop()
            reactor.stop()

    watch = LoopingCall(check)
    watch.clock = reactor
    watch.start(1.0, now=False)


def run_service(service: MultiService) -> int:
    """Run `service` under the global reactor until SIGINT/SIGTERM or stop.

    Returns the service's `exit_code` (set when it failed after startup,
    e.g. the model did not load), 0 when it has none.
    """
    from twisted.internet import reactor as global_reactor

    from llamatwist import logs

    reactor: Any = global_reactor  # Twisted's interface typing is too loose here
    # Started before reactor.run() so that a port already in use fails here,
    # synchronously, rather than as a logged error in a running reactor.
    service.startService()  # type: ignore[no-untyped-call]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    if hasattr(signal, "SIGHUP"):  # logrotate's postrotate (the unit's ExecReload): reopen --log-file
        signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(logs.reopen_files))
    stop_once_on_signals(reactor)
    if os.environ.get(ROUTER_CHILD_ENV) == "1":
        stop_with_parent(reactor)
    reactor.run()  # installs SIGINT/SIGTERM handlers that stop the reactor
    return int(getattr(service, "exit_code", 0) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `llamatwist` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        service = build_service(configure(args, os.environ))
    except StartupFailed as failed:
        return failed.exit_code
    try:
        return run_service(service)
    except fatal_errors() as err:  # e.g. the port is taken
        print(f"error: {err}", file=sys.stderr)
        return 1
