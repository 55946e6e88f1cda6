#!/usr/bin/env python3
"""A tiny vision model for the multimodal tests: a text model plus a random-weight LLaVA projector.

No small vision GGUF is on PyPI (the local mirror has no SmolVLM, moondream or LLaVA package), so the
projector is generated with the `gguf` package, seeded: a CLIP-style ViT ("mlp" projector type, LLaVA-1.5's
layout as libmtmd's clip.cpp loads it) over 32x32 images in 8x8 patches (16 image tokens), 2 blocks of width
64, then a two-layer MLP into the text model's embedding size. ``model.gguf`` is the text model (the
project's default SmolLM2-135M unless ``--model`` names another llama-architecture GGUF), linked or copied.

Random weights mean the image embeddings carry no meaning, but they are deterministic and depend on the
pixels: the same image gives the same output at temperature 0, two different images give different ones.

    python scripts/make_vision_model.py --out-dir DIR [--model BASE.gguf] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import gguf
import numpy as np

__all__ = ["IMAGE_SIZE", "N_IMAGE_TOKENS", "PATCH_SIZE", "make", "make_mmproj"]

IMAGE_SIZE = 32
PATCH_SIZE = 8
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # the class token is dropped after the ViT
N_EMBD = 64  # the ViT's width
N_FF = 128
N_HEAD = 4
N_LAYER = 2  # LLaVA reads the second-to-last block's output: one block runs
N_PROJ_HIDDEN = 128


def _text_n_embd(model: Path) -> int:
    r = gguf.GGUFReader(model)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    return int(r.fields[f"{arch}.embedding_length"].parts[-1][0])


def make_mmproj(out: Path, n_embd_text: int, seed: int = 0) -> None:
    """Write the projector GGUF (numpy shapes are ggml's ne reversed)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.0) -> np.ndarray:
        fan_in = shape[-1] if len(shape) > 1 else 1
        s = scale or 1.0 / np.sqrt(fan_in)
        return (rng.standard_normal(shape) * s).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    writer = gguf.GGUFWriter(str(out), "clip")
    writer.add_string("general.name", "llamatwist test projector (random weights)")
    writer.add_uint32("general.file_type", 0)  # F32
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", N_EMBD)
    writer.add_uint32("clip.vision.feed_forward_length", N_FF)
    writer.add_uint32("clip.vision.block_count", N_LAYER)
    writer.add_uint32("clip.vision.attention.head_count", N_HEAD)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    n_pos = N_IMAGE_TOKENS + 1  # the class token's position too
    # patch embedding: a conv2d kernel, ne = [patch, patch, 3, n_embd]
    writer.add_tensor("v.patch_embd.weight", w(N_EMBD, 3, PATCH_SIZE, PATCH_SIZE, scale=0.2))
    writer.add_tensor("v.patch_embd.bias", zeros(N_EMBD))
    writer.add_tensor("v.class_embd", w(N_EMBD, scale=0.5))
    writer.add_tensor("v.position_embd.weight", w(n_pos, N_EMBD, scale=0.5))
    writer.add_tensor("v.pre_ln.weight", ones(N_EMBD))
    writer.add_tensor("v.pre_ln.bias", zeros(N_EMBD))
    for il in range(N_LAYER):
        p = f"v.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{p}.{name}.weight", w(N_EMBD, N_EMBD))
            writer.add_tensor(f"{p}.{name}.bias", zeros(N_EMBD))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{p}.{name}.weight", ones(N_EMBD))
            writer.add_tensor(f"{p}.{name}.bias", zeros(N_EMBD))
        writer.add_tensor(f"{p}.ffn_up.weight", w(N_FF, N_EMBD))
        writer.add_tensor(f"{p}.ffn_up.bias", zeros(N_FF))
        writer.add_tensor(f"{p}.ffn_down.weight", w(N_EMBD, N_FF))
        writer.add_tensor(f"{p}.ffn_down.bias", zeros(N_EMBD))
    # LLaVA's projector: mm.0 (linear), GELU, mm.2 (linear) into the text model's embedding size
    writer.add_tensor("mm.0.weight", w(N_PROJ_HIDDEN, N_EMBD))
    writer.add_tensor("mm.0.bias", zeros(N_PROJ_HIDDEN))
    writer.add_tensor("mm.2.weight", w(n_embd_text, N_PROJ_HIDDEN))
    writer.add_tensor("mm.2.bias", zeros(n_embd_text))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make(out_dir: Path, model: Path | None = None, seed: int = 0) -> tuple[Path, Path]:
    """``out_dir/model.gguf`` (the text model) and ``out_dir/mmproj.gguf``; their paths."""
    if model is None:
        from llamatwist.models import ensure_default_model

        model = Path(ensure_default_model())
    out_dir.mkdir(parents=True, exist_ok=True)
    text = out_dir / "model.gguf"
    if text.exists() or text.is_symlink():
        text.unlink()
    try:
        os.symlink(model.resolve(), text)
    except OSError:
        shutil.copyfile(model, text)
    mmproj = out_dir / "mmproj.gguf"
    make_mmproj(mmproj, _text_n_embd(model), seed)
    return text, mmproj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--model", type=Path, help="the text model (default: the project's default model)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    text, mmproj = make(args.out_dir, args.model, args.seed)
    print(text)
    print(mmproj)


if __name__ == "__main__":
    main()
