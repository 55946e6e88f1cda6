"""llamatwist:* metrics beside llama-server's in /metrics: requests by route and status (499 for a client that
left), their durations, time to first token and token counts per generation. Real server, real scrapes parsed
by prometheus_client's own parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from llamatwist.api.openapi import OPERATIONS
from llamatwist.api.request_metrics import RequestMetrics
from tests.conftest import Server


def test_route_labels_are_the_served_routes() -> None:
    m = RequestMetrics(OPERATIONS)
    assert m.route("/v1/chat/completions") == "/v1/chat/completions"
    assert m.route("/slots/3") == "/slots/{id_slot}"
    assert m.route("/v1/responses/resp_1/input_items") == "/v1/responses/{response_id}/input_items"
    assert m.route("/api/tags") == "/api/tags"
    assert m.route("/api/blobs/sha256:00") == "/api/blobs/{digest}"
    # a model id with slashes (a cache model's ``org/model:Q4_K_M``, a path) is still its route's
    assert m.route("/v1/models/org/model:Q4_K_M") == m.route("/v1/models/smol") == "/v1/models/{model_id}"
    assert m.route("/models//root/m.gguf") == "/models/{model_id}"
    # a path no route serves: one series for all of them; a method a route does not take is its route's (a 405)
    assert m.route("/wp-admin/x.php") == m.route("/v2/chat") == "other"
    assert m.route("/completion") == "/completion"


def scrape(srv: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by (name, sorted labels); the whole text must parse as Prometheus'."""
    r = srv.get("/metrics")
    assert r.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def requests_of(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], route: str, status: str) -> float:
    key = ("llamatwist:http_requests_total", (("method", "POST"), ("route", route), ("status", status)))
    return samples.get(key, 0.0)


@pytest.fixture(scope="module")
def srv(model_path: str) -> Iterator[Server]:
    s = Server(["-m", model_path, "-c", "1024", "-np", "2", "-t", "1", "--metrics"])
    yield s
    s.stop()


def test_requests_durations_and_generations_are_counted(srv: Server) -> None:
    before = scrape(srv)
    body = {"prompt": "Once upon a time", "n_predict": 5, "ignore_eos": True}
    done = [srv.post("/completion", body).json(), srv.stream("/completion", body)[-1]]
    assert srv.post("/completion", {"prompt": 3}).status_code == 400
    assert srv.get("/no/such/path").status_code == 404
    after = scrape(srv)

    def grew(route: str, status: str) -> float:
        return requests_of(after, route, status) - requests_of(before, route, status)

    assert grew("/completion", "200") == 2 and grew("/completion", "400") == 1
    other = ("llamatwist:http_requests_total", (("method", "GET"), ("route", "other"), ("status", "404")))
    assert after[other] - before.get(other, 0.0) == 1

    def delta(name: str) -> float:
        return after[(name, ())] - before.get((name, ()), 0.0)

    # each finished generation once: its tokens, its prompt, the time to its first token
    assert delta("llamatwist:request_generation_tokens_count") == 2
    assert delta("llamatwist:request_generation_tokens_sum") == sum(d["tokens_predicted"] for d in done) == 10
    assert delta("llamatwist:request_prompt_tokens_sum") == sum(d["tokens_evaluated"] for d in done)
    assert delta("llamatwist:time_to_first_token_seconds_count") == 2
    duration = ("llamatwist:http_request_duration_seconds_count", (("method", "POST"), ("route", "/completion")))
    assert after[duration] - before.get(duration, 0.0) == 3
    # llama-server's own metrics are all still there
    assert ("llamacpp:tokens_predicted_total", ()) in after
    # monitoring's reads count for nothing: a scrape after scrapes and health checks reads the same (llama-server's
    # throughput gauges apart: they average the window since the previous scrape)
    for path in ("/health", "/props", "/slots", "/v1/models"):
        assert srv.get(path).status_code == 200

    def own(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[Any, float]:
        return {k: v for k, v in samples.items() if k[0].startswith("llamatwist:")}

    assert own(scrape(srv)) == own(after)


def test_a_client_that_leaves_counts_as_499(srv: Server) -> None:
    before = requests_of(scrape(srv), "/v1/chat/completions", "499")
    body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 200, "ignore_eos": True,
            "stream": True}
    with requests.post(srv.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        next(r.iter_lines())  # the first event, then the client goes
    deadline = time.monotonic() + 30
    while requests_of(scrape(srv), "/v1/chat/completions", "499") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert requests_of(scrape(srv), "/v1/chat/completions", "499") == before + 1
    while any(s["is_processing"] for s in srv.get("/slots").json()) and time.monotonic() < deadline:
        time.sleep(0.1)  # its task is cancelled at the next step
    assert all(not s["is_processing"] for s in srv.get("/slots").json())
