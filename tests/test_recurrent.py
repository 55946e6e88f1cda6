"""Recurrent (Mamba) and hybrid (Jamba) models on a real server: memory that cannot be cut part-way.

A recurrent state holds only a sequence's last position, so whatever the server would ``seq_rm`` from the
end of a sequence -- a prompt that diverges from the cached one, speculative decoding's rejected draft
tokens -- must come from a kept state instead (context checkpoints; the state from before the draft's batch,
then the accepted tokens decoded again). The models (scripts/make_recurrent_model.py) are tiny and random:
their output means nothing but is deterministic, so every cached or speculative result is compared token for
token with the plain one.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.models import recurrent_gguf

StartServer = Callable[..., Server]

ARCHS = ("mamba", "jamba")
# two slots, exact KV (F32, no flash attention): a batch's make-up does not move the logits
ARGS = ("-np", "2", "-c", "2048", "-t", "2", "-ctk", "f32", "-ctv", "f32", "-fa", "off")
PROMPTS = ("Hello there, how are", "Once upon a time in a land far away there was")


@pytest.fixture(scope="module", params=ARCHS)
def recurrent_model(request: pytest.FixtureRequest, model_path: str) -> str:
    return str(recurrent_gguf(Path(model_path), request.param))


def _complete(srv: Server, prompt: str | list[int], n_predict: int = 48, **extra: Any) -> dict[str, Any]:
    r = srv.post("/completion", json={"prompt": prompt, "n_predict": n_predict, "temperature": 0,
                                      "ignore_eos": True, "return_tokens": True, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _both(srv: Server, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests at once (one per slot)."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: _complete(srv, **b), bodies))


def test_slots_batch_like_one(make_server: StartServer, recurrent_model: str) -> None:
    srv = make_server("-m", recurrent_model, *ARGS)
    alone = [_complete(srv, p, cache_prompt=False)["tokens"] for p in PROMPTS]
    together = _both(srv, [{"prompt": p, "cache_prompt": False} for p in PROMPTS])
    assert [o["tokens"] for o in together] == alone
    assert len(set(alone[0])) > 1  # not a degenerate model
    log = srv.log()
    assert "context checkpoints enabled" in log  # recurrent memory takes them, as llama-server


def test_prefix_reuse_matches_recompute(make_server: StartServer, recurrent_model: str) -> None:
    srv = make_server("-m", recurrent_model, *ARGS)
    words = " ".join(f"w{i}" for i in range(120))
    prompt = [int(t) for t in srv.post("/tokenize", json={"content": words}).json()["tokens"]]
    first = _complete(srv, prompt, 16)
    # the conversation goes on: the state at the end of the last request (its last token sampled, not
    # decoded) is the prefix
    turn = [*prompt, *first["tokens"], *range(300, 320)]
    cached, fresh = _complete(srv, turn), _complete(srv, turn, cache_prompt=False)
    assert cached["timings"]["cache_n"] == len(prompt) + len(first["tokens"]) - 1
    assert cached["tokens"] == fresh["tokens"]
    # a prompt that leaves it part-way (a regenerated turn): the state cannot be cut, a checkpoint serves
    regen = [*prompt[:-2], *range(400, 410)]
    cached, fresh = _complete(srv, regen), _complete(srv, regen, cache_prompt=False)
    assert 0 < cached["timings"]["cache_n"] < len(prompt) - 2
    assert cached["tokens"] == fresh["tokens"]
    assert "restored context checkpoint" in srv.log()


def _spec_stats(out: dict[str, Any]) -> tuple[int, int]:
    t = out["timings"]
    return int(t.get("draft_n", 0)), int(t.get("draft_n_accepted", 0))


def test_draft_model_rejections_roll_back(make_server: StartServer, recurrent_model: str) -> None:
    # the model drafts for itself, greedily; the target samples among its top 3 with a seed, so some drafts
    # are taken and some rejected part-way: every rejection restores the state from before the batch
    srv = make_server("-m", recurrent_model, *ARGS, "-md", recurrent_model, "--draft-p-min", "0")
    sampled = {"temperature": 0.7, "top_k": 3, "seed": 11}
    plain = [_complete(srv, p, 64, **sampled, **{"speculative.type": "none"})["tokens"] for p in PROMPTS]
    spec = _both(srv, [{"prompt": p, "n_predict": 64, **sampled, "speculative.type": "draft-simple"}
                       for p in PROMPTS])
    assert [o["tokens"] for o in spec] == plain
    for out in spec:
        drafted, accepted = _spec_stats(out)
        assert 0 < accepted < drafted, out["timings"]
    assert srv.get("/health").status_code == 200
    assert "decode loop crashed" not in srv.log()


def test_ngram_rejections_roll_back(make_server: StartServer, recurrent_model: str) -> None:
    # the output is biased onto six tokens, so it repeats itself and 1-gram lookups draft (often wrongly)
    srv = make_server("-m", recurrent_model, *ARGS, "--spec-type", "ngram-simple",
                      "--spec-ngram-simple-size-n", "1", "--spec-ngram-simple-size-m", "8")
    words = " ".join(f"w{i % 7}" for i in range(60))
    ids = sorted({int(t) for t in srv.post("/tokenize", json={"content": words}).json()["tokens"]})[:6]
    bias = {"logit_bias": [[i, 30] for i in ids]}
    plain = _complete(srv, words, 96, **bias, **{"speculative.type": "none"})
    spec = _complete(srv, words, 96, **bias)
    assert spec["tokens"] == plain["tokens"]
    drafted, accepted = _spec_stats(spec)
    assert 0 < accepted < drafted, spec["timings"]
    # and the slot's sequence holds what its cache says: the conversation goes on from it exactly
    turn = [int(t) for t in srv.post("/tokenize", json={"content": words}).json()["tokens"]]
    turn += [*spec["tokens"], *ids]
    again, fresh = _complete(srv, turn, 32, **bias), _complete(srv, turn, 32, cache_prompt=False, **bias)
    assert again["timings"]["cache_n"] > len(turn) // 2
    assert again["tokens"] == fresh["tokens"]
