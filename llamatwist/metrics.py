# -*- test-case-name: tests.test_server -*-
"""Prometheus exposition of the decode loop's counters, with llama-server's
``llamacpp:*`` names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llamatwist.runtime import Metrics

__all__ = ["MetricsExporter"]


@dataclass(frozen=True)
class _Window:
    """What the throughput gauges are averaged over: the counters' growth since the previous scrape."""

    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    predicted_steps: int = 0
    predicted_seconds: float = 0.0

    @staticmethod
    def of(m: Metrics) -> _Window:
        return _Window(m.prompt_tokens_total, m.prompt_seconds_total, m.predicted_steps_total,
                       m.tokens_predicted_seconds_total)

    def since(self, earlier: _Window) -> _Window:
        return _Window(self.prompt_tokens - earlier.prompt_tokens, self.prompt_seconds - earlier.prompt_seconds,
                       self.predicted_steps - earlier.predicted_steps,
                       self.predicted_seconds - earlier.predicted_seconds)


def _rate(n: float, seconds: float) -> float:
    return max(n / seconds, 0.0) if seconds > 0 else 0.0


class MetricsExporter:
    """/metrics' text, with llama-server's names and types. As llama-server's, the two throughput gauges are
    averaged over the window since the previous scrape (its "buckets"), so a scrape with nothing run since the
    last one reads 0; the rest are counts since start-up."""

    def __init__(self, snapshot: Callable[[], Metrics]) -> None:
        self._snapshot = snapshot
        self._last = _Window()

    def render(self) -> bytes:
        m = self._snapshot()
        now = _Window.of(m)
        window, self._last = now.since(self._last), now
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(m, window))  # type: ignore[arg-type]
        # prometheus_client names every counter's HELP and TYPE lines with _total; llama-server's
        # n_tokens_max is a counter without it
        largest = b"llamacpp:n_tokens_max"
        return generate_latest(registry).replace(largest + b"_total ", largest + b" ")


class _Collector:
    def __init__(self, m: Metrics, window: _Window) -> None:
        self._m = m
        self._window = window

    def collect(self) -> Iterator[Metric]:
        m, w = self._m, self._window
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
        largest = Metric(p + "n_tokens_max", "Largest observed sequence length (prompt + generation)", "counter")
        largest.add_sample(p + "n_tokens_max", {}, m.n_tokens_max)  # no _total (render puts it right)
        yield largest
        gauges = [
            ("prompt_tokens_seconds", "Average prompt throughput in tokens/s", _rate(w.prompt_tokens, w.prompt_seconds)),
            ("predicted_tokens_seconds", "Average generation throughput in tokens/s",
             _rate(w.predicted_steps, w.predicted_seconds)),
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
