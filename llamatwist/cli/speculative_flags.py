"""Speculative decoding flags (llama-server's "speculative" -h group): the seed's names and the pinned
source's ``--spec-*`` names, each with its LLAMA_ARG_* variable."""

from __future__ import annotations

from typing import Final

from llamatwist.cli.convert import float_range, gpu_layers, int_min, nonempty, spec_type
from llamatwist.cli.flag import G_SPEC, Flag

__all__ = ["SPECULATIVE"]

SPECULATIVE: Final[tuple[Flag, ...]] = (
    Flag(("-md", "--model-draft", "--spec-draft-model"), "model_draft", G_SPEC,
         "draft model for speculative decoding (same vocabulary as the model); implies --spec-type draft-simple",
         "LLAMA_ARG_SPEC_DRAFT_MODEL", nonempty, metavar="FNAME", default="unused"),
    Flag(("--spec-type",), "spec_type", G_SPEC,
         "speculative decoding type: none, ngram-simple (prompt lookup, no draft model), draft-simple",
         "LLAMA_ARG_SPEC_TYPE", spec_type, metavar="TYPE"),
    Flag(("--draft-max", "--draft", "--draft-n", "--spec-draft-n-max"), "draft_max", G_SPEC,
         "number of tokens to draft for speculative decoding", "LLAMA_ARG_DRAFT_MAX", int_min(0)),
    Flag(("--draft-min", "--draft-n-min", "--spec-draft-n-min"), "draft_min", G_SPEC,
         "minimum number of draft tokens to use for speculative decoding", "LLAMA_ARG_DRAFT_MIN", int_min(0)),
    Flag(("--draft-p-min", "--spec-draft-p-min"), "draft_p_min", G_SPEC,
         "minimum speculative decoding probability (greedy) of a draft-model token", "LLAMA_ARG_DRAFT_P_MIN",
         float_range(0.0, 1.0), metavar="P"),
    Flag(("-cd", "--ctx-size-draft"), "ctx_size_draft", G_SPEC,
         "size of the draft model's context (0 = the model's -c)", "LLAMA_ARG_CTX_SIZE_DRAFT", int_min(0)),
    Flag(("-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft", "--spec-draft-ngl"), "gpu_layers_draft", G_SPEC,
         "number of draft model layers to store in VRAM (the CPU build keeps them on the CPU)",
         "LLAMA_ARG_N_GPU_LAYERS_DRAFT", gpu_layers),
    Flag(("-devd", "--device-draft", "--spec-draft-device"), "device_draft", G_SPEC,
         "devices for the draft model (the CPU build has only the CPU: 'none' or 'cpu')",
         "LLAMA_ARG_DEVICE_DRAFT", nonempty, metavar="DEVICES"),
    Flag(("--spec-ngram-simple-size-n",), "spec_ngram_size_n", G_SPEC,
         "ngram-simple: length of the lookup n-gram", None, int_min(1)),
    Flag(("--spec-ngram-simple-size-m",), "spec_ngram_size_m", G_SPEC,
         "ngram-simple: longest draft (the m-gram after a match)", None, int_min(1)),
    Flag(("--spec-ngram-simple-min-hits",), "spec_ngram_min_hits", G_SPEC,
         "ngram-simple: minimum hits for a draft", None, int_min(1)),
)
