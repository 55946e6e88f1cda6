#!/usr/bin/env python3
"""Generate a tiny Gemma 4 target model and a Gemma 4 assistant (MTP drafter) for it, for tests (seeded, ~15 MB
and ~13 MB).

A Gemma 4 assistant (``gemma4-assistant``, ``-md ASSISTANT --spec-type draft-mtp``) has no KV cache of its own:
its layers attend with their own queries over the target's KV cache (its sliding-window layers over the
target's last sliding-window layer, its full layers over the target's last layer). It takes the target's
token embedding of the pending token beside the target's final hidden state (``nextn.pre_projection``) and
puts out logits and the hidden state for its next step (``nextn.post_projection``); every draft step sits at
the pending token's position.

The weights are random but shaped so that drafting means something: the target's layers add little to the
residual stream (small post-norm weights), so its next token is mostly a function of the current one; the
assistant's pre-projection passes the token embedding through and its output matrix is the target's, so it
predicts that same function of the token it is given. Its drafts are then mostly, not always, what the target
samples. The tokenizer (every ``tokenizer.*`` key) is copied from the default model into both files.

    python scripts/make_gemma4_model.py --out-dir DIR [--base MODEL.gguf] [--seed N] [--layer-std X]
                                        [--shape tiny|smollm2-135m]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llama_model import RandomWeights, base_or_default, start_model, write_model

__all__ = ["SHAPES", "make"]

WINDOW = 512


@dataclass(frozen=True)
class Gemma4Shape:
    n_embd: int  # the target's hidden size (the assistant's embedding_length_out)
    n_embd_assistant: int  # the assistant's own (llama.cpp requires it to differ from the target's)
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int

    @property
    def swa(self) -> list[bool]:
        """Sliding-window, full, ...: the last layer is a full one (the assistant reads the last two)."""
        return [(self.n_layer - 1 - i) % 2 == 1 for i in range(self.n_layer)]


SHAPES = {
    "tiny": Gemma4Shape(n_embd=64, n_embd_assistant=128, n_layer=4, n_head=4, n_head_kv=2, head_dim=16, n_ff=128),
    # SmolLM2-135M's sizes, for benchmarks (its 30 layers, 576 wide; the assistant one step wider)
    "smollm2-135m": Gemma4Shape(n_embd=576, n_embd_assistant=640, n_layer=30, n_head=9, n_head_kv=3, head_dim=64,
                                n_ff=1536),
}


def _attention_keys(writer: gguf.GGUFWriter, arch: str, s: Gemma4Shape, pattern: list[bool]) -> None:
    """What a Gemma 4 target and its assistant share about attention (the assistant reads the target's KV)."""
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_key_length(s.head_dim)
    writer.add_value_length(s.head_dim)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    # the pip gguf package may predate Gemma 4: its keys by name (llama.cpp's llama-arch.cpp)
    writer.add_float32(f"{arch}.rope.freq_base_swa", 10000.0)
    writer.add_uint32(f"{arch}.attention.key_length_swa", s.head_dim)
    writer.add_uint32(f"{arch}.attention.value_length_swa", s.head_dim)
    writer.add_uint32(f"{arch}.attention.sliding_window", WINDOW)
    writer.add_array(f"{arch}.attention.sliding_window_pattern", pattern)


def make(out_dir: Path, base: Path, *, seed: int = 0, layer_std: float = 0.3,
         shape: str = "tiny") -> tuple[Path, Path]:
    """Write ``target.gguf`` and ``assistant.gguf`` (``shape``: one of SHAPES) to ``out_dir`` (tokenizer from
    ``base``); their paths."""
    s = SHAPES[shape]
    out_dir.mkdir(parents=True, exist_ok=True)
    w = RandomWeights(seed)
    target, n_vocab = start_model(out_dir / "target.gguf", base, "gemma4", f"{shape}-gemma4-target",
                                  n_ctx_train=4096, n_embd=s.n_embd, n_layer=s.n_layer)
    _attention_keys(target, "gemma4", s, s.swa)
    target.add_uint32("gemma4.embedding_length_per_layer_input", 0)
    emb = w.rand(n_vocab, s.n_embd, std=1.0).astype(np.float16)
    output = w.rand(n_vocab, s.n_embd, std=0.5).astype(np.float16)
    ones = np.ones(s.n_embd, dtype=np.float32)
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim

    def layer(i: int, n_embd: int, *, kv: bool, post: float) -> Iterator[tuple[str, npt.NDArray[Any]]]:
        std = 1.0 / np.sqrt(n_embd)
        yield f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield f"blk.{i}.attn_q.weight", w.rand(q_dim, n_embd, std=std)
        if kv:
            yield f"blk.{i}.attn_k.weight", w.rand(kv_dim, n_embd, std=std)
            yield f"blk.{i}.attn_v.weight", w.rand(kv_dim, n_embd, std=std)
            yield f"blk.{i}.attn_k_norm.weight", np.ones(s.head_dim, dtype=np.float32)
        yield f"blk.{i}.attn_output.weight", w.rand(n_embd, q_dim, std=std)
        yield f"blk.{i}.attn_q_norm.weight", np.ones(s.head_dim, dtype=np.float32)
        # what the layer adds to the residual stream is normalized, then scaled by these: kept small
        yield f"blk.{i}.post_attention_norm.weight", np.full(n_embd, post, dtype=np.float32)
        yield f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32)
        yield f"blk.{i}.ffn_gate.weight", w.rand(s.n_ff, n_embd, std=std)
        yield f"blk.{i}.ffn_up.weight", w.rand(s.n_ff, n_embd, std=std)
        yield f"blk.{i}.ffn_down.weight", w.rand(n_embd, s.n_ff, std=1.0 / np.sqrt(s.n_ff))
        yield f"blk.{i}.post_ffw_norm.weight", np.full(n_embd, post, dtype=np.float32)
        yield f"blk.{i}.layer_output_scale.weight", np.ones(1, dtype=np.float32)

    def target_tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        yield "token_embd.weight", emb
        yield "output.weight", output
        yield "output_norm.weight", ones  # exactly 1: the assistant's logits rank as the target's
        yield "rope_freqs.weight", np.ones(s.head_dim // 2, dtype=np.float32)
        for i in range(s.n_layer):
            yield from layer(i, s.n_embd, kv=True, post=layer_std)

    write_model(target, target_tensors())

    n_assist = 2  # a sliding-window layer and a full one, over the target's last two
    assistant, _ = start_model(out_dir / "assistant.gguf", base, "gemma4-assistant", f"{shape}-gemma4-assistant",
                               n_ctx_train=4096, n_embd=s.n_embd_assistant, n_layer=n_assist)
    _attention_keys(assistant, "gemma4-assistant", s, s.swa[-n_assist:])
    assistant.add_uint32("gemma4-assistant.embedding_length_out", s.n_embd)
    assistant.add_uint32("gemma4-assistant.nextn_predict_layers", n_assist)

    def assistant_tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        own = np.zeros((n_vocab, s.n_embd_assistant), dtype=np.float16)
        own[:, :s.n_embd] = output  # its (tied) output matrix is the target's, over the first n_embd dimensions
        yield "token_embd.weight", own
        yield "output_norm.weight", np.ones(s.n_embd_assistant, dtype=np.float32)
        pre = np.zeros((s.n_embd_assistant, 2 * s.n_embd), dtype=np.float32)
        pre[:s.n_embd, :s.n_embd] = np.eye(s.n_embd)  # [token embedding; target state] -> the token embedding
        yield "nextn.pre_projection.weight", pre
        yield "nextn.post_projection.weight", w.rand(s.n_embd, s.n_embd_assistant,
                                                     std=1.0 / np.sqrt(s.n_embd_assistant))
        yield "rope_freqs.weight", np.ones(s.head_dim // 2, dtype=np.float32)
        for i in range(n_assist):
            yield from layer(i, s.n_embd_assistant, kv=False, post=0.05)

    write_model(assistant, assistant_tensors())
    return out_dir / "target.gguf", out_dir / "assistant.gguf"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True, type=Path, help="directory for target.gguf and assistant.gguf")
    ap.add_argument("--base", type=Path, help="model whose tokenizer to copy (default: the default model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny",
                    help="the sizes (smollm2-135m: the default model's, for benchmarks)")
    ap.add_argument("--layer-std", type=float, default=0.3,
                    help="the target layers' post-norm weights: how much each adds to the residual stream")
    args = ap.parse_args(argv)
    target, assistant = make(args.out_dir, base_or_default(args.base), seed=args.seed, layer_std=args.layer_std,
                             shape=args.shape)
    print(f"wrote {target} and {assistant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
