# -*- test-case-name: tests.test_params -*-
"""The sampling settings and their defaults, defined once.

`SamplerSettings` is llama.cpp's common_params_sampling with its defaults: what
the sampler chain (engine/sampling.py) is built from and what a response's
``generation_settings`` reports (api/completion.py). `SamplingDefaults` adds
the per-request fields the command line sets (config.py, cli/): the server's
defaults, which the request parameter table (api/params.py) falls back on.

Pure data and the sampler names: importable without the native library.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_DRY_SEQUENCE_BREAKERS",
    "DEFAULT_SAMPLERS",
    "DRAFT_ARCH_TYPES",
    "DRAFT_ORDER",
    "GEMMA4_ASSISTANT",
    "PREDICTION",
    "PREDICTION_DRAFT_MAX",
    "RANDOM_SEED",
    "SAMPLER_CHARS",
    "SAMPLER_NAMES",
    "SPEC_TYPES",
    "LogitBias",
    "SamplerSettings",
    "SamplingDefaults",
    "SpecParams",
    "parse_spec_types",
    "samplers_from_chars",
    "samplers_from_names",
    "samplers_to_chars",
    "synthetic_rates",
]

RANDOM_SEED: Final = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: libllama picks a random seed

# common_sampler_type_to_str / common_sampler_type_to_chr
SAMPLER_CHARS: Final[dict[str, str]] = {
    "dry": "d",
    "top_k": "k",
    "typ_p": "y",
    "top_p": "p",
    "top_n_sigma": "s",
    "min_p": "m",
    "temperature": "t",
    "xtc": "x",
    "infill": "i",
    "penalties": "e",
    "adaptive_p": "a",
}
SAMPLER_NAMES: Final[tuple[str, ...]] = tuple(SAMPLER_CHARS)

# common_params_sampling::samplers
DEFAULT_SAMPLERS: Final[tuple[str, ...]] = (
    "penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature",
)
DEFAULT_DRY_SEQUENCE_BREAKERS: Final[tuple[str, ...]] = ("\n", ":", '"', "*")


def _name_map() -> dict[str, str]:
    """Every spelling common_sampler_types_from_names accepts -> canonical name."""
    names = {n: n for n in SAMPLER_NAMES}
    for n in SAMPLER_NAMES:
        if "_" in n:
            names.setdefault(n.replace("_", "-"), n)  # kebab-case: top-k
            names.setdefault(n.replace("_", ""), n)  # no dash: topk
    names.update({"nucleus": "top_p", "temp": "temperature", "typ": "typ_p"})
    return names


_BY_NAME: Final = _name_map()
_BY_CHAR: Final = {c: n for n, c in SAMPLER_CHARS.items()}


def samplers_from_names(names: Iterable[str]) -> tuple[str, ...]:
    """Canonical sampler names from names/aliases (case-insensitive); unknown
    names are dropped, as llama.cpp does (with a warning there)."""
    return tuple(_BY_NAME[n.lower()] for n in names if n.lower() in _BY_NAME)


def samplers_from_chars(chars: str) -> tuple[str, ...]:
    """Canonical sampler names from the short form (``edskypmxt``); unknown
    characters are dropped, as llama.cpp does."""
    return tuple(_BY_CHAR[c] for c in chars if c in _BY_CHAR)


def samplers_to_chars(samplers: Iterable[str]) -> str:
    return "".join(SAMPLER_CHARS[s] for s in samplers)


LogitBias = tuple[int | str, float]  # a token id or a text to tokenize, and its bias


@dataclass(frozen=True)
class SamplerSettings:
    """llama.cpp's common_params_sampling, with its defaults."""

    seed: int = RANDOM_SEED
    temperature: float = 0.8
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    top_n_sigma: float = -1.0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    typical_p: float = 1.0
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 64
    dry_sequence_breakers: tuple[str, ...] = DEFAULT_DRY_SEQUENCE_BREAKERS
    mirostat: int = 0
    mirostat_tau: float = 5.0  # --mirostat-ent
    mirostat_eta: float = 0.1  # --mirostat-lr
    adaptive_target: float = -1.0
    adaptive_decay: float = 0.9
    min_keep: int = 0
    ignore_eos: bool = False
    # token id or text (tokenized without special tokens), bias; -inf bans (-l/--logit-bias TOKEN(+/-)BIAS)
    logit_bias: tuple[LogitBias, ...] = ()
    # the sampler order (--samplers / --sampler-seq), canonical names
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS
    # n_probs reports the distribution after the chain instead of the raw softmax
    post_sampling_probs: bool = False
    # llama-server's backend sampling (-bs): accepted; llamatwist always samples in libllama's CPU chain
    backend_sampling: bool = False


# speculative decoding types; several may be combined (a comma list): the first of DRAFT_ORDER with a draft drafts
SPEC_TYPES = ("none", "ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache", "draft-simple",
              "draft-eagle3", "draft-mtp", "draft-dflash", "draft-dspark")
# llama.cpp's order of preference (common_speculative_init), after a request's own prediction (OpenAI's
# Predicted Outputs: not a --spec-type, it comes with a request)
PREDICTION = "prediction"
PREDICTION_DRAFT_MAX = 16  # a prediction's longest draft (a step's verification batch grows with it)
DRAFT_ORDER = (PREDICTION, *SPEC_TYPES[1:])
GEMMA4_ASSISTANT = "gemma4-assistant"  # an MTP drafter reading a Gemma 4 target's KV cache
# the draft architectures made for one type (a DFlash GGUF with a Markov head is DSpark's): their graphs read the
# target's hidden states or KV cache, so draft-simple cannot run them
DRAFT_ARCH_TYPES = {"eagle3": "draft-eagle3", "dflash": "draft-dflash", GEMMA4_ASSISTANT: "draft-mtp"}


def parse_spec_types(text: str) -> str:
    """A comma list of types as the canonical string (llama-server's speculative.types): unknown names are
    a ValueError, "none" anywhere means none, repeats count once."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if name not in SPEC_TYPES:
            raise ValueError(f"unknown speculative type: {name!r} (types: {', '.join(SPEC_TYPES)})")
        if name == "none":
            return "none"
        if name not in names:
            names.append(name)
    return ",".join(names)


@dataclass(frozen=True)
class SpecParams:
    """One request's speculation (llama-server's speculative.* fields over the server's --spec-* flags)."""

    type: str = "none"  # "none" or a comma list of SPEC_TYPES (parse_spec_types)
    n_max: int = 3  # most draft tokens per step of a draft model or head (draft-simple, -eagle3, -mtp, -dflash, -dspark)
    n_min: int = 0  # fewer than this: no draft
    # draft-simple/-eagle3/-mtp/-dflash: stop drafting below this probability of the draft's own top token;
    # draft-dspark: below this confidence of its confidence head
    p_min: float = 0.0
    ngram_size_n: int = 12  # ngram-simple: lookup length
    ngram_size_m: int = 48  # ngram-simple: longest draft
    ngram_min_hits: int = 1
    # ngram-mod: lookup length, shortest and longest chained draft (one table per server: not per request)
    mod_n_match: int = 24
    mod_n_min: int = 48
    mod_n_max: int = 64
    # ngram-map-k / ngram-map-k4v: lookup length, longest draft, hits of the key before k4v drafts
    map_k_size_n: int = 12
    map_k_size_m: int = 48
    map_k_min_hits: int = 1
    map_k4v_size_n: int = 12
    map_k4v_size_m: int = 48
    map_k4v_min_hits: int = 1
    has_draft_model: bool = False  # the server loaded a draft model (-md): draft-simple is possible
    has_mtp: bool = False  # the server runs the model's NextN head (--spec-type draft-mtp): draft-mtp is possible
    has_eagle3: bool = False  # -md is an EAGLE-3 draft (--spec-type draft-eagle3): draft-eagle3 is possible
    has_dflash: bool = False  # -md is a DFlash draft (--spec-type draft-dflash): draft-dflash is possible
    has_dspark: bool = False  # -md is a DSpark draft (--spec-type draft-dspark): draft-dspark is possible
    # --spec-synth-*: each draft position's unconditional acceptance rate (benchmarking only)
    synth_rates: tuple[float, ...] = ()
    # the request's predicted output (OpenAI's prediction), tokenized: drafts before any type's
    prediction: tuple[int, ...] = ()

    @property
    def types(self) -> tuple[str, ...]:
        own = (PREDICTION,) if self.prediction else ()
        return own if self.type == "none" else (*own, *self.type.split(","))

    @property
    def active(self) -> bool:
        return bool(self.types) and self.limit > 0

    @functools.cached_property
    def synth_probs(self) -> tuple[float, ...]:
        """The probability of accepting draft position i once positions 0..i-1 were."""
        rates = self.synth_rates
        return tuple(r / prev if prev > 0.0 else 0.0 for prev, r in zip((1.0, *rates), rates, strict=False))

    @property
    def limit(self) -> int:
        """The longest draft any of its types makes (llama.cpp's common_speculative_n_max)."""
        longest = {"ngram-simple": self.ngram_size_m, "draft-simple": self.n_max, "draft-mtp": self.n_max,
                   "draft-eagle3": self.n_max, "draft-dflash": self.n_max, "draft-dspark": self.n_max,
                   "ngram-mod": self.mod_n_max,
                   "ngram-map-k": self.map_k_size_m, "ngram-map-k4v": self.map_k4v_size_m, "ngram-cache": 8,
                   PREDICTION: PREDICTION_DRAFT_MAX}
        return max((longest[t] for t in self.types), default=0)


def synthetic_rates(length: float | None, rates: Sequence[float], n_max: int) -> tuple[float, ...]:
    """--spec-synth-len / --spec-synth-rates as the unconditional acceptance rate of each draft position
    (llama.cpp's common_speculative_synth_rates_resolve): given, or a geometric series whose mean acceptance
    length (the target's token included) is ``length``. Raises ValueError with llama-server's message."""
    if length is None and not rates:
        return ()
    if length is not None and rates:
        raise ValueError("synthetic acceptance length and rates are mutually exclusive")
    if n_max <= 0:
        raise ValueError("synthetic acceptance requires at least one speculative token")
    if rates:
        if len(rates) != n_max:
            raise ValueError(f"synthetic acceptance rates must contain {n_max} values, got {len(rates)}")
        if not all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in rates):
            raise ValueError("synthetic acceptance rates must be finite and within [0, 1]")
        if any(b > a for a, b in itertools.pairwise(rates)):
            raise ValueError("synthetic acceptance rates must be monotonically non-increasing")
        return tuple(rates)
    assert length is not None
    if not (math.isfinite(length) and 1.0 <= length <= n_max + 1):
        raise ValueError(f"synthetic acceptance length must be finite and within [1, {n_max + 1}]")
    p = 0.0
    if length == n_max + 1:
        p = 1.0
    elif length > 1.0:  # bisect p: p + p^2 + ... + p^n_max = length - 1
        low, high = 0.0, 1.0
        for _ in range(32):
            mid = 0.5 * (low + high)
            if sum(mid ** (j + 1) for j in range(n_max)) < length - 1.0:
                low = mid
            else:
                high = mid
        p = 0.5 * (low + high)
    return tuple(p ** (i + 1) for i in range(n_max))


@dataclass(frozen=True)
class SamplingDefaults(SamplerSettings):
    """The server's per-request defaults (command line), each overridable by a request."""

    seed: int = -1  # -1 = random: a request's sampler gets RANDOM_SEED
    n_predict: int = -1
    n_keep: int = 0
    n_cache_reuse: int = 0  # --cache-reuse: min chunk reused by KV shifting (0 = off)
    speculative: SpecParams = SpecParams()  # --spec-type, --draft-max, ... (llama-server's speculative.*)
    sse_ping_interval: int = 30  # --sse-ping-interval: seconds of stream silence before a ping (-1 = none)
    cache_prompt: bool = True  # --cache-prompt / --no-cache-prompt
    stop: tuple[str, ...] = ()  # -r/--reverse-prompt: the stop strings of a request that gives none
    embd_normalize: int = 2  # --embd-normalize: /embedding(s) normalization (-1 none, 0 max-abs, 2 L2, p-norm)
