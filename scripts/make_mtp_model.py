#!/usr/bin/env python3
"""Generate a tiny model with multi-token-prediction (NextN) heads, for tests (seeded, ~13 MB).

Architecture ``glm4moe`` (GLM-4.5's) with one ``nextn`` block after the trunk (``nextn_predict_layers = 1``),
or ``mimo2`` (MiMo-V2's) with several, which llama.cpp chains (draft step i runs head i). llama.cpp runs the
blocks in a context of type ``LLAMA_CONTEXT_TYPE_MTP`` — the draft of ``--spec-type draft-mtp``.

The weights are random but shaped so that drafting means something: the trunk's layers add little to the
residual stream, so the next token is mostly a function of the current one (plus some context), and the
MTP head's ``eh_proj`` passes the normalized token embedding through, so it predicts that same function of
the token it is given. Its drafts are then mostly, not always, what the target samples — both the accept
and the reject paths run. The tokenizer (every ``tokenizer.*`` key) is copied from the default model.

    python scripts/make_mtp_model.py --out PATH [--base MODEL.gguf] [--arch glm4moe|mimo2] [--heads N] [--seed N]
                                     [--shape tiny|smollm2-135m] [--layer-std X]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llama_model import SHAPES, RandomWeights, base_or_default, start_model, write_model

__all__ = ["ARCHS", "make"]

ARCHS = ("glm4moe", "mimo2")


def make(out: Path, base: Path, *, arch: str = "glm4moe", n_heads: int = 1, seed: int = 0, n_embd: int = 64,
         n_layer: int = 2, n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, n_expert: int = 2,
         n_ff_exp: int = 64, layer_std: float = 0.001, h_std: float = 0.01, n_ctx_train: int = 4096) -> Path:
    """Write the model to ``out`` (tokenizer from ``base``) and return it. ``arch``: ``glm4moe`` (one head, a
    MoE block as GLM-4.5's) or ``mimo2`` (``n_heads`` dense heads, chained as MiMo-V2's); ``n_heads=0`` leaves
    the NextN blocks out (a model --spec-type draft-mtp must refuse)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r} (one of {', '.join(ARCHS)})")
    if arch == "glm4moe" and n_heads > 1:
        raise ValueError("llama.cpp's glm4moe runs one NextN head")
    writer, n_vocab = start_model(out, base, arch, f"tiny-mtp-{arch}", n_ctx_train=n_ctx_train, n_embd=n_embd,
                                  n_layer=n_layer + n_heads)
    head = n_embd // n_head
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_expert_feed_forward_length(n_ff_exp)
    writer.add_nextn_predict_layers(n_heads)
    if arch == "glm4moe":
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(1)
        writer.add_expert_shared_count(1)
        writer.add_expert_weights_scale(1.0)
        writer.add_expert_weights_norm(False)
        writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        writer.add_leading_dense_block_count(n_layer)  # the trunk is dense; only the NextN block is MoE
    else:
        # mimo2 wants a sliding-window layer: the first, with a window as long as the training context
        writer.add_sliding_window(n_ctx_train)
        writer.add_sliding_window_pattern([True] + [False] * (n_layer + n_heads - 1))

    w = RandomWeights(seed)
    ones = w.ones
    std = 1.0 / np.sqrt(n_embd)  # the input projections': activations about 1 whatever the width

    def proj(*shape: int) -> npt.NDArray[Any]:
        return w.rand(*shape, std=std)

    def small(*shape: int) -> npt.NDArray[Any]:
        return w.rand(*shape, std=layer_std)

    def attention(i: int) -> Iterator[tuple[str, npt.NDArray[Any]]]:
        yield f"blk.{i}.attn_norm.weight", ones(n_embd)
        q, kv = proj(n_embd, n_embd), proj(2 * n_head_kv * head, n_embd)
        if arch == "mimo2":  # its MTP graph takes the fused projection only
            yield f"blk.{i}.attn_qkv.weight", np.concatenate([q, kv])
        else:
            yield f"blk.{i}.attn_q.weight", q
            yield f"blk.{i}.attn_k.weight", kv[: n_head_kv * head]
            yield f"blk.{i}.attn_v.weight", kv[n_head_kv * head :]
        yield f"blk.{i}.attn_output.weight", small(n_embd, n_embd)
        norm = "post_attention_norm" if arch == "glm4moe" else "ffn_norm"
        yield f"blk.{i}.{norm}.weight", ones(n_embd)

    def dense_ffn(i: int) -> Iterator[tuple[str, npt.NDArray[Any]]]:
        yield f"blk.{i}.ffn_gate.weight", proj(n_ff, n_embd)
        yield f"blk.{i}.ffn_up.weight", proj(n_ff, n_embd)
        yield f"blk.{i}.ffn_down.weight", small(n_embd, n_ff)

    def moe_ffn(i: int) -> Iterator[tuple[str, npt.NDArray[Any]]]:
        yield f"blk.{i}.ffn_gate_inp.weight", proj(n_expert, n_embd)
        yield f"blk.{i}.exp_probs_b.bias", np.zeros(n_expert, dtype=np.float32)
        yield f"blk.{i}.ffn_gate_exps.weight", proj(n_expert, n_ff_exp, n_embd)
        yield f"blk.{i}.ffn_up_exps.weight", proj(n_expert, n_ff_exp, n_embd)
        yield f"blk.{i}.ffn_down_exps.weight", small(n_expert, n_embd, n_ff_exp)
        yield f"blk.{i}.ffn_gate_shexp.weight", proj(n_ff_exp, n_embd)
        yield f"blk.{i}.ffn_up_shexp.weight", proj(n_ff_exp, n_embd)
        yield f"blk.{i}.ffn_down_shexp.weight", small(n_embd, n_ff_exp)

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        yield from w.embeddings_and_output(n_vocab, n_embd)
        for i in range(n_layer):
            yield from attention(i)
            yield from dense_ffn(i)
        for i in range(n_layer, n_layer + n_heads):
            yield from attention(i)
            yield from moe_ffn(i) if arch == "glm4moe" else dense_ffn(i)
            # [token embedding | target hidden state] -> n_embd: mostly the token's embedding (the hidden
            # state's share is large enough that pairing it with the wrong token shows)
            eh = np.concatenate([np.eye(n_embd, dtype=np.float32), w.rand(n_embd, n_embd, std=h_std * 8 * std)],
                                axis=1)
            yield f"blk.{i}.nextn.eh_proj.weight", eh
            # no shared_head_norm: the head then normalizes with output_norm, as the trunk does
            yield f"blk.{i}.nextn.enorm.weight", np.ones(n_embd, dtype=np.float32)
            yield f"blk.{i}.nextn.hnorm.weight", ones(n_embd)

    write_model(writer, tensors())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="GGUF file to write")
    ap.add_argument("--base", type=Path, help="model whose tokenizer to copy (default: the default model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arch", choices=ARCHS, default="glm4moe")
    ap.add_argument("--heads", type=int, default=1, help="NextN heads (0: none)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny",
                    help="the trunk's sizes (smollm2-135m: the default model's, for benchmarks)")
    ap.add_argument("--layer-std", type=float, default=0.001,
                    help="spread of what each layer adds to the residual stream (smaller: drafts taken more often; "
                         "about 0.0003 for smollm2-135m)")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shape = SHAPES[args.shape]
    make(args.out, base_or_default(args.base), arch=args.arch, n_heads=args.heads, seed=args.seed,
         n_embd=shape.n_embd, n_layer=shape.n_layer, n_head=shape.n_head, n_head_kv=shape.n_head_kv,
         n_ff=shape.n_ff, n_ff_exp=shape.n_ff // 2, n_ctx_train=shape.n_ctx_train, layer_std=args.layer_std)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
