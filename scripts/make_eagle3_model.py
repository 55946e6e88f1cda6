#!/usr/bin/env python3
"""Generate a tiny target model and an EAGLE-3 draft model for it, for tests (seeded, ~13 MB and ~1 MB).

EAGLE-3 (``--spec-type draft-eagle3 -md DRAFT``) drafts with one decoder layer that takes, at position P, the
token ``t[P+1]`` and ``g[P]``: a projection (``fc``) of the target's hidden states at the input of three of its
layers (``eagle3.target_layers``) at P. The draft has no token embeddings or output matrix of its own: it uses
the target's, through the context it is given (``ctx_other``), as most published EAGLE-3 drafts do.

The weights are random but shaped so that drafting means something:

- the target is a trunk whose layers add little to the residual stream, so its next token is mostly a
  function of the current one, as in ``make_mtp_model.py``: ``llama`` (attention), or ``lfm2`` (LFM2's hybrid
  of short-convolution layers, a recurrent state, and attention layers: memory that cannot be cut part-way);
- the draft's attention looks at its own position (the query and key are the normalized token embedding, the
  query scaled up; RoPE leaves only a position's own score unrotated) and passes that embedding through,
  ``--token-share`` times the normalized ``g`` beside it in the residual (``norm_before_residual``), so the
  draft predicts the trunk's function of ``t[P+1]``: ``t[P+2]``, mostly, not always. ``g`` is large enough
  that pairing it with the wrong position changes some drafts.

The tokenizer (every ``tokenizer.*`` key) is copied from the default model into both files.

    python scripts/make_eagle3_model.py --out-dir DIR [--base MODEL.gguf] [--seed N] [--shape tiny|smollm2-135m]
                                        [--target-arch llama|lfm2] [--layer-std X] [--token-share X]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llama_model import SHAPES, RandomWeights, Shape, base_or_default, start_model, write_model

__all__ = ["TARGET_ARCHS", "TARGET_LAYERS", "make", "target_model"]

TARGET_ARCHS = ("llama", "lfm2")

TARGET_LAYERS = {"tiny": (1, 2, 3), "smollm2-135m": (2, 15, 27)}  # the converter's default: 2, L/2, L-3
DRAFT_HEADS = {"tiny": 2, "smollm2-135m": 9}


def make(out_dir: Path, base: Path, *, shape: str = "tiny", seed: int = 0, layer_std: float = 0.001,
         token_share: float = 8.0, query_scale: float = 6.0, target_layers: Sequence[int] | None = None,
         n_layer: int | None = None, target_arch: str = "llama") -> tuple[Path, Path]:
    """Write ``target.gguf`` and ``eagle3.gguf`` to ``out_dir`` (tokenizer from ``base``); their paths.
    ``target_layers``: the target layers the draft reads (default: the shape's; one may be the target's
    ``n_layer``, its final state)."""
    s = SHAPES[shape]
    if n_layer is None:
        n_layer = 4 if shape == "tiny" else s.n_layer
    layers = tuple(target_layers or TARGET_LAYERS[shape])
    out_dir.mkdir(parents=True, exist_ok=True)
    w = RandomWeights(seed)
    if target_arch not in TARGET_ARCHS:
        raise ValueError(f"target_arch must be one of {', '.join(TARGET_ARCHS)}")
    target, _, _ = target_model(out_dir / "target.gguf", base, s, n_layer, w, layer_std, target_arch)
    draft = _draft(out_dir / "eagle3.gguf", base, s, DRAFT_HEADS[shape], w, layers, token_share, query_scale,
                   layer_std)
    return target, draft


def target_model(out: Path, base: Path, s: Shape, n_layer: int, w: RandomWeights, layer_std: float,
                 arch: str) -> tuple[Path, npt.NDArray[Any], npt.NDArray[Any]]:
    """The target: its path, token embeddings and output matrix."""
    writer, n_vocab = start_model(out, base, arch, f"tiny-eagle3-target-{arch}", n_ctx_train=s.n_ctx_train,
                                  n_embd=s.n_embd, n_layer=n_layer)
    head = s.n_embd // s.n_head
    n_embd = s.n_embd
    conv = [arch == "lfm2" and i % 2 == 0 for i in range(n_layer)]  # lfm2: every other layer a convolution
    l_cache = 3  # the short convolution's kernel
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv([0 if c else s.n_head_kv for c in conv] if arch == "lfm2" else s.n_head_kv)
    writer.add_rope_dimension_count(head)
    writer.add_rope_freq_base(s.rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)
    if arch == "lfm2":
        writer.add_uint32("lfm2.shortconv.l_cache", l_cache)
    std = 1.0 / np.sqrt(n_embd)

    head_tensors = dict(w.embeddings_and_output(n_vocab, n_embd))

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        for name, data in head_tensors.items():
            # LFM2's final norm has its own name
            yield ("token_embd_norm.weight" if arch == "lfm2" and name == "output_norm.weight" else name), data
        for i in range(n_layer):
            yield f"blk.{i}.attn_norm.weight", w.ones(n_embd)
            if conv[i]:
                yield f"blk.{i}.shortconv.conv.weight", w.rand(n_embd, l_cache, std=0.5)
                yield f"blk.{i}.shortconv.in_proj.weight", w.rand(3 * n_embd, n_embd, std=std)
                yield f"blk.{i}.shortconv.out_proj.weight", w.rand(n_embd, n_embd, std=layer_std)
            else:
                yield f"blk.{i}.attn_q.weight", w.rand(n_embd, n_embd, std=std)
                yield f"blk.{i}.attn_k.weight", w.rand(s.n_head_kv * head, n_embd, std=std)
                yield f"blk.{i}.attn_v.weight", w.rand(s.n_head_kv * head, n_embd, std=std)
                yield f"blk.{i}.attn_output.weight", w.rand(n_embd, n_embd, std=layer_std)
                if arch == "lfm2":
                    yield f"blk.{i}.attn_q_norm.weight", w.ones(head)
                    yield f"blk.{i}.attn_k_norm.weight", w.ones(head)
            yield f"blk.{i}.ffn_norm.weight", w.ones(n_embd)
            yield f"blk.{i}.ffn_gate.weight", w.rand(s.n_ff, n_embd, std=std)
            yield f"blk.{i}.ffn_up.weight", w.rand(s.n_ff, n_embd, std=std)
            yield f"blk.{i}.ffn_down.weight", w.rand(n_embd, s.n_ff, std=layer_std)

    write_model(writer, tensors())
    return out, head_tensors["token_embd.weight"], head_tensors["output.weight"]


def _draft(out: Path, base: Path, s: Shape, n_head: int, w: RandomWeights, layers: tuple[int, ...],
           token_share: float, query_scale: float, layer_std: float) -> Path:
    n_embd = s.n_embd  # the target's: the draft takes its token embeddings and output matrix
    head = n_embd // n_head
    writer, _ = start_model(out, base, "eagle3", "tiny-eagle3-draft", n_ctx_train=s.n_ctx_train, n_embd=n_embd,
                            n_layer=1)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    # the pip gguf package predates EAGLE-3: its keys by name (llama.cpp's llama-arch.cpp)
    writer.add_array("eagle3.target_layers", list(layers))
    writer.add_uint32("eagle3.target_hidden_size", n_embd)
    writer.add_bool("eagle3.norm_before_residual", True)
    eye = np.eye(n_embd, dtype=np.float32)
    zero = np.zeros((n_embd, n_embd), dtype=np.float32)
    std = 1.0 / np.sqrt(n_embd)

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        # numpy shapes are ggml's ne reversed: (out, in); attention's input is [normed token | normed g]
        yield "fc.weight", w.rand(n_embd, 3 * n_embd, std=1.0 / np.sqrt(3 * n_embd))
        yield "output_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield "blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield "blk.0.attn_norm_2.weight", np.ones(n_embd, dtype=np.float32)
        yield "blk.0.attn_q.weight", np.concatenate([query_scale * eye, zero], axis=1)
        yield "blk.0.attn_k.weight", np.concatenate([eye, zero], axis=1)
        yield "blk.0.attn_v.weight", np.concatenate([eye, zero], axis=1)
        yield "blk.0.attn_output.weight", token_share * eye
        yield "blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield "blk.0.ffn_gate.weight", w.rand(s.n_ff, n_embd, std=std)
        yield "blk.0.ffn_up.weight", w.rand(s.n_ff, n_embd, std=std)
        yield "blk.0.ffn_down.weight", w.rand(n_embd, s.n_ff, std=layer_std)

    write_model(writer, tensors())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True, type=Path, help="directory for target.gguf and eagle3.gguf")
    ap.add_argument("--base", type=Path, help="model whose tokenizer to copy (default: the default model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny",
                    help="the target's sizes (smollm2-135m: the default model's, for benchmarks)")
    ap.add_argument("--target-arch", choices=TARGET_ARCHS, default="llama")
    ap.add_argument("--layer-std", type=float, default=0.001,
                    help="spread of what each layer adds to the residual stream (smaller: drafts taken more often)")
    ap.add_argument("--token-share", type=float, default=8.0,
                    help="the token's weight against g's in the draft's output (larger: drafts taken more often)")
    args = ap.parse_args(argv)
    target, draft = make(args.out_dir, base_or_default(args.base), shape=args.shape, seed=args.seed,
                         layer_std=args.layer_std, token_share=args.token_share, target_arch=args.target_arch)
    print(f"wrote {target} and {draft}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
