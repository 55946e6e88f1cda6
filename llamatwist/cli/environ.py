# -*- test-case-name: tests.test_cli -*-
"""LLAMA_ARG_* environment variables, read as llama.cpp reads them.

A flag on the command line beats its variable; an on/off flag is also
switched off by the mere presence of LLAMA_ARG_NO_<name>; a switch acts only
on a truthy value. The variable of an unimplemented flag is refused as the
flag itself would be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from llamatwist.cli.convert import TRUTHY, Converter, bool_word
from llamatwist.cli.errors import ConfigError
from llamatwist.cli.flag import Flag
from llamatwist.cli.unimplemented import BOOL, SWITCH, UNIMPLEMENTED

__all__ = ["canonical", "from_env", "not_implemented", "refused_env", "unknown_env"]

# Variables that are not llama-server's alone: other tools read them too, so
# a set one must not stop the server (llamatwist never downloads with it).
_SHARED_ENV: Final = frozenset({"HF_TOKEN"})


# llama.cpp variables of its other tools' flags (llama-cli, llama-fit-params...): known, not typos
_OTHER_TOOLS_ENV: Final = frozenset({
    "LLAMA_ARG_FIT_ESTIMATE", "LLAMA_ARG_GRP_ATTN_N", "LLAMA_ARG_GRP_ATTN_W", "LLAMA_ARG_SHOW_TIMINGS",
})


def _no(env: str) -> str:
    return env.replace("LLAMA_ARG_", "LLAMA_ARG_NO_", 1)


def unknown_env(environ: Mapping[str, str], flags: Sequence[Flag]) -> list[str]:
    """The LLAMA_ARG_* variables in `environ` that name no flag (typos in a compose file), sorted."""
    known = set(_OTHER_TOOLS_ENV)
    for flag in flags:
        for env in flag.envs:
            known.add(env)
            if flag.neg:
                known.add(_no(env))
    for unimplemented in UNIMPLEMENTED:
        if unimplemented.env:
            known.add(unimplemented.env)
            if unimplemented.kind == BOOL:
                known.add(_no(unimplemented.env))
    return sorted(name for name in environ if name.startswith("LLAMA_ARG_") and name not in known)


def canonical(names: Sequence[str]) -> str:
    """The name to quote in messages: the first long spelling."""
    return next((n for n in names if n.startswith("--")), names[0])


def not_implemented(flag: str, env: str | None = None) -> ConfigError:
    reason = next((u.reason for u in UNIMPLEMENTED if flag in u.names.split()), None)
    message = f"flag {flag} is not supported: {reason}" if reason else f"flag {flag} is not implemented yet in llamatwist"
    if env:
        message += f" (set by environment variable {env})"
    return ConfigError(message, 1)


def _env_bool(text: str) -> bool:
    """llama.cpp's parse_bool_value for LLAMA_ARG_* values of on/off flags."""
    value = bool_word(text)
    if value is None:
        raise ValueError(f"invalid boolean value {text!r}")
    return value


def from_env(flag: Flag, environ: Mapping[str, str]) -> tuple[bool, Any]:
    """(found, value) for `flag` from its LLAMA_ARG_* variable (or its older name), as llama.cpp."""
    if flag.env_alias is not None and flag.env_alias in environ and (flag.env or "") not in environ:
        flag = flag._replace(env=flag.env_alias)
    if flag.env is None:
        return False, None
    if flag.neg:
        if flag.env.replace("LLAMA_ARG_", "LLAMA_ARG_NO_", 1) in environ:
            return True, False  # its mere presence switches the flag off
        convert: Converter = _env_bool
    elif flag.convert is None:
        # A switch acts only on a truthy value; any other value is ignored.
        return (environ.get(flag.env) in TRUTHY), True
    else:
        convert = flag.convert
    if flag.env not in environ:
        return False, None
    try:
        return True, convert(environ[flag.env])
    except ValueError as err:
        raise ConfigError(
            f"invalid value for environment variable {flag.env}: {err}"
        ) from None


def refused_env(environ: Mapping[str, str]) -> ConfigError | None:
    """The error for the first unimplemented flag that `environ` sets, if any."""
    for unimplemented in UNIMPLEMENTED:
        env = unimplemented.env
        if env is None or env in _SHARED_ENV:
            continue
        names = unimplemented.names.split()
        if unimplemented.kind == BOOL:
            negative = env.replace("LLAMA_ARG_", "LLAMA_ARG_NO_", 1)
            if negative in environ:
                off = [n for n in names if n.startswith("--no-")]
                return not_implemented(canonical(off or names), negative)
        if env not in environ:
            continue
        if unimplemented.kind == SWITCH and environ[env] not in TRUTHY:
            continue  # llama-server ignores it too
        return not_implemented(canonical(names), env)
    return None


def vertex_from_env(environ: Mapping[str, str]) -> tuple[tuple[str, str], int] | None:
    """Google Cloud Vertex AI (``AIP_MODE=PREDICTION``, as llama-server): ((health route, predict route), port)
    from AIP_HEALTH_ROUTE ("" = /health only), AIP_PREDICT_ROUTE (/predict) and AIP_HTTP_PORT (8080)."""
    if environ.get("AIP_MODE") != "PREDICTION":
        return None

    def route(name: str, default: str) -> str:
        value = environ.get(name) or default
        return value if not value or value.startswith("/") else "/" + value

    try:
        port = int(environ.get("AIP_HTTP_PORT") or "8080")
    except ValueError:
        port = 8080
    return (route("AIP_HEALTH_ROUTE", ""), route("AIP_PREDICT_ROUTE", "/predict")), port
