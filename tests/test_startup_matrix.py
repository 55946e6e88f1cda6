"""Batch, context and slot sizes in every corner start and serve (issue 21: a small
-b with the shared KV pool aborted the process at start-up)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

# ~40 tokens: several chunks for the small batches below
PROMPT = " ".join(f"item {i} is here;" for i in range(8))

CORNERS = [
    ("-b", "64"),  # default -np (auto): one shared pool of many sequences
    ("-b", "64", "-ub", "32", "-kvu"),
    ("-b", "16", "-ub", "16", "-np", "4", "-kvu"),
    ("-b", "8", "-ub", "8", "-np", "8"),  # more slots than batch tokens, a KV stream each
    ("-b", "1", "-ub", "1", "-np", "2"),
    ("-c", "256", "-b", "2048"),  # the context caps the batch below the shared pool's sequence count
    ("-c", "256", "-b", "32", "-ub", "64", "-np", "3", "-kvu"),  # -ub above -b
    ("-c", "512", "-b", "4096", "-ub", "4096", "-np", "2"),  # batch above the context
]


@pytest.mark.parametrize("flags", CORNERS, ids=lambda f: " ".join(f))
def test_sizes_start_and_serve(make_server: Any, model_path: str, flags: tuple[str, ...]) -> None:
    srv = make_server("-m", model_path, "-t", "2", *flags)
    props = srv.get("/props").json()
    n_slots = props["total_slots"]
    n_ctx_slot = props["default_generation_settings"]["n_ctx"]
    assert n_ctx_slot > 64
    body = {"prompt": PROMPT, "n_predict": 4, "ignore_eos": True, "temperature": 0}
    n_requests = min(n_slots, 2) + 1  # two slots busy at once; with -np 2 one request queued
    with ThreadPoolExecutor(n_requests) as pool:
        replies = list(pool.map(lambda _: srv.post("/completion", body), range(n_requests)))
    for r in replies:
        assert r.status_code == 200, r.text
        assert r.json()["tokens_predicted"] == 4
    assert srv.get("/health").status_code == 200
    assert srv.proc.poll() is None
