# -*- test-case-name: tests.test_cli -*-
"""Command line of llamatwist: llama-server's flags and LLAMA_ARG_* variables.

Every flag llama-server accepts is known here. The implemented ones are
described by the declarative `FLAGS` table, which drives argparse, the
environment lookup and ``-h``; all the others are listed in `UNIMPLEMENTED`
and refused loudly rather than silently ignored, so a command line written
for llama-server either means the same thing here or fails.

Only argparse and the pure config modules are imported at module level: ``-h`` and
``--version`` must work without the native library, Twisted or a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NamedTuple, NoReturn

from llamatwist.cli_pending import BOOL, SWITCH, UNIMPLEMENTED, VALUE
from llamatwist.config import CACHE_TYPE_NAMES, REASONING_FORMATS, ServerConfig
from llamatwist.sampling_defaults import (
    DEFAULT_DRY_SEQUENCE_BREAKERS,
    DEFAULT_SAMPLERS,
    SamplingDefaults,
    samplers_from_chars,
    samplers_from_names,
    samplers_to_chars,
)

if TYPE_CHECKING:
    from twisted.application.service import MultiService

__all__ = [
    "FLAGS",
    "UNIMPLEMENTED",
    "ConfigError",
    "build_parser",
    "fatal_errors",
    "main",
    "parse_api_key_file",
    "parse_config",
    "parse_csv_row",
    "read_api_key_file",
    "report_error",
    "resolve_model",
    "run_service",
    "version_text",
]

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


# --------------------------------------------------------------------------
# Value converters: text -> value, ValueError(message) when invalid. Shared by
# argparse (command line) and the environment lookup.

Converter = Callable[[str], Any]


def _int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def _int_min(low: int) -> Converter:
    def convert(text: str) -> int:
        value = _int(text)
        if value < low:
            raise ValueError(f"must be >= {low}, got {value}")
        return value

    return convert


def _float_range(low: float, high: float) -> Converter:
    def convert(text: str) -> float:
        value = _float(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return convert


def _nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _temperature(text: str) -> float:
    return max(_float(text), 0.0)  # llama-server clamps negatives to greedy


def _repeat_penalty(text: str) -> float:
    value = _float(text)
    if value <= 0.0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _samplers(text: str) -> tuple[str, ...]:
    """--samplers: names separated by ';' (unknown ones dropped, as llama.cpp)."""
    return samplers_from_names(text.split(";"))


def _sampler_seq(text: str) -> tuple[str, ...]:
    """--sampler-seq: one character per sampler (edskypmxt)."""
    return samplers_from_chars(text)


def _dry_base(text: str) -> float:
    value = _float(text)
    return value if value >= 1.0 else SamplingDefaults().dry_base  # llama-server ignores < 1


def _mirostat(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 2:  # llama-server would abort on its first request
        raise ValueError(f"must be 0 (disabled), 1 or 2, got {value}")
    return value


def _logit_bias(text: str) -> tuple[int, float]:
    """-l TOKEN_ID(+/-)BIAS, e.g. 15043+1 or 15043-inf."""
    head = text.strip()
    for i in range(1, len(head)):
        if head[i] in "+-" and head[:i].strip().lstrip("+-").isdigit():
            try:
                bias = float(head[i + 1:])
            except ValueError:
                break
            if math.isnan(bias):
                break
            return int(head[:i]), -bias if head[i] == "-" else bias
    raise ValueError(f"invalid input format {text!r}: expected TOKEN_ID(+/-)BIAS")


def _sampling_lists(values: dict[str, Any]) -> None:
    """The repeatable sampling flags, collected by argparse as lists."""
    if "sampling.logit_bias" in values:
        values["sampling.logit_bias"] = tuple(values["sampling.logit_bias"])
    if "sampling.dry_sequence_breakers" in values:
        # the first one replaces the defaults; "none" clears the list so far
        breakers: list[str] = []
        for b in values["sampling.dry_sequence_breakers"]:
            breakers = [] if b == "none" else [*breakers, b]
        values["sampling.dry_sequence_breakers"] = tuple(breakers)


def _n_parallel(text: str) -> int:
    value = _int(text)
    if value == 0:
        raise ValueError("must be a positive number of slots, or -1 for auto")
    return max(value, -1)  # any negative means auto, as in llama-server


def _threads(text: str) -> int:
    value = _int(text)
    return value if value > 0 else -1  # <= 0: pick from the CPU count


def _gpu_layers(text: str) -> int:
    word = text.strip().lower()
    if word == "auto":
        return -1
    if word == "all":
        return -2
    try:
        value = _int(text)
    except ValueError:
        raise ValueError(f"expected a number, 'auto' or 'all', got {text!r}") from None
    return max(value, -2)  # llama.cpp: -1 = auto, <= -2 = all


def _seed(text: str) -> int:
    value = _int(text)
    if value in (-1, 0xFFFFFFFF):  # LLAMA_DEFAULT_SEED: random
        return -1
    if not 0 <= value < 0xFFFFFFFF:
        raise ValueError(f"must be -1 (random) or between 0 and {0xFFFFFFFF - 1}")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be between 0 and 65535, got {value}")
    return value


def _host(text: str) -> str:
    host = text.strip()
    if not host:
        raise ValueError("must not be empty")
    # llama-server also takes comma-separated lists and UNIX socket paths.
    if "," in host:
        raise ConfigError(
            "several --host addresses are not implemented yet in llamatwist", 1
        )
    if host.endswith(".sock"):
        raise ConfigError(
            "UNIX socket --host paths are not implemented yet in llamatwist", 1
        )
    return host


def _alias(text: str) -> str:
    aliases = [a.strip() for a in text.split(",") if a.strip()]
    if not aliases:
        raise ValueError("must name at least one alias")
    return ",".join(aliases)


def parse_csv_row(text: str) -> list[str]:
    """llama.cpp's parse_csv_row: split on commas outside double quotes.

    A field that starts with a quote runs to the closing quote (``""`` is a
    literal quote inside it); nothing is trimmed, empty fields are kept.
    """
    fields: list[str] = []
    current: list[str] = []
    in_quotes = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if not in_quotes:
                if current:
                    current.append('"')  # a quote inside an unquoted field is literal
                else:
                    in_quotes = True
            elif text[i + 1 : i + 2] == '"':
                current.append('"')
                i += 1
            else:
                in_quotes = False
        elif ch == "," and not in_quotes:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    fields.append("".join(current))
    return fields


def _api_keys(text: str) -> tuple[str, ...]:
    return tuple(key for key in parse_csv_row(text) if key)  # empty keys are skipped


def parse_api_key_file(text: str) -> tuple[str, ...]:
    """The keys of an --api-key-file: one per line; empty lines and lines
    starting with '#' are skipped, as llama-server does. The only difference:
    a CRLF line ending is not taken as part of the key."""
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    return tuple(line for line in lines if line and not line.startswith("#"))


def read_api_key_file(path: str) -> tuple[str, ...]:
    """The keys in `path`; ConfigError (exit status 1) when it cannot be read
    or holds no key (which would otherwise silently disable authentication)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"failed to open file '{path}': {exc.strerror or exc}", 1) from None
    try:
        keys = parse_api_key_file(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"API key file '{path}' is not valid UTF-8", 1) from None
    if not keys:
        raise ConfigError(f"API key file '{path}' contains no API key", 1)
    return keys


def _api_prefix(text: str) -> str:
    """The path prefix with one leading slash and no trailing one ("" = none)."""
    prefix = text.strip().strip("/")
    if any(c in prefix for c in "?#") or any(c.isspace() for c in prefix):
        raise ValueError(f"must be a URL path, got {text!r}")
    return "/" + prefix if prefix else ""


def _directory(text: str) -> str:
    """--path: llama-server refuses to start when the directory is missing."""
    if not os.path.isdir(text):
        raise ValueError(f"static assets path not found: {text!r}")
    return text


POOLING_TYPES: Final = ("none", "mean", "cls", "last", "rank")


def _pooling(text: str) -> str:
    if text not in POOLING_TYPES:
        raise ValueError(f"must be one of {', '.join(POOLING_TYPES)}, got {text!r}")
    return text


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ValueError(f"must be a valid JSON object string: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}")  # noqa: TRY004  # argparse reports ValueError
    return value


_TRUTHY: Final = frozenset({"on", "enabled", "true", "1"})
_FALSEY: Final = frozenset({"off", "disabled", "false", "0"})


def _reasoning_format(text: str) -> str:
    if text not in REASONING_FORMATS:
        raise ValueError(f"must be one of {', '.join(REASONING_FORMATS)}, got {text!r}")
    return text


def _cache_type(text: str) -> str:
    if text not in CACHE_TYPE_NAMES:
        raise ValueError(f"must be one of {', '.join(CACHE_TYPE_NAMES)}, got {text!r}")
    return text


def _on_off_auto(text: str) -> str:
    """-rea: llama.cpp's is_truthy / is_falsey / is_autoy words."""
    if text in _TRUTHY:
        return "on"
    if text in _FALSEY:
        return "off"
    if text in ("auto", "-1"):
        return "auto"
    raise ValueError(f"unknown value {text!r}: expected on, off or auto")


def _reasoning_effort(text: str) -> str | None:
    return None if text == "default" else _nonempty(text)


def _env_bool(text: str) -> bool:
    """llama.cpp's parse_bool_value for LLAMA_ARG_* values of on/off flags."""
    if text in _TRUTHY:
        return True
    if text in _FALSEY:
        return False
    raise ValueError(f"invalid boolean value {text!r}")


# --------------------------------------------------------------------------
# The implemented flags.


class Flag(NamedTuple):
    """One implemented llama-server flag.

    `convert` None makes it an on/off flag: `neg` names switch it off, and
    with no `neg` it is a switch that can only turn its field on.
    """

    names: tuple[str, ...]
    field: str  # ServerConfig field; "sampling.<name>" for SamplingDefaults
    group: str
    help: str
    env: str | None = None
    convert: Converter | None = None
    neg: tuple[str, ...] = ()
    metavar: str = "N"
    default: str | None = None  # shown by -h instead of the config default
    append: bool = False  # repeatable: the values add up in a list


G_MODEL: Final = "model"
G_SERVER: Final = "server"
G_COMPUTE: Final = "context, batching and compute"
G_HTTP: Final = "HTTP: security, CORS and limits"
G_CHAT: Final = "chat and prompt templates"
G_SAMPLING: Final = "sampling (defaults for each request)"
G_LOG: Final = "logging"

FLAGS: Final[tuple[Flag, ...]] = (
    # model
    Flag(("-m", "--model"), "model", G_MODEL, "model path to load",
         "LLAMA_ARG_MODEL", _nonempty, metavar="FNAME",
         default="the default model, as --smollm2-default"),
    Flag(("-a", "--alias"), "alias", G_MODEL,
         "set model name aliases, comma-separated (to be used by API)",
         "LLAMA_ARG_ALIAS", _alias, metavar="STRING", default="unset"),
    Flag(("-ngl", "--gpu-layers", "--n-gpu-layers"), "n_gpu_layers", G_MODEL,
         "max. number of layers to store in VRAM, either an exact number, "
         "'auto', or 'all'", "LLAMA_ARG_N_GPU_LAYERS", _gpu_layers,
         default="auto"),
    # server
    Flag(("--host",), "host", G_SERVER, "IP address to listen on",
         "LLAMA_ARG_HOST", _host, metavar="HOST"),
    Flag(("--port",), "port", G_SERVER, "port to listen on",
         "LLAMA_ARG_PORT", _port, metavar="PORT"),
    Flag(("--metrics",), "metrics", G_SERVER,
         "enable prometheus compatible metrics endpoint",
         "LLAMA_ARG_ENDPOINT_METRICS"),
    Flag(("--slots",), "slots", G_SERVER, "expose slots monitoring endpoint",
         "LLAMA_ARG_ENDPOINT_SLOTS", neg=("--no-slots",)),
    Flag(("--slot-save-path",), "slot_save_path", G_SERVER,
         "path to save slot kv cache (POST /slots/{id}?action=save|restore|erase)", None, _nonempty,
         metavar="PATH", default="disabled"),
    Flag(("--props",), "endpoint_props", G_SERVER,
         "enable changing global properties via POST /props",
         "LLAMA_ARG_ENDPOINT_PROPS"),
    Flag(("--embedding", "--embeddings"), "embeddings", G_SERVER,
         "restrict to only support embedding use case; use only with dedicated "
         "embedding models", "LLAMA_ARG_EMBEDDINGS"),
    Flag(("--rerank", "--reranking"), "reranking", G_SERVER,
         "enable reranking endpoint on server (implies --embeddings and, unless "
         "--pooling is given, --pooling rank)", "LLAMA_ARG_RERANKING"),
    Flag(("--pooling",), "pooling", G_SERVER,
         "pooling type for embeddings, use model default if unspecified",
         "LLAMA_ARG_POOLING", _pooling, metavar="{none,mean,cls,last,rank}",
         default="model default"),
    Flag(("--ui", "--webui"), "webui", G_SERVER,
         "whether to enable the Web UI (the chat UI at /)", "LLAMA_ARG_UI",
         neg=("--no-ui", "--no-webui")),
    Flag(("--path",), "static_path", G_SERVER,
         "path to serve static files from, instead of the built-in Web UI",
         "LLAMA_ARG_STATIC_PATH", _directory, metavar="PATH", default="none"),
    # HTTP: security, CORS and limits
    Flag(("--api-prefix",), "api_prefix", G_HTTP,
         "prefix path the server serves from, without the trailing slash; "
         "routes without it answer 404", "LLAMA_ARG_API_PREFIX", _api_prefix,
         metavar="PREFIX", default="none"),
    Flag(("--api-key",), "api_keys", G_HTTP,
         "API key to use for authentication, multiple keys can be provided as "
         "a comma-separated list; requests must send 'Authorization: Bearer KEY' "
         "or 'X-Api-Key: KEY' (/health and /v1/health stay open)",
         "LLAMA_API_KEY", _api_keys, metavar="KEY", default="none"),
    Flag(("--api-key-file",), "api_key_file", G_HTTP,
         "path to file containing API keys, one per line; lines starting with "
         "a hash are treated as comments; merged with --api-key",
         "LLAMA_ARG_API_KEY_FILE", _nonempty, metavar="FNAME", default="none"),
    Flag(("--ssl-key-file",), "ssl_key_file", G_HTTP,
         "path to file a PEM-encoded SSL private key (serves HTTPS together "
         "with --ssl-cert-file)", "LLAMA_ARG_SSL_KEY_FILE", _nonempty,
         metavar="FNAME", default="none"),
    Flag(("--ssl-cert-file",), "ssl_cert_file", G_HTTP,
         "path to file a PEM-encoded SSL certificate (and its chain)",
         "LLAMA_ARG_SSL_CERT_FILE", _nonempty, metavar="FNAME", default="none"),
    Flag(("-to", "--timeout"), "timeout", G_HTTP,
         "server read/write timeout in seconds: an idle connection is closed "
         "after it (<= 0 = never)", "LLAMA_ARG_TIMEOUT", _int),
    Flag(("--threads-http",), "n_threads_http", G_HTTP,
         "number of threads used for blocking work of HTTP requests, such as "
         "tokenization (<= 0 = Twisted's default)", "LLAMA_ARG_THREADS_HTTP",
         _threads, default="-1"),
    Flag(("--cors-origins",), "cors_origins", G_HTTP,
         "comma-separated list of allowed origins for CORS; if set to special "
         "value 'localhost', reflect the Origin header only if it is localhost",
         "LLAMA_ARG_CORS_ORIGINS", _nonempty, metavar="ORIGINS"),
    Flag(("--cors-methods",), "cors_methods", G_HTTP,
         "comma-separated list of allowed methods for CORS",
         "LLAMA_ARG_CORS_METHODS", _nonempty, metavar="METHODS"),
    Flag(("--cors-headers",), "cors_headers", G_HTTP,
         "comma-separated list of allowed headers for CORS",
         "LLAMA_ARG_CORS_HEADERS", _nonempty, metavar="HEADERS"),
    Flag(("--cors-credentials",), "cors_credentials", G_HTTP,
         "whether to allow credentials for CORS; if this is enabled and "
         "--cors-origins is * (default), the Origin header is echoed back",
         "LLAMA_ARG_CORS_CREDENTIALS", neg=("--no-cors-credentials",)),
    # chat and prompt templates
    Flag(("--jinja",), "jinja", G_CHAT,
         "whether to use jinja template engine for chat", "LLAMA_ARG_JINJA",
         neg=("--no-jinja",)),
    Flag(("--chat-template",), "chat_template", G_CHAT,
         "set custom jinja chat template, or the name of a built-in one",
         "LLAMA_ARG_CHAT_TEMPLATE", _nonempty, metavar="JINJA_TEMPLATE",
         default="template taken from model's metadata"),
    Flag(("--chat-template-file",), "chat_template_file", G_CHAT,
         "set custom jinja chat template file", "LLAMA_ARG_CHAT_TEMPLATE_FILE",
         _nonempty, metavar="JINJA_TEMPLATE_FILE",
         default="template taken from model's metadata"),
    Flag(("--grammar",), "grammar", G_CHAT,
         "BNF-like grammar to constrain generations (default for every request)", None, _nonempty,
         metavar="GRAMMAR", default="none"),
    Flag(("--grammar-file",), "grammar_file", G_CHAT,
         "file to read the grammar from", None, _nonempty, metavar="FNAME", default="none"),
    Flag(("-j", "--json-schema"), "json_schema", G_CHAT,
         "JSON schema to constrain generations (default for every request)", None, _nonempty,
         metavar="SCHEMA", default="none"),
    Flag(("-jf", "--json-schema-file"), "json_schema_file", G_CHAT,
         "file containing a JSON schema to constrain generations", None, _nonempty,
         metavar="FILE", default="none"),
    Flag(("--chat-template-kwargs",), "chat_template_kwargs", G_CHAT,
         "sets additional params for the json template parser, must be a valid "
         "json object string, e.g. '{\"key1\":\"value1\",\"key2\":\"value2\"}'",
         "LLAMA_ARG_CHAT_TEMPLATE_KWARGS", _json_object, metavar="STRING",
         default="none"),
    Flag(("--reasoning-format",), "reasoning_format", G_CHAT,
         "how thinking is returned: none (left in message.content), deepseek (in "
         "message.reasoning_content), deepseek-legacy (in both), auto (as deepseek)",
         "LLAMA_ARG_THINK", _reasoning_format, metavar="FORMAT"),
    Flag(("-rea", "--reasoning"), "reasoning", G_CHAT,
         "use reasoning/thinking in the chat: on, off or auto (detect from template)",
         "LLAMA_ARG_REASONING", _on_off_auto, metavar="[on|off|auto]"),
    Flag(("--reasoning-effort",), "reasoning_effort", G_CHAT,
         "reasoning effort level given to the chat template: 'default' to keep the "
         "template default, or a level such as 'low', 'medium', 'high'",
         "LLAMA_ARG_REASONING_EFFORT", _reasoning_effort, metavar="LEVEL", default="default"),
    Flag(("--reasoning-budget",), "reasoning_budget", G_CHAT,
         "token budget for thinking: -1 for unrestricted, 0 for immediate end, N>0 for token budget",
         "LLAMA_ARG_THINK_BUDGET", _int_min(-1)),
    Flag(("--reasoning-budget-message",), "reasoning_budget_message", G_CHAT,
         "message injected before the end-of-thinking tag when reasoning budget is exhausted",
         "LLAMA_ARG_THINK_BUDGET_MESSAGE", str, metavar="MESSAGE", default="none"),
    Flag(("--prefill-assistant",), "prefill_assistant", G_CHAT,
         "whether to prefill the assistant's response if the last message is "
         "an assistant message; when off, a trailing assistant message is "
         "treated as a full message and not prefilled",
         "LLAMA_ARG_PREFILL_ASSISTANT", neg=("--no-prefill-assistant",)),
    Flag(("--spm-infill",), "spm_infill", G_CHAT,
         "use Suffix/Prefix/Middle pattern for infill (instead of "
         "Prefix/Suffix/Middle) as some models prefer this"),
    # context, batching and compute
    Flag(("-c", "--ctx-size"), "n_ctx", G_COMPUTE,
         "size of the prompt context (0 = loaded from model)",
         "LLAMA_ARG_CTX_SIZE", _int_min(0)),
    Flag(("-np", "--parallel"), "n_parallel", G_COMPUTE,
         "number of server slots (-1 = auto: 4 slots sharing a unified KV cache)",
         "LLAMA_ARG_N_PARALLEL", _n_parallel, default="-1"),
    Flag(("-kvu", "--kv-unified"), "kv_unified", G_COMPUTE,
         "use single unified KV buffer shared across all sequences",
         "LLAMA_ARG_KV_UNIFIED", neg=("-no-kvu", "--no-kv-unified"),
         default="enabled if the number of slots is auto"),
    Flag(("-cb", "--cont-batching"), "cont_batching", G_COMPUTE,
         "whether to enable continuous batching (a.k.a dynamic batching)",
         "LLAMA_ARG_CONT_BATCHING", neg=("-nocb", "--no-cont-batching")),
    Flag(("-b", "--batch-size"), "n_batch", G_COMPUTE,
         "logical maximum batch size", "LLAMA_ARG_BATCH", _int_min(1)),
    Flag(("-ub", "--ubatch-size"), "n_ubatch", G_COMPUTE,
         "physical maximum batch size", "LLAMA_ARG_UBATCH", _int_min(1)),
    Flag(("-t", "--threads"), "n_threads", G_COMPUTE,
         "number of CPU threads to use during generation (<= 0 = auto)",
         "LLAMA_ARG_THREADS", _threads, default="auto"),
    Flag(("-tb", "--threads-batch"), "n_threads_batch", G_COMPUTE,
         "number of threads to use during batch and prompt processing",
         None, _threads, default="same as --threads"),
    Flag(("--warmup",), "warmup", G_COMPUTE,
         "whether to perform warmup with an empty run", neg=("--no-warmup",)),
    Flag(("-fa", "--flash-attn"), "flash_attn", G_COMPUTE,
         "set Flash Attention use ('on', 'off', or 'auto')", "LLAMA_ARG_FLASH_ATTN", _on_off_auto,
         metavar="[on|off|auto]"),
    Flag(("-ctk", "--cache-type-k"), "cache_type_k", G_COMPUTE,
         f"KV cache data type for K; allowed values: {', '.join(CACHE_TYPE_NAMES)}",
         "LLAMA_ARG_CACHE_TYPE_K", _cache_type, metavar="TYPE"),
    Flag(("-ctv", "--cache-type-v"), "cache_type_v", G_COMPUTE,
         f"KV cache data type for V; allowed values: {', '.join(CACHE_TYPE_NAMES)}",
         "LLAMA_ARG_CACHE_TYPE_V", _cache_type, metavar="TYPE"),
    Flag(("-kvo", "--kv-offload"), "kv_offload", G_COMPUTE,
         "whether to enable KV cache offloading", "LLAMA_ARG_KV_OFFLOAD", neg=("-nkvo", "--no-kv-offload")),
    Flag(("-dt", "--defrag-thold"), "defrag_thold", G_COMPUTE,
         "KV cache defragmentation threshold (DEPRECATED: ignored, as in llama-server)",
         "LLAMA_ARG_DEFRAG_THOLD", _float),
    Flag(("--context-shift",), "ctx_shift", G_COMPUTE,
         "whether to use context shift on infinite text generation", "LLAMA_ARG_CONTEXT_SHIFT",
         neg=("--no-context-shift",)),
    Flag(("-cram", "--cache-ram"), "cache_ram_mib", G_COMPUTE,
         "the most MiB of KV cache that idle cached prompt prefixes may hold (-1 - no limit, "
         "0 - disable the prefix cache shared across slots)", "LLAMA_ARG_CACHE_RAM", _int_min(-1)),
    Flag(("--cache-idle-slots",), "cache_idle_slots", G_COMPUTE,
         "keep an idle slot's prompt in the prefix cache when the slot takes a new task "
         "(requires --cache-ram)", "LLAMA_ARG_CACHE_IDLE_SLOTS", neg=("--no-cache-idle-slots",)),
    Flag(("--cache-reuse",), "sampling.n_cache_reuse", G_COMPUTE,
         "min chunk size to attempt reusing from the cache via KV shifting, requires prompt caching "
         "(0 = disabled)", "LLAMA_ARG_CACHE_REUSE", _int_min(0)),
    Flag(("-sps", "--slot-prompt-similarity"), "slot_prompt_similarity", G_COMPUTE,
         "how much the prompt of a request must match the prompt of a slot in order to use "
         "that slot (0.0 = disabled)", None, _float_range(0.0, 1.0)),
    # sampling
    Flag(("-n", "--predict", "--n-predict"), "sampling.n_predict", G_SAMPLING,
         "number of tokens to predict (-1 = infinity)", "LLAMA_ARG_N_PREDICT",
         _int_min(-1)),
    Flag(("-s", "--seed"), "sampling.seed", G_SAMPLING,
         "RNG seed (-1 = random)", None, _seed, metavar="SEED"),
    Flag(("--temp", "--temperature"), "sampling.temperature", G_SAMPLING,
         "temperature", "LLAMA_ARG_TEMPERATURE", _temperature),
    Flag(("--top-k",), "sampling.top_k", G_SAMPLING,
         "top-k sampling (0 = disabled)", "LLAMA_ARG_TOP_K", _int),
    Flag(("--top-p",), "sampling.top_p", G_SAMPLING,
         "top-p sampling (1.0 = disabled)", "LLAMA_ARG_TOP_P",
         _float_range(0.0, 1.0)),
    Flag(("--min-p",), "sampling.min_p", G_SAMPLING,
         "min-p sampling (0.0 = disabled)", "LLAMA_ARG_MIN_P",
         _float_range(0.0, 1.0)),
    Flag(("--keep",), "sampling.n_keep", G_SAMPLING,
         "number of tokens to keep from the initial prompt (-1 = all)", None,
         _int_min(-1)),
    Flag(("--repeat-last-n",), "sampling.repeat_last_n", G_SAMPLING,
         "last n tokens to consider for penalize (0 = disabled)", None,
         _int_min(0)),
    Flag(("--repeat-penalty",), "sampling.repeat_penalty", G_SAMPLING,
         "penalize repeat sequence of tokens (1.0 = disabled)",
         "LLAMA_ARG_REPEAT_PENALTY", _repeat_penalty),
    Flag(("--presence-penalty",), "sampling.presence_penalty", G_SAMPLING,
         "repeat alpha presence penalty (0.0 = disabled)",
         "LLAMA_ARG_PRESENCE_PENALTY", _float),
    Flag(("--frequency-penalty",), "sampling.frequency_penalty", G_SAMPLING,
         "repeat alpha frequency penalty (0.0 = disabled)",
         "LLAMA_ARG_FREQUENCY_PENALTY", _float),
    Flag(("--samplers",), "sampling.samplers", G_SAMPLING,
         "samplers that will be used for generation in the order, separated by ';'",
         None, _samplers, metavar="SAMPLERS",
         default="; ".join(DEFAULT_SAMPLERS)),
    Flag(("--sampler-seq", "--sampling-seq"), "sampling.samplers", G_SAMPLING,
         "simplified sequence for samplers that will be used", None, _sampler_seq,
         metavar="SEQUENCE", default=samplers_to_chars(DEFAULT_SAMPLERS)),
    Flag(("--ignore-eos",), "sampling.ignore_eos", G_SAMPLING,
         "ignore end of stream token and continue generating (implies --logit-bias EOS-inf)"),
    Flag(("--top-nsigma", "--top-n-sigma"), "sampling.top_n_sigma", G_SAMPLING,
         "top-n-sigma sampling (-1.0 = disabled)", None, _float),
    Flag(("--xtc-probability",), "sampling.xtc_probability", G_SAMPLING,
         "xtc probability (0.0 = disabled)", None, _float),
    Flag(("--xtc-threshold",), "sampling.xtc_threshold", G_SAMPLING,
         "xtc threshold (1.0 = disabled)", None, _float),
    Flag(("--typical", "--typical-p"), "sampling.typical_p", G_SAMPLING,
         "locally typical sampling, parameter p (1.0 = disabled)", None, _float),
    Flag(("--dry-multiplier",), "sampling.dry_multiplier", G_SAMPLING,
         "set DRY sampling multiplier (0.0 = disabled)", None, _float),
    Flag(("--dry-base",), "sampling.dry_base", G_SAMPLING,
         "set DRY sampling base value (values < 1.0 are ignored)", None, _dry_base),
    Flag(("--dry-allowed-length",), "sampling.dry_allowed_length", G_SAMPLING,
         "set allowed length for DRY sampling", None, _int_min(0)),
    Flag(("--dry-penalty-last-n",), "sampling.dry_penalty_last_n", G_SAMPLING,
         "set DRY penalty for the last n tokens (0 = disable)", None, _int_min(0)),
    Flag(("--dry-sequence-breaker",), "sampling.dry_sequence_breakers", G_SAMPLING,
         "add sequence breaker for DRY sampling, clearing out default breakers in the "
         "process; use \"none\" to not use any sequence breakers", None, str,
         metavar="STRING", default=", ".join(map(repr, DEFAULT_DRY_SEQUENCE_BREAKERS)), append=True),
    Flag(("--adaptive-target",), "sampling.adaptive_target", G_SAMPLING,
         "adaptive-p: select tokens near this probability (valid range 0.0 to 1.0; "
         "negative = disabled)", None, _float),
    Flag(("--adaptive-decay",), "sampling.adaptive_decay", G_SAMPLING,
         "adaptive-p: decay rate for target adaptation over time (valid range 0.0 to 0.99)",
         None, _float_range(0.0, 0.99)),
    Flag(("--dynatemp-range",), "sampling.dynatemp_range", G_SAMPLING,
         "dynamic temperature range (0.0 = disabled)", None, _float),
    Flag(("--dynatemp-exp",), "sampling.dynatemp_exponent", G_SAMPLING,
         "dynamic temperature exponent", None, _float),
    Flag(("--mirostat",), "sampling.mirostat", G_SAMPLING,
         "use Mirostat sampling; Top K, Nucleus and Locally Typical samplers are "
         "ignored if used (0 = disabled, 1 = Mirostat, 2 = Mirostat 2.0)", None, _mirostat),
    Flag(("--mirostat-lr",), "sampling.mirostat_eta", G_SAMPLING,
         "Mirostat learning rate, parameter eta", None, _float),
    Flag(("--mirostat-ent",), "sampling.mirostat_tau", G_SAMPLING,
         "Mirostat target entropy, parameter tau", None, _float),
    Flag(("-l", "--logit-bias"), "sampling.logit_bias", G_SAMPLING,
         "modifies the likelihood of token appearing in the completion, i.e. "
         "`--logit-bias 15043+1` to increase likelihood of token ' Hello', or "
         "`--logit-bias 15043-1` to decrease likelihood of token ' Hello'",
         None, _logit_bias, metavar="TOKEN_ID(+/-)BIAS", default="none", append=True),
    # logging
    Flag(("-v", "--verbose", "--log-verbose"), "verbose", G_LOG,
         "log everything, debug messages included"),
    Flag(("--log-disable",), "log_disable", G_LOG, "disable logging"),
    Flag(("--log-file",), "log_file", G_LOG,
         "also write the log to this file (truncated at start)",
         "LLAMA_ARG_LOG_FILE", _nonempty, metavar="FNAME", default="unset"),
)  # fmt: skip

# Default-model presets, like llama-server's --fim-*-default: they pick the
# model that llamatwist.models fetches (config.model None means that model).
PRESETS: Final[dict[str, str]] = {
    "--smollm2-default": "use the default SmolLM2 model (downloaded on first "
    "use; also the model used when neither -m nor a preset is given)",
}


# --------------------------------------------------------------------------
# Every other flag llama-server accepts (common/arg.cpp, the options that apply
# to LLAMA_EXAMPLE_SERVER), with its environment variable: refused.


# Variables that are not llama-server's alone: other tools read them too, so
# a set one must not stop the server (llamatwist never downloads with it).
_SHARED_ENV: Final = frozenset({"HF_TOKEN"})


# --------------------------------------------------------------------------
# argparse plumbing.


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


def _show_default(flag: Flag) -> str:
    if flag.default is not None:
        return flag.default
    value = _config_default(flag.field)
    if isinstance(value, bool):
        return "enabled" if value else "disabled"
    if isinstance(value, float):
        return f"{value:.2f}"
    return "unset" if value is None else str(value)


def _canonical(names: Sequence[str]) -> str:
    """The name to quote in messages: the first long spelling."""
    return next((n for n in names if n.startswith("--")), names[0])


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
        + ", ".join(_canonical(u.names.split()) for u in UNIMPLEMENTED),
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
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in FLAGS:
        group = groups.get(flag.group)
        if group is None:
            group = groups[flag.group] = parser.add_argument_group(flag.group)
        text = f"{flag.help} (default: {_show_default(flag)})"
        if flag.env:
            text += f" (env: {flag.env})"
        text = text.replace("%", "%%")  # argparse %-formats help strings
        if flag.convert is not None:
            group.add_argument(
                *flag.names,
                dest=flag.field,
                type=_for_argparse(flag.convert),
                metavar=flag.metavar,
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
    names = {"-h", "--help", "--usage", "--version", *PRESETS}
    for flag in FLAGS:
        names.update(flag.names + flag.neg)
    for unimplemented in UNIMPLEMENTED:
        names.update(unimplemented.names.split())
    return names


def _not_implemented(flag: str, env: str | None = None) -> ConfigError:
    message = f"flag {flag} is not implemented yet in llamatwist"
    if env:
        message += f" (set by environment variable {env})"
    return ConfigError(message, 1)


def _from_env(flag: Flag, environ: Mapping[str, str]) -> tuple[bool, Any]:
    """(found, value) for `flag` from its LLAMA_ARG_* variable, as llama.cpp."""
    if flag.env is None:
        return False, None
    if flag.neg:
        if flag.env.replace("LLAMA_ARG_", "LLAMA_ARG_NO_", 1) in environ:
            return True, False  # its mere presence switches the flag off
        convert: Converter = _env_bool
    elif flag.convert is None:
        # A switch acts only on a truthy value; any other value is ignored.
        return (environ.get(flag.env) in _TRUTHY), True
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


def _refused_env(environ: Mapping[str, str]) -> ConfigError | None:
    for unimplemented in UNIMPLEMENTED:
        env = unimplemented.env
        if env is None or env in _SHARED_ENV:
            continue
        names = unimplemented.names.split()
        if unimplemented.kind == BOOL:
            negative = env.replace("LLAMA_ARG_", "LLAMA_ARG_NO_", 1)
            if negative in environ:
                off = [n for n in names if n.startswith("--no-")]
                return _not_implemented(_canonical(off or names), negative)
        if env not in environ:
            continue
        if unimplemented.kind == SWITCH and environ[env] not in _TRUTHY:
            continue  # llama-server ignores it too
        return _not_implemented(_canonical(names), env)
    return None


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> ServerConfig:
    """Turn llama-server style arguments and environment into a ServerConfig.

    Raises ConfigError for anything refused; ``-h`` and ``--version`` print
    to stdout and raise SystemExit(0), as argparse does.
    """
    parser = build_parser()
    namespace, extras = parser.parse_known_args(_normalize(argv, _known_names()))
    if extras:
        # Typos are reported before unimplemented flags: they are more
        # likely the user's real mistake.
        raise ConfigError(f"unrecognized arguments: {' '.join(extras)}")
    given: dict[str, Any] = vars(namespace)
    refused = given.pop(_REFUSED, None)
    if refused:
        raise _not_implemented(refused[0])
    env_error = _refused_env(environ)
    if env_error is not None:
        raise env_error

    values: dict[str, Any] = {}
    for flag in FLAGS:
        if flag.field in given:
            values[flag.field] = given[flag.field]
        else:
            found, value = _from_env(flag, environ)
            if found:
                values[flag.field] = value
    if "model" in given:  # a preset (None) or -m given on the command line
        values["model"] = given["model"]

    # --api-key and --api-key-file add up; the file is read now, as llama-server
    # does while parsing, so an unreadable one stops the start-up (exit 1).
    key_file = values.pop("api_key_file", None)
    if key_file is not None:
        values["api_keys"] = (*values.get("api_keys", ()), *read_api_key_file(key_file))
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
    sampling = {
        key.removeprefix("sampling."): value
        for key, value in values.items()
        if key.startswith("sampling.")
    }
    top = {k: v for k, v in values.items() if not k.startswith("sampling.")}
    return ServerConfig(
        **top,
        n_parallel=n_parallel,
        kv_unified=kv_unified,
        sampling=SamplingDefaults(**sampling),
    )


# --------------------------------------------------------------------------
# Version.


def _package_version() -> str:
    import llamatwist

    version = getattr(llamatwist, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib import metadata

    try:
        return metadata.version("llamatwist")
    except metadata.PackageNotFoundError:
        return "unknown"


def _llama_cpp_commit() -> str:
    # llama_pin.json sits at the repository root, beside the package.
    pin = Path(__file__).resolve().parent.parent / "llama_pin.json"
    try:
        commit = json.loads(pin.read_text(encoding="utf-8"))["commit"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    return str(commit)


def version_text() -> str:
    """What --version prints."""
    return f"{PROG} {_package_version()}\nllama.cpp commit {_llama_cpp_commit()}\n"


# --------------------------------------------------------------------------
# Running the server.


def resolve_model(config: ServerConfig) -> ServerConfig:
    """`config` with `model` set: no model means the default one, fetched if
    needed (raises llamatwist.models.ModelFetchError when that fails).

    The file itself is checked by make_service, which raises StartupError.
    """
    if config.model is not None:
        return config
    from llamatwist.models import ensure_default_model

    return dataclasses.replace(config, model=str(ensure_default_model()))


def fatal_errors() -> tuple[type[BaseException], ...]:
    """Errors that end startup with a one-line message instead of a traceback.

    Imported lazily: these modules pull in Twisted and the native bindings.
    """
    from twisted.internet.error import CannotListenError

    from llamatwist.errors import StartupError
    from llamatwist.models import ModelFetchError

    return (StartupError, ModelFetchError, CannotListenError)


def run_service(service: MultiService) -> int:
    """Run `service` under the global reactor until SIGINT/SIGTERM or stop.

    Returns the service's `exit_code` (set when it failed after startup,
    e.g. the model did not load), 0 when it has none.
    """
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor  # Twisted's interface typing is too loose here
    # Started before reactor.run() so that a port already in use fails here,
    # synchronously, rather than as a logged error in a running reactor.
    service.startService()  # type: ignore[no-untyped-call]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()  # installs SIGINT/SIGTERM handlers that stop the reactor
    return int(getattr(service, "exit_code", 0) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `llamatwist` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parse_config(args, os.environ)
    except ConfigError as err:
        report_error(err)
        return err.exit_code

    from llamatwist import logs

    logs.setup(config)
    fatal = fatal_errors()
    try:
        config = resolve_model(config)
        from llamatwist.server import make_service

        service = make_service(config)
    except ConfigError as err:
        report_error(err)
        return err.exit_code
    except fatal as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        return run_service(service)
    except fatal as err:  # e.g. the port is taken
        print(f"error: {err}", file=sys.stderr)
        return 1
