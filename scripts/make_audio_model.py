#!/usr/bin/env python3
"""A tiny audio model for the multimodal tests: a text model plus a random-weight Ultravox projector.

No small audio GGUF is on PyPI, so the projector is generated with the `gguf` package, seeded: libmtmd's
"ultravox" type (clip.cpp's whisper encoder graph, models/whisper-enc.cpp), the simplest audio projector it
runs: a 2-layer conv1d stem over 80-bin log-mel frames, 2 transformer blocks of width 64, frames stacked by
60, then RMS-norm / SwiGLU / RMS-norm / linear into the text model's embedding size. libmtmd pads audio to
30 s windows of 3000 mel frames (1500 positions after the stride-2 conv), so every window is
1500 / 60 = 25 tokens: audio up to 30 s is one chunk of 25 tokens, each further 30 s one more chunk.
``model.gguf`` is the text model (the project's default SmolLM2-135M unless ``--model`` names another
llama-architecture GGUF), linked or copied.

Random weights mean the audio embeddings carry no meaning, but they are deterministic and depend on the
samples: the same audio gives the same output at temperature 0, two different sounds give different ones.

    python scripts/make_audio_model.py --out-dir DIR [--model BASE.gguf] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import gguf
import numpy as np

__all__ = ["N_AUDIO_TOKENS", "SECONDS_PER_CHUNK", "make", "make_mmproj"]

N_MEL = 80  # whisper's mel bins
N_EMBD = 64  # the encoder's width
N_FF = 128
N_HEAD = 4
N_LAYER = 2
N_POS = 1500  # positions per 30 s window (3000 mel frames after the stride-2 conv)
STACK = 60  # frames stacked into one token: must divide N_POS, or libmtmd's token count and graph disagree
N_PROJ_HIDDEN = 128
SECONDS_PER_CHUNK = 30
N_AUDIO_TOKENS = N_POS // STACK  # per chunk


def _text_n_embd(model: Path) -> int:
    r = gguf.GGUFReader(model)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    return int(r.fields[f"{arch}.embedding_length"].parts[-1][0])


def make_mmproj(out: Path, n_embd_text: int, seed: int = 0) -> None:
    """Write the projector GGUF (numpy shapes are ggml's ne reversed)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.0) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        s = scale or 1.0 / np.sqrt(fan_in)
        return (rng.standard_normal(shape) * s).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(*shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    writer = gguf.GGUFWriter(str(out), "clip")
    writer.add_string("general.name", "llamatwist test audio projector (random weights)")
    writer.add_uint32("general.file_type", 0)  # F32
    writer.add_bool("clip.has_vision_encoder", False)
    writer.add_bool("clip.has_audio_encoder", True)
    writer.add_string("clip.projector_type", "ultravox")
    writer.add_uint32("clip.audio.num_mel_bins", N_MEL)
    writer.add_uint32("clip.audio.embedding_length", N_EMBD)
    writer.add_uint32("clip.audio.feed_forward_length", N_FF)
    writer.add_uint32("clip.audio.block_count", N_LAYER)
    writer.add_uint32("clip.audio.attention.head_count", N_HEAD)
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.audio.projection_dim", n_embd_text)
    writer.add_uint32("clip.audio.projector.stack_factor", STACK)

    # conv1d stem: kernels ne = [3, in, out]; biases ne = [1, out] (added to the [frames, out] output)
    writer.add_tensor("a.conv1d.1.weight", w(N_EMBD, N_MEL, 3))
    writer.add_tensor("a.conv1d.1.bias", zeros(N_EMBD, 1))
    writer.add_tensor("a.conv1d.2.weight", w(N_EMBD, N_EMBD, 3))
    writer.add_tensor("a.conv1d.2.bias", zeros(N_EMBD, 1))
    writer.add_tensor("a.position_embd.weight", w(N_POS, N_EMBD, scale=0.5))
    for il in range(N_LAYER):
        p = f"a.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{p}.{name}.weight", w(N_EMBD, N_EMBD))
            if name != "attn_k":  # whisper's k projection has no bias (the graph asserts it)
                writer.add_tensor(f"{p}.{name}.bias", zeros(N_EMBD))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{p}.{name}.weight", ones(N_EMBD))
            writer.add_tensor(f"{p}.{name}.bias", zeros(N_EMBD))
        writer.add_tensor(f"{p}.ffn_up.weight", w(N_FF, N_EMBD))
        writer.add_tensor(f"{p}.ffn_up.bias", zeros(N_FF))
        writer.add_tensor(f"{p}.ffn_down.weight", w(N_EMBD, N_FF))
        writer.add_tensor(f"{p}.ffn_down.bias", zeros(N_EMBD))
    writer.add_tensor("a.post_ln.weight", ones(N_EMBD))
    writer.add_tensor("a.post_ln.bias", zeros(N_EMBD))
    # Ultravox's projector over stacked frames: RMS-norm, linear into 2 halves (SwiGLU), RMS-norm, linear
    writer.add_tensor("mm.a.norm_pre.weight", ones(N_EMBD * STACK))
    writer.add_tensor("mm.a.mlp.1.weight", w(2 * N_PROJ_HIDDEN, N_EMBD * STACK))
    writer.add_tensor("mm.a.norm_mid.weight", ones(N_PROJ_HIDDEN))
    writer.add_tensor("mm.a.mlp.2.weight", w(n_embd_text, N_PROJ_HIDDEN))

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
