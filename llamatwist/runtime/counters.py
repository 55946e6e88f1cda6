# -*- test-case-name: tests.test_server -*-
"""The decode loop's counters (pure data): written by the decode thread, read by /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Metrics"]


@dataclass
class Metrics:
    """Counters written by the decode thread, read (racily, harmlessly) by /metrics."""

    prompt_tokens_total: int = 0
    prompt_tokens_cached_total: int = 0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: int = 0
    tokens_predicted_seconds_total: float = 0.0
    # generation's decode steps (a task's tokens but its first, which came with the prompt), added with its
    # seconds when the task ends: the generation throughput gauge's numerator, as llama-server's
    predicted_steps_total: int = 0
    n_decode_total: int = 0
    n_busy_slots_total: int = 0
    n_tokens_max: int = 0
    requests_processing: int = 0
    requests_deferred: int = 0
    cache_entries: int = 0
    cache_cells: int = 0
    cache_evictions_total: int = 0
    # speculative decoding (llama-server's spec_decode_* counters)
    draft_tokens_total: int = 0
    draft_accepted_total: int = 0
    drafts_total: int = 0  # verification steps
    # draft tokens taken at each position (spec_decode_num_accepted_tokens_per_pos): as many positions as the
    # longest draft a speculating request may make
    accepted_per_pos: list[int] = field(default_factory=list)
