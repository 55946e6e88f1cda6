#!/usr/bin/env python3
"""Generate a tiny target model and a DFlash draft model for it, for tests (seeded, ~15 MB and 13-27 MB).

DFlash (``--spec-type draft-dflash -md DRAFT``) drafts a whole block in one decode: the draft's KV cache holds
the target's hidden states at three of its layers (``dflash.target_layers``), projected (``fc``) and written in
as keys and values at the target's positions; a draft decodes ``[last token, MASK, MASK, ...]`` with
non-causal attention and reads a token at every MASK.

The target is make_eagle3_model.py's (a trunk whose next token is mostly a function of the current one). The
draft's weights are shaped so that drafting means something: its own token embeddings are the target's with
dimension 0 set to 1 (a flag: a real token) and the MASK row a constant; keys read only that flag (zero for
the injected target states), so every MASK attends mostly to the block's one real token, the last one, and
passes its embedding through to the target's output matrix: each MASK predicts the token after the last one.
The scores are kept low (``attn_gain``) so that the injected states still get a share of the attention: put
at the wrong positions, they change some drafts. The first draft token is then mostly what the target samples;
the later ones rarely are. The tokenizer (every ``tokenizer.*`` key) is copied from the default model into
both files, the draft's with a MASK token.

``--kind`` adds the heads of the two other kinds of DFlash draft, which libllama's graph runs:

- dspark (``--spec-type draft-dspark``): a Markov head whose bias for the token after the row before's choice
  is the target's own logits after it (``markov_gain`` of them), so a block's chain mostly follows the
  target's; a confidence head scoring each row around 0.5. dspark-bonus: the same Markov head, with a bonus
  anchor slot (``dflash.sample_from_anchor`` false) and no confidence head.
- dflash2: convolutions that pass their input through and a selector head with small random scores.

    python scripts/make_dflash_model.py --out-dir DIR [--base MODEL.gguf] [--seed N] [--target-arch llama|lfm2]
                                        [--shape tiny|smollm2-135m] [--layer-std X] [--kind KIND]
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
from make_eagle3_model import TARGET_ARCHS, TARGET_LAYERS, target_model
from make_llama_model import SHAPES, RandomWeights, base_or_default, start_model, write_model

__all__ = ["make"]

N_HEAD = 2
N_ROT = 8  # rotated dimensions of a head: the attention's flag dimension is past them, position-blind
BLOCK_SIZE = 8
# the draft's kinds: DFlash; DSpark (a Markov head and a confidence head); DSpark with a bonus anchor slot
# (dflash.sample_from_anchor false) and no confidence head; DFlash2 (convolutions and a selector head)
KINDS = ("dflash", "dspark", "dspark-bonus", "dflash2")
MARKOV_GAIN = 8.0  # the Markov head's weight beside the draft's own logits: about half its drafts are taken
CONV_KERNEL = 2
CONV_GROUP = 16
SELECTOR_RANK = 8
SELECTOR_TOP_K = 4


def make(out_dir: Path, base: Path, *, seed: int = 0, layer_std: float = 0.001, token_share: float = 4.0,
         attn_gain: float = 1.0, target_arch: str = "llama", shape: str = "tiny", kind: str = "dflash",
         markov_gain: float = MARKOV_GAIN) -> tuple[Path, Path]:
    """Write ``target.gguf`` (``target_arch``: llama, or lfm2, a hybrid; ``shape``: its sizes) and
    ``dflash.gguf`` (``kind``: one of KINDS) to ``out_dir`` (tokenizer from ``base``); their paths."""
    s = SHAPES[shape]
    out_dir.mkdir(parents=True, exist_ok=True)
    w = RandomWeights(seed)
    n_layer = 4 if shape == "tiny" else s.n_layer
    target, emb, output = target_model(out_dir / "target.gguf", base, s, n_layer, w, layer_std, target_arch)
    n_vocab, n_embd = emb.shape
    mask = n_vocab - 1
    head = n_embd // N_HEAD
    writer, _ = start_model(out_dir / "dflash.gguf", base, "dflash", "tiny-dflash-draft",
                            n_ctx_train=s.n_ctx_train, n_embd=n_embd, n_layer=1)
    writer.add_uint32(gguf.Keys.Tokenizer.MASK_ID, mask)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_ROT)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    # the pip gguf package predates DFlash: its keys by name (llama.cpp's llama-arch.cpp)
    writer.add_array("dflash.target_layers", list(TARGET_LAYERS[shape]))
    writer.add_uint32("dflash.block_size", BLOCK_SIZE)
    if kind == "dflash2":
        writer.add_uint32("dflash.conv_kernel_size", CONV_KERNEL)
        writer.add_uint32("dflash.conv_group_size", CONV_GROUP)
        writer.add_uint32("dflash.selector_rank", SELECTOR_RANK)
        writer.add_uint32("dflash.selector_top_k", SELECTOR_TOP_K)
    if kind == "dspark-bonus":
        writer.add_string("dflash.sample_from_anchor", "false")
        writer.add_string("dflash.has_confidence_head", "false")

    def flag_reader(col: int) -> npt.NDArray[Any]:
        """(n_embd, 2 * n_embd): each head's last (unrotated) dimension reads input dimension ``col``."""
        m = np.zeros((n_embd, n_embd), dtype=np.float32)
        for h in range(N_HEAD):
            m[h * head + head - 1, col] = 1.0
        return m

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        own = emb.astype(np.float32)
        own[:, 0] = 1.0  # real tokens carry the flag ...
        own[mask] = 0.0
        own[mask, 1] = 1.0  # ... the MASK does not: its query reads dimension 1
        yield "token_embd.weight", own.astype(np.float16)
        yield "output.weight", output
        fc = w.rand(n_embd, 3 * n_embd, std=1.0 / np.sqrt(3 * n_embd))
        fc[0] = 0.0  # the injected target states carry no flag: no MASK attends to them
        yield "fc.weight", fc
        yield "enc.output_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield "output_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield "blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield "blk.0.attn_q.weight", flag_reader(1)
        yield "blk.0.attn_k.weight", flag_reader(0)
        v = token_share * np.eye(n_embd, dtype=np.float32)
        v[0, 0] = 0.0  # the flag stays out of the output
        yield "blk.0.attn_v.weight", v
        yield "blk.0.attn_output.weight", np.eye(n_embd, dtype=np.float32)
        yield "blk.0.attn_q_norm.weight", np.full(head, attn_gain, dtype=np.float32)
        yield "blk.0.attn_k_norm.weight", np.full(head, attn_gain, dtype=np.float32)
        yield "blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield "blk.0.ffn_gate.weight", w.rand(s.n_ff, n_embd, std=1.0 / np.sqrt(n_embd))
        yield "blk.0.ffn_up.weight", w.rand(s.n_ff, n_embd, std=1.0 / np.sqrt(n_embd))
        yield "blk.0.ffn_down.weight", w.rand(n_embd, s.n_ff, std=layer_std)
        if kind.startswith("dspark"):
            # the Markov head: the bias for the token after ``prev`` is the target's own logits after it
            # (its layers add little), so the chain of a block follows the target's, mostly
            yield "markov_w1.weight", emb.astype(np.float16)
            yield "markov_w2.weight", (markov_gain * output.astype(np.float32)).astype(np.float16)
        if kind == "dspark":
            # the confidence head: around 0.5, so that p_min 0.5 stops some drafts part-way
            yield "conf_proj.weight", w.rand(1, 2 * n_embd, std=0.5 / np.sqrt(2 * n_embd))
            yield "conf_proj.bias", np.zeros(1, dtype=np.float32)
        if kind == "dflash2":
            # convolutions that pass their input through (tap 0: 1) and a selector that adds small scores
            # between neighbouring rows' candidates to the candidates' logits
            base_taps = np.zeros((2, CONV_KERNEL, n_embd), dtype=np.float32)
            base_taps[:, 0, :] = 1.0
            projected = 2 * CONV_KERNEL * (n_embd // CONV_GROUP)
            for part in ("attn", "ffn"):
                yield f"blk.0.{part}_conv_base", base_taps
                yield f"blk.0.{part}_conv_proj.weight", np.zeros((projected, n_embd), dtype=np.float32)
            yield "selector_predecessor.weight", w.rand(n_vocab, SELECTOR_RANK, std=1.0)
            yield "selector_successor.weight", w.rand(n_vocab, SELECTOR_RANK, std=1.0)
            yield "selector_hidden.weight", w.rand(SELECTOR_RANK, n_embd, std=0.5 / np.sqrt(n_embd))

    write_model(writer, tensors())
    return target, out_dir / "dflash.gguf"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True, type=Path, help="directory for target.gguf and dflash.gguf")
    ap.add_argument("--base", type=Path, help="model whose tokenizer to copy (default: the default model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-arch", choices=TARGET_ARCHS, default="llama")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny",
                    help="the target's sizes (smollm2-135m: the default model's, for benchmarks)")
    ap.add_argument("--kind", choices=KINDS, default="dflash", help="the kind of draft model")
    ap.add_argument("--layer-std", type=float, default=0.001,
                    help="spread of what each target layer adds to the residual stream")
    args = ap.parse_args(argv)
    target, draft = make(args.out_dir, base_or_default(args.base), seed=args.seed, target_arch=args.target_arch,
                         shape=args.shape, layer_std=args.layer_std, kind=args.kind)
    print(f"wrote {target} and {draft}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
