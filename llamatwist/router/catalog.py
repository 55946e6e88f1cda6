# -*- test-case-name: tests.test_router_catalog -*-
"""Which models a router serves, and the command line each one's server starts with.

Pure functions over the file system and the flag tables, as llama-server's presets (common/preset.cpp):

- the Hugging Face hub cache (what -hf downloaded): each repository's models as ``<user>/<model>:<TAG>``
  (source "cache"), served with ``-hf`` and removable with ``DELETE /models``.
- ``--models-dir``: each ``NAME.gguf`` is model NAME; each sub-directory NAME holding a GGUF is model NAME,
  with a file whose name has ``mmproj`` in it as its projector and the first shard (``-00001-of-``) of a
  split model as the model.
- ``--models-preset``: an INI file. ``[*]`` holds options for every model, each other section one model's
  (a section named after a ``--models-dir`` model adds to it; any other must say ``model`` or ``hf-repo``).
  Keys are flag names without dashes (``c``, ``ctx-size``) or their ``LLAMA_ARG_*`` variables; three keys
  belong to presets alone: ``load-on-startup``, ``stop-timeout`` and ``dedup-cache-models``.

A child's arguments are the ``[*]`` options, then the model's, then the router's own command line without
the flags the router keeps for itself (address, keys, TLS, router flags): later ones win, so the command
line beats the model's section, which beats ``[*]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from llamatwist.cli.download import DownloadError
from llamatwist.cli.hf import cached_repo_models, remove_cached, resolve_hf
from llamatwist.cli.ini import IniError, flag_actions, ini_keys, read_ini, render_option, truthy
from llamatwist.cli.parser import FLAGS

__all__ = [
    "CHILD_HOST",
    "DEFAULT_STOP_TIMEOUT",
    "CatalogError",
    "ModelEntry",
    "child_args",
    "child_env",
    "load_catalog",
    "projector_inputs",
    "router_args",
    "scan_models_dir",
]

CHILD_HOST: Final = "127.0.0.1"  # the children listen here whatever --host the router has
DEFAULT_STOP_TIMEOUT: Final = 10  # seconds from an unload's SIGTERM to SIGKILL

# ServerConfig fields the router keeps: its own address, keys and TLS, the router flags, the names
_ROUTER_ONLY: Final = frozenset({
    "host", "port", "api_keys", "api_key_file", "ssl_key_file", "ssl_cert_file", "api_prefix",
    "models_dir", "models_preset", "models_max", "models_autoload", "alias", "tags",
    # /tools and /cors-proxy are the router's own: a model's server would start the MCP servers again
    "server_tools", "tools_runtime", "mcp_servers_config", "mcp_servers_json", "ui_mcp_proxy", "agent",
})
# ... and on the router's command line, a model source (a model's own comes from its entry)
_RESERVED: Final = _ROUTER_ONLY | {"model", "model_url", "hf_repo", "hf_file", "docker_repo"}
_PRESET_ONLY: Final = frozenset({"load-on-startup", "stop-timeout", "dedup-cache-models"})
_MODEL_KEYS: Final = frozenset({"model", "model_url", "hf_repo", "docker_repo"})


class CatalogError(Exception):
    """The models directory or the preset file cannot be served; the message says why."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str  # "models_dir" or "preset", as llama-server's /models says
    options: tuple[str, ...]  # the model's own arguments ([*] and its section, or -m/--mmproj from the dir)
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    load_on_startup: bool = False
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    mmproj: str | None = None
    inputs: tuple[str, ...] = ("text",)  # /models' input modalities: projector_inputs(mmproj), read once
    preset: dict[str, str] = field(default_factory=dict)  # the section as written, for /models


def projector_inputs(path: str | None) -> tuple[str, ...]:
    """The inputs a model takes: text, and what its projector's encoders read (llama-server asks libmtmd;
    the GGUF keys say the same without loading it). A projector that cannot be read adds nothing."""
    if not path:
        return ("text",)
    try:
        import gguf

        fields = gguf.GGUFReader(path).fields
    except Exception:  # noqa: BLE001  # missing or not GGUF: its server will say so when it loads
        return ("text",)

    def has(key: str) -> bool:
        field = fields.get(key)
        return field is not None and bool(field.contents())

    return ("text", *(["image"] if has("clip.has_vision_encoder") else []),
            *(["audio"] if has("clip.has_audio_encoder") else []))


def _arity(action: argparse.Action) -> int | None:
    """Values a use takes; None for an optional one (``-fa``, whose value may be left out)."""
    if action.nargs is None:
        return 1
    if action.nargs == "?":
        return None
    return int(action.nargs) if isinstance(action.nargs, int) else 1


def router_args(argv: Sequence[str]) -> list[str]:
    """The router's command line without the flags it keeps for itself (`_RESERVED`)."""
    actions = flag_actions()
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, _ = arg.partition("=")
        action = actions.get(name.replace("_", "-") if name.startswith("--") else name)
        if action is None:
            out.append(arg)
            i += 1
            continue
        n = _arity(action)
        if eq:
            n = 0
        elif n is None:
            n = 1 if i + 1 < len(argv) and not argv[i + 1].startswith("-") else 0
        use = list(argv[i:i + 1 + n])
        i += 1 + n
        if action.dest not in _RESERVED:
            out += use
    return out


def _field(spelling: str, actions: dict[str, argparse.Action]) -> str:
    action = actions.get(spelling)
    return action.dest if action is not None else ""


def scan_models_dir(root: str) -> dict[str, ModelEntry]:
    """The models of a --models-dir, by name."""
    if not os.path.isdir(root):
        raise CatalogError(f"'{root}' does not exist or is not a directory")
    out: dict[str, ModelEntry] = {}
    for path in sorted(Path(root).iterdir()):
        if path.is_dir():
            ggufs = sorted(p for p in path.iterdir() if p.suffix == ".gguf" and p.is_file())
            mmproj = next((p for p in ggufs if "mmproj" in p.name), None)
            shards = [p for p in ggufs if "-00001-of-" in p.name and p != mmproj]
            models = [p for p in ggufs if p != mmproj and "-of-" not in p.name]
            model = shards[0] if shards else models[-1] if models else None
            if model is None:
                continue
            options = ["-m", str(model)] + (["--mmproj", str(mmproj)] if mmproj else [])
            out[path.name] = ModelEntry(path.name, "models_dir", tuple(options),
                                        mmproj=str(mmproj) if mmproj else None,
                                        inputs=projector_inputs(str(mmproj) if mmproj else None))
        elif path.suffix == ".gguf" and "mmproj" not in path.name:
            out[path.stem] = ModelEntry(path.stem, "models_dir", ("-m", str(path)))
    return out


def _split(value: str) -> tuple[str, ...]:
    return tuple(sorted({v.strip() for v in value.split(",") if v.strip()}))


def scan_hf_cache() -> dict[str, ModelEntry]:
    """The Hugging Face hub cache's models (``<user>/<model>:<TAG>``, served with -hf), as llama-server's
    router lists what -hf downloaded."""
    out = {}
    for model in cached_repo_models():
        mmproj = str(model.mmproj) if model.mmproj else None
        out[model.name] = ModelEntry(model.name, "cache", ("-hf", model.name), mmproj=mmproj,
                                     inputs=projector_inputs(mmproj))
    return out


def remove_cached_model(name: str) -> list[Path]:
    """Delete the files of the hub cache's model `name` (DELETE /models); what was deleted."""
    found = next((m for m in cached_repo_models() if m.name == name), None)
    return remove_cached(found) if found is not None else []


def load_catalog(models_dir: str | None, models_preset: str | None) -> dict[str, ModelEntry]:
    """Every model the router serves, by name (CatalogError when the sources cannot be served): the hub
    cache's, then --models-dir's (the same name: the directory's), then the presets (merged into an entry of
    the same name)."""
    actions = flag_actions()
    keys = ini_keys(actions)
    entries = {**scan_hf_cache(), **(scan_models_dir(models_dir) if models_dir else {})}
    if not models_preset:
        return entries
    try:
        ini = read_ini(models_preset, "--models-preset")
    except IniError as exc:
        raise CatalogError(str(exc)) from None
    sections = [(name, values) for name, values in ini if name != "*"]
    glob = {k: v for name, values in ini if name == "*" for k, v in values.items()}

    def options(section: str, values: dict[str, str]) -> list[str]:
        out: list[str] = []
        for key, value in values.items():
            if key not in _PRESET_ONLY and _field(keys.get(key, ""), actions) not in _ROUTER_ONLY:
                try:
                    out += render_option(section, key, value, keys, actions)
                except IniError as exc:
                    raise CatalogError(str(exc)) from None
        return out

    def field_of(key: str) -> str:
        return _field(keys.get(key, ""), actions)

    glob_args = options("*", glob)
    merged: dict[str, ModelEntry] = {}
    for name, entry in entries.items():
        merged[name] = _with_preset(entry, glob, glob_args, {}, [], entry.source, field_of)
    for name, values in sections:
        own = options(name, values)
        fields = {field_of(k) for k in values if k not in _PRESET_ONLY}
        base = entries.get(name)
        if base is None and not fields & _MODEL_KEYS:
            raise CatalogError(f"preset '{name}' names no model: give it 'model' (a path) or 'hf-repo'")
        if base is None:
            base = ModelEntry(name, "preset", ())
        merged[name] = _with_preset(base, glob, glob_args, values, own, "preset", field_of)
    for name in _deduplicated(merged, sections, field_of):
        del merged[name]
    _check_names(merged.values())
    return merged


def _deduplicated(merged: dict[str, ModelEntry], sections: list[tuple[str, dict[str, str]]],
                  field_of: Callable[[str], str]) -> set[str]:
    """The cache's entries whose file a preset with ``dedup-cache-models = true`` already serves by -hf."""
    used: set[Path] = set()
    for _, values in sections:
        if truthy(values.get("dedup-cache-models", "false")):
            repo = next((v for k, v in values.items() if field_of(k) == "hf_repo"), None)
            file = next((v for k, v in values.items() if field_of(k) == "hf_file"), None)
            if repo and (path := _cached_path(repo, file)) is not None:
                used.add(path)
    return {name for name, e in merged.items()
            if e.source == "cache" and used and _cached_path(name, None) in used}


def _cached_path(repo: str, file: str | None) -> Path | None:
    try:
        return resolve_hf(repo, file, offline=True).resolve()
    except DownloadError:
        return None


def _with_preset(base: ModelEntry, glob: dict[str, str], glob_args: list[str], values: dict[str, str],
                 own: list[str], source: str, field_of: Callable[[str], str]) -> ModelEntry:
    both = {**glob, **values}

    def pick(section: dict[str, str], name: str, default: str | None) -> str | None:
        """The value of the key (any spelling of the flag, or its variable) that sets ServerConfig.`name`."""
        return next((v for k, v in section.items() if field_of(k) == name), default)

    alias = pick(values, "alias", "") or ""
    tags = pick(values, "tags", "") or ""
    timeout = both.get("stop-timeout")
    try:
        stop_timeout = int(timeout) if timeout is not None else DEFAULT_STOP_TIMEOUT
    except ValueError:
        raise CatalogError(f"stop-timeout of preset '{base.name}' must be a number of seconds, "
                           f"got {timeout!r}") from None
    on_startup = truthy(both.get("load-on-startup", "false"))
    if on_startup is None:
        raise CatalogError(f"load-on-startup of preset '{base.name}' takes true or false")
    mmproj = pick(both, "mmproj", base.mmproj)
    return ModelEntry(
        name=base.name, source=source, options=(*glob_args, *base.options, *own), aliases=_split(alias),
        tags=_split(tags), load_on_startup=on_startup, stop_timeout=max(0, stop_timeout), mmproj=mmproj,
        inputs=base.inputs if mmproj == base.mmproj else projector_inputs(mmproj), preset=dict(both),
    )


def _check_names(entries: Iterable[ModelEntry]) -> None:
    """Names and aliases route requests: each must mean one model."""
    owner: dict[str, str] = {}
    for entry in entries:
        owner[entry.name] = entry.name
    for entry in entries:
        for alias in entry.aliases:
            if alias in owner and owner[alias] != entry.name:
                raise CatalogError(f"alias '{alias}' of model '{entry.name}' is also the name or an alias of "
                                   f"model '{owner[alias]}'")
            owner[alias] = entry.name


def child_args(entry: ModelEntry, argv: Sequence[str], port: int) -> list[str]:
    """The arguments of `entry`'s server (after ``python -m llamatwist``)."""
    return [*entry.options, *router_args(argv), "--host", CHILD_HOST, "--port", str(port), "--alias", entry.name]


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: the router's, without the variables of the flags it keeps (`_RESERVED`)."""
    reserved = {flag.env for flag in FLAGS if flag.env and flag.field in _RESERVED}
    reserved |= {"LLAMA_ARG_API_KEY_FILE"}
    # Vertex AI's AIP_* are the router's (its port and routes): a child taking AIP_HTTP_PORT could not listen
    return {k: v for k, v in environ.items() if k not in reserved and not k.startswith("AIP_")}
