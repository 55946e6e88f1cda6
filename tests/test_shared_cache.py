"""The prefix cache shared across slots and context management, on real servers.

Cached output is compared with the same request under ``cache_prompt: false``
(the whole prompt evaluated afresh) at temperature 0, token by token with the
two most likely candidates at every step, on the default model dequantized to
F32. With one KV pool for all sequences, where a sequence's cells lie changes
the summation order inside attention; with the Q4_1 model ggml's 8-bit
activation rounding amplifies that to ~0.1 in a top logprob even between two
*uncached* runs, in F32 it stays under 1e-3. So the runs must agree token for
token (or part at a genuine near tie, where greedy may go either way), with
logprobs within 0.01; reusing wrong cells or positions moves them far more.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import REPO, Server, staggered_streams
from tests.models import dflash_gguf, eagle3_gguf, mtp_gguf, recurrent_gguf, smollm2_f32_gguf, swa_gguf

StartServer = Callable[..., Server]


@pytest.fixture(scope="module")
def f32_model(model_path: str) -> str:
    return str(smollm2_f32_gguf(Path(model_path)))


# F32 all the way: F16 K/V (and flash attention's F16 Q) would add rounding that
# depends on which sequences share a batch
EXACT = ("-fa", "off", "-ctk", "f32", "-ctv", "f32")

SYSTEM = "You are a careful assistant. " + " ".join(
    f"Rule {i}: answer questions about the number {i} politely." for i in range(30)
)


def complete(srv: Server, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "n_predict": 12, "temperature": 0, "n_probs": 2, **extra}
    r = srv.post("/completion", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def probs(r: dict[str, Any]) -> list[tuple[int, list[tuple[int, float]]]]:
    return [(p["id"], [(t["id"], t["logprob"]) for t in p["top_logprobs"]]) for p in r["completion_probabilities"]]


TIE = 0.02  # logprob gap between the top two candidates under which greedy may go either way
CLOSE = 0.01  # largest logprob difference between cached and uncached runs of the same step


def assert_same_as_uncached(srv: Server, prompt: str, cached: dict[str, Any]) -> None:
    fresh = complete(srv, prompt, cache_prompt=False, n_probs=2)
    if assert_same_greedy(probs(cached), probs(fresh)):
        assert cached["content"] == fresh["content"]


def assert_same_greedy(a: list[tuple[int, list[tuple[int, float]]]], b: list[tuple[int, list[tuple[int, float]]]],
                       close: float = CLOSE, tie: float = TIE) -> bool:
    """Two greedy runs of one request agree token for token, with top logprobs within ``close``, up to a step
    where only a genuine near tie (a gap under ``tie``) decided differently; False if they parted there."""
    assert len(a) == len(b)
    for step, ((tok_a, top_a), (tok_b, top_b)) in enumerate(zip(a, b, strict=True)):
        assert abs(top_a[0][1] - top_b[0][1]) < close, (step, top_a, top_b)
        if tok_a != tok_b:
            assert {tok_a, tok_b} == {top_a[0][0], top_a[1][0]}, (step, top_a, top_b)
            assert top_a[0][1] - top_a[1][1] < tie, (step, top_a)
            return False
    return True


def stream_probs(chunks: list[dict[str, Any]]) -> list[tuple[int, list[tuple[int, float]]]]:
    return probs({"completion_probabilities": [p for c in chunks for p in c.get("completion_probabilities", [])]})


# Q4_1 (its 8-bit activations) moves a top logprob by up to ~0.1 between batches of other sizes and neighbours
Q_CLOSE, Q_TIE = 0.3, 0.3


def metric(srv: Server, name: str) -> float:
    text = srv.get("/metrics").text
    m = re.search(rf"^llamacpp:{name}(?:_total)? ([0-9.e+]+)$", text, re.MULTILINE)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def test_concurrent_prompts_share_one_prefix(make_server: StartServer, f32_model: str) -> None:
    srv = make_server("-m", f32_model, "-np", "4", "-kvu", "-c", "8192", "-t", "2", "--metrics", *EXACT)
    n_system = len(srv.post("/tokenize", {"content": SYSTEM}).json()["tokens"])
    prompts = [f"{SYSTEM} Question {k}: what is {k} times {k}?" for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: complete(srv, p), prompts))
    # one slot evaluated the system prompt; the others took it from its sequence
    reused = sorted(r["timings"]["cache_n"] for r in results)
    assert reused[0] == 0
    assert all(n >= n_system - 2 for n in reused[1:]), reused
    assert len({r["id_slot"] for r in results}) == 4
    assert sum(r["timings"]["prompt_n"] for r in results) < 2 * n_system
    for prompt, r in zip(prompts, results, strict=True):
        assert_same_as_uncached(srv, prompt, r)
    slots = srv.get("/slots").json()
    assert {"n_prompt_tokens_cache", "n_prompt_tokens_processed"} <= set(slots[0])
    assert metric(srv, "prompt_tokens_cached") >= 3 * (n_system - 2)


def test_a_named_slot_copies_a_prefix_held_by_another(make_server: StartServer, f32_model: str) -> None:
    srv = make_server("-m", f32_model, "-np", "2", "-kvu", "-c", "4096", "-t", "2", *EXACT)
    first = complete(srv, SYSTEM + " First.", id_slot=0)
    second = complete(srv, SYSTEM + " Second.", id_slot=1)
    assert first["timings"]["cache_n"] == 0
    assert second["timings"]["cache_n"] > 300
    assert_same_as_uncached(srv, SYSTEM + " Second.", second)


def test_without_sharing_reuse_stays_per_slot(make_server: StartServer, model_path: str) -> None:
    # --cache-ram 0, or a KV stream per slot (-np N without -kvu, as llama-server)
    for args in (("-kvu", "--cache-ram", "0"), ()):
        srv = make_server("-m", model_path, "-np", "2", "-c", "4096", "-t", "2", *args)
        complete(srv, SYSTEM + " First.", id_slot=0)
        assert complete(srv, SYSTEM + " Second.", id_slot=1)["timings"]["cache_n"] == 0
        assert complete(srv, SYSTEM + " Third.", id_slot=0)["timings"]["cache_n"] > 300
        srv.stop()


def conversation(k: int) -> str:
    return f"Conversation {k}. " + " ".join(f"Fact {k}.{i}: {k * i} is a number." for i in range(25))


def test_parked_conversations_resume_and_survive_eviction(make_server: StartServer, f32_model: str) -> None:
    """One slot, six conversations taking turns: each turn's history is parked
    when the slot moves on. A 32 MiB --cache-ram (~700 tokens of this model's
    F32 KV) holds two or three of them, so LRU eviction runs all the time."""
    srv = make_server("-m", f32_model, "-np", "1", "-kvu", "-c", "4096", "-t", "2", "--metrics", "--cache-ram", "32",
                      *EXACT)
    history = {k: conversation(k) for k in range(6)}
    for turn in range(2):
        for k in range(6):
            r = complete(srv, history[k])
            assert_same_as_uncached(srv, history[k], r)
            history[k] += r["content"] + f" Next question {turn}?"
    assert metric(srv, "prefix_cache_evictions") > 0
    # unbounded, every conversation's first turn is still there for its second
    srv2 = make_server("-m", f32_model, "-np", "1", "-kvu", "-c", "8192", "-t", "2", "--cache-ram", "-1", *EXACT)
    history = {k: conversation(k) for k in range(3)}
    first = {k: complete(srv2, history[k]) for k in range(3)}
    for k in range(3):
        follow = history[k] + first[k]["content"] + " And then?"
        r = complete(srv2, follow)
        assert r["timings"]["cache_n"] >= first[k]["tokens_evaluated"] - 1
        assert_same_as_uncached(srv2, follow, r)


def test_full_kv_evicts_parked_prefixes(make_server: StartServer, f32_model: str) -> None:
    """A 1024-cell KV cache with an unbounded --cache-ram: parked conversations
    fill it, and new prompts still fit because the oldest are given back."""
    srv = make_server("-m", f32_model, "-np", "2", "-kvu", "-c", "1024", "-t", "2", "--metrics",
                      "--cache-ram", "-1", *EXACT)
    for k in range(8):
        prompt = conversation(k)
        r = complete(srv, prompt, id_slot=k % 2)
        assert_same_as_uncached(srv, prompt, r)
    assert metric(srv, "prefix_cache_evictions") > 0
    assert metric(srv, "prefix_cache_tokens") <= 1024


@pytest.mark.parametrize("extra", [(), ("-md", "MODEL", "--spec-type", "draft-simple")])
def test_idle_slots_give_their_cells_to_a_new_prompt(make_server: StartServer, model_path: str,
                                                     llama_server: list[str], extra: tuple[str, ...]) -> None:
    """Four slots in one 1024-cell pool (the default -np and -kvu) and 640-token prompts on other slots in turn:
    an idle slot's cached prompt holds the cells the next one needs, so it is purged (one slot at a time, the
    longest idle first), as llama-server purges them; a draft model's sequence of it goes too."""
    args = ("-m", model_path, "-c", "1024", "-t", "2", *(model_path if a == "MODEL" else a for a in extra))
    ours, theirs = make_server(*args), make_server(*args, command=llama_server)
    prompts = [" ".join(f"{word} {k}" for k in range(150)) for word in ("apple", "river", "stone")]
    for slot, prompt in enumerate(prompts):
        body = {"prompt": prompt, "n_predict": 8, "temperature": 0, "id_slot": slot}
        r, ref = ours.post("/completion", body), theirs.post("/completion", body)
        assert r.status_code == ref.status_code == 200, r.text
        assert r.json()["content"] == ref.json()["content"] and r.json()["timings"]["prompt_n"] == 640
        if extra:
            assert r.json()["timings"]["draft_n"] > 0
    log = ours.log()
    assert "purging slot 0 with 647 tokens" in log and "purging slot 1 with 647 tokens" in log, log[-2000:]
    # the last slot kept its prompt; a purged one starts again from nothing
    last = ours.post("/completion", {"prompt": prompts[2], "n_predict": 8, "temperature": 0, "id_slot": 2}).json()
    assert last["timings"]["cache_n"] > 600
    again = ours.post("/completion", {"prompt": prompts[0], "n_predict": 8, "temperature": 0, "id_slot": 0}).json()
    assert again["timings"]["cache_n"] == 0 and again["content"] == ours.post("/completion", {
        "prompt": prompts[0], "n_predict": 8, "temperature": 0, "id_slot": 1, "cache_prompt": False}).json()["content"]


def test_prompts_that_find_no_room_wait_for_a_generation(make_server: StartServer, model_path: str) -> None:
    """One 1024-cell pool: while a 640-token prompt generates, two of 427 arrive together; their chunks cannot fit
    beside it, so they wait in the queue (llama-server: a 500 for all three) and start when the generation has
    ended, at the end it would have had alone (its 150 tokens, not truncated); their text is what each gets
    alone."""
    srv = make_server("-m", model_path, "-c", "1024", "-t", "2", "-np", "3", "-kvu")
    prompts = [" ".join(f"{word} {k}" for k in range(n)) for word, n in (("apple", 150), ("river", 100), ("stone", 100))]
    body = {"prompt": prompts[0], "n_predict": 150, "temperature": 0, "ignore_eos": True}
    with requests.post(f"{srv.url}/completion", json={**body, "stream": True, "cache_prompt": False},
                       stream=True, timeout=120) as stream:
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith(b"data: "))  # generating
        with ThreadPoolExecutor(2) as pool:
            others = list(pool.map(lambda p: srv.post("/completion", {"prompt": p, "n_predict": 8, "n_probs": 2,
                                                                      "temperature": 0, "cache_prompt": False}),
                                   prompts[1:]))
        chunks = [json.loads(line[6:]) for line in lines if line.startswith(b"data: ")]
    assert [r.status_code for r in others] == [200, 200], [r.text for r in others]
    final = chunks[-1]
    assert final["stop"] and final["tokens_predicted"] == 150 and not final["truncated"]
    alone = [srv.post("/completion", {"prompt": p, "n_predict": 8, "n_probs": 2, "temperature": 0,
                                      "cache_prompt": False}) for p in prompts[1:]]
    for r, ref in zip(others, alone, strict=True):
        assert_same_greedy(probs(r.json()), probs(ref.json()), Q_CLOSE, Q_TIE)
    assert "finds no room in the KV cache: it waits" in srv.log()


def test_prompts_that_overfill_the_pool_together_take_turns(make_server: StartServer, model_path: str) -> None:
    """Four 350-token prompts at once on four slots of one 1024-cell pool (the default -np and -kvu): together
    they cannot fit (llama-server: four 500s), so two wait for the first two to end; every one answers as it
    does alone, and every slot serves again afterwards."""
    srv = make_server("-m", model_path, "-c", "1024", "-t", "2")
    prompts = [" ".join(f"{word} {k}" for k in range(90)) for word in ("apple", "river", "stone", "cloud")]

    def ask(prompt: str) -> requests.Response:
        return srv.post("/completion", {"prompt": prompt, "n_predict": 16, "n_probs": 2, "temperature": 0,
                                        "cache_prompt": False})

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, prompts))
    assert [r.status_code for r in together] == [200] * 4, [r.text for r in together]
    n_prompt = [r.json()["timings"]["prompt_n"] for r in together]
    assert min(n_prompt) > 300 and sum(n_prompt) > 1024, n_prompt
    assert srv.log().count("finds no room in the KV cache: it waits") >= 2
    alone = [ask(p) for p in prompts]
    for r, ref in zip(together, alone, strict=True):
        assert_same_greedy(probs(r.json()), probs(ref.json()), Q_CLOSE, Q_TIE)
    assert len({r.json()["id_slot"] for r in together}) >= 2
    assert not any(slot["is_processing"] for slot in srv.get("/slots").json())


WORDS = 'root ::= ([a-z]+ " ")+'


def _overfill_the_pool(srv: Server, sampling: dict[str, Any] | None = None,
                       delay: float = 0.5) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Two 300-token greedy streams after 330-token prompts, the second ``delay`` s after the first, in a 1024-cell
    pool they overfill: one stops and goes on (the log says so); both reach their 300 tokens untruncated with
    what each gets alone (`assert_same_greedy`). Each one's final event and its alone response."""
    prompts = [" ".join(f"{word} {k}" for k in range(80)) for word in ("apple", "river")]
    body = {"n_predict": 300, "temperature": 0, "ignore_eos": True, "n_probs": 2, **(sampling or {})}
    together = staggered_streams(srv, [{**body, "prompt": p} for p in prompts], delay=delay)
    log = srv.log()
    assert "finds no room in the KV cache: it stops until other tasks leave room" in log, log[-3000:]
    assert "goes on: " in log
    alone = [srv.post("/completion", {**body, "prompt": p, "cache_prompt": False}).json() for p in prompts]
    for chunks, ref in zip(together, alone, strict=True):
        final = chunks[-1]
        assert final["stop"] and final["tokens_predicted"] == 300 and not final["truncated"], final
        if assert_same_greedy(stream_probs(chunks), probs(ref)):
            assert "".join(c["content"] for c in chunks) == ref["content"]
    return [(chunks[-1], ref) for chunks, ref in zip(together, alone, strict=True)]


@pytest.mark.parametrize(("extra", "sampling"), [
    ((), {}),
    (("-md", "MODEL", "--spec-type", "draft-simple"), {}),
    ((), {"grammar": WORDS, "repeat_penalty": 1.3, "repeat_last_n": 64}),
], ids=["plain", "draft-model", "grammar-and-penalties"])
def test_generations_that_overfill_the_pool_take_turns(make_server: StartServer, f32_model: str,
                                                       extra: tuple[str, ...], sampling: dict[str, Any]) -> None:
    """Two 300-token generations after 330-token prompts in one 1024-cell pool: together they run out of cells
    (llama-server: a 500 for both; before, both ended there, truncated). The one started last stops, holding no
    cells, and goes on once the other has ended, its tokens decoded again: both reach their 300 tokens with the
    text each gets alone, and the stream of the stopped one only pauses. With a draft model, its sequence of the
    stopped one goes too, and both still draft; a grammar's and the penalties' state go on where they were."""
    srv = make_server("-m", f32_model, "-c", "1024", "-t", "2", "-np", "2", "-kvu", *EXACT,
                      *(f32_model if a == "MODEL" else a for a in extra))
    for final, ref in _overfill_the_pool(srv, sampling):
        assert final["timings"]["prompt_n"] + final["timings"]["cache_n"] > 300
        if extra:
            assert final["timings"]["draft_n_accepted"] > 0
        if sampling:
            assert re.fullmatch(r"([a-z]+ )*[a-z]*", ref["content"]), ref["content"]


def _tiny(kind: str, base: Path) -> tuple[str, ...]:
    """Flags for a tiny random model of ``kind`` (tests/models.py), with its draft head where it has one."""
    if kind == "swa":
        return ("-m", str(swa_gguf(base)))
    if kind == "jamba":
        return ("-m", str(recurrent_gguf(base, kind)))
    if kind == "mtp":
        return ("-m", str(mtp_gguf(base)), "--spec-type", "draft-mtp")
    target, draft = eagle3_gguf(base, arch="lfm2") if kind == "eagle3-lfm2" else dflash_gguf(base, kind=kind)
    spec = "draft-eagle3" if kind == "eagle3-lfm2" else f"draft-{kind}"
    return ("-m", str(target), "-md", str(draft), "--spec-type", spec)


@pytest.mark.parametrize("kind", ["swa", "jamba", "mtp", "eagle3-lfm2", "dflash", "dspark"])
def test_generations_with_checkpoints_or_a_draft_head_take_turns(make_server: StartServer, model_path: str,
                                                                 kind: str) -> None:
    """As above, on models whose memory cannot be cut part-way (sliding window; Jamba's recurrent state beside
    its attention) and with draft heads that follow the target's states (MTP, EAGLE-3 on the hybrid LFM2,
    DFlash, DSpark): the stopped generation's memory and its head's KV are built again from its tokens (before,
    both ended truncated there). Tiny random models (F32, exact): each stream equals its alone run token for
    token (logprobs within 0.01), and a head drafts as well after the stop as alone (a head that lost what it had
    read drafts otherwise: DFlash's acceptance moves by more than half)."""
    srv = make_server(*_tiny(kind, Path(model_path)), "-c", "1024", "-t", "2", "-np", "2", "-kvu", *EXACT)
    for final, ref in _overfill_the_pool(srv, delay=0.05):  # these run ~1 ms a token
        accepted, ref_accepted = final["timings"].get("draft_n_accepted"), ref["timings"].get("draft_n_accepted")
        if ref_accepted is not None:
            assert ref_accepted > 0 and abs(accepted - ref_accepted) <= 0.1 * ref_accepted + 3, (final, ref)


def test_a_stopped_generation_whose_client_leaves_frees_its_slot(make_server: StartServer, model_path: str) -> None:
    """A generation stopped for room (as above) whose client goes away while it waits: its slot is free again
    once the other ends, nothing waits for room any more, and both slots serve the next requests."""
    srv = make_server("-m", model_path, "-c", "1024", "-t", "2", "-np", "2", "-kvu")
    prompts = [" ".join(f"{word} {k}" for k in range(80)) for word in ("apple", "river")]
    body = {"n_predict": 400, "ignore_eos": True, "stream": True, "cache_prompt": False}
    first = requests.post(f"{srv.url}/completion", json={**body, "prompt": prompts[0]}, stream=True, timeout=120)
    first_lines = first.iter_lines()
    next(line for line in first_lines if line.startswith(b"data: "))
    second = requests.post(f"{srv.url}/completion", json={**body, "prompt": prompts[1]}, stream=True, timeout=120)
    deadline = time.monotonic() + 60
    while "it stops until other tasks leave room" not in srv.log():
        assert time.monotonic() < deadline, srv.log()[-2000:]
        time.sleep(0.1)
    second.close()  # while it waits
    final = [json.loads(line[6:]) for line in first_lines if line.startswith(b"data: ")][-1]
    first.close()
    assert final["stop"] and final["tokens_predicted"] == 400 and not final["truncated"]
    deadline = time.monotonic() + 10
    while any(slot["is_processing"] for slot in srv.get("/slots").json()):
        assert time.monotonic() < deadline, srv.get("/slots").json()
        time.sleep(0.05)
    for slot in (0, 1):
        r = srv.post("/completion", {"prompt": prompts[slot], "n_predict": 4, "id_slot": slot})
        assert r.status_code == 200 and r.json()["tokens_predicted"] == 4


def test_cache_reuse_shifts_chunks_into_place(make_server: StartServer, f32_model: str) -> None:
    """--cache-reuse (or the request's n_cache_reuse): when a middle part of the
    conversation is dropped, the part after it moves into place by KV shifting.
    As in llama-server this is an approximation (the moved cells were computed
    with the dropped part in view), so only the first token must match a fresh run."""
    head = conversation(1)
    middle = " ".join(f"Aside {i}: {i * 7} is odd or even." for i in range(20))
    tail = " " + conversation(2)
    for args, extra in ((("--cache-reuse", "16"), {}), ((), {"n_cache_reuse": 16}), ((), {})):
        srv = make_server("-m", f32_model, "-np", "1", "-c", "4096", "-t", "2", *EXACT, *args)
        n_head = len(srv.post("/tokenize", {"content": head}).json()["tokens"])
        n_tail = len(srv.post("/tokenize", {"content": tail}).json()["tokens"])
        complete(srv, head + " " + middle + tail, **extra)
        r = complete(srv, head + tail, **extra)
        if args or extra:
            assert r["timings"]["cache_n"] >= n_head + n_tail - 8, (n_head, n_tail, r["timings"])
        else:
            assert r["timings"]["cache_n"] <= n_head + 1
        fresh = complete(srv, head + tail, cache_prompt=False)
        assert probs(r)[0][0] == probs(fresh)[0][0]
        assert abs(probs(r)[0][1][0][1] - probs(fresh)[0][1][0][1]) < 0.5
        srv.stop()


def test_context_shift(make_server: StartServer, model_path: str) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 300, "temperature": 0, "ignore_eos": True}
    plain = make_server("-m", model_path, "-np", "1", "-c", "256", "-t", "2")
    r = plain.post("/completion", body).json()
    assert r["stop_type"] == "limit" and r["truncated"] is True
    assert r["tokens_evaluated"] + r["tokens_predicted"] <= 256

    # one KV pool (-kvu): the shift may move only cells no other sequence holds
    shifting = make_server("-m", model_path, "-np", "1", "-kvu", "-c", "256", "-t", "2", "--context-shift")
    r = shifting.post("/completion", {**body, "n_keep": 2}).json()
    assert r["tokens_predicted"] == 300 and r["truncated"] is True
    assert "context shift" in shifting.log()
    # the slot keeps serving
    again = shifting.post("/completion", {"prompt": "Hello", "n_predict": 4, "temperature": 0, "ignore_eos": True}).json()
    assert again["truncated"] is False and again["tokens_predicted"] == 4


def test_prompt_longer_than_the_slot_context_is_a_400(make_server: StartServer, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "2", "-c", "512", "-t", "2", "--context-shift")
    r = srv.post("/completion", {"prompt": SYSTEM, "n_predict": 4})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "exceed_context_size_error" and err["n_ctx"] == 256
    for field in ("n_keep", "n_discard", "n_cache_reuse"):
        r = srv.post("/completion", {"prompt": "Hello", "n_predict": 4, field: -5})
        assert r.status_code == 400 and field in r.json()["error"]["message"]
    assert complete(srv, "Hello", ignore_eos=True)["tokens_predicted"] == 12


def test_slot_prompt_similarity(make_server: StartServer, model_path: str) -> None:
    a, b = conversation(1), conversation(2)
    for sps, expected in (("0.1", 1), ("0", 0)):
        srv = make_server("-m", model_path, "-np", "2", "-kvu", "-c", "4096", "-t", "2", "-sps", sps)
        assert complete(srv, a)["id_slot"] == 0
        assert complete(srv, b)["id_slot"] == 1
        # similar to slot 1's prompt; without -sps the least recently used slot 0 is taken
        r = complete(srv, b + " More.")
        assert r["id_slot"] == expected
        assert r["timings"]["cache_n"] > 100  # found either way: the cache is shared
        srv.stop()


def test_kv_cache_types_and_flash_attention(make_server: StartServer, model_path: str) -> None:
    ref = make_server("-m", model_path, "-np", "1", "-c", "1024", "-t", "2")
    srv = make_server("-m", model_path, "-np", "1", "-c", "1024", "-t", "2",
                      "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on", "-nkvo", "-dt", "0.1")
    prompt = conversation(3)
    quantized = complete(srv, prompt, n_predict=24, n_probs=5, ignore_eos=True)
    assert quantized["tokens_predicted"] == 24 and isinstance(quantized["content"], str)
    reference = complete(ref, prompt, n_probs=5, ignore_eos=True)  # f16 K/V, no flash attention
    assert reference["tokens_predicted"] == 12
    # the same model reading a q8_0 cache through flash attention: its first pick is one of the reference's
    # likeliest (which one may differ where two are close; broken K/V would give something else entirely)
    top = [t["id"] for t in reference["completion_probabilities"][0]["top_logprobs"]]
    assert quantized["completion_probabilities"][0]["id"] in top, (quantized["completion_probabilities"][0], top)


def test_bad_kv_settings_are_start_up_errors(model_path: str) -> None:
    def start(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llamatwist", "-m", model_path, "--port", "1", *args],
                              check=False, capture_output=True, text=True, cwd=REPO, timeout=120)

    proc = start("-ctk", "q3_k")
    assert proc.returncode == 2 and "must be one of f32, f16" in proc.stderr
    proc = start("-ctv", "q8_0", "-fa", "off", "-c", "256")
    assert proc.returncode == 1
    assert "flash" in proc.stderr.lower() or "flash" in proc.stdout.lower()


@pytest.mark.parametrize("value", ["-2", "x"])
def test_cache_ram_values(value: str, model_path: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "llamatwist", "--cache-ram", value],
                          check=False, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "--cache-ram" in proc.stderr
