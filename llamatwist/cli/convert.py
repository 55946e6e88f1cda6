# -*- test-case-name: tests.test_cli -*-
"""Value converters of the flag tables: text -> value.

Each raises ValueError(message) when the text is invalid (ConfigError where
llama-server accepts the value but llamatwist does not implement it yet).
Shared by argparse (command line) and the environment lookup.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from llamatwist.cli.errors import ConfigError
from llamatwist.config import CACHE_TYPE_NAMES, REASONING_FORMATS
from llamatwist.sampling_defaults import SamplingDefaults, samplers_from_chars, samplers_from_names

__all__ = [
    "FALSEY",
    "POOLING_TYPES",
    "TRUTHY",
    "Converter",
    "alias",
    "api_keys",
    "api_prefix",
    "bool_word",
    "cache_type",
    "directory",
    "dry_base",
    "float_range",
    "gpu_layers",
    "host",
    "int_min",
    "int_range",
    "integer",
    "json_object",
    "json_object_file",
    "logit_bias",
    "media_dir",
    "mib_per_device",
    "mirostat",
    "models_dir",
    "n_parallel",
    "nonempty",
    "number",
    "numbers",
    "on_off",
    "on_off_auto",
    "parse_api_key_file",
    "parse_csv_row",
    "pooling",
    "port",
    "read_api_key_file",
    "readable_file",
    "reasoning_effort",
    "reasoning_format",
    "repeat_penalty",
    "rpc_servers",
    "sampler_seq",
    "samplers",
    "seed",
    "server_tools",
    "sleep_seconds",
    "temperature",
    "threads",
]

Converter = Callable[[str], Any]


def integer(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def numbers(text: str) -> tuple[float, ...]:
    """A comma-separated list of finite numbers (--spec-synth-rates)."""
    return tuple(number(part) for part in text.split(","))


def int_min(low: int) -> Converter:
    def convert(text: str) -> int:
        value = integer(text)
        if value < low:
            raise ValueError(f"must be >= {low}, got {value}")
        return value

    return convert


def int_range(low: int, high: int) -> Converter:
    def convert(text: str) -> int:
        value = integer(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} inclusive, got {value}")
        return value

    return convert


def float_range(low: float, high: float) -> Converter:
    def convert(text: str) -> float:
        value = number(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return convert


def nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def temperature(text: str) -> float:
    return max(number(text), 0.0)  # llama-server clamps negatives to greedy


def repeat_penalty(text: str) -> float:
    value = number(text)
    if value <= 0.0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def samplers(text: str) -> tuple[str, ...]:
    """--samplers: names separated by ';' (unknown ones dropped, as llama.cpp)."""
    return samplers_from_names(text.split(";"))


def sampler_seq(text: str) -> tuple[str, ...]:
    """--sampler-seq: one character per sampler (edskypmxt)."""
    return samplers_from_chars(text)


def dry_base(text: str) -> float:
    value = number(text)
    return value if value >= 1.0 else SamplingDefaults().dry_base  # llama-server ignores < 1


def mirostat(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= 2:  # llama-server would abort on its first request
        raise ValueError(f"must be 0 (disabled), 1 or 2, got {value}")
    return value


def logit_bias(text: str) -> tuple[int, float]:
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



def n_parallel(text: str) -> int:
    value = integer(text)
    if value == 0:
        raise ValueError("must be a positive number of slots, or -1 for auto")
    return max(value, -1)  # any negative means auto, as in llama-server


def threads(text: str) -> int:
    value = integer(text)
    return value if value > 0 else -1  # <= 0: pick from the CPU count


def gpu_layers(text: str) -> int:
    word = text.strip().lower()
    if word == "auto":
        return -1
    if word == "all":
        return -2
    try:
        value = integer(text)
    except ValueError:
        raise ValueError(f"expected a number, 'auto' or 'all', got {text!r}") from None
    return max(value, -2)  # llama.cpp: -1 = auto, <= -2 = all


def seed(text: str) -> int:
    value = integer(text)
    if value in (-1, 0xFFFFFFFF):  # LLAMA_DEFAULT_SEED: random
        return -1
    if not 0 <= value < 0xFFFFFFFF:
        raise ValueError(f"must be -1 (random) or between 0 and {0xFFFFFFFF - 1}")
    return value


def port(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be between 0 and 65535, got {value}")
    return value


def host(text: str) -> str:
    """One address, or several comma-separated (one listener each, as llama-server); a path ending in
    ``.sock`` is a UNIX socket."""
    hosts = [h.strip() for h in text.split(",")]
    if not all(hosts):
        raise ValueError("must not be empty (nor hold an empty address)")
    return ",".join(hosts)


def spec_type(text: str) -> str:
    """--spec-type: a comma list of types (llama-server's), canonical."""
    from llamatwist.sampling_defaults import parse_spec_types

    return parse_spec_types(text)


def alias(text: str) -> str:
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


def api_keys(text: str) -> tuple[str, ...]:
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


def api_prefix(text: str) -> str:
    """The path prefix with one leading slash and no trailing one ("" = none)."""
    prefix = text.strip().strip("/")
    if any(c in prefix for c in "?#") or any(c.isspace() for c in prefix):
        raise ValueError(f"must be a URL path, got {text!r}")
    return "/" + prefix if prefix else ""


def directory(text: str) -> str:
    """--path: llama-server refuses to start when the directory is missing."""
    if not os.path.isdir(text):
        raise ValueError(f"static assets path not found: {text!r}")
    return text


def models_dir(text: str) -> str:
    """--models-dir: as llama-server, a missing directory stops the start-up."""
    if not os.path.isdir(text):
        raise ValueError(f"'{text}' does not exist or is not a directory")
    return text


def readable_file(text: str) -> str:
    if not os.path.isfile(text):
        raise ValueError(f"file not found: {text!r}")
    return text


def sleep_seconds(text: str) -> int:
    """--sleep-idle-seconds: -1 (never) or a positive count, as llama-server."""
    value = integer(text)
    if value == 0 or value < -1:
        raise ValueError("invalid value: cannot be 0 or less than -1")
    return value


def media_dir(text: str) -> str:
    """--media-path: an existing directory, resolved once (file:// URLs must stay under it)."""
    if not os.path.isdir(text):
        raise ValueError(f"not a directory: {text}")
    return os.path.realpath(text)


POOLING_TYPES: Final = ("none", "mean", "cls", "last", "rank")


def pooling(text: str) -> str:
    if text not in POOLING_TYPES:
        raise ValueError(f"must be one of {', '.join(POOLING_TYPES)}, got {text!r}")
    return text


def json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ValueError(f"must be a valid JSON object string: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}")  # noqa: TRY004  # argparse reports ValueError
    return value


def json_object_file(text: str) -> dict[str, object]:
    """A JSON object read from a file (--ui-config-file)."""
    try:
        with open(text, encoding="utf-8") as fh:
            content = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {text}: {err}") from None
    return json_object(content)


TRUTHY: Final = frozenset({"on", "enabled", "true", "1"})
FALSEY: Final = frozenset({"off", "disabled", "false", "0"})


def reasoning_format(text: str) -> str:
    if text not in REASONING_FORMATS:
        raise ValueError(f"must be one of {', '.join(REASONING_FORMATS)}, got {text!r}")
    return text


def cache_type(text: str) -> str:
    if text not in CACHE_TYPE_NAMES:
        raise ValueError(f"must be one of {', '.join(CACHE_TYPE_NAMES)}, got {text!r}")
    return text


def on_off_auto(text: str) -> str:
    """-rea: llama.cpp's is_truthy / is_falsey / is_autoy words."""
    if text in TRUTHY:
        return "on"
    if text in FALSEY:
        return "off"
    if text in ("auto", "-1"):
        return "auto"
    raise ValueError(f"unknown value {text!r}: expected on, off or auto")


def bool_word(text: str) -> bool | None:
    """llama.cpp's is_truthy / is_falsey words: True, False, else None."""
    return True if text in TRUTHY else False if text in FALSEY else None


def on_off(text: str) -> bool:
    """-fit: llama.cpp's is_truthy / is_falsey words."""
    value = bool_word(text)
    if value is None:
        raise ValueError(f"unknown value {text!r}: expected on or off")
    return value


def mib_per_device(text: str) -> tuple[int, ...]:
    """-fitt 1024 or 2048,512 (or 2048/512): MiB per device; one value is for every device."""
    import re

    from llamatwist.engine.model import max_devices

    parts = re.split(r"[,/]+", text)
    if len(parts) >= max_devices():
        raise ValueError(f"got {len(parts)} input configs, but system only has {max_devices()} devices")
    return tuple(int_min(0)(p) for p in parts)


def server_tools(text: str) -> tuple[str, ...]:
    """--tools: tool names, or "all"; checked when the tools are set up (an unknown one stops the start-up, exit
    1, as llama-server's "tools setup failed")."""
    return tuple(name.strip() for name in parse_csv_row(text) if name.strip())


def rpc_servers(text: str) -> tuple[str, ...]:
    """--rpc host:port,...: each server's endpoint (ggml splits at the first colon: no IPv6 address)."""
    endpoints = tuple(e.strip() for e in text.split(",") if e.strip())
    if not endpoints:
        raise ValueError("no RPC servers specified")
    for endpoint in endpoints:
        host, sep, port = endpoint.partition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port (a name or IPv4 address, and a port), got {endpoint!r}")
    return endpoints


def reasoning_effort(text: str) -> str | None:
    return None if text == "default" else nonempty(text)


def one_of(*names: str) -> Converter:
    def convert(text: str) -> str:
        if text not in names:
            raise ValueError(f"must be one of {', '.join(names)}, got {text!r}")
        return text

    return convert


def rope_scale(text: str) -> float:
    """--rope-scale N: llama-server stores the frequency scale 1/N."""
    value = number(text)
    if value <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return 1.0 / value


_KV_TYPES: Final = ("int", "float", "bool", "str")


def kv_overrides(text: str) -> tuple[tuple[str, str, str], ...]:
    """--override-kv KEY=TYPE:VALUE,...: llama.cpp's string_parse_kv_override rules."""
    out = []
    for item in parse_csv_row(text):
        key, eq, rest = item.partition("=")
        if not eq or not key or len(key) >= 128:
            raise ValueError(f"malformed KV override {item!r}: expected KEY=TYPE:VALUE")
        kind, colon, value = rest.partition(":")
        if not colon or kind not in _KV_TYPES:
            raise ValueError(f"invalid type for KV override {item!r}: expected one of {', '.join(_KV_TYPES)}")
        if kind == "int":
            integer(value)
        elif kind == "float":
            number(value)
        elif kind == "bool" and value not in ("true", "false"):
            raise ValueError(f"invalid boolean value for KV override {item!r}: expected true or false")
        elif kind == "str" and len(value.encode()) > 127:
            raise ValueError(f"malformed KV override {item!r}: value cannot exceed 127 bytes")
        out.append((key, kind, value))
    return tuple(out)


def _gpu_devices() -> list[str]:
    """The build's non-CPU devices (imports the native library: only when a device flag is given)."""
    from llamatwist.engine.model import devices

    return [d.name for d in devices() if d.kind != "cpu"]


def _no_gpu_hint(names: list[str]) -> str:
    return f"devices of this build: {', '.join(names)}" if names else "this build has no GPU devices (CPU only)"


def device_list(text: str, what: str = "the model") -> tuple[str, ...]:
    """-dev: 'none' (no offload, ()) or GPU device names, as llama-server's parse_device_list."""
    names = [n for n in text.split(",") if n]
    if not names:
        raise ValueError("no devices specified")
    if names == ["none"]:
        return ()
    available = _gpu_devices()
    for name in names:
        if name not in available:
            raise ValueError(f"invalid device: {name} ({_no_gpu_hint(available)}; 'none' keeps {what} on the CPU)")
    return tuple(names)


def mmproj_device(text: str) -> tuple[str, ...]:
    """-mmdev: 'none' (the projector on the CPU, ()) or one GPU device, checked as -dev's list."""
    names = device_list(text, "the projector")
    if len(names) > 1:
        raise ValueError("only one device may be specified for mmproj")
    return names


def tensor_overrides(text: str) -> tuple[tuple[str, str], ...]:
    """-ot <tensor name regex>=<buffer type>,...: the types are the devices' buffer types (CPU, CUDA0...)."""
    import re

    from llamatwist.engine.model import buffer_types

    known = sorted(buffer_types())
    out = []
    for item in text.split(","):
        pattern, eq, buft = item.partition("=")
        if not eq or not pattern:
            raise ValueError(f"invalid value {item!r}: expected <tensor name pattern>=<buffer type>")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"invalid tensor name pattern {pattern!r}: {err}") from None
        if buft not in known:
            raise ValueError(f"unknown buffer type {buft!r}; available buffer types: {', '.join(known)}")
        out.append((pattern, buft))
    return tuple(out)


def split_mode(text: str) -> str:
    if text not in ("none", "layer", "row", "tensor"):
        raise ValueError(f"must be one of none, layer, row, tensor, got {text!r}")
    if text in ("row", "tensor") and not _gpu_devices():
        raise ValueError(f"split mode {text} splits weights across GPUs; this build has no GPU devices (CPU only)")
    return text


def main_gpu(text: str) -> int:
    value = integer(text)
    available = _gpu_devices()
    if value != 0 and not 0 <= value < len(available):
        raise ValueError(f"no GPU {value}: {_no_gpu_hint(available)}")
    return value


def tensor_split(text: str) -> tuple[float, ...]:
    """-ts 3,1 (or 3/1): proportions per GPU; non-zero ones only for GPUs this build has."""
    import re

    from llamatwist.engine.model import max_devices

    parts = [p for p in re.split(r"[,/]+", text)]
    if len(parts) >= max_devices():
        raise ValueError(f"got {len(parts)} input configs, but system only has {max_devices()} devices")
    values = tuple(number(p) for p in parts)
    if any(v < 0 for v in values):
        raise ValueError(f"proportions must be >= 0, got {text!r}")
    available = _gpu_devices()
    if any(values[len(available):]):
        raise ValueError(f"{text!r} gives a share to {len(values)} GPUs: {_no_gpu_hint(available)}")
    return values


_MAX_CPUS: Final = 512  # GGML_MAX_N_THREADS


def cpu_mask(text: str) -> tuple[int, ...]:
    """-C M: an arbitrarily long hex mask (0x optional), as llama.cpp's parse_cpu_mask: the CPUs it sets."""
    digits = text.removeprefix("0x")
    digits = digits[:128]
    if not digits:
        raise ValueError("invalid cpumask: empty")
    try:
        value = int(digits, 16)
    except ValueError:
        raise ValueError(f"invalid cpumask {text!r}: expected hex digits") from None
    return tuple(i for i in range(len(digits) * 4) if value >> i & 1)


def cpu_range(text: str) -> tuple[int, ...]:
    """-Cr lo-hi (either end may be left out), as llama.cpp's parse_cpu_range."""
    lo, dash, hi = text.partition("-")
    if not dash:
        raise ValueError(f"invalid CPU range {text!r}: expected [<start>]-[<end>]")
    start = integer(lo) if lo else 0
    end = integer(hi) if hi else _MAX_CPUS - 1
    if not 0 <= start < _MAX_CPUS or not 0 <= end < _MAX_CPUS:
        raise ValueError(f"invalid CPU range {text!r}: indices must be below {_MAX_CPUS}")
    return tuple(range(start, end + 1))


def zero_one(text: str) -> bool:
    """--cpu-strict <0|1>."""
    if text not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {text!r}")
    return text == "1"


def priority(text: str) -> int:
    value = integer(text)
    if not -1 <= value <= 3:
        raise ValueError(f"must be -1 (low), 0 (normal), 1 (medium), 2 (high) or 3 (realtime), got {value}")
    return value


def poll_level(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= 100:
        raise ValueError(f"must be between 0 and 100, got {value}")
    return value
