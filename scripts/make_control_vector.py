#!/usr/bin/env python3
"""Generate a test control vector for a llama-architecture base model (seeded, no downloads).

A control vector GGUF (``general.architecture=controlvector``, ``controlvector.model_hint`` = the base's
architecture, ``direction.N`` for layers 1..n_layer-1) with a direction large enough to change greedy output;
written by scripts/make_lora.py's ``make(kind="cvec")``.

    python scripts/make_control_vector.py --model MODEL.gguf --out CV.gguf [--seed S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_lora import make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", type=Path, required=True, help="the base model GGUF")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    make(a.model, a.out, "cvec", a.seed)


if __name__ == "__main__":
    main()
