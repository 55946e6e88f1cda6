# -*- test-case-name: tests.test_config_file,tests.test_router_catalog -*-
"""llama.cpp's INI files of options (common/preset.cpp): the router's --models-preset and the config files.

A key is a flag's name without dashes (``c``, ``ctx-size``, ``no-mmap``) or its ``LLAMA_ARG_*`` variable;
a value is the flag's (``true``/``false`` for an on/off flag, a negated name inverting it). Keys before the
first section belong to section ``default``.

The config files, as llama-server's (common_params_apply_system_config): ``/etc/llama.cpp/config.ini``, then
``${XDG_CONFIG_HOME:-~/.config}/llama.cpp/config.ini`` (a later file wins). Their ``[*]`` and ``[default]``
options come before everything else: the environment and the command line win over them. A key no flag
knows is a warning (the same files serve every llama.cpp program); other sections are ignored.
"""

from __future__ import annotations

import argparse
import configparser
from collections.abc import Mapping
from pathlib import Path

from llamatwist.cli.convert import FALSEY, TRUTHY
from llamatwist.cli.parser import FLAGS, build_parser

__all__ = ["IniError", "config_file_args", "config_files", "flag_actions", "ini_keys", "read_ini",
           "render_option", "truthy"]


class IniError(ValueError):
    """An INI file that cannot be read or holds an option that cannot be used; the message says which."""


def flag_actions() -> dict[str, argparse.Action]:
    return dict(build_parser()._option_string_actions)  # argparse keeps no public map


def ini_keys(actions: dict[str, argparse.Action]) -> dict[str, str]:
    """An INI key (a spelling without dashes, or a variable) -> the spelling to pass."""
    keys = {spelling.lstrip("-"): spelling for spelling in actions}
    for flag in FLAGS:
        for env in flag.envs:
            keys[env] = flag.names[0]
    return keys


def truthy(value: str) -> bool | None:
    text = value.strip().lower()
    return True if text in TRUTHY else False if text in FALSEY else None


def read_ini(path: str, what: str) -> list[tuple[str, dict[str, str]]]:
    """The sections of ``path`` in order, each with its options (``what``: the file's flag, for errors); keys
    before the first section make section ``default``, less llama.cpp's reserved ``version``."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=(";", "#"),
                                       inline_comment_prefixes=None, strict=True, default_section="\0")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case (LLAMA_ARG_*)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        # llama-server's INI allows keys before any section (version = 1): give them one
        parser.read_string("[\0top]\n" + text, source=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise IniError(f"cannot read {what} {path}: {exc}") from None
    except configparser.Error as exc:
        raise IniError(f"{what} {path}: {exc}") from None
    out: list[tuple[str, dict[str, str]]] = []
    for name in parser.sections():
        values = {k: v.strip() for k, v in parser.items(name)}
        if name == "\0top":
            values.pop("version", None)
            if not values:
                continue
            name = "default"
        out.append((name, values))
    return out


def render_option(section: str, key: str, value: str, keys: dict[str, str],
                  actions: dict[str, argparse.Action]) -> list[str]:
    """One option as arguments."""
    spelling = keys.get(key)
    if spelling is None:
        raise IniError(f"option '{key}' not recognized in preset '{section}'")
    action = actions[spelling]
    if action.nargs == 0:  # an on/off flag or a switch
        flag = next((f for f in FLAGS if spelling in f.names + f.neg), None)
        on = truthy(value)
        if on is None:
            raise IniError(f"option '{key}' of preset '{section}' takes true or false, got {value!r}")
        if flag is not None and spelling in flag.neg:
            on = not on
        if on:
            return [flag.names[0] if flag is not None else spelling]
        return [flag.neg[0]] if flag is not None and flag.neg else []
    if isinstance(action.nargs, int) and action.nargs > 1:
        return [spelling, *value.split()]
    return [spelling, value]


def config_files(environ: Mapping[str, str]) -> list[Path]:
    """The config files that exist, system-wide first."""
    home = environ.get("XDG_CONFIG_HOME") or (f"{environ['HOME']}/.config" if environ.get("HOME") else "")
    paths = [Path("/etc/llama.cpp/config.ini"), *([Path(home) / "llama.cpp" / "config.ini"] if home else [])]
    return [p for p in paths if p.is_file()]


def config_file_args(paths: list[Path]) -> tuple[list[str], list[str]]:
    """The config files' ``[*]`` and ``[default]`` options as arguments, a later file's after an earlier one's,
    and a warning for each key no flag knows (IniError for a file that cannot be read or a value that cannot
    be used)."""
    args: list[str] = []
    warnings: list[str] = []
    if not paths:  # the usual case: no flag tables built at start-up
        return args, warnings
    actions = flag_actions()
    keys = ini_keys(actions)
    for path in paths:
        sections: dict[str, dict[str, str]] = {}
        for name, values in read_ini(str(path), "config file"):  # keys before any section and [default]: one
            sections.setdefault(name, {}).update(values)
        for name in ("*", "default"):  # llama-server: the global options, then the default preset's
            for key, value in sections.get(name, {}).items():
                if key not in keys:
                    warnings.append(f"ignoring option '{key}' from {path}: not supported by this program")
                    continue
                try:
                    args += render_option(name, key, value, keys, actions)
                except IniError as exc:
                    raise IniError(f"config file {path}: {exc}") from None
    return args, warnings
