# -*- test-case-name: tests.test_sampling -*-
"""libllama's sampler chain, built from plain settings (llamatwist.sampling_defaults).

The chain is built like llama.cpp's ``common_sampler_init`` (common/sampling.cpp):
a logit-bias stage (request/CLI biases, the end-of-generation bans of
``ignore_eos``, the model's suppressed tokens), then either the configured
samplers in order followed by a seeded draw (``dist``, or ``adaptive_p`` when
listed), or, with mirostat, temperature followed by mirostat 1 or 2.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from llamatwist.engine.context import Context
from llamatwist.engine.model import Model
from llamatwist.native.binding import ffi, lib
from llamatwist.sampling_defaults import LogitBias, SamplerSettings

__all__ = ["Sampler", "eog_tokens", "resolve_logit_bias"]


# Per-model caches: the end-of-generation tokens (a vocab scan) and token ids.
_eog_cache: weakref.WeakKeyDictionary[Model, tuple[int, ...]] = weakref.WeakKeyDictionary()
_TOKEN_DATA: Final = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data


def eog_tokens(model: Model) -> tuple[int, ...]:
    """Every end-of-generation token of the model (what ignore_eos bans)."""
    cached = _eog_cache.get(model)
    if cached is None:
        vocab = model.vocab
        is_eog = lib.llama_vocab_is_eog
        ptr = vocab.ptr
        cached = tuple(t for t in range(vocab.n_tokens) if is_eog(ptr, t))
        _eog_cache[model] = cached
    return cached


def _suppressed_tokens(model: Model) -> list[int]:
    n = ffi.new("int32_t *")
    ptr = lib.llama_vocab_get_suppress_tokens(model.vocab.ptr, n)
    return [] if ptr == ffi.NULL or n[0] <= 0 else list(ffi.unpack(ptr, n[0]))


def resolve_logit_bias(model: Model, biases: Iterable[LogitBias]) -> list[tuple[int, float]]:
    """Token ids for the biases: ids outside the vocabulary are dropped and a
    text biases every token of its tokenization, as llama-server."""
    vocab = model.vocab
    out: list[tuple[int, float]] = []
    for key, bias in biases:
        if isinstance(key, str):
            out.extend((t, bias) for t in vocab.tokenize(key, add_special=False, parse_special=False))
        elif 0 <= key < vocab.n_tokens:
            out.append((key, bias))
    return out


class Sampler:
    """One request's sampler chain (see the module docstring for its order)."""

    def __init__(self, model: Model, s: SamplerSettings, n_ctx: int = 0) -> None:
        if not (np.isfinite(s.repeat_penalty) and s.repeat_penalty > 0 and np.isfinite(1.0 / s.repeat_penalty)):
            raise ValueError("penalty_repeat must be finite and greater than 0")
        if not np.isfinite(s.frequency_penalty):
            raise ValueError("penalty_freq must be finite")
        if not np.isfinite(s.presence_penalty):
            raise ValueError("penalty_present must be finite")
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lib.llama_sampler_chain_init(params)
        self._chain: Any = chain
        weakref.finalize(self, lib.llama_sampler_free, chain)
        self._n_vocab: int = model.vocab.n_tokens
        self._ids: npt.NDArray[np.int32] | None = None
        self.settings = s

        add = lambda smpl: lib.llama_sampler_chain_add(chain, smpl)
        vocab = model.vocab
        n_vocab = vocab.n_tokens
        seed = s.seed & 0xFFFFFFFF

        biases = resolve_logit_bias(model, s.logit_bias)
        if s.ignore_eos:
            biases.extend((t, float("-inf")) for t in eog_tokens(model))
        biases.extend((t, float("-inf")) for t in _suppressed_tokens(model))
        self.logit_bias: list[tuple[int, float]] = biases
        if biases:
            arr = ffi.new("llama_logit_bias[]", biases)
            add(lib.llama_sampler_init_logit_bias(n_vocab, len(biases), arr))

        min_keep = max(s.min_keep, 0)
        if s.mirostat == 1:
            add(lib.llama_sampler_init_temp(s.temperature))
            add(lib.llama_sampler_init_mirostat(n_vocab, seed, s.mirostat_tau, s.mirostat_eta, 100))
        elif s.mirostat == 2:
            add(lib.llama_sampler_init_temp(s.temperature))
            add(lib.llama_sampler_init_mirostat_v2(seed, s.mirostat_tau, s.mirostat_eta))
        else:
            use_adaptive_p = False
            for name in s.samplers:
                if name == "dry":
                    keep = [ffi.new("char[]", b.encode("utf-8")) for b in s.dry_sequence_breakers]
                    breakers = ffi.new("const char *[]", keep)
                    # -1 (the seed's --dry-penalty-last-n): the whole context; libllama wants a count
                    last_n = n_ctx if s.dry_penalty_last_n < 0 else s.dry_penalty_last_n
                    add(lib.llama_sampler_init_dry(
                        vocab.ptr, s.dry_multiplier, s.dry_base, s.dry_allowed_length, last_n,
                        breakers, len(keep),
                    ))
                elif name == "top_k":
                    add(lib.llama_sampler_init_top_k(s.top_k))
                elif name == "top_p":
                    add(lib.llama_sampler_init_top_p(s.top_p, min_keep))
                elif name == "top_n_sigma":
                    add(lib.llama_sampler_init_top_n_sigma(s.top_n_sigma))
                elif name == "min_p":
                    add(lib.llama_sampler_init_min_p(s.min_p, min_keep))
                elif name == "xtc":
                    add(lib.llama_sampler_init_xtc(s.xtc_probability, s.xtc_threshold, min_keep, seed))
                elif name == "typ_p":
                    add(lib.llama_sampler_init_typical(s.typical_p, min_keep))
                elif name == "temperature":
                    add(lib.llama_sampler_init_temp_ext(s.temperature, s.dynatemp_range, s.dynatemp_exponent))
                elif name == "infill":
                    add(lib.llama_sampler_init_infill(vocab.ptr))
                elif name == "penalties":
                    add(lib.llama_sampler_init_penalties(
                        n_vocab, s.repeat_last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty,
                    ))
                elif name == "adaptive_p":
                    use_adaptive_p = True  # a selecting sampler: it goes last, instead of dist
                else:
                    raise ValueError(f"unknown sampler {name!r}")
            if use_adaptive_p:
                add(lib.llama_sampler_init_adaptive_p(s.adaptive_target, s.adaptive_decay, seed))
            else:
                add(lib.llama_sampler_init_dist(seed))
        self.seed: int = int(lib.llama_sampler_get_seed(chain))

    def names(self) -> list[str]:
        """libllama's names of the samplers in the chain, in order."""
        return [
            ffi.string(lib.llama_sampler_name(lib.llama_sampler_chain_get(self._chain, i))).decode()
            for i in range(lib.llama_sampler_chain_n(self._chain))
        ]

    def sample(self, ctx: Context, idx: int) -> int:
        """Sample from batch output ``idx`` and accept the token into the chain."""
        return int(lib.llama_sampler_sample(self._chain, ctx.ptr, idx))

    def sample_probs(self, ctx: Context, idx: int, n_probs: int, forced: int | None = None,
                     ) -> tuple[int, float, list[tuple[int, float]]]:
        """Sample like :meth:`sample` and also return the distribution after the
        chain (llama-server's ``post_sampling_probs``): the sampled token, its
        probability, and up to ``n_probs`` (token, probability) pairs, most
        probable first, zero probabilities left out. A ``forced`` token is what the
        chain accepts and returns instead of the one drawn (synthetic acceptance)."""
        logits = ctx.logits_view(idx)
        return self.sample_logits(logits, n_probs, forced)

    def sample_logits(
        self, logits: npt.NDArray[np.float32], n_probs: int, forced: int | None = None
    ) -> tuple[int, float, list[tuple[int, float]]]:
        """:meth:`sample_probs` from a logits row."""
        n = int(logits.shape[0])
        if self._ids is None or self._ids.shape[0] != n:
            self._ids = np.arange(n, dtype=np.int32)
        cur = np.empty(n, dtype=_TOKEN_DATA)
        cur["id"] = self._ids
        cur["logit"] = logits
        cur["p"] = 0.0
        arr = ffi.new("llama_token_data_array *")
        arr.data = ffi.cast("llama_token_data *", ffi.from_buffer(cur))
        arr.size = n
        arr.selected = -1
        arr.sorted = False
        lib.llama_sampler_apply(self._chain, arr)
        size, selected = int(arr.size), int(arr.selected)
        if not 0 <= selected < size:
            raise RuntimeError("the sampler chain selected no token")
        kept = cur[:size]
        if forced is None:
            token, p_token = int(kept["id"][selected]), float(kept["p"][selected])
        else:
            token, p_token = forced, float(kept["p"][kept["id"] == forced].sum())
        lib.llama_sampler_accept(self._chain, token)
        top: list[tuple[int, float]] = []
        k = min(max(n_probs, 0), size)
        if k > 0:
            p = kept["p"]
            order = np.argpartition(-p, k - 1)[:k] if k < size else np.arange(size)
            order = order[np.argsort(-p[order], kind="stable")]
            for i in order.tolist():
                if p[i] == 0.0:
                    break
                top.append((int(kept["id"][i]), float(p[i])))
        return token, p_token, top

    def accept(self, token: int) -> None:
        lib.llama_sampler_accept(self._chain, token)
