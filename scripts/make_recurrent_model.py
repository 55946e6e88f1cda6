#!/usr/bin/env python3
"""Generate a tiny random-weight recurrent (Mamba) or hybrid (Jamba) model for tests (seeded, a few MB).

- ``mamba``: every layer a Mamba block, so the memory is only a recurrent state per sequence
  (``llama_model_is_recurrent``): it holds the last position, nothing before it can be cut away.
- ``jamba``: Mamba blocks with an attention block every ``--attn-every`` layers (a KV cache beside the
  recurrent state, ``llama_model_is_hybrid``), each followed by a dense feed-forward block.

These are the memories that context checkpoints and speculative decoding's rollback must handle (and that
llama-server meets in Mamba, Jamba, Granite-4, LFM2, Nemotron-H, Qwen3-Next...). The tokenizer (every
``tokenizer.*`` key) is copied from the default model, so prompts tokenize as for SmolLM2; the weights are
random (the output means nothing but is deterministic).

    python scripts/make_recurrent_model.py --out PATH [--arch mamba|jamba] [--base MODEL.gguf] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llama_model import RandomWeights, base_or_default, start_model, write_model

__all__ = ["ARCHS", "make"]

ARCHS = ("mamba", "jamba")


def make(out: Path, base: Path, *, arch: str = "mamba", seed: int = 0, n_embd: int = 64, n_layer: int = 4,
         d_state: int = 8, d_conv: int = 4, attn_every: int = 2, n_head: int = 4, n_head_kv: int = 2,
         n_ff: int = 128, n_ctx_train: int = 4096) -> Path:
    """Write the model to ``out`` (tokenizer from ``base``) and return it."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}")
    writer, n_vocab = start_model(out, base, arch, f"tiny-{arch}", n_ctx_train=n_ctx_train, n_embd=n_embd,
                                  n_layer=n_layer)
    d_inner = 2 * n_embd  # llama.cpp supports only an expansion factor of 2
    dt_rank = max(1, n_embd // 16)
    attention = [arch == "jamba" and i % attn_every == attn_every - 1 for i in range(n_layer)]
    writer.add_ssm_conv_kernel(d_conv)
    writer.add_ssm_inner_size(d_inner)
    writer.add_ssm_state_size(d_state)
    writer.add_ssm_time_step_rank(dt_rank)
    writer.add_layer_norm_rms_eps(1e-6)
    if arch == "jamba":
        writer.add_head_count(n_head)
        writer.add_head_count_kv([n_head_kv if a else 0 for a in attention])  # 0: a Mamba layer
        writer.add_feed_forward_length(n_ff)
    else:
        writer.add_head_count(0)
        writer.add_feed_forward_length(0)

    w = RandomWeights(seed)
    rand, ones = w.rand, w.ones
    head = n_embd // n_head

    def mamba(i: int) -> Iterator[tuple[str, npt.NDArray[Any]]]:
        # numpy shapes are ggml's ne reversed: (out, in)
        yield f"blk.{i}.ssm_in.weight", rand(2 * d_inner, n_embd)
        yield f"blk.{i}.ssm_conv1d.weight", rand(d_inner, d_conv, std=0.5)
        yield f"blk.{i}.ssm_conv1d.bias", rand(d_inner, std=0.1)
        yield f"blk.{i}.ssm_x.weight", rand(dt_rank + 2 * d_state, d_inner)
        yield f"blk.{i}.ssm_dt.weight", rand(d_inner, dt_rank)
        yield f"blk.{i}.ssm_dt.bias", rand(d_inner, std=0.1)
        # A = -exp(A_log), negative so that the state decays (as the converter writes it)
        yield f"blk.{i}.ssm_a", -np.tile(np.arange(1, d_state + 1, dtype=np.float32), (d_inner, 1))
        yield f"blk.{i}.ssm_d", ones(d_inner)
        yield f"blk.{i}.ssm_out.weight", rand(n_embd, d_inner)
        if arch == "jamba":
            yield f"blk.{i}.ssm_dt_norm.weight", ones(dt_rank)
            yield f"blk.{i}.ssm_b_norm.weight", ones(d_state)
            yield f"blk.{i}.ssm_c_norm.weight", ones(d_state)

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        yield from w.embeddings_and_output(n_vocab, n_embd)
        for i in range(n_layer):
            yield f"blk.{i}.attn_norm.weight", ones(n_embd)
            if attention[i]:
                yield f"blk.{i}.attn_q.weight", rand(n_embd, n_embd)
                yield f"blk.{i}.attn_k.weight", rand(n_head_kv * head, n_embd)
                yield f"blk.{i}.attn_v.weight", rand(n_head_kv * head, n_embd)
                yield f"blk.{i}.attn_output.weight", rand(n_embd, n_embd)
            else:
                yield from mamba(i)
            if arch == "jamba":
                yield f"blk.{i}.ffn_norm.weight", ones(n_embd)
                yield from w.gated_ffn(i, n_embd, n_ff)

    write_model(writer, tensors())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="GGUF file to write")
    ap.add_argument("--arch", choices=ARCHS, default="mamba")
    ap.add_argument("--base", type=Path, help="model whose tokenizer to copy (default: the default model)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make(args.out, base_or_default(args.base), arch=args.arch, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
