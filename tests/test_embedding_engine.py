"""Embeddings and reranking through the engine layer (in process, no HTTP).

all-MiniLM-L6-v2 is converted to GGUF by scripts/convert_bert.py and checked
against an independent numpy forward pass of the original safetensors
(tests/bert_reference.py); the tiny random reranker of
scripts/make_reranker.py checks RANK pooling; SmolLM2 checks that a causal
model gives pooled vectors too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from llamatwist.engine.batch import Batch
from llamatwist.engine.context import (
    POOLING_MEAN,
    POOLING_NONE,
    POOLING_RANK,
    Context,
    ContextParams,
)
from llamatwist.engine.errors import DecodeError
from llamatwist.engine.model import Model
from tests.bert_reference import BertReference
from tests.models import minilm_gguf, minilm_source, norank_bert_gguf, reranker_gguf

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "How do I bake sourdough bread at home?",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "llama.cpp runs large language models on ordinary CPUs!",
]


def _params(**kw: object) -> ContextParams:
    base: dict[str, object] = {"n_ctx": 512, "n_batch": 512, "n_ubatch": 512, "n_seq_max": 4,
                               "n_threads": 2, "n_threads_batch": 2, "embeddings": True}
    base.update(kw)
    return ContextParams(**base)  # type: ignore[arg-type]


def _unit(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def minilm() -> Model:
    # not closed explicitly: contexts keep their model alive, and are freed by the GC
    return Model(str(minilm_gguf()))


@pytest.fixture(scope="module")
def reference() -> BertReference:
    return BertReference.load(minilm_source())


@pytest.fixture(scope="module")
def mean_ctx(minilm: Model) -> Context:
    return Context(minilm, _params())


def _embed(model: Model, ctx: Context, text: str, seq: int = 0) -> npt.NDArray[np.float32]:
    b = Batch(512)
    b.add_sequence(model.vocab.tokenize(text, add_special=True), 0, seq, True)
    ctx.decode(b)
    return ctx.embeddings_seq(seq)


def test_minilm_metadata(minilm: Model, mean_ctx: Context) -> None:
    info = minilm.info()
    assert info.n_embd == 384 and info.n_vocab == 30522 and info.n_ctx_train == 512
    assert minilm.metadata()["general.architecture"] == "bert"
    assert mean_ctx.pooling_type == POOLING_MEAN  # the model's default, from sentence-transformers' config
    assert mean_ctx.n_embd == 384 and not mean_ctx.has_memory  # encoder-only: no KV cache


def test_minilm_matches_numpy_reference(minilm: Model, mean_ctx: Context, reference: BertReference) -> None:
    for text in SENTENCES:
        tokens = minilm.vocab.tokenize(text, add_special=True)
        assert tokens == reference.tokenize(text), text  # the WPM vocab converted faithfully
        got = _embed(minilm, mean_ctx, text)
        assert got.shape == (384,) and got.dtype == np.float32
        cos = float(_unit(got) @ reference.embed(text))
        assert cos >= 0.99, (text, cos)


def test_minilm_similarity_is_sensible(minilm: Model, mean_ctx: Context) -> None:
    cat, kitten, quarks = (_unit(_embed(minilm, mean_ctx, s)) for s in SENTENCES[:3])
    assert cat @ kitten > cat @ quarks + 0.2
    assert cat @ kitten > kitten @ quarks + 0.2


def test_batched_sequences_equal_one_at_a_time(minilm: Model, mean_ctx: Context) -> None:
    texts = SENTENCES[:4]
    single = [_embed(minilm, mean_ctx, t) for t in texts]
    b = Batch(512)
    for seq, text in enumerate(texts):
        b.add_sequence(minilm.vocab.tokenize(text, add_special=True), 0, seq, True)
    mean_ctx.decode(b)
    for seq, one in enumerate(single):
        np.testing.assert_allclose(mean_ctx.embeddings_seq(seq), one, rtol=0, atol=2e-4)
    # the same batch through llama_encode gives the same vectors
    mean_ctx.encode(b)
    for seq, one in enumerate(single):
        np.testing.assert_allclose(mean_ctx.embeddings_seq(seq), one, rtol=0, atol=2e-4)


def test_pooling_none_gives_per_token_vectors(minilm: Model, reference: BertReference) -> None:
    ctx = Context(minilm, _params(pooling=POOLING_NONE))
    assert ctx.pooling_type == POOLING_NONE
    text = SENTENCES[2]
    tokens = minilm.vocab.tokenize(text, add_special=True)
    b = Batch(512)
    b.add_sequence(tokens, 0, 0, True)
    ctx.decode(b)
    rows = np.stack([ctx.embeddings_ith(i) for i in range(len(tokens))])
    assert rows.shape == (len(tokens), 384)
    np.testing.assert_array_equal(ctx.embeddings_ith(-1), rows[-1])
    ref = reference.hidden_states(tokens)
    cos = np.sum(rows * ref, axis=1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99, cos
    with pytest.raises(LookupError):
        ctx.embeddings_seq(0)
    with pytest.raises(IndexError):
        ctx.embeddings_ith(len(tokens))


def test_oversized_batch_is_refused_not_aborted(minilm: Model) -> None:
    ctx = Context(minilm, _params(n_batch=64, n_ubatch=16))
    tokens = minilm.vocab.tokenize(SENTENCES[2], add_special=True)
    assert len(tokens) > 16
    b = Batch(64)
    b.add_sequence(tokens, 0, 0, True)
    with pytest.raises(DecodeError, match="too large"):
        ctx.decode(b)
    with pytest.raises(DecodeError, match="too large"):
        ctx.encode(b)
    big = Batch(128)
    big.add_sequence(list(range(1000, 1100)), 0, 0, True)
    with pytest.raises(DecodeError, match="n_batch"):
        ctx.decode(big)


# -- reranking --------------------------------------------------------------------
def _rerank_tokens(model: Model, query: str, doc: str) -> list[int]:
    v = model.vocab  # llama-server's layout without a rerank template: [BOS] q [EOS] d [EOS]
    return [v.bos, *v.tokenize(query, add_special=False), v.eos, *v.tokenize(doc, add_special=False), v.eos]


def test_reranker_gives_one_score_per_sequence() -> None:
    model = Model(str(reranker_gguf()))
    assert model.info().n_cls_out == 1
    ctx = Context(model, _params())
    assert ctx.pooling_type == POOLING_RANK  # from the GGUF's pooling_type
    docs = ["paris is the capital of france", "the cat sits on the mat", "hello world", "machine learning"]
    b = Batch(512)
    for seq, doc in enumerate(docs):
        b.add_sequence(_rerank_tokens(model, "what is the capital of france?", doc), 0, seq, True)
    ctx.decode(b)
    scores = [ctx.embeddings_seq(seq) for seq in range(len(docs))]
    assert all(s.shape == (1,) and np.isfinite(s).all() for s in scores)
    values = [float(s[0]) for s in scores]
    assert len({round(v, 4) for v in values}) == len(values), values
    # one at a time gives the same score
    b.clear()
    b.add_sequence(_rerank_tokens(model, "what is the capital of france?", docs[1]), 0, 2, True)
    ctx.decode(b)
    assert float(ctx.embeddings_seq(2)[0]) == pytest.approx(values[1], abs=1e-4)


def test_reranker_without_head_is_a_mean_pooling_model() -> None:
    path: Path = norank_bert_gguf()
    model = Model(str(path))
    assert model.metadata()["bert.pooling_type"] == str(POOLING_MEAN)
    ctx = Context(model, _params())
    assert ctx.pooling_type == POOLING_MEAN
    assert _embed(model, ctx, "hello world").shape == (32,)


# -- a causal model with pooling --------------------------------------------------
def test_smollm2_mean_pooling_plumbing(model_path: str) -> None:
    model = Model(model_path)
    ctx = Context(model, _params(n_seq_max=2, pooling=POOLING_MEAN))
    assert ctx.pooling_type == POOLING_MEAN and ctx.has_memory and ctx.n_embd == 576
    b = Batch(512)
    for seq, text in enumerate(["The cat sits on the mat.", "Quarks and gluons."]):
        b.add_sequence(model.vocab.tokenize(text, add_special=True), 0, seq, True)
    ctx.decode(b)
    a, c = ctx.embeddings_seq(0), ctx.embeddings_seq(1)
    assert a.shape == c.shape == (576,)
    assert np.isfinite(a).all() and np.isfinite(c).all() and not np.allclose(a, c)
