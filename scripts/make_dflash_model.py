#!/usr/bin/env python3
"""Generate a tiny target model and a DFlash draft model for it, for tests (seeded, ~13 MB and ~13 MB).

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

    python scripts/make_dflash_model.py --out-dir DIR [--base MODEL.gguf] [--seed N] [--target-arch llama|lfm2]
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
from make_eagle3_model import TARGET_ARCHS, TARGET_LAYERS, target_model
from make_llama_model import SHAPES, RandomWeights, base_or_default, start_model, write_model

__all__ = ["make"]

N_HEAD = 2
N_ROT = 8  # rotated dimensions of a head: the attention's flag dimension is past them, position-blind
BLOCK_SIZE = 8


def make(out_dir: Path, base: Path, *, seed: int = 0, layer_std: float = 0.001, token_share: float = 4.0,
         attn_gain: float = 1.0, target_arch: str = "llama", shape: str = "tiny") -> tuple[Path, Path]:
    """Write ``target.gguf`` (``target_arch``: llama, or lfm2, a hybrid; ``shape``: its sizes) and
    ``dflash.gguf`` to ``out_dir`` (tokenizer from ``base``); their paths."""
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
    ap.add_argument("--layer-std", type=float, default=0.001,
                    help="spread of what each target layer adds to the residual stream")
    args = ap.parse_args(argv)
    target, draft = make(args.out_dir, base_or_default(args.base), seed=args.seed, target_arch=args.target_arch,
                         shape=args.shape, layer_std=args.layer_std)
    print(f"wrote {target} and {draft}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
