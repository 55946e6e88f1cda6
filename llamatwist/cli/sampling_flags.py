# -*- test-case-name: tests.test_cli -*-
"""llama-server's "sampling params" that llamatwist implements.

The server's defaults for each request (`SamplingDefaults`) and the
server-wide output constraint (--grammar, -j: llama.cpp puts them in its
sampling group too). The other groups: common_flags.py, server_flags.py.
"""

from __future__ import annotations

from typing import Final

from llamatwist.cli.convert import (
    dry_base,
    float_range,
    int_min,
    integer,
    logit_bias,
    mirostat,
    nonempty,
    number,
    repeat_penalty,
    sampler_seq,
    samplers,
    seed,
    temperature,
)
from llamatwist.cli.flag import G_CHAT, G_SAMPLING, Flag
from llamatwist.sampling_defaults import DEFAULT_DRY_SEQUENCE_BREAKERS, DEFAULT_SAMPLERS, samplers_to_chars

__all__ = ["SAMPLING"]

SAMPLING: Final[tuple[Flag, ...]] = (
    # chat and prompt templates
    Flag(("--grammar",), "grammar", G_CHAT,
         "BNF-like grammar to constrain generations (default for every request)", None, nonempty,
         metavar="GRAMMAR", default="none"),
    Flag(("--grammar-file",), "grammar_file", G_CHAT,
         "file to read the grammar from", None, nonempty, metavar="FNAME", default="none"),
    Flag(("-j", "--json-schema"), "json_schema", G_CHAT,
         "JSON schema to constrain generations (default for every request)", None, nonempty,
         metavar="SCHEMA", default="none"),
    Flag(("-jf", "--json-schema-file"), "json_schema_file", G_CHAT,
         "file containing a JSON schema to constrain generations", None, nonempty,
         metavar="FILE", default="none"),
    # sampling (defaults for each request)
    Flag(("-s", "--seed"), "sampling.seed", G_SAMPLING,
         "RNG seed (-1 = random)", None, seed, metavar="SEED"),
    Flag(("--temp", "--temperature"), "sampling.temperature", G_SAMPLING,
         "temperature", "LLAMA_ARG_TEMPERATURE", temperature),
    Flag(("--top-k",), "sampling.top_k", G_SAMPLING,
         "top-k sampling (0 = disabled)", "LLAMA_ARG_TOP_K", integer),
    Flag(("--top-p",), "sampling.top_p", G_SAMPLING,
         "top-p sampling (1.0 = disabled)", "LLAMA_ARG_TOP_P",
         float_range(0.0, 1.0)),
    Flag(("--min-p",), "sampling.min_p", G_SAMPLING,
         "min-p sampling (0.0 = disabled)", "LLAMA_ARG_MIN_P",
         float_range(0.0, 1.0)),
    Flag(("--repeat-last-n",), "sampling.repeat_last_n", G_SAMPLING,
         "last n tokens to consider for penalize (0 = disabled)", None,
         int_min(0)),
    Flag(("--repeat-penalty",), "sampling.repeat_penalty", G_SAMPLING,
         "penalize repeat sequence of tokens (1.0 = disabled)",
         "LLAMA_ARG_REPEAT_PENALTY", repeat_penalty),
    Flag(("--presence-penalty",), "sampling.presence_penalty", G_SAMPLING,
         "repeat alpha presence penalty (0.0 = disabled)",
         "LLAMA_ARG_PRESENCE_PENALTY", number),
    Flag(("--frequency-penalty",), "sampling.frequency_penalty", G_SAMPLING,
         "repeat alpha frequency penalty (0.0 = disabled)",
         "LLAMA_ARG_FREQUENCY_PENALTY", number),
    Flag(("--samplers",), "sampling.samplers", G_SAMPLING,
         "samplers that will be used for generation in the order, separated by ';'",
         None, samplers, metavar="SAMPLERS",
         default="; ".join(DEFAULT_SAMPLERS)),
    Flag(("--sampler-seq", "--sampling-seq"), "sampling.samplers", G_SAMPLING,
         "simplified sequence for samplers that will be used", None, sampler_seq,
         metavar="SEQUENCE", default=samplers_to_chars(DEFAULT_SAMPLERS)),
    Flag(("--ignore-eos",), "sampling.ignore_eos", G_SAMPLING,
         "ignore end of stream token and continue generating (implies --logit-bias EOS-inf)"),
    Flag(("-bs", "--backend-sampling"), "sampling.backend_sampling", G_SAMPLING,
         "enable backend sampling (accepted for llama-server's command lines: llamatwist samples on the CPU, "
         "generation_settings and the start-up log say so)", "LLAMA_ARG_BACKEND_SAMPLING"),
    Flag(("--top-nsigma", "--top-n-sigma"), "sampling.top_n_sigma", G_SAMPLING,
         "top-n-sigma sampling (-1.0 = disabled)", None, number),
    Flag(("--xtc-probability",), "sampling.xtc_probability", G_SAMPLING,
         "xtc probability (0.0 = disabled)", None, number),
    Flag(("--xtc-threshold",), "sampling.xtc_threshold", G_SAMPLING,
         "xtc threshold (1.0 = disabled)", None, number),
    Flag(("--typical", "--typical-p"), "sampling.typical_p", G_SAMPLING,
         "locally typical sampling, parameter p (1.0 = disabled)", None, number),
    Flag(("--dry-multiplier",), "sampling.dry_multiplier", G_SAMPLING,
         "set DRY sampling multiplier (0.0 = disabled)", None, number),
    Flag(("--dry-base",), "sampling.dry_base", G_SAMPLING,
         "set DRY sampling base value (values < 1.0 are ignored)", None, dry_base),
    Flag(("--dry-allowed-length",), "sampling.dry_allowed_length", G_SAMPLING,
         "set allowed length for DRY sampling", None, int_min(0)),
    Flag(("--dry-penalty-last-n",), "sampling.dry_penalty_last_n", G_SAMPLING,
         "set DRY penalty for the last n tokens (0 = disable, -1 = context size)", None, int_min(-1)),
    Flag(("-r", "--reverse-prompt"), "sampling.stop", G_SAMPLING,
         "halt generation at PROMPT: a stop string of every request that gives none (repeatable)", None, str,
         metavar="PROMPT", default="none", append=True),
    Flag(("--dry-sequence-breaker",), "sampling.dry_sequence_breakers", G_SAMPLING,
         "add sequence breaker for DRY sampling, clearing out default breakers in the "
         "process; use \"none\" to not use any sequence breakers", None, str,
         metavar="STRING", default=", ".join(map(repr, DEFAULT_DRY_SEQUENCE_BREAKERS)), append=True),
    Flag(("--adaptive-target",), "sampling.adaptive_target", G_SAMPLING,
         "adaptive-p: select tokens near this probability (valid range 0.0 to 1.0; "
         "negative = disabled)", None, number),
    Flag(("--adaptive-decay",), "sampling.adaptive_decay", G_SAMPLING,
         "adaptive-p: decay rate for target adaptation over time (valid range 0.0 to 0.99)",
         None, float_range(0.0, 0.99)),
    Flag(("--dynatemp-range",), "sampling.dynatemp_range", G_SAMPLING,
         "dynamic temperature range (0.0 = disabled)", None, number),
    Flag(("--dynatemp-exp",), "sampling.dynatemp_exponent", G_SAMPLING,
         "dynamic temperature exponent", None, number),
    Flag(("--mirostat",), "sampling.mirostat", G_SAMPLING,
         "use Mirostat sampling; Top K, Nucleus and Locally Typical samplers are "
         "ignored if used (0 = disabled, 1 = Mirostat, 2 = Mirostat 2.0)", None, mirostat),
    Flag(("--mirostat-lr",), "sampling.mirostat_eta", G_SAMPLING,
         "Mirostat learning rate, parameter eta", None, number),
    Flag(("--mirostat-ent",), "sampling.mirostat_tau", G_SAMPLING,
         "Mirostat target entropy, parameter tau", None, number),
    Flag(("-l", "--logit-bias"), "sampling.logit_bias", G_SAMPLING,
         "modifies the likelihood of token appearing in the completion, i.e. "
         "`--logit-bias 15043+1` to increase likelihood of token ' Hello', or "
         "`--logit-bias 15043-1` to decrease likelihood of token ' Hello'",
         None, logit_bias, metavar="TOKEN_ID(+/-)BIAS", default="none", append=True),
)  # fmt: skip
