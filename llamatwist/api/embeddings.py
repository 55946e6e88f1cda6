# -*- test-case-name: tests.test_embeddings -*-
"""Embeddings: native ``/embedding`` and ``/embeddings``, OpenAI ``/v1/embeddings``,
and reranking (``/rerank``, ``/reranking``, ``/v1/rerank``, ``/v1/reranking``)."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.errors import InvalidRequest, NotSupported
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.params import INT32_MAX, Prompt, optional, parse_prompts, read_int
from llamatwist.api.pipeline import run_embeddings, tokenize_prompts
from llamatwist.runtime import LoadedModel

__all__ = ["Embedded", "embed_prompts", "normalize", "read_dimensions", "register"]

POOLING_NONE = 0
POOLING_RANK = 4


def normalize(vec: Sequence[float], mode: int) -> list[float]:
    """llama.cpp's embd_normalize: -1 none, 0 max-abs (int16 range), 2 L2, p > 2 p-norm."""
    if mode == -1:
        norm = 1.0
    elif mode == 0:
        norm = max((abs(x) for x in vec), default=0.0) / 32760.0
    elif mode == 2:
        norm = math.sqrt(sum(x * x for x in vec))
    elif mode > 0:
        # IEEE arithmetic as llama.cpp's std::pow: a large p overflows to inf (then the vector is zeros)
        # or underflows to 0 where Python's float ** would raise
        with np.errstate(over="ignore", under="ignore"):
            norm = float(np.power(np.sum(np.power(np.abs(np.asarray(vec, dtype=np.float64)), mode)), 1.0 / mode))
    else:
        norm = 0.0
    scale = 1.0 / norm if norm > 0 else 0.0
    return [x * scale for x in vec]


def _embd_normalize(body: dict[str, Any], default: int) -> int:
    return read_int("embd_normalize", optional(body, "embd_normalize", default), -1, INT32_MAX)


def _inputs(body: dict[str, Any]) -> tuple[list[Prompt], bool]:
    """The inputs, and whether the request is OpenAI-shaped (``input``) or native (``content``). Either
    takes llama-server's prompt shapes plus items ``{"content": [{"type": "text", "text": ...}, ...]}``."""
    if body.get("input") is not None:
        return parse_prompts(body, "input", content_parts=True), True
    if body.get("content") is not None:
        return parse_prompts(body, "content", content_parts=True), False
    raise InvalidRequest('"input" or "content" must be provided')


def read_dimensions(body: Mapping[str, Any]) -> int | None:
    """OpenAI's (and Ollama's) ``dimensions``: how many leading components of each vector to keep."""
    dimensions = body.get("dimensions")
    return None if dimensions is None else read_int("dimensions", dimensions, 1, INT32_MAX)


@dataclass(frozen=True)
class Embedded:
    vectors: list[list[list[float]]]  # per prompt: its pooled vector alone, or (pooling none) its tokens' vectors
    n_tokens: int


async def embed_prompts(ctx: ApiContext, request: Request, loaded: LoadedModel, prompts: list[Prompt],
                        dimensions: int | None, mode: int) -> Embedded:
    """The prompts' vectors: pooled ones cut to ``dimensions`` and then normalized (``mode``: embd_normalize).
    Raises CancelledError when the client leaves."""
    pooled = loaded.pooling != POOLING_NONE
    if dimensions is not None and not pooled:
        raise InvalidRequest("'dimensions' needs pooled embeddings: this server's pooling is 'none'")
    tokens = await tokenize_prompts(ctx, loaded, prompts, embed=True)
    results = await run_embeddings(ctx, request, tokens)
    size = len(results[0].vectors[0])
    if dimensions is not None and dimensions > size:
        raise InvalidRequest(f"'dimensions' must be at most the model's {size}, got {dimensions}")
    # OpenAI's dimensions: the leading components (Matryoshka-trained models keep their meaning there),
    # normalized afterwards
    vectors = [[normalize(v[:dimensions], mode) for v in r.vectors] if pooled else r.vectors for r in results]
    return Embedded(vectors, sum(r.n_tokens for r in results))


def register(app: Klein, ctx: ApiContext) -> None:
    async def embed(request: Request, oai_route: bool) -> Any:
        loaded = ctx.require_embeddings()
        body = read_json(request)
        prompts, oai_shape = _inputs(body)
        oai = oai_route and oai_shape
        if oai and loaded.pooling == POOLING_NONE:
            raise InvalidRequest("Pooling type 'none' is not OAI compatible. Please use a different pooling type")
        fmt = optional(body, "encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise InvalidRequest("The format to return the embeddings in. Can be either float or base64")
        mode = _embd_normalize(body, ctx.config.sampling.embd_normalize)
        try:
            embedded = await embed_prompts(ctx, request, loaded, prompts, read_dimensions(body), mode)
        except CancelledError:
            return b""
        vectors = embedded.vectors
        if not oai:
            return send_json(request, [{"index": i, "embedding": v} for i, v in enumerate(vectors)])
        data = []
        for i, v in enumerate(vectors):
            item: dict[str, Any] = {"index": i, "object": "embedding"}
            if fmt == "base64":
                item["embedding"] = base64.b64encode(struct.pack(f"<{len(v[0])}f", *v[0])).decode()
                item["encoding_format"] = "base64"
            else:
                item["embedding"] = v[0]
            data.append(item)
        n = embedded.n_tokens
        return send_json(request, {
            "model": body.get("model") or ctx.model_alias,
            "object": "list",
            "usage": {"prompt_tokens": n, "total_tokens": n},
            "data": data,
        })

    @app.route("/embedding", methods=["POST"])
    @app.route("/embeddings", methods=["POST"])
    @handler
    async def native_embeddings(request: Request) -> Any:
        return await embed(request, oai_route=False)

    @app.route("/v1/embeddings", methods=["POST"])
    @handler
    async def oai_embeddings(request: Request) -> Any:
        return await embed(request, oai_route=True)

    @app.route("/rerank", methods=["POST"])
    @app.route("/reranking", methods=["POST"])
    @app.route("/v1/rerank", methods=["POST"])
    @app.route("/v1/reranking", methods=["POST"])
    @handler
    async def rerank(request: Request) -> Any:
        if not ctx.config.reranking:
            raise NotSupported("This server does not support reranking. Start it with `--reranking`")
        loaded = ctx.require_ready()
        body = read_json(request)
        query = body.get("query")
        if query is None:
            raise InvalidRequest('"query" must be provided')
        if not isinstance(query, str):
            raise InvalidRequest('"query" must be a string')
        tei = "texts" in body
        docs = body.get("documents", body.get("texts"))
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
            raise InvalidRequest('"documents" must be a non-empty string array')
        top_n = read_int("top_n", optional(body, "top_n", len(docs)), 0, INT32_MAX)
        return_text = optional(body, "return_text", False)
        if not isinstance(return_text, bool):
            raise InvalidRequest("'return_text' must be a boolean")
        prompts = [await ctx.engine.rerank_prompt(query, d) for d in docs]
        for p in prompts:
            if len(p) > loaded.n_ubatch:
                raise InvalidRequest(
                    f"input ({len(p)} tokens) is too large to process. increase the physical batch size"
                )
        try:
            results = await run_embeddings(ctx, request, prompts)
        except CancelledError:
            return b""
        label = "score" if tei else "relevance_score"
        order = sorted(range(len(results)), key=lambda i: results[i].vectors[0][0], reverse=True)[:top_n]
        ranked: list[dict[str, Any]] = []
        for i in order:
            entry: dict[str, Any] = {"index": i, label: results[i].vectors[0][0]}
            if return_text:
                entry["text"] = docs[i]
            ranked.append(entry)
        if tei:
            return send_json(request, ranked)
        n = sum(r.n_tokens for r in results)
        return send_json(request, {
            "model": body.get("model") or ctx.model_alias,
            "object": "list",
            "usage": {"prompt_tokens": n, "total_tokens": n},
            "results": ranked,
        })
