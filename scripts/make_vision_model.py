#!/usr/bin/env python3
"""A tiny vision model for the multimodal tests: a text model plus a random-weight LLaVA projector.

No small vision GGUF is on PyPI (the local mirror has no SmolVLM, moondream or LLaVA package), so the
projector is generated with the `gguf` package, seeded: a CLIP-style ViT ("mlp" projector type, LLaVA-1.5's
layout as libmtmd's clip.cpp loads it) over 32x32 images in 8x8 patches (16 image tokens), 2 blocks of width
64, then a two-layer MLP into the text model's embedding size. ``model.gguf`` is the text model (the
project's default SmolLM2-135M unless ``--model`` names another llama-architecture GGUF), linked or copied.

Random weights mean the image embeddings carry no meaning, but they are deterministic and depend on the
pixels: the same image gives the same output at temperature 0, two different images give different ones.

``--projector qwen2vl`` (``make(..., projector="qwen2vl")``) writes instead a tiny Qwen2-VL pair, the
M-RoPE case. ``model.gguf`` is a random-weight text model of architecture ``qwen2vl`` (qwen2 layers with
q/k/v biases, M-RoPE with ``qwen2vl.rope.dimension_sections`` [2, 3, 3, 0]; n_embd 64, 4 heads, 2 KV
heads, 2 layers, n_ff 128; F16 embedding and output matrices, F32 elsewhere; about 15 MB) with the
default model's tokenizer (or ``--model``'s). ``mmproj.gguf`` is a random-weight ``qwen2vl_merger``
projector (300 KB): 14-pixel patches, a ViT of width 32 with 2 blocks, 2x2 patches merged into one token
of the text model's width. libmtmd resizes an image to multiples of 28 pixels holding 8 to 4096 merged
tokens. The recommended test image is ``QWEN2VL_IMAGE_SIZE`` = 112x112 RGB: a 4x4 grid of merged
patches, ``QWEN2VL_N_IMAGE_TOKENS`` = 16 embeddings (``mtmd_input_chunk_get_n_tokens``) but only
``QWEN2VL_N_IMAGE_POS`` = 4 positions (``mtmd_input_chunk_get_n_pos``: max(grid width, grid height)), as
measured with the pinned libmtmd. Others measured: 112x56 or 56x112 gives 8 tokens and 4 positions,
224x224 64 and 8; 56x56 is under the 8-token minimum, upscaled to 84x84: 9 tokens, 3 positions.

    python scripts/make_vision_model.py --out-dir DIR [--model BASE.gguf] [--seed S] [--projector mlp|qwen2vl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llama_model import RandomWeights, base_or_default, start_model, write_model

__all__ = ["IMAGE_SIZE", "N_IMAGE_TOKENS", "PATCH_SIZE", "PROJECTORS", "QWEN2VL_IMAGE_SIZE", "QWEN2VL_N_EMBD_TEXT",
           "QWEN2VL_N_IMAGE_POS", "QWEN2VL_N_IMAGE_TOKENS", "QWEN2VL_N_MERGE", "QWEN2VL_PATCH_SIZE", "make",
           "make_mmproj", "make_qwen2vl_mmproj", "make_qwen2vl_text"]

PROJECTORS = ("mlp", "qwen2vl")

IMAGE_SIZE = 32
PATCH_SIZE = 8
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # the class token is dropped after the ViT
N_EMBD = 64  # the ViT's width
N_FF = 128
N_HEAD = 4
N_LAYER = 2  # LLaVA reads the second-to-last block's output: one block runs
N_PROJ_HIDDEN = 128

# the Qwen2-VL pair (--projector qwen2vl)
QWEN2VL_PATCH_SIZE = 14
QWEN2VL_N_MERGE = 2  # a merged token is a 2x2 block of patches: 28x28 pixels
QWEN2VL_IMAGE_SIZE = 112  # recommended test image, square RGB
QWEN2VL_N_IMAGE_TOKENS = (QWEN2VL_IMAGE_SIZE // (QWEN2VL_PATCH_SIZE * QWEN2VL_N_MERGE)) ** 2  # 16 (measured)
QWEN2VL_N_IMAGE_POS = QWEN2VL_IMAGE_SIZE // (QWEN2VL_PATCH_SIZE * QWEN2VL_N_MERGE)  # 4, max(nx, ny) (measured)
QWEN2VL_N_EMBD_TEXT = 64
QWEN2VL_V_N_EMBD = 32  # the ViT's width: 2 heads of 16 (M-RoPE in the ViT needs head size % 4 == 0)
QWEN2VL_V_N_HEAD = 2
QWEN2VL_V_N_FF = 64  # must differ from the width, else clip.cpp takes up/down as swapped
QWEN2VL_V_N_LAYER = 2


def _clip_writer(out: Path, name: str, projector_type: str, *, image_size: int, patch_size: int, width: int,
                 n_ff: int, n_layer: int, n_head: int, eps: float, n_embd_text: int, mean: list[float],
                 std: list[float]) -> gguf.GGUFWriter:
    """A projector GGUF with a vision encoder's keys, F32."""
    writer = gguf.GGUFWriter(str(out), "clip")
    writer.add_string("general.name", name)
    writer.add_uint32("general.file_type", 0)  # F32
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_string("clip.projector_type", projector_type)
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.block_count", n_layer)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", eps)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_array("clip.vision.image_mean", mean)
    writer.add_array("clip.vision.image_std", std)
    return writer


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

    writer = _clip_writer(out, "llamatwist test projector (random weights)", "mlp", image_size=IMAGE_SIZE,
                          patch_size=PATCH_SIZE, width=N_EMBD, n_ff=N_FF, n_layer=N_LAYER, n_head=N_HEAD, eps=1e-5,
                          n_embd_text=n_embd_text, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)

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


def make_qwen2vl_text(out: Path, base: Path, *, seed: int = 0, n_embd: int = QWEN2VL_N_EMBD_TEXT, n_layer: int = 2,
                      n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, n_ctx_train: int = 4096) -> Path:
    """Write a random-weight ``qwen2vl`` text model to ``out`` (tokenizer from ``base``) and return it."""
    head = n_embd // n_head
    if head % 2:
        raise ValueError(f"head size {head} must be even")
    # M-RoPE sections (temporal, height, width, unused) over head/2 rotary pairs, Qwen2-VL's 16:24:24 shape
    t = head // 8
    sections = [t, (head // 2 - t) // 2, head // 2 - t - (head // 2 - t) // 2, 0]
    writer, n_vocab = start_model(out, base, "qwen2vl", "llamatwist test qwen2vl (random weights)",
                                  n_ctx_train=n_ctx_train, n_embd=n_embd, n_layer=n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_freq_base(1000000.0)
    writer.add_rope_dimension_sections(sections)
    writer.add_layer_norm_rms_eps(1e-6)

    w = RandomWeights(seed)
    rand, ones = w.rand, w.ones

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        yield from w.embeddings_and_output(n_vocab, n_embd)
        for i in range(n_layer):
            yield f"blk.{i}.attn_norm.weight", ones(n_embd)
            yield f"blk.{i}.attn_q.weight", rand(n_embd, n_embd)
            yield f"blk.{i}.attn_q.bias", rand(n_embd, std=0.1)
            yield f"blk.{i}.attn_k.weight", rand(n_head_kv * head, n_embd)
            yield f"blk.{i}.attn_k.bias", rand(n_head_kv * head, std=0.1)
            yield f"blk.{i}.attn_v.weight", rand(n_head_kv * head, n_embd)
            yield f"blk.{i}.attn_v.bias", rand(n_head_kv * head, std=0.1)
            yield f"blk.{i}.attn_output.weight", rand(n_embd, n_embd)
            yield f"blk.{i}.ffn_norm.weight", ones(n_embd)
            yield from w.gated_ffn(i, n_embd, n_ff)

    write_model(writer, tensors())
    return out


def make_qwen2vl_mmproj(out: Path, n_embd_text: int, seed: int = 0) -> None:
    """Write a Qwen2-VL projector GGUF (``qwen2vl_merger``, as clip.cpp loads PROJECTOR_TYPE_QWEN2VL)."""
    rng = np.random.default_rng(seed)
    d, ff, n_merged = QWEN2VL_V_N_EMBD, QWEN2VL_V_N_FF, QWEN2VL_V_N_EMBD * QWEN2VL_N_MERGE**2
    p = QWEN2VL_PATCH_SIZE

    def w(*shape: int, scale: float = 0.0) -> npt.NDArray[Any]:
        fan_in = shape[-1] if len(shape) > 1 else 1
        s = scale or 1.0 / np.sqrt(fan_in)
        return (rng.standard_normal(shape) * s).astype(np.float32)

    def ones(n: int) -> npt.NDArray[Any]:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> npt.NDArray[Any]:
        return np.zeros(n, dtype=np.float32)

    # neither use_gelu nor use_silu: the ViT's MLP uses quick GELU, as Qwen2-VL's; image_size is read but
    # unused (the preprocessing is dynamic)
    writer = _clip_writer(out, "llamatwist test qwen2vl projector (random weights)",
                          gguf.VisionProjectorType.QWEN2VL, image_size=560, patch_size=p, width=d, n_ff=ff,
                          n_layer=QWEN2VL_V_N_LAYER, n_head=QWEN2VL_V_N_HEAD, eps=1e-6, n_embd_text=n_embd_text,
                          mean=[0.48145466, 0.4578275, 0.40821073], std=[0.26862954, 0.26130258, 0.27577711])
    writer.add_uint32("clip.vision.spatial_merge_size", QWEN2VL_N_MERGE)

    # the Conv3D patch embedding split in two Conv2D kernels (one per frame of a temporal pair; a still
    # image goes through both), ne = [patch, patch, 3, width]; no bias, no class token, no position table
    writer.add_tensor("v.patch_embd.weight", w(d, 3, p, p, scale=0.05))
    writer.add_tensor("v.patch_embd.weight.1", w(d, 3, p, p, scale=0.05))
    for il in range(QWEN2VL_V_N_LAYER):
        b = f"v.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{b}.{name}.weight", w(d, d))
            writer.add_tensor(f"{b}.{name}.bias", w(d, scale=0.1))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{b}.{name}.weight", ones(d))
            writer.add_tensor(f"{b}.{name}.bias", zeros(d))
        writer.add_tensor(f"{b}.ffn_up.weight", w(ff, d))  # ne [width, n_ff]
        writer.add_tensor(f"{b}.ffn_up.bias", zeros(ff))
        writer.add_tensor(f"{b}.ffn_down.weight", w(d, ff))  # ne [n_ff, width]
        writer.add_tensor(f"{b}.ffn_down.bias", zeros(d))
    # the merger: LayerNorm (ln_q), then 2x2 neighbouring patches concatenated, Linear, GELU, Linear
    writer.add_tensor("v.post_ln.weight", ones(d))
    writer.add_tensor("v.post_ln.bias", zeros(d))
    writer.add_tensor("mm.0.weight", w(n_merged, n_merged))
    writer.add_tensor("mm.0.bias", zeros(n_merged))
    writer.add_tensor("mm.2.weight", w(n_embd_text, n_merged))
    writer.add_tensor("mm.2.bias", zeros(n_embd_text))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make(out_dir: Path, model: Path | None = None, seed: int = 0, *, projector: str = "mlp") -> tuple[Path, Path]:
    """``out_dir/model.gguf`` (the text model) and ``out_dir/mmproj.gguf``; their paths.

    ``projector="mlp"``: ``model`` (default: the default model) linked or copied, and a LLaVA projector.
    ``projector="qwen2vl"``: a random ``qwen2vl`` text model with ``model``'s tokenizer, and a Qwen2-VL one.
    """
    if projector not in PROJECTORS:
        raise ValueError(f"projector must be one of {PROJECTORS}, not {projector!r}")
    if model is None:
        model = base_or_default(None)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = out_dir / "model.gguf"
    if text.exists() or text.is_symlink():
        text.unlink()  # never write through a link to the base model
    mmproj = out_dir / "mmproj.gguf"
    if projector == "qwen2vl":
        make_qwen2vl_text(text, model, seed=seed)
        make_qwen2vl_mmproj(mmproj, _text_n_embd(text), seed)
        return text, mmproj
    try:
        os.symlink(model.resolve(), text)
    except OSError:
        shutil.copyfile(model, text)
    make_mmproj(mmproj, _text_n_embd(model), seed)
    return text, mmproj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--model", type=Path, help="the text model (default: the project's default model); with "
                    "--projector qwen2vl only its tokenizer is used")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--projector", choices=PROJECTORS, default="mlp",
                    help="mlp: a LLaVA projector beside the text model (default); qwen2vl: a Qwen2-VL (M-RoPE) pair")
    args = ap.parse_args()
    text, mmproj = make(args.out_dir, args.model, args.seed, projector=args.projector)
    print(text)
    print(mmproj)


if __name__ == "__main__":
    main()
