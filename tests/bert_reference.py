"""An independent numpy forward pass of a HF BERT sentence-transformer (all-MiniLM-L6-v2).

Reads the original ``model.safetensors`` and tokenizes with the model's own
``tokenizer.json`` (the ``tokenizers`` package), then computes what
sentence-transformers computes: embeddings (word + position + token type 0)
-> LayerNorm -> N x [self-attention -> add & LayerNorm -> GELU FFN -> add &
LayerNorm] -> mean over the attention mask -> L2 normalize. Nothing here
comes from llama.cpp: it is the yardstick for the GGUF conversion and for
libllama's BERT graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BertReference"]

F32 = npt.NDArray[np.float32]


def _read_safetensors(path: Path) -> dict[str, F32]:
    """f32/f16/bf16 tensors of a ``.safetensors`` file (header JSON + raw little-endian data)."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        blob = f.read()
    out: dict[str, F32] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = np.frombuffer(blob[begin:end], dtype=np.uint8)
        dtype = info["dtype"]
        if dtype == "F32":
            arr = raw.view("<f4")
        elif dtype == "F16":
            arr = raw.view("<f2").astype(np.float32)
        elif dtype == "BF16":
            arr = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue  # e.g. the int64 position_ids buffer
        out[name] = arr.reshape(info["shape"]).astype(np.float32)
    return out


def _erf(x: F32) -> F32:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): exact-erf GELU as in HF's "gelu"
    sign = np.sign(x)
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def _gelu(x: F32) -> F32:
    return (0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)


def _layer_norm(x: F32, w: F32, b: F32, eps: float) -> F32:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps) * w + b).astype(np.float32)


@dataclass
class BertReference:
    """all-MiniLM-L6-v2 (or any HF BertModel + mean pooling) in plain numpy."""

    weights: dict[str, F32]
    n_layer: int
    n_head: int
    eps: float
    tokenizer: Any

    @classmethod
    def load(cls, src: Path) -> BertReference:
        """``src``: the HF model folder (config.json, model.safetensors, tokenizer.json)."""
        from tokenizers import Tokenizer

        cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
        tok = Tokenizer.from_file(str(src / "tokenizer.json"))
        tok.no_padding()  # the shipped tokenizer.json pads to 128 and truncates
        tok.no_truncation()
        weights = {k.removeprefix("bert."): v for k, v in _read_safetensors(src / "model.safetensors").items()}
        return cls(weights, int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"]),
                   float(cfg.get("layer_norm_eps", 1e-12)), tok)

    def tokenize(self, text: str) -> list[int]:
        """``[CLS] wordpieces [SEP]`` ids, as sentence-transformers feeds the model."""
        return list(self.tokenizer.encode(text).ids)

    def hidden_states(self, ids: list[int]) -> F32:
        """Last hidden state, shape (len(ids), n_embd); one unpadded sequence."""
        w = self.weights
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        d_model = x.shape[1]
        d_head = d_model // self.n_head
        for i in range(self.n_layer):
            p = f"encoder.layer.{i}."

            def lin(inp: F32, name: str, p: str = p) -> F32:
                return (inp @ w[p + name + ".weight"].T + w[p + name + ".bias"]).astype(np.float32)

            q = lin(x, "attention.self.query").reshape(n, self.n_head, d_head).transpose(1, 0, 2)
            k = lin(x, "attention.self.key").reshape(n, self.n_head, d_head).transpose(1, 0, 2)
            v = lin(x, "attention.self.value").reshape(n, self.n_head, d_head).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d_head))
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(1, 0, 2).reshape(n, d_model)
            x = _layer_norm(lin(ctx, "attention.output.dense") + x,
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                            self.eps)
            h = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(lin(h, "output.dense") + x,
                            w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        return x

    def embed_ids(self, ids: list[int], normalize: bool = True) -> F32:
        """Mean-pooled (all tokens are attended: no padding) and, by default, L2-normalized."""
        pooled = self.hidden_states(ids).mean(axis=0)
        if normalize:
            pooled = pooled / np.linalg.norm(pooled)
        return pooled.astype(np.float32)

    def embed(self, text: str, normalize: bool = True) -> F32:
        return self.embed_ids(self.tokenize(text), normalize)
