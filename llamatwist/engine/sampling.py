# -*- test-case-name: tests.test_engine -*-
"""libllama's sampler chain, built from plain settings."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from llamatwist.engine.context import Context
from llamatwist.engine.model import Model
from llamatwist.native.binding import ffi, lib

__all__ = ["Sampler", "SamplerSettings"]

RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: libllama picks a random seed


@dataclass(frozen=True)
class SamplerSettings:
    seed: int = RANDOM_SEED
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_keep: int = 0
    ignore_eos: bool = False


class Sampler:
    """A sampler chain in llama-server's default order: penalties, top-k,
    typical, top-p, min-p, temperature, then a seeded draw (greedy at temp <= 0)."""

    def __init__(self, model: Model, s: SamplerSettings) -> None:
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lib.llama_sampler_chain_init(params)
        self._chain: Any = chain
        weakref.finalize(self, lib.llama_sampler_free, chain)
        add = lambda smpl: lib.llama_sampler_chain_add(chain, smpl)
        n_vocab = model.vocab.n_tokens
        if s.ignore_eos:
            # Ban end-of-generation tokens the way llama-server does: -inf bias.
            eog = [t for t in (model.vocab.eos, model.vocab.eot) if t >= 0]
            biases = ffi.new("llama_logit_bias[]", [(t, float("-inf")) for t in eog])
            add(lib.llama_sampler_init_logit_bias(n_vocab, len(eog), biases))
        if s.repeat_penalty != 1.0 or s.presence_penalty != 0.0 or s.frequency_penalty != 0.0:
            add(lib.llama_sampler_init_penalties(
                max(s.repeat_last_n, 0),
                s.repeat_penalty, s.frequency_penalty, s.presence_penalty,
            ))
        if s.temperature <= 0.0:
            add(lib.llama_sampler_init_greedy())
        else:
            min_keep = max(s.min_keep, 1)
            add(lib.llama_sampler_init_top_k(s.top_k))
            add(lib.llama_sampler_init_typical(s.typical_p, min_keep))
            add(lib.llama_sampler_init_top_p(s.top_p, min_keep))
            add(lib.llama_sampler_init_min_p(s.min_p, min_keep))
            add(lib.llama_sampler_init_temp(s.temperature))
            add(lib.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        self.seed: int = int(lib.llama_sampler_get_seed(chain))

    def sample(self, ctx: Context, idx: int) -> int:
        """Sample from batch output ``idx`` and accept the token into the chain."""
        return int(lib.llama_sampler_sample(self._chain, ctx.ptr, idx))

    def accept(self, token: int) -> None:
        lib.llama_sampler_accept(self._chain, token)
