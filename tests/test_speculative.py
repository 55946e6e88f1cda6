"""Speculative decoding (issue 15): n-gram (prompt lookup) and draft-model drafts, verified in the step's one
batch by the slot's own sampler chain. Greedy output is the same with and without speculation (the F32 model,
whose outputs do not move with the batch layout), also with a JSON schema, stop strings and n_probs, at 1
and 4 concurrent slots; the counters move; bad input is a 400; a bad draft model stops the start-up."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from llamatwist.runtime.speculative import ngram_simple_draft
from tests.conftest import Server
from tests.models import minilm_gguf, smollm2_f32_gguf

EXACT = ("-fa", "off", "-ctk", "f32", "-ctv", "f32")
PASSAGE = ("The old lighthouse keeper climbed the spiral stairs every evening, lit the great lamp, and watched "
           "the ships pass safely through the narrow channel between the rocks.")
REPEAT = f"Copy the text.\nText: {PASSAGE}\nCopy: {PASSAGE}\nText: {PASSAGE}\nCopy:"
STORY = "Once upon a time, in a small village by the sea, there lived a girl who"
OFF = {"speculative.type": "none"}


def test_ngram_simple_draft() -> None:
    history = [9, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3]  # (a match at position 0 does not count, as llama.cpp)
    # the last 3 tokens (with the sampled one) occurred before: the 3 tokens after them are the draft
    assert ngram_simple_draft(history[:-1], 3, size_n=3, size_m=3) == [4, 5, 6]
    assert ngram_simple_draft(history[:-1], 7, size_n=3, size_m=3) == []  # no earlier occurrence
    assert ngram_simple_draft([1, 2, 3], 1, size_n=3, size_m=3) == []  # too short to hold a draft


@pytest.fixture(scope="module")
def f32_model(model_path: str) -> str:
    return str(smollm2_f32_gguf(Path(model_path)))


@pytest.fixture(scope="module")
def ngram(f32_model: str) -> Iterator[Server]:
    srv = Server(["-m", f32_model, "-np", "4", "-c", "4096", "-t", "2", "--metrics", "--slots", *EXACT,
                  "--spec-type", "ngram-simple", "--draft-max", "16", "--spec-ngram-simple-size-n", "4",
                  "--spec-ngram-simple-size-m", "16"])
    yield srv
    srv.stop()


def complete(srv: Server, prompt: str, **extra: Any) -> dict[str, Any]:
    r = srv.post("/completion", {"prompt": prompt, "n_predict": 48, "temperature": 0, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


def metric(srv: Server, name: str) -> float:
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith(f"llamacpp:{name} "):
            return float(line.split()[1])
    raise KeyError(name)


def test_ngram_output_is_unchanged_and_drafts_are_taken(ngram: Server) -> None:
    before = metric(ngram, "spec_decode_num_draft_tokens_total")
    spec = complete(ngram, REPEAT, n_probs=2)
    plain = complete(ngram, REPEAT, n_probs=2, **OFF)
    assert spec["content"] == plain["content"] and PASSAGE[:60] in spec["content"]
    assert [p["id"] for p in spec["completion_probabilities"]] == [p["id"] for p in plain["completion_probabilities"]]
    t = spec["timings"]
    assert t["draft_n"] > 0 and 0 < t["draft_n_accepted"] <= t["draft_n"]
    assert "draft_n" not in plain["timings"]
    assert metric(ngram, "spec_decode_num_draft_tokens_total") - before == t["draft_n"]
    assert metric(ngram, "spec_decode_num_accepted_tokens_total") >= t["draft_n_accepted"]
    assert metric(ngram, "spec_decode_num_drafts_total") > 0
    # llama-server's log line, and its per-position counter (a draft's first tokens are taken the most)
    assert re.search(r"draft acceptance = [01]\.\d{5} \( *\d+ accepted / +\d+ generated\), mean len = +\d+\.\d\d",
                     ngram.log())
    per_pos = [metric(ngram, f'spec_decode_num_accepted_tokens_per_pos_total{{position="{i}"}}') for i in range(16)]
    assert per_pos[0] > 0 and per_pos == sorted(per_pos, reverse=True), per_pos
    assert sum(per_pos) == metric(ngram, "spec_decode_num_accepted_tokens_total")


def test_ngram_with_stop_strings_and_a_schema(ngram: Server) -> None:
    stop = {"stop": ["channel"]}
    assert complete(ngram, REPEAT, **stop)["content"] == complete(ngram, REPEAT, **stop, **OFF)["content"]
    schema = {"json_schema": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 120}},
                              "required": ["text"]}}
    prompt = f"Put the text in JSON.\nText: {PASSAGE}\nJSON: {json.dumps({'text': PASSAGE[:100]})}\nText: {PASSAGE}\nJSON:"
    spec, plain = complete(ngram, prompt, **schema), complete(ngram, prompt, **schema, **OFF)
    assert spec["content"] == plain["content"]
    json.loads(spec["content"])


def test_four_concurrent_slots(ngram: Server) -> None:
    prompts = [REPEAT, STORY, REPEAT.replace("lighthouse", "windmill"), STORY.replace("girl", "boy")]
    with ThreadPoolExecutor(4) as pool:
        spec = list(pool.map(lambda p: complete(ngram, p)["content"], prompts))
        plain = list(pool.map(lambda p: complete(ngram, p, **OFF)["content"], prompts))
    assert spec == plain


def test_story_prompts_are_unchanged(ngram: Server) -> None:
    assert complete(ngram, STORY)["content"] == complete(ngram, STORY, **OFF)["content"]


@pytest.mark.parametrize("field, value", [
    ("speculative.n_max", -1), ("speculative.n_min", "x"), ("speculative.p_min", 2),
    ("speculative.type", "bogus"), ("speculative.type", "draft-simple"), ("speculative.ngram_size_n", 0),
])  # fmt: skip
def test_bad_speculative_fields(ngram: Server, field: str, value: Any) -> None:
    r = ngram.post("/completion", {"prompt": "x", "n_predict": 1, field: value})
    assert r.status_code == 400 and field in r.json()["error"]["message"], r.text
    assert ngram.get("/health").status_code == 200


def test_per_request_draft_length(ngram: Server) -> None:
    # ngram-simple drafts up to its m-gram's length (llama.cpp's), not the draft model's n_max
    long = complete(ngram, REPEAT, **{"speculative.n_max": 2})["timings"]
    short = complete(ngram, REPEAT, **{"speculative.ngram_size_m": 4})
    t = short["timings"]
    assert 0 < t["draft_n"] < long["draft_n"] and t["draft_n"] <= 4 * t["predicted_n"], (t, long)
    assert short["content"] == complete(ngram, REPEAT, **OFF)["content"]


def test_draft_model(make_server: Any, f32_model: str) -> None:
    srv = make_server("-m", f32_model, "-md", f32_model, "-np", "2", "-c", "2048", "-t", "2", *EXACT,
                      "--draft-max", "4", "--draft-p-min", "0.5")
    spec = complete(srv, STORY, n_predict=24)
    plain = complete(srv, STORY, n_predict=24, **OFF)
    assert spec["content"] == plain["content"]
    # the draft is the target itself: what it proposes is what the target samples
    assert spec["timings"]["draft_n"] > 0 and spec["timings"]["draft_n_accepted"] == spec["timings"]["draft_n"]
    chat = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
                                             "temperature": 0}).json()
    assert chat["timings"]["draft_n"] > 0
    # --spec-draft-backend-sampling is on by default, as llama-server's: the log says where drafts are sampled
    assert "llamatwist picks draft tokens on the CPU" in srv.log()


def test_draft_model_errors(make_server: Any, f32_model: str, model_path: str) -> None:
    missing = make_server("-m", model_path, "-md", "/nonexistent/draft.gguf", wait=False)
    assert missing.proc.wait(60) != 0 and "/nonexistent/draft.gguf" in missing.log()
    bert = str(minilm_gguf())
    wrong = make_server("-m", model_path, "-md", bert, wait=False)
    assert wrong.proc.wait(60) != 0
    assert f"draft model {bert} cannot draft for {model_path}" in wrong.log()


def test_props_and_slots_show_speculation(ngram: Server) -> None:
    params = ngram.get("/props").json()["default_generation_settings"]["params"]
    assert params["speculative.types"] == "ngram-simple" and params["speculative.n_max"] == 16
    r = complete(ngram, STORY, n_predict=2, id_slot=3)
    assert r["generation_settings"]["speculative.types"] == "ngram-simple"
    slot = next(s for s in ngram.get("/slots").json() if s["id"] == 3)
    assert slot["speculative"] is True
    complete(ngram, STORY, n_predict=2, id_slot=3, **OFF)
    slot = next(s for s in ngram.get("/slots").json() if s["id"] == 3)
    assert slot["speculative"] is False and slot["params"]["speculative.types"] == "none"


def test_draft_device_the_build_lacks_is_refused(make_server: Any, model_path: str) -> None:
    # validated as -dev is: a device this build has (--list-devices), or none
    srv = make_server("-m", model_path, "--spec-type", "ngram-simple", "-devd", "CUDA7", wait=False)
    assert srv.proc.wait(60) == 2
    assert "invalid device: CUDA7" in srv.log() and "'none' keeps the model on the CPU" in srv.log()


def test_draft_model_own_compute_flags(make_server: Any, model_path: str) -> None:
    """-td/-tbd, the draft thread pools (-Cd), -ctkd/-ctvd and -otd/-cmoed reach the draft context and model
    only; drafting still works."""
    srv = make_server("-m", model_path, "-md", model_path, "-np", "1", "-c", "1024", "-t", "1", "-lv", "5",
                      "-td", "1", "-tbd", "1", "-Cd", "0x1", "-ctkd", "q8_0", "-ctvd", "q8_0",
                      "-otd", r"token_embd\.weight=CPU", "-cmoed", "-fit", "off")
    log = srv.log()
    # the target's KV stays f16, the draft's is q8_0; the override applies to one load (the draft model's:
    # its tied input and output embeddings are one tensor, logged twice; -fit off: no measuring loads)
    assert re.search(r"K \(f16\)", log) and re.search(r"K \(q8_0\)", log), log[-3000:]
    assert len(re.findall(r"tensor token_embd\.weight .*buffer type overridden to CPU", log)) == 2
    out = srv.post("/completion", {"prompt": "1 2 3 4 5 6 7 8", "n_predict": 16, "temperature": 0}).json()
    assert out["timings"]["draft_n"] > 0


def test_draft_kv_is_f16_whatever_the_targets_is(make_server: Any, model_path: str) -> None:
    # the pinned llama-server's -ctkd/-ctvd default: f16, not the target's -ctk/-ctv
    srv = make_server("-m", model_path, "-md", model_path, "-np", "1", "-c", "1024", "-t", "1", "-lv", "5",
                      "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on")
    log = srv.log()
    assert re.search(r"K \(q8_0\)", log) and re.search(r"K \(f16\)", log), log[-3000:]
