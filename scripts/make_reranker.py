#!/usr/bin/env python3
"""Generate a TINY random-weight BERT reranker GGUF for tests (seeded, ~100 KB).

Arch ``bert`` with a classification head (``cls``: dense + tanh, then
``cls.output``: one logit), ``bert.pooling_type = rank``, so a libllama
context with LLAMA_POOLING_TYPE_RANK yields one score per sequence
(``n_cls_out`` = 1). The vocabulary is a small self-contained WordPiece one
(ASCII letters, digits, punctuation, word-continuation letters and common
English words), so any ASCII text tokenizes with the WPM tokenizer; other
characters become [UNK]. Token ids: [PAD]=0 [UNK]=1 [CLS]=2 (BOS) [SEP]=3
(EOS/SEP) [MASK]=4; like a converted BERT tokenizer, add_bos and add_eos are
on, so a rerank prompt is ``[CLS] query [SEP] document [SEP]``.

With ``--no-rank-head`` the same tiny model is written without the ``cls``
tensors and with mean pooling: an embedding model, not a reranker.

    python scripts/make_reranker.py --out PATH [--no-rank-head] [--seed N]

The scores mean nothing (random weights); they only differ between inputs.
"""

from __future__ import annotations

import argparse
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert_bert import (  # a sibling script, not a package
    POOLING_MEAN,
    POOLING_RANK,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    BertHParams,
    BertVocab,
    phantom_tokens,
    write_bert_gguf,
)
from make_llama_model import RandomWeights

__all__ = ["make", "tiny_vocab"]

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "as", "with", "be", "at", "by",
    "this", "have", "from", "or", "one", "had", "not", "but", "what", "all", "were", "when", "we", "there", "can",
    "an", "your", "which", "their", "said", "if", "do", "will", "each", "about", "how", "up", "out", "them", "then",
    "she", "many", "some", "so", "these", "would", "other", "into", "has", "more", "her", "two", "like", "him",
    "see", "time", "could", "no", "make", "than", "first", "been", "its", "who", "now", "people", "my", "made",
    "over", "did", "down", "only", "way", "find", "use", "may", "water", "long", "little", "very", "after", "words",
    "called", "just", "where", "most", "know", "a", "i", "you", "he", "they", "me", "us", "our", "his", "what",
    "why", "query", "document", "answer", "question", "search", "result", "relevant", "paris", "france", "capital",
    "city", "country", "river", "mountain", "cat", "dog", "mat", "sits", "bird", "fish", "tree", "car", "train",
    "plane", "ship", "sun", "moon", "star", "sky", "red", "green", "blue", "black", "white", "good", "bad", "big",
    "small", "old", "new", "hot", "cold", "day", "night", "weather", "today", "tomorrow", "machine", "learning",
    "model", "data", "text", "embedding", "rank", "score", "test", "hello", "world", "python", "code", "computer",
    "science", "math", "music",
]


def tiny_vocab() -> BertVocab:
    """A ~300-token WordPiece vocabulary that covers every ASCII word."""
    pieces: list[str] = list(SPECIALS)
    seen = set(pieces)

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            pieces.append(p)

    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        add(ch)
    for ch in string.ascii_lowercase + string.digits:
        add("##" + ch)
    for w in WORDS:
        add(w)
    for suffix in ("s", "ed", "ing", "er", "ly", "es"):
        add("##" + suffix)
    control = set(range(len(SPECIALS)))
    return BertVocab(
        tokens=phantom_tokens(pieces, control),
        toktypes=[TOKEN_CONTROL if i in control else TOKEN_NORMAL for i in range(len(pieces))],
        special_ids={"pad": 0, "unk": 1, "cls": 2, "bos": 2, "sep": 3, "eos": 3, "mask": 4},
    )


def make(out: Path, *, rank_head: bool = True, seed: int = 1234, n_embd: int = 32, n_layer: int = 2,
         n_head: int = 2, n_ff: int = 64, n_ctx_train: int = 512) -> Path:
    """Write the tiny model to ``out`` and return it."""
    vocab = tiny_vocab()
    hp = BertHParams(n_vocab=len(vocab.tokens), n_embd=n_embd, n_ff=n_ff, n_layer=n_layer, n_head=n_head,
                     n_ctx_train=n_ctx_train, n_token_types=2, norm_eps=1e-12)
    w = RandomWeights(seed)
    rand, ones = w.rand, w.ones

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        # HF (out, in) layout, GGUF names
        yield "token_embd.weight", rand(hp.n_vocab, n_embd, std=1.0)
        yield "position_embd.weight", rand(n_ctx_train, n_embd, std=0.1)
        yield "token_types.weight", rand(2, n_embd, std=0.1)
        yield "token_embd_norm.weight", ones(n_embd)
        yield "token_embd_norm.bias", rand(n_embd, std=0.02)
        for i in range(n_layer):
            for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
                yield f"blk.{i}.{part}.weight", rand(n_embd, n_embd)
                yield f"blk.{i}.{part}.bias", rand(n_embd, std=0.02)
            yield f"blk.{i}.attn_output_norm.weight", ones(n_embd)
            yield f"blk.{i}.attn_output_norm.bias", rand(n_embd, std=0.02)
            yield f"blk.{i}.ffn_up.weight", rand(n_ff, n_embd)
            yield f"blk.{i}.ffn_up.bias", rand(n_ff, std=0.02)
            yield f"blk.{i}.ffn_down.weight", rand(n_embd, n_ff)
            yield f"blk.{i}.ffn_down.bias", rand(n_embd, std=0.02)
            yield f"blk.{i}.layer_output_norm.weight", ones(n_embd)
            yield f"blk.{i}.layer_output_norm.bias", rand(n_embd, std=0.02)
        if rank_head:
            yield "cls.weight", rand(n_embd, n_embd, std=0.5)
            yield "cls.bias", rand(n_embd, std=0.1)
            yield "cls.output.weight", rand(1, n_embd, std=1.0)
            yield "cls.output.bias", rand(1, std=0.1)

    name = "tiny-bert-reranker" if rank_head else "tiny-bert-embedder"
    write_bert_gguf(out, hp, vocab, tensors(), name=name, pooling=POOLING_RANK if rank_head else POOLING_MEAN,
                    outtype="f32")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="GGUF file to write")
    ap.add_argument("--no-rank-head", action="store_true", help="omit the classification head (mean pooling)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make(args.out, rank_head=not args.no_rank_head, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
