#!/usr/bin/env python3
"""Generate a random-weight llama model with a real tokenizer (seeded), for places no real model can reach.

The GPU device check (``scripts/device_kit.py``) runs on a machine that cannot download the default model
and carries at most 64 MiB, so it brings only SmolLM2's tokenizer (``--vocab-only``, about 2 MB) and builds
there a model of the default model's exact shape: the same architecture, sizes and tensor layout, hence
the same work per token for a benchmark, and deterministic output for comparing two backends. The weights
are scaled so the output distribution is peaked (greedy choices are rarely near ties), though the text
means nothing.

    python scripts/make_llama_model.py --out PATH [--base MODEL.gguf] [--shape smollm2-135m|tiny]
                                       [--type f32|f16] [--seed N]
    python scripts/make_llama_model.py --vocab-only --out VOCAB.gguf [--base MODEL.gguf]

``--base`` (default: the default model) is any GGUF holding a tokenizer, a ``--vocab-only`` file included.
Quantize the result with llama.cpp's ``llama-quantize`` (``build_native.py --reference`` builds it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

__all__ = ["SHAPES", "RandomWeights", "Shape", "base_or_default", "copy_tokenizer", "make", "make_vocab", "start_model",
           "write_model"]

ARCH = "llama"


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    rope_theta: float


SHAPES = {
    # SmolLM2-135M's hyperparameters (tied embeddings: no output.weight)
    "smollm2-135m": Shape(n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536, n_ctx_train=8192,
                          rope_theta=100000.0),
    "tiny": Shape(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_ctx_train=2048, rope_theta=10000.0),
}


def copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> int:
    """Copy the base model's tokenizer keys; the vocabulary size."""
    n_vocab = 0
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
        if field.name == gguf.Keys.Tokenizer.LIST:
            n_vocab = len(field.data)
    return n_vocab


class RandomWeights:
    """Seeded float32 tensors for the tiny generated test models (numpy shapes are ggml's ne reversed:
    (out, in))."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def rand(self, *shape: int, std: float = 0.2) -> npt.NDArray[Any]:
        return (self._rng.standard_normal(shape) * std).astype(np.float32)

    def ones(self, n: int) -> npt.NDArray[Any]:
        """A norm's weights: about 1."""
        return (1.0 + self._rng.standard_normal(n) * 0.05).astype(np.float32)

    def gated_ffn(self, i: int, n_embd: int, n_ff: int) -> Iterator[tuple[str, npt.NDArray[Any]]]:
        """Block ``i``'s gated feed-forward matrices."""
        yield f"blk.{i}.ffn_gate.weight", self.rand(n_ff, n_embd)
        yield f"blk.{i}.ffn_up.weight", self.rand(n_ff, n_embd)
        yield f"blk.{i}.ffn_down.weight", self.rand(n_embd, n_ff)

    def embeddings_and_output(self, n_vocab: int, n_embd: int) -> Iterator[tuple[str, npt.NDArray[Any]]]:
        """F16 token embeddings, the output norm and an untied F16 output matrix (so that greedy picks do not
        echo the input token)."""
        yield "token_embd.weight", self.rand(n_vocab, n_embd, std=1.0).astype(np.float16)
        yield "output_norm.weight", self.ones(n_embd)
        yield "output.weight", self.rand(n_vocab, n_embd, std=0.5).astype(np.float16)


def start_model(out: Path, base: Path, arch: str, name: str, *, n_ctx_train: int, n_embd: int,
                n_layer: int) -> tuple[gguf.GGUFWriter, int]:
    """A writer for a tiny F16 test model of ``arch`` with ``base``'s tokenizer and its sizes; the vocabulary
    size."""
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = copy_tokenizer(gguf.GGUFReader(base), writer)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    return writer, n_vocab


def write_model(writer: gguf.GGUFWriter, tensors: Iterable[tuple[str, npt.NDArray[Any]]]) -> None:
    """Add the tensors and write the file out."""
    for name, data in tensors:
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def base_or_default(base: Path | None) -> Path:
    """``--base``, else the default model (fetched on first use)."""
    if base is not None:
        return base
    from llamatwist.models import ensure_default_model

    return Path(ensure_default_model())


def make_vocab(out: Path, base: Path) -> Path:
    """Write only ``base``'s tokenizer (no tensors) to ``out``: the input of :func:`make` elsewhere."""
    writer = gguf.GGUFWriter(str(out), ARCH)
    writer.add_name("tokenizer only")
    copy_tokenizer(gguf.GGUFReader(base), writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return out


def make(out: Path, base: Path, *, shape: Shape = SHAPES["smollm2-135m"], dtype: str = "f16",
         seed: int = 0) -> Path:
    """Write the model to ``out`` (tokenizer from ``base``) and return it."""
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}[dtype]
    matrix_type = np.float32 if dtype == "f32" else np.float16
    writer = gguf.GGUFWriter(str(out), ARCH)
    writer.add_name(f"random-{dtype}")
    writer.add_file_type(ftype)
    n_vocab = copy_tokenizer(gguf.GGUFReader(base), writer)
    s = shape
    head = s.n_embd // s.n_head
    writer.add_context_length(s.n_ctx_train)
    writer.add_embedding_length(s.n_embd)
    writer.add_block_count(s.n_layer)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_rope_dimension_count(head)
    writer.add_rope_freq_base(s.rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)

    rng = np.random.default_rng(seed)

    def rand(*shape: int, std: float) -> npt.NDArray[Any]:
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(matrix_type)

    def ones(n: int) -> npt.NDArray[Any]:
        return (1.0 + rng.standard_normal(n, dtype=np.float32) * 0.05).astype(np.float32)

    w = 1.0 / np.sqrt(s.n_embd)

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        # numpy shapes are ggml's ne reversed: (out, in). The tied embedding doubles as the output
        # matrix; at std 0.3 over 576 dimensions the logits spread by about 7, so greedy picks are clear.
        yield "token_embd.weight", rand(n_vocab, s.n_embd, std=0.3)
        yield "output_norm.weight", ones(s.n_embd)
        for i in range(s.n_layer):
            yield f"blk.{i}.attn_norm.weight", ones(s.n_embd)
            yield f"blk.{i}.attn_q.weight", rand(s.n_embd, s.n_embd, std=w)
            yield f"blk.{i}.attn_k.weight", rand(s.n_head_kv * head, s.n_embd, std=w)
            yield f"blk.{i}.attn_v.weight", rand(s.n_head_kv * head, s.n_embd, std=w)
            yield f"blk.{i}.attn_output.weight", rand(s.n_embd, s.n_embd, std=w)
            yield f"blk.{i}.ffn_norm.weight", ones(s.n_embd)
            yield f"blk.{i}.ffn_gate.weight", rand(s.n_ff, s.n_embd, std=w)
            yield f"blk.{i}.ffn_up.weight", rand(s.n_ff, s.n_embd, std=w)
            yield f"blk.{i}.ffn_down.weight", rand(s.n_embd, s.n_ff, std=1.0 / np.sqrt(s.n_ff))

    write_model(writer, tensors())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="GGUF file to write")
    ap.add_argument("--base", type=Path, help="GGUF whose tokenizer to copy (default: the default model)")
    ap.add_argument("--vocab-only", action="store_true", help="write only the tokenizer")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    ap.add_argument("--type", dest="dtype", choices=("f32", "f16"), default="f16",
                    help="matrix type (norms stay F32)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    base = base_or_default(args.base)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.vocab_only:
        make_vocab(args.out, base)
    else:
        make(args.out, base, shape=SHAPES[args.shape], dtype=args.dtype, seed=args.seed)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
