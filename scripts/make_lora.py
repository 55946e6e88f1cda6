#!/usr/bin/env python3
"""Generate test adapters for a llama-architecture base model (seeded, no downloads).

* ``lora``: a LoRA GGUF (``general.type=adapter``, ``adapter.type=lora``) with
  ``blk.N.ffn_down.weight.lora_a`` / ``.lora_b`` on the last layers; lora_b is
  large so the adapter measurably changes the logits at scale 1 (and scale 0
  leaves the base untouched).
* ``wrong``: the same adapter built for a different embedding size, which
  libllama refuses ("incorrect shape") when loading it onto the base.
* ``cvec``: a control vector GGUF (``general.architecture=controlvector``,
  ``direction.N`` per layer N >= 1) with a large direction.

Shapes are read from the base GGUF (ggml ne order: ffn_down is [n_ff, n_embd]).

    python scripts/make_lora.py --model MODEL.gguf --out PATH [--rank R] [--seed S] [--kind {lora,wrong,cvec}]

(``--base`` is the older spelling of ``--model``; scripts/make_control_vector.py is ``--kind cvec``.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gguf
import numpy as np

__all__ = ["make"]

RANK = 4
N_LAYERS_ADAPTED = 4  # the last layers: enough to move the output, cheap to write


def _base_dims(base: Path) -> tuple[str, int, int, int]:
    """(architecture, n_embd, n_ff, n_layer) of the base model."""
    r = gguf.GGUFReader(base)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    n_embd = int(r.fields[f"{arch}.embedding_length"].parts[-1][0])
    n_ff = int(r.fields[f"{arch}.feed_forward_length"].parts[-1][0])
    n_layer = int(r.fields[f"{arch}.block_count"].parts[-1][0])
    return arch, n_embd, n_ff, n_layer


def make(base: Path, out: Path, kind: str, seed: int = 0, rank: int = RANK) -> None:
    arch, n_embd, n_ff, n_layer = _base_dims(base)
    rng = np.random.default_rng(seed)
    if kind == "cvec":
        w = gguf.GGUFWriter(str(out), "controlvector")
        w.add_string("controlvector.model_hint", arch)
        w.add_uint32("controlvector.layer_count", n_layer - 1)
        for il in range(1, n_layer):
            w.add_tensor(f"direction.{il}", (rng.standard_normal(n_embd) * 4.0).astype(np.float32))
    elif kind in ("lora", "wrong"):
        if kind == "wrong":
            n_embd //= 2
        w = gguf.GGUFWriter(str(out), arch)
        w.add_string("general.type", "adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", float(rank))  # alpha = rank: scale 1 applies B·A as written
        for il in range(n_layer - N_LAYERS_ADAPTED, n_layer):
            name = f"blk.{il}.ffn_down.weight"
            # numpy shapes are ggml ne reversed: lora_a ne=[n_ff, r], lora_b ne=[r, n_embd]
            w.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, n_ff)) * 0.5).astype(np.float32))
            w.add_tensor(f"{name}.lora_b", (rng.standard_normal((n_embd, rank)) * 0.5).astype(np.float32))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", "--base", dest="base", type=Path, required=True, help="the base model GGUF")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rank", type=int, default=RANK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", choices=("lora", "wrong", "cvec"), default="lora")
    a = ap.parse_args()
    if a.rank < 1:
        ap.error("--rank must be at least 1")
    make(a.base, a.out, a.kind, a.seed, a.rank)


if __name__ == "__main__":
    main()
