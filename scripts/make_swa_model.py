#!/usr/bin/env python3
"""Generate a tiny random-weight sliding-window-attention model for tests (seeded, about 13 MB).

Architecture ``olmo2`` with ``olmo2.attention.sliding_window`` set: llama.cpp's olmo2 loader then uses
standard SWA with its default pattern of 4 (layers 0-2 sliding, layer 3 full attention), so the context
gets the interleaved SWA KV cache whose sliding part cannot be cut part-way — the memory context
checkpoints exist for. (phi3 reads the key too, but the pinned llama.cpp switches its SWA off.)

The tokenizer (every ``tokenizer.*`` key) is copied from the default model, so prompts tokenize as for
SmolLM2; the weights are random (the output means nothing but is deterministic).

    python scripts/make_swa_model.py --out PATH [--base MODEL.gguf] [--seed N] [--n-swa N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llama_model import RandomWeights, base_or_default, start_model, write_model

__all__ = ["make"]

ARCH = "olmo2"


def make(out: Path, base: Path, *, seed: int = 0, n_swa: int = 16, n_embd: int = 64, n_layer: int = 4,
         n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, n_ctx_train: int = 4096) -> Path:
    """Write the model to ``out`` (tokenizer from ``base``) and return it."""
    writer, n_vocab = start_model(out, base, ARCH, "tiny-swa-olmo2", n_ctx_train=n_ctx_train, n_embd=n_embd,
                                  n_layer=n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_sliding_window(n_swa)

    w = RandomWeights(seed)
    rand, ones = w.rand, w.ones
    head = n_embd // n_head

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        yield from w.embeddings_and_output(n_vocab, n_embd)
        for i in range(n_layer):
            yield f"blk.{i}.attn_q.weight", rand(n_embd, n_embd)
            yield f"blk.{i}.attn_k.weight", rand(n_head_kv * head, n_embd)
            yield f"blk.{i}.attn_v.weight", rand(n_head_kv * head, n_embd)
            yield f"blk.{i}.attn_output.weight", rand(n_embd, n_embd)
            yield f"blk.{i}.attn_q_norm.weight", ones(n_embd)
            yield f"blk.{i}.attn_k_norm.weight", ones(n_head_kv * head)
            yield f"blk.{i}.post_attention_norm.weight", ones(n_embd)
            yield from w.gated_ffn(i, n_embd, n_ff)
            yield f"blk.{i}.post_ffw_norm.weight", ones(n_embd)

    write_model(writer, tensors())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="GGUF file to write")
    ap.add_argument("--base", type=Path, help="model whose tokenizer to copy (default: the default model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-swa", type=int, default=16, help="sliding window size in tokens")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make(args.out, base_or_default(args.base), seed=args.seed, n_swa=args.n_swa)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
