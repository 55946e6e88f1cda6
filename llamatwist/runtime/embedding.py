# -*- test-case-name: tests.test_embeddings -*-
"""Embedding and rerank output: a slot's whole input was decoded in one batch, every token an output.

With pooling, the context pools the sequence into one vector (for rank pooling, the classifier
scores); with pooling none, each token's vector is returned. Embedding inputs are never reused, so
the slot's KV is dropped at once.
"""

from __future__ import annotations

from llamatwist.engine.context import POOLING_NONE, Context
from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.outputs import Outputs
from llamatwist.runtime.prefix_cache import PrefixCache
from llamatwist.runtime.slot import Slot
from llamatwist.runtime.task import EmbeddingResult

__all__ = ["EmbeddingOutput"]


class EmbeddingOutput:
    def __init__(self, ctx: Context, cache: PrefixCache, metrics: Metrics, outputs: Outputs) -> None:
        self._ctx = ctx
        self._cache = cache
        self._metrics = metrics
        self._outputs = outputs

    def send(self, slot: Slot, now: float) -> None:
        task = slot.task
        assert task is not None
        ctx = self._ctx
        n = len(task.prompt)
        if ctx.pooling_type == POOLING_NONE:
            first = slot.i_batch - n + 1
            vectors = [ctx.embeddings_ith(i).tolist() for i in range(first, slot.i_batch + 1)]
        else:
            vectors = [ctx.embeddings_seq(slot.id).tolist()]
        self._metrics.prompt_tokens_total += n
        self._metrics.prompt_seconds_total += now - slot.t_start
        self._cache.drop(slot.id)  # embedding inputs are never reused
        slot.cache.clear()
        slot.release()
        self._outputs.emit(task.sink, EmbeddingResult(task.id, vectors, n))
