"""Embeddings and reranking through a real server (real converted models)."""

from __future__ import annotations

import base64
import math
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from openai import OpenAI

from tests.bert_reference import BertReference
from tests.conftest import REPO, Server, free_port
from tests.models import minilm_gguf, minilm_source, norank_bert_gguf, reranker_gguf

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awful."]


@pytest.fixture(scope="module")
def minilm_server() -> Any:
    srv = Server(["-m", str(minilm_gguf()), "--embeddings", "-np", "2", "-c", "1024", "-t", "2"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def reference() -> BertReference:
    return BertReference.load(minilm_source())


def cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_openai_embeddings_match_reference(minilm_server: Server, reference: BertReference) -> None:
    client = OpenAI(base_url=minilm_server.url + "/v1", api_key="none")
    resp = client.embeddings.create(model="minilm", input=SENTENCES)
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert resp.usage.prompt_tokens > 0
    for sentence, item in zip(SENTENCES, resp.data):
        v = np.asarray(item.embedding)
        assert v.shape == (384,)
        assert abs(np.linalg.norm(v) - 1.0) < 1e-4  # L2-normalized by default
        assert cos(v, reference.embed(sentence)) >= 0.99
    a, b, c = (np.asarray(d.embedding) for d in resp.data)
    assert cos(a, b) > cos(a, c)


def test_embedding_input_shapes_and_base64(minilm_server: Server) -> None:
    single = minilm_server.post("/v1/embeddings", {"input": SENTENCES[0]}).json()
    tokens = minilm_server.post("/tokenize", {"content": SENTENCES[0], "add_special": True}).json()["tokens"]
    by_ids = minilm_server.post("/v1/embeddings", {"input": tokens}).json()
    assert np.allclose(single["data"][0]["embedding"], by_ids["data"][0]["embedding"], atol=1e-5)
    b64 = minilm_server.post("/v1/embeddings", {"input": SENTENCES[0], "encoding_format": "base64"}).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert np.allclose(decoded, single["data"][0]["embedding"], atol=1e-6)


def test_dimensions_keeps_the_leading_components(minilm_server: Server) -> None:
    """OpenAI's ``dimensions`` (llama-server ignores it): the first N components, then normalized."""
    client = OpenAI(base_url=minilm_server.url + "/v1", api_key="none")
    raw = np.asarray(minilm_server.post("/embeddings", {"content": SENTENCES[0], "embd_normalize": -1}).json()[0]
                     ["embedding"][0])
    short = np.asarray(client.embeddings.create(model="m", input=SENTENCES[0], dimensions=64).data[0].embedding)
    assert short.shape == (64,) and np.allclose(short, raw[:64] / np.linalg.norm(raw[:64]), atol=1e-5)
    native = minilm_server.post("/embedding", {"content": SENTENCES[0], "dimensions": 8, "embd_normalize": -1})
    assert np.allclose(native.json()[0]["embedding"][0], raw[:8], atol=1e-5)
    assert len(client.embeddings.create(model="m", input="x", dimensions=384).data[0].embedding) == 384
    for bad, needle in ((385, "at most the model's 384"), (0, "dimensions"), ("64", "dimensions"), (2.5, "dimensions")):
        r = minilm_server.post("/v1/embeddings", {"input": "x", "dimensions": bad})
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_native_embedding_route(minilm_server: Server) -> None:
    body = minilm_server.post("/embedding", {"content": SENTENCES[:2]}).json()
    assert [e["index"] for e in body] == [0, 1]
    assert len(body[0]["embedding"]) == 1 and len(body[0]["embedding"][0]) == 384
    raw = minilm_server.post("/embeddings", {"content": SENTENCES[0], "embd_normalize": -1}).json()
    norm = math.sqrt(sum(x * x for x in raw[0]["embedding"][0]))
    assert norm > 2  # unnormalized MiniLM vectors are far from unit length
    # p-norms as llama.cpp's common_embd_normalize computes them, in IEEE doubles: p = 3 scales to unit 3-norm;
    # a p so large that the sum overflows (or underflows) gives zeros, not an error
    vec = np.asarray(raw[0]["embedding"][0])
    three = minilm_server.post("/embeddings", {"content": SENTENCES[0], "embd_normalize": 3}).json()
    assert np.allclose(three[0]["embedding"][0], vec / np.sum(np.abs(vec) ** 3) ** (1 / 3), atol=1e-5)
    for p in (100_000, 2**31 - 1):
        huge = minilm_server.post("/embeddings", {"content": SENTENCES[0], "embd_normalize": p})
        assert huge.status_code == 200 and not any(huge.json()[0]["embedding"][0]), huge.text


def test_embedding_errors(minilm_server: Server) -> None:
    for body in ({}, {"input": []}, {"input": {"a": 1}}, {"input": "x", "encoding_format": "hex"},
                 {"input": "x", "embd_normalize": "2"}, {"input": "x", "embd_normalize": 2**31},
                 {"input": "x", "embd_normalize": 2**63}):
        r = minilm_server.post("/v1/embeddings", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    long_input = "word " * 2000
    r = minilm_server.post("/v1/embeddings", {"input": long_input})
    # as llama-server checks it: an embedding's prompt must fit one micro-batch, before the context
    assert r.status_code == 400 and "is too large to process" in r.json()["error"]["message"]
    # generation routes are not available on an embedding server
    assert minilm_server.post("/completion", {"prompt": "x"}).status_code == 501
    assert minilm_server.post("/rerank", {"query": "x", "documents": ["y"]}).status_code == 501
    assert minilm_server.post("/v1/embeddings", {"input": "still serving"}).status_code == 200


def test_an_embedding_server_lists_its_chat_template(minilm_server: Server) -> None:
    """As llama-server's: /props shows the (fallback ChatML) template and its caps, /apply-template renders it,
    though nothing is generated."""
    props = minilm_server.get("/props").json()
    assert "<|im_start|>" in props["chat_template"] and props["chat_template_caps"]["supports_system_role"]
    assert props["chat_template_caps"]["supports_tools"] is False
    r = minilm_server.post("/apply-template", {"messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200 and "<|im_start|>user\nHi" in r.json()["prompt"]
    assert minilm_server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}).status_code == 501


def test_embeddings_off_without_flag(server: Server) -> None:
    r = server.post("/v1/embeddings", {"input": "x"})
    assert r.status_code == 501
    assert r.json()["error"]["type"] == "not_supported_error"


def test_per_token_embeddings_with_pooling_none(make_server: Any) -> None:
    srv = make_server("-m", str(minilm_gguf()), "--embeddings", "--pooling", "none", "-c", "512")
    body = srv.post("/embedding", {"content": "hello world"}).json()
    n_tokens = len(srv.post("/tokenize", {"content": "hello world", "add_special": True}).json()["tokens"])
    assert len(body[0]["embedding"]) == n_tokens
    r = srv.post("/v1/embeddings", {"input": "hello world"})
    assert r.status_code == 400 and "not OAI compatible" in r.json()["error"]["message"]
    r = srv.post("/embedding", {"content": "hello world", "dimensions": 8})
    assert r.status_code == 400 and "pooling is 'none'" in r.json()["error"]["message"]


def test_smollm2_mean_pooling_plumbing(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "--embeddings", "--pooling", "mean", "-c", "512", "-np", "2")
    data = srv.post("/v1/embeddings", {"input": ["one", "two", "three"]}).json()["data"]
    assert len(data) == 3 and all(len(d["embedding"]) == 576 for d in data)


def test_reranking(make_server: Any) -> None:
    srv = make_server("-m", str(reranker_gguf()), "--reranking", "-c", "512", "-np", "4")
    docs = ["alpha beta", "gamma", "delta epsilon zeta", "beta"]
    body = srv.post("/v1/rerank", {"query": "alpha", "documents": docs, "top_n": 3}).json()
    results = body["results"]
    assert len(results) == 3
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    # the ranking agrees with the raw scores of each document alone
    alone = {
        i: srv.post("/rerank", {"query": "alpha", "documents": [d]}).json()["results"][0]["relevance_score"]
        for i, d in enumerate(docs)
    }
    expected = sorted(alone, key=lambda i: alone[i], reverse=True)[:3]
    assert [r["index"] for r in results] == expected
    for r in results:
        # batched and alone differ slightly (random f32 weights amplify kernel rounding)
        assert r["relevance_score"] == pytest.approx(alone[r["index"]], abs=0.05)
    tei = srv.post("/rerank", {"query": "alpha", "texts": docs, "return_text": True}).json()
    assert {e["text"] for e in tei} == set(docs) and "score" in tei[0]
    for bad in ({"documents": docs}, {"query": 1, "documents": docs}, {"query": "a", "documents": []},
                {"query": "a", "documents": [1]}):
        assert srv.post("/rerank", bad).status_code == 400
    assert srv.post("/v1/embeddings", {"input": "x"}).status_code == 501


def test_reranking_without_rank_head_is_refused_at_startup() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "llamatwist", "-m", str(norank_bert_gguf()), "--reranking",
         "--port", str(free_port())],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert r.returncode == 1
    assert "rank" in r.stderr and "Traceback" not in r.stderr
