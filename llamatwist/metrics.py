# -*- test-case-name: tests.test_server -*-
"""Prometheus exposition of the decode loop's counters, with llama-server's
``llamacpp:*`` names."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llamatwist.runtime import Metrics

__all__ = ["render_metrics"]


class _Collector:
    def __init__(self, snapshot: Callable[[], Metrics]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        m = self._snapshot()
        p = "llamacpp:"
        counters = [
            ("prompt_tokens", "Number of prompt tokens processed, excluding cached tokens", m.prompt_tokens_total),
            ("prompt_tokens_cached", "Number of prompt tokens reused from the cache", m.prompt_tokens_cached_total),
            ("prompt_seconds", "Total time spent processing prompts", m.prompt_seconds_total),
            ("tokens_predicted", "Number of generation tokens processed", m.tokens_predicted_total),
            ("tokens_predicted_seconds", "Total time spent generating tokens", m.tokens_predicted_seconds_total),
            ("n_decode", "Total number of llama_decode() calls", m.n_decode_total),
            ("prefix_cache_evictions", "Parked prompt prefixes evicted", m.cache_evictions_total),
            ("spec_decode_num_draft_tokens", "Speculative: Total draft tokens generated", m.draft_tokens_total),
            ("spec_decode_num_accepted_tokens", "Speculative: Total draft tokens accepted by the target model",
             m.draft_accepted_total),
            ("spec_decode_num_drafts", "Speculative: Total speculative decoding verification steps",
             m.drafts_total),
        ]
        for name, doc, value in counters:
            yield CounterMetricFamily(p + name, doc, value=value)
        per_pos = tuple(m.accepted_per_pos)  # grows on the decode thread
        if per_pos:  # one time series per draft position, as llama-server's
            family = CounterMetricFamily(p + "spec_decode_num_accepted_tokens_per_pos",
                                         "Accepted tokens per draft position", labels=["position"])
            for i, n in enumerate(per_pos):
                family.add_metric([str(i)], n)
            yield family
        gauges = [
            ("n_tokens_max", "Largest observed sequence length (prompt + generation)", m.n_tokens_max),
            ("prompt_tokens_seconds", "Average prompt throughput in tokens/s",
             m.prompt_tokens_total / m.prompt_seconds_total if m.prompt_seconds_total else 0.0),
            ("predicted_tokens_seconds", "Average generation throughput in tokens/s",
             m.tokens_predicted_total / m.tokens_predicted_seconds_total if m.tokens_predicted_seconds_total else 0.0),
            ("requests_processing", "Number of requests processing", m.requests_processing),
            ("requests_deferred", "Number of requests deferred", m.requests_deferred),
            ("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call",
             m.n_busy_slots_total / max(m.n_decode_total, 1)),
            ("prefix_cache_entries", "Idle prompt prefixes parked in the shared prefix cache", m.cache_entries),
            ("prefix_cache_tokens", "KV cells held by slots and parked prefixes (shared cells count once)",
             m.cache_cells),
        ]
        for name, doc, value in gauges:
            yield GaugeMetricFamily(p + name, doc, value=value)


def render_metrics(snapshot: Callable[[], Metrics]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))  # type: ignore[arg-type]
    return generate_latest(registry)
