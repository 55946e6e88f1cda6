# -*- test-case-name: tests.test_cli -*-
"""The command line parser: argparse over the flag tables, then ServerConfig.

`parse_config` reads the command line, refuses unimplemented flags (given or
set by their LLAMA_ARG_* variable), falls back on each flag's variable, and
settles what llama-server settles after parsing (-np auto, --rerank,
--api-key-file, the repeatable sampling flags).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

from llamatwist.cli.common_flags import COMMON
from llamatwist.cli.completion import completion_script
from llamatwist.cli.convert import Converter, read_api_key_file
from llamatwist.cli.environ import canonical, from_env, not_implemented, refused_env
from llamatwist.cli.errors import PROG, ConfigError
from llamatwist.cli.flag import SECTIONS, Flag
from llamatwist.cli.presets import MODEL_PRESETS
from llamatwist.cli.sampling_flags import SAMPLING
from llamatwist.cli.server_flags import PRESETS, SERVER
from llamatwist.cli.speculative_flags import SPECULATIVE
from llamatwist.cli.unimplemented import UNIMPLEMENTED, VALUE
from llamatwist.cli.version import version_text
from llamatwist.config import ServerConfig
from llamatwist.sampling_defaults import DRAFT_ARCH_TYPES, SamplingDefaults, SpecParams, parse_spec_types

__all__ = ["FLAGS", "build_parser", "parse_config", "show_default", "with_draft"]

#: every implemented flag, in llama-server's -h group order (common, sampling, server);
#: -h shows them by section (flag.SECTIONS), in this order within each section
FLAGS: Final[tuple[Flag, ...]] = (*COMMON, *SAMPLING, *SERVER, *SPECULATIVE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Raise instead of exiting so parse_config stays testable and the
        # twistd plugin can report errors the same way.
        raise ConfigError(message, 2)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps like argparse but never splits a flag name at one of its dashes."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )


class _OnOff(argparse.Action):
    """One action for a flag and its negations: -cb on, -nocb off."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any):
        self.negative = frozenset(kwargs.pop("negative", ()))
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, option_string not in self.negative)


_REFUSED: Final = "refused_flags"
_MODEL_PRESETS: Final = "model_presets"
_LEGACY_LOAD: Final = {
    "--mlock": "older llama-server spelling: -lm mmap+mlock (-lm mlock with --no-mmap)",
    "--no-mmap": "older llama-server spelling: -lm none (-lm mlock with --mlock)",
    "--mmap": "older llama-server spelling: -lm mmap",
}


class _Refuse(argparse.Action):
    """Records an unimplemented flag; parse_config refuses it afterwards."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        refused = getattr(namespace, _REFUSED, [])
        refused.append(option_string)
        setattr(namespace, _REFUSED, refused)


class _Completion(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        names = ["-h", "--help", "--usage", "--version", "--completion-bash", "--list-devices", "-cl", "--cache-list"]
        for flag in FLAGS:
            names += [*flag.names, *flag.neg]
        sys.stdout.write(completion_script([*names, *PRESETS, *MODEL_PRESETS]))
        sys.stdout.flush()
        raise SystemExit(0)


class _ListDevices(argparse.Action):
    """--list-devices: llama-server's list (the GPU and accelerator devices), then exit."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        from llamatwist.engine.model import devices

        mib = 1024 * 1024
        found = [d for d in devices() if d.kind != "cpu"]
        lines = ["Available devices:"]
        lines += [f"  {d.name}: {d.description} ({d.total // mib} MiB, {d.free // mib} MiB free)" for d in found]
        sys.stdout.write("\n".join(lines if found else [*lines, "  (none)"]) + "\n")
        sys.stdout.flush()
        raise SystemExit(0)


class _CacheList(argparse.Action):
    """-cl/--cache-list: llama-server's list of the models in the cache, then exit."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        from llamatwist.cli.hf import cached_models
        from llamatwist.models import cache_dir

        models = cached_models(cache_dir() / "models")
        lines = [f"number of models in cache: {len(models)}"]
        lines += [f"{i:4d}. {m}" for i, m in enumerate(models, 1)]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        raise SystemExit(0)


class _LegacyLoad(argparse.Action):
    """--mlock, --no-mmap, --mmap: older llama-server spellings of -lm, combined as they combined there."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, "load_mode", "auto")
        locked = current in ("mlock", "mmap+mlock") or option_string == "--mlock"
        mapped = current not in ("none", "mlock") if option_string == "--mlock" else option_string == "--mmap"
        namespace.load_mode = ("mmap+mlock" if mapped else "mlock") if locked else "mmap" if mapped else "none"


class _Version(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        sys.stdout.write(version_text())
        sys.stdout.flush()
        raise SystemExit(0)


def _config_default(path: str) -> Any:
    obj: Any = ServerConfig()
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def show_default(flag: Flag) -> str:
    """The default that -h shows for `flag`."""
    if flag.default is not None:
        return flag.default
    value = _config_default(flag.field)
    if isinstance(value, bool):
        return "enabled" if value else "disabled"
    if isinstance(value, float):
        return f"{value:.2f}"
    return "unset" if value is None else str(value)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argparse parser for llama-server's command line.

    Parsed values are left out of the namespace unless given (so parse_config
    can tell a flag from its environment variable); unimplemented flags are
    collected in the ``refused_flags`` attribute rather than failing at once.
    """
    parser = _Parser(
        prog=prog,
        usage="%(prog)s [options]",
        description="llama-server compatible LLM inference server. Flags and "
        "LLAMA_ARG_* environment variables mean what they mean to llama-server; "
        "a flag on the command line beats its environment variable.",
        epilog="Recognized llama-server flags that are not implemented yet, "
        "refused with exit status 1 (as are their environment variables): "
        + ", ".join(canonical(u.names.split()) for u in UNIMPLEMENTED),
        formatter_class=_HelpFormatter,
        add_help=False,
        allow_abbrev=False,  # llama-server wants exact names
        argument_default=argparse.SUPPRESS,
    )
    general = parser.add_argument_group("general")
    general.add_argument(
        "-h", "--help", "--usage", action="help", help="print usage and exit"
    )
    general.add_argument(
        "--version", action=_Version, nargs=0, help="show version and build info"
    )
    general.add_argument(
        "--list-devices", action=_ListDevices, nargs=0, help="print list of available devices and exit",
    )
    general.add_argument(
        "-cl", "--cache-list", action=_CacheList, nargs=0, help="show list of models in cache",
    )
    general.add_argument(
        "--completion-bash", action=_Completion, nargs=0,
        help="print source-able bash completion script for llamatwist",
    )
    groups = {section: parser.add_argument_group(section) for section in SECTIONS}
    for flag in FLAGS:
        group = groups[flag.section]
        text = f"{flag.help} (default: {show_default(flag)})"
        if flag.env:
            text += f" (env: {flag.env})"
        if flag.env_alias:
            text += f" (or {flag.env_alias})"
        text = text.replace("%", "%%")  # argparse %-formats help strings
        if flag.convert is not None and flag.const is not None:
            group.add_argument(
                *flag.names,
                dest=flag.field,
                type=_for_argparse(flag.convert),
                metavar=flag.metavar,
                nargs="?",
                const=flag.convert(flag.const),
                help=text,
            )
        elif flag.convert is not None:
            group.add_argument(
                *flag.names,
                dest=flag.field,
                type=_for_argparse(flag.convert),
                metavar=flag.metavar if flag.nargs is None else tuple(flag.metavar.split()),
                nargs=flag.nargs,
                help=text,
                action="append" if flag.append else "store",
            )
        else:
            group.add_argument(
                *flag.names,
                *flag.neg,
                dest=flag.field,
                action=_OnOff,
                negative=flag.neg,
                help=text,
            )
        if flag.field == "model":
            for name, text in PRESETS.items():
                group.add_argument(
                    name, dest="model", action="store_const", const=None, help=text
                )
            for name, text in _LEGACY_LOAD.items():
                group.add_argument(name, dest="load_mode", action=_LegacyLoad, nargs=0, help=text)
            for name, (text, _) in MODEL_PRESETS.items():
                group.add_argument(name, dest=_MODEL_PRESETS, action="append_const", const=name, help=text)
    for unimplemented in UNIMPLEMENTED:
        parser.add_argument(
            *unimplemented.names.split(),
            dest=_REFUSED,
            action=_Refuse,
            # A value is swallowed so that it is not reported as a stray
            # argument; the flag itself is refused anyway.
            nargs="?" if unimplemented.kind == VALUE else 0,
            help=argparse.SUPPRESS,
        )
    return parser


def _for_argparse(convert: Converter) -> Converter:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _normalize(argv: Sequence[str], known: set[str]) -> list[str]:
    """llama-server reads --ctx_size as --ctx-size: do the same."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        dashed = name.replace("_", "-")
        if name.startswith("--") and dashed in known:
            out.append(dashed + eq + value)
        else:
            out.append(arg)
    return out


def _known_names() -> set[str]:
    names = {"-h", "--help", "--usage", "--version", "--completion-bash", "--list-devices", *PRESETS,
             *MODEL_PRESETS, *_LEGACY_LOAD}
    for flag in FLAGS:
        names.update(flag.names + flag.neg)
    for unimplemented in UNIMPLEMENTED:
        names.update(unimplemented.names.split())
    return names


def _agent_tools(values: dict[str, Any]) -> None:
    """--agent is all the tools and the MCP proxy (what --tools and --ui-mcp-proxy say still wins). Tools or MCP
    servers limit CORS to localhost origins unless --cors-origins is given, as llama-server does."""
    agent = values.pop("agent", None)
    if agent is not None:
        values.setdefault("server_tools", ("all",) if agent else ())
        values.setdefault("ui_mcp_proxy", agent)
    tools = values.get("server_tools") or values.get("mcp_servers_config") or values.get("mcp_servers_json")
    if tools and "cors_origins" not in values:
        print("warning: server tools or MCP servers are enabled, using localhost as default CORS origin "
              "(change via --cors-origins)", file=sys.stderr)
        values["cors_origins"] = "localhost"


def parse_config(argv: Sequence[str], environ: Mapping[str, str], config_args: Sequence[str] = ()) -> ServerConfig:
    """Turn llama-server style arguments and environment into a ServerConfig; ``config_args``: the config
    files' options as arguments (cli/ini.py), which the environment and ``argv`` override.

    Raises ConfigError for anything refused; ``-h`` and ``--version`` print
    to stdout and raise SystemExit(0), as argparse does.
    """
    given, presets = _given(argv)
    try:
        configured, config_presets = _given(config_args, " in the config files") if config_args else ({}, [])
    except ConfigError as exc:
        raise ConfigError(f"config files: {exc}", exc.exit_code) from None
    presets += config_presets
    env_error = refused_env(environ)
    if env_error is not None:
        raise env_error

    values: dict[str, Any] = {}
    for flag in FLAGS:
        if flag.field in given:
            values[flag.field] = given[flag.field]
        else:
            found, value = from_env(flag, environ)
            if found:
                values[flag.field] = value
            elif flag.field in configured:
                values[flag.field] = configured[flag.field]
    if "model" in given:  # a preset (None) or -m given on the command line
        values["model"] = given["model"]
    # An explicit -c 0 asks for the model's whole context: --fit may not shrink it, and --kv-unified-per-slot
    # does not size the pool (llama-server: -c 0 sets fit_params_min_ctx to UINT32_MAX).
    if values.get("n_ctx") == 0 and "fit_ctx" not in values:
        values["fit_ctx"] = -1
    for preset in presets:  # llama-server's model presets: what the flags and variables leave unset
        for key, value in MODEL_PRESETS[preset][1].items():
            values.setdefault(key, value)

    # --api-key and --api-key-file add up; the file is read now, as llama-server
    # does while parsing, so an unreadable one stops the start-up (exit 1).
    key_file = values.pop("api_key_file", None)
    if key_file is not None:
        values["api_keys"] = (*values.get("api_keys", ()), *read_api_key_file(key_file))
    _agent_tools(values)
    # --rerank is llama-server's --embeddings plus --pooling rank.
    if values.get("reranking"):
        values["embeddings"] = True
        values.setdefault("pooling", "rank")

    # llama-server's -np default is auto (-1): 4 slots, unified KV cache forced
    # on. With an explicit count, the KV cache is unified only if asked for.
    n_parallel = values.pop("n_parallel", -1)
    kv_unified = values.pop("kv_unified", False)
    if n_parallel < 0:
        n_parallel, kv_unified = 4, True

    _sampling_lists(values)
    for field in ("cpu_mask", "cpu_mask_batch", "cpu_mask_draft", "cpu_mask_batch_draft"):  # -C and -Cr add up
        if field in values:
            values[field] = tuple(sorted({cpu for use in values[field] for cpu in use}))
    if "override_kv" in values:  # one tuple per use, each a comma-separated list
        values["override_kv"] = tuple(kv for use in values["override_kv"] for kv in use)
    _adapter_lists(values)
    sampling = {
        key.removeprefix("sampling."): value
        for key, value in values.items()
        if key.startswith("sampling.")
    }
    sampling["speculative"] = _speculative(values)
    top = {k: v for k, v in values.items() if not k.startswith("sampling.")}
    return ServerConfig(
        **top,
        argv=tuple(argv),
        n_parallel=n_parallel,
        kv_unified=kv_unified,
        sampling=SamplingDefaults(**sampling),
    )




def _given(argv: Sequence[str], where: str = "") -> tuple[dict[str, Any], list[str]]:
    """The fields ``argv`` sets, and the model presets it names (ConfigError for what is refused)."""
    namespace, extras = build_parser().parse_known_args(_normalize(argv, _known_names()))
    if extras:
        # Typos are reported before unimplemented flags: they are more
        # likely the user's real mistake.
        raise ConfigError(f"unrecognized arguments{where}: {' '.join(extras)}")
    given: dict[str, Any] = vars(namespace)
    presets: list[str] = given.pop(_MODEL_PRESETS, [])
    refused = given.pop(_REFUSED, None)
    if refused:
        raise not_implemented(refused[0])
    return given, presets


def _draft_type(path: str | None) -> str:
    """The type a draft model alone means: what its GGUF is made for (llama-server's
    common_speculative_types_from_gguf: a DFlash draft, a DSpark one, an MTP assistant; llamatwist also knows an
    EAGLE-3 draft and a Gemma 4 assistant, which llama-server leaves unused), else draft-simple. ``path`` None:
    not a local file yet (-hfd)."""
    try:
        import gguf

        reader = gguf.GGUFReader(path) if path else None
    except Exception:  # noqa: BLE001  # missing or not GGUF: the load says so
        reader = None
    if reader is None:
        return "draft-simple"
    field = reader.fields.get("general.architecture")
    arch = str(field.contents()) if field is not None else ""
    tensors = {t.name for t in reader.tensors}
    if arch == "dflash" and "markov_w1.weight" in tensors:
        return "draft-dspark"
    if arch in DRAFT_ARCH_TYPES:  # llama-server needs --spec-type for EAGLE-3 drafts and Gemma 4 assistants
        return DRAFT_ARCH_TYPES[arch]
    count = reader.fields.get(f"{arch}.block_count")
    if count is not None and f"blk.{int(count.contents()) - 1}.nextn.eh_proj.weight" in tensors:
        return "draft-mtp"
    return "draft-simple"


def _speculative(values: dict[str, Any]) -> SpecParams:
    """The requests' default speculation; a draft model alone means draft-simple (llama-server)."""
    base = ServerConfig()
    uses = values.get("spec_type", base.spec_type)  # --spec-type adds up; its variable is one list
    names = [t for use in ([uses] if isinstance(uses, str) else uses) for t in use.split(",")]
    if values.get("spec_default"):
        names.append("ngram-mod")  # its parameters' defaults are --spec-default's (24, 48, 64)
    spec_type = parse_spec_types(",".join(n for n in names if n != "none") or "none")
    draft = values.get("model_draft") or values.get("hf_repo_draft")  # -hfd resolves to a path at start-up
    values["spec_type_default"] = spec_type == "none"
    if spec_type == "none" and draft:
        spec_type = _draft_type(values.get("model_draft"))
    # -hf's repository may ship a draft head for the type (dflash-*.gguf...), fetched at start-up
    hub_head = bool(values.get("hf_repo")) and any(t in HUB_HEAD_TYPES for t in spec_type.split(","))
    _check_draft_types(spec_type, bool(draft) or hub_head)
    values["spec_type"] = spec_type

    def get(name: str) -> Any:
        return values.get(name, getattr(base, name))

    mod_n_min, mod_n_max = get("spec_ngram_mod_n_min"), get("spec_ngram_mod_n_max")
    if "ngram-mod" in spec_type.split(",") and mod_n_min > mod_n_max:
        raise ConfigError(f"--spec-ngram-mod-n-min ({mod_n_min}) must not exceed --spec-ngram-mod-n-max "
                          f"({mod_n_max})", 2)
    return SpecParams(
        type=spec_type,
        n_max=get("draft_max"),
        n_min=get("draft_min"),
        p_min=get("draft_p_min"),
        ngram_size_n=get("spec_ngram_size_n"),
        ngram_size_m=get("spec_ngram_size_m"),
        ngram_min_hits=get("spec_ngram_min_hits"),
        mod_n_match=get("spec_ngram_mod_n_match"),
        mod_n_min=mod_n_min,
        mod_n_max=mod_n_max,
        map_k_size_n=get("spec_ngram_map_k_size_n"),
        map_k_size_m=get("spec_ngram_map_k_size_m"),
        map_k_min_hits=get("spec_ngram_map_k_min_hits"),
        map_k4v_size_n=get("spec_ngram_map_k4v_size_n"),
        map_k4v_size_m=get("spec_ngram_map_k4v_size_m"),
        map_k4v_min_hits=get("spec_ngram_map_k4v_min_hits"),
        **_type_flags(spec_type, bool(draft) or hub_head),
    )


HUB_HEAD_TYPES = ("draft-dspark", "draft-dflash", "draft-eagle3")  # types whose -md may come from -hf's repository
_MD_TYPES = {"draft-simple": "a draft model", "draft-eagle3": "an EAGLE-3 draft model",
             "draft-dflash": "a DFlash draft model", "draft-dspark": "a DSpark draft model"}


def _check_draft_types(spec_type: str, draft: bool) -> None:
    """The types that draft with -md's model have one, and only one of them asks for it."""
    types = spec_type.split(",")
    for kind, what in _MD_TYPES.items():
        if kind in types and not draft:
            raise ConfigError(f"--spec-type {kind} needs {what} (-md/--model-draft)", 2)
    # with -md, draft-mtp runs -md's model as the MTP head (a Gemma 4 assistant), as llama-server
    if len(uses := [t for t in types if t in _MD_TYPES or (t == "draft-mtp" and draft)]) > 1:
        raise ConfigError(f"--spec-type {' and '.join(uses)} all draft with -md's model, each as a model of its own "
                          "kind: choose one", 2)


def _type_flags(spec_type: str, draft: bool) -> dict[str, Any]:
    """SpecParams' has_* fields: which kinds of draft the server has."""
    types = spec_type.split(",")
    heads = ("draft-eagle3", "draft-dflash", "draft-dspark", "draft-mtp")  # -md is one of these, not a draft-simple
    return {"has_draft_model": draft and not any(t in types for t in heads),
            "has_mtp": "draft-mtp" in types, "has_eagle3": "draft-eagle3" in types,
            "has_dflash": "draft-dflash" in types, "has_dspark": "draft-dspark" in types}


def with_draft(config: ServerConfig, path: str) -> ServerConfig:
    """``config`` with -hfd's draft, fetched at start-up: the draft model, and, when no --spec-type was given,
    the type its GGUF is made for, as -md's (a ConfigError when that type cannot run)."""
    spec = config.sampling.speculative
    spec_type = _draft_type(path) if config.spec_type_default else config.spec_type
    _check_draft_types(spec_type, True)
    spec = dataclasses.replace(spec, type=spec_type, **_type_flags(spec_type, True))
    return dataclasses.replace(config, model_draft=path, spec_type=spec_type,
                               sampling=dataclasses.replace(config.sampling, speculative=spec))


def _adapter_lists(values: dict[str, Any]) -> None:
    """--lora/--lora-scaled and --control-vector(-scaled) as (path, scale) in command-line order."""
    for field in ("loras", "control_vectors"):
        if field in values:
            values[field] = tuple((v[0], _scale(v[1]) if len(v) > 1 else 1.0) for v in values[field])
    if "control_vector_layer_range" in values:
        start, end = values["control_vector_layer_range"]
        try:
            values["control_vector_layer_range"] = (int(start), int(end))
        except ValueError:
            raise ConfigError(f"--control-vector-layer-range: expected two integers, got {start} {end}") from None


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"invalid adapter scale: {text}")
    return value


def _sampling_lists(values: dict[str, Any]) -> None:
    """The repeatable sampling flags, collected by argparse as lists."""
    if "sampling.logit_bias" in values:
        values["sampling.logit_bias"] = tuple(values["sampling.logit_bias"])
    if "sampling.stop" in values:
        values["sampling.stop"] = tuple(s for s in values["sampling.stop"] if s)
    if "sampling.dry_sequence_breakers" in values:
        # the first one replaces the defaults; "none" clears the list so far
        breakers: list[str] = []
        for b in values["sampling.dry_sequence_breakers"]:
            breakers = [] if b == "none" else [*breakers, b]
        values["sampling.dry_sequence_breakers"] = tuple(breakers)

