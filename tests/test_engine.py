"""The engine layer against the real model, in process (no HTTP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llamatwist.engine.batch import Batch
from llamatwist.engine.context import Context, ContextParams
from llamatwist.engine.errors import ModelLoadError
from llamatwist.engine.model import Model
from llamatwist.engine.sampling import Sampler
from llamatwist.sampling_defaults import SamplerSettings


@pytest.fixture(scope="module")
def model(model_path: str) -> Model:
    return Model(model_path)


@pytest.fixture
def ctx(model: Model) -> Context:
    return Context(model, ContextParams(n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=2,
                                        n_threads=2, n_threads_batch=2))


def test_model_info_and_vocab(model: Model) -> None:
    info = model.info()
    assert info.n_vocab == 49152 and info.n_ctx_train == 8192 and info.n_embd == 576
    assert model.metadata()["general.architecture"] == "llama"
    tokens = model.vocab.tokenize("Hello world", add_special=False)
    assert model.vocab.detokenize(tokens) == "Hello world"
    assert b"".join(model.vocab.token_to_piece(t) for t in tokens) == b"Hello world"
    assert model.vocab.is_eog(model.vocab.eos)
    assert "im_start" in (model.chat_template() or "")


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        Model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="directory"):
        Model(str(tmp_path))
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        Model(str(tmp_path / "text.gguf"))
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="failed to load"):
        Model(str(tmp_path / "bad.gguf"))


def _greedy(model: Model, ctx: Context, seq: int, prompt: list[int], n: int) -> list[int]:
    b = Batch(512)
    idx = b.add_sequence(prompt, 0, seq, True)
    ctx.decode(b)
    s = Sampler(model, SamplerSettings(temperature=0))
    out, pos = [], len(prompt)
    for _ in range(n):
        t = s.sample(ctx, idx)
        out.append(t)
        b.clear()
        idx = b.add(t, pos, seq, True)
        pos += 1
        ctx.decode(b)
    return out


def test_batched_sequences_match_single(model: Model, ctx: Context) -> None:
    prompt = model.vocab.tokenize("The capital of France is")
    single = _greedy(model, ctx, 0, prompt, 8)
    ctx.clear()
    # both sequences in one batch per step
    b = Batch(512)
    i0 = b.add_sequence(prompt, 0, 0, True)
    i1 = b.add_sequence(prompt, 0, 1, True)
    ctx.decode(b)
    s0 = Sampler(model, SamplerSettings(temperature=0))
    s1 = Sampler(model, SamplerSettings(temperature=0))
    outs: list[list[int]] = [[], []]
    pos = len(prompt)
    for _ in range(8):
        t0, t1 = s0.sample(ctx, i0), s1.sample(ctx, i1)
        outs[0].append(t0)
        outs[1].append(t1)
        b.clear()
        i0 = b.add(t0, pos, 0, True)
        i1 = b.add(t1, pos, 1, True)
        pos += 1
        ctx.decode(b)
    assert outs[0] == single and outs[1] == single


def test_sequence_state_save_and_restore(model: Model, ctx: Context) -> None:
    prompt = model.vocab.tokenize("Once upon a time")
    b = Batch(64)
    idx = b.add_sequence(prompt, 0, 0, True)
    ctx.decode(b)
    logits = ctx.logits(idx)
    state = ctx.seq_state(0)
    assert len(state) > 0 and ctx.seq_pos_max(0) == len(prompt) - 1
    ctx.clear()
    assert ctx.seq_pos_max(0) == -1
    assert ctx.set_seq_state(1, state)
    assert ctx.seq_pos_max(1) == len(prompt) - 1
    # one more token on the restored sequence gives the same logits as before
    b.clear()
    b.add(prompt[-1], len(prompt) - 1, 1, True)
    ctx.seq_rm(1, len(prompt) - 1, -1)
    ctx.decode(b)
    assert np.allclose(ctx.logits(0), logits, atol=1e-3)


def test_seeded_sampling_is_repeatable(model: Model, ctx: Context) -> None:
    prompt = model.vocab.tokenize("Pick a word:")
    runs = []
    for _ in range(2):
        ctx.clear()
        b = Batch(64)
        idx = b.add_sequence(prompt, 0, 0, True)
        ctx.decode(b)
        s = Sampler(model, SamplerSettings(temperature=1.0, seed=7))
        assert s.seed == 7
        runs.append([s.sample(ctx, idx) for _ in range(1)])
    assert runs[0] == runs[1]


def test_context_too_large_is_a_clear_error(model: Model) -> None:
    from llamatwist.engine.errors import ContextError

    with pytest.raises(ContextError, match="ctx-size"):
        Context(model, ContextParams(n_ctx=2**24, n_seq_max=1, n_threads=1, n_threads_batch=1))
