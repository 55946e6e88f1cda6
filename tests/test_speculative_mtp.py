"""``--spec-type draft-mtp``: drafts from the model's own multi-token-prediction (NextN) head.

The models are tiny random ones with NextN blocks (scripts/make_mtp_model.py): GLM-4.5-style with one head,
MiMo-V2-style with several (chained), whose heads predict mostly, not always, what the trunk samples, so both
accepted and rejected drafts occur. Greedy output
is the same with and without drafting, at 1 and 3 concurrent slots and across reused prefixes; llama.cpp's own
llama-server, built from the same source, drafts and accepts exactly as many tokens on the same prompts;
a model without MTP layers and a request for MTP drafts from a server without the head are clear errors. A
separate MTP draft model (-md) runs as llama-server's: another model's NextN layers, or a Gemma 4 assistant
(scripts/make_gemma4_model.py), which attends over the target's KV cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.models import gemma4_gguf, mtp_gguf
from tests.test_speculative import complete as complete_48
from tests.test_speculative import metric

# The first reference build (llama.cpp's llama-server) compiles for minutes on 2 cores.
pytestmark = pytest.mark.timeout(1800)

EXACT = ("-fa", "off", "-ctk", "f32", "-ctv", "f32")
PROMPTS = ["Hello world, this is", "The capital of France", "def fib(n):", "Once upon a time"]
OFF = {"speculative.type": "none"}


@pytest.fixture(scope="module")
def mtp_model(model_path: str) -> str:
    return str(mtp_gguf(Path(model_path)))


@pytest.fixture(scope="module")
def mtp(mtp_model: str) -> Iterator[Server]:
    srv = Server(["-m", mtp_model, "-np", "3", "-c", "3072", "-t", "2", "--metrics", *EXACT,
                  "--spec-type", "draft-mtp"])
    yield srv
    srv.stop()


def complete(srv: Server, prompt: str, n_predict: int = 64, **extra: Any) -> dict[str, Any]:
    return complete_48(srv, prompt, n_predict=n_predict, **extra)


def drafts_keep_the_output(srv: Server, min_rate: float = 0.3, **extra: Any) -> None:
    """Greedy output with drafts is plain decoding's on every prompt, and both verification paths run (the head
    predicts the target's next token often, not always: more than ``min_rate`` of the drafted tokens);
    ``extra``: more request fields."""
    drafted = accepted = 0
    for prompt in PROMPTS:
        spec, plain = complete(srv, prompt, **extra), complete(srv, prompt, **OFF, **extra)
        assert spec["content"] == plain["content"]
        t = spec["timings"]
        drafted, accepted = drafted + t["draft_n"], accepted + t["draft_n_accepted"]
        assert "draft_n" not in plain["timings"]
    assert min_rate * drafted < accepted < drafted, (drafted, accepted)
    assert metric(srv, "spec_decode_num_accepted_tokens_total") >= accepted


def concurrent_slots_keep_the_output(srv: Server, **extra: Any) -> None:
    prompts = [*PROMPTS[:3], PROMPTS[0] + " a test of"]
    with ThreadPoolExecutor(3) as pool:
        plain = list(pool.map(lambda p: complete(srv, p, **OFF, **extra)["content"], prompts))
        spec = list(pool.map(lambda p: complete(srv, p, **extra)["content"], prompts))
    assert spec == plain


def reused_prefixes_keep_the_output(srv: Server) -> None:
    # the second request reuses the first's cached prompt (its KV, and the head's, which follows it)
    first = complete(srv, PROMPTS[3], n_predict=200)
    again = complete(srv, PROMPTS[3] + first["content"][:40], n_predict=100)
    assert again["timings"]["cache_n"] > 0
    assert again["content"] == complete(srv, PROMPTS[3] + first["content"][:40], n_predict=100, **OFF)["content"]
    assert first["timings"]["draft_n_accepted"] > 0 and again["timings"]["draft_n_accepted"] > 0


def same_drafts(ours: Server, theirs: Server, **extra: Any) -> None:
    """The same text as llama-server's, and as many drafted and accepted tokens, on every prompt."""
    for prompt in PROMPTS:
        a, b = complete(ours, prompt, **extra), complete(theirs, prompt, **extra)
        assert a["content"] == b["content"]
        ta, tb = a["timings"], b["timings"]
        assert (ta["draft_n"], ta["draft_n_accepted"]) == (tb["draft_n"], tb["draft_n_accepted"]), prompt
        assert 0 < ta["draft_n_accepted"] < ta["draft_n"]
        assert a["content"] == complete(ours, prompt, **OFF, **extra)["content"]


def a_request_for_the_type_is_refused(srv: Server, kind: str, hint: str) -> None:
    """A request for drafts of ``kind`` from a server that cannot make them: a 400 saying how to start one that
    can; the server goes on serving."""
    r = srv.post("/completion", {"prompt": "x", "n_predict": 2, "speculative.type": kind})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert hint in r.json()["error"]["message"]
    assert complete(srv, "x", n_predict=2)["timings"]["predicted_n"] == 2  # still serving


def shift_and_restore_keep_the_output(srv: Server) -> None:
    """``srv`` has 2 slots of 256 cells, --context-shift and a slot save path: the head's cells move with the
    target's when the context shifts, and a slot restored from a file (the target's cells only) drafts on."""
    long = complete(srv, PROMPTS[2], n_predict=400, id_slot=0)
    assert long["timings"]["predicted_n"] == 400 and long["timings"]["draft_n_accepted"] > 0  # past 256 cells
    assert long["content"] == complete(srv, PROMPTS[2], n_predict=400, id_slot=0, **OFF)["content"]
    first = complete(srv, PROMPTS[1], id_slot=0)
    assert srv.post("/slots/0?action=save", {"filename": "s0.bin"}).json()["n_saved"] > 0
    complete(srv, PROMPTS[3], id_slot=1)  # slot 1's cells, the head's too, hold another text
    assert srv.post("/slots/1?action=restore", {"filename": "s0.bin"}).json()["n_restored"] > 0
    again = complete(srv, PROMPTS[1], id_slot=1)
    assert again["timings"]["cache_n"] > 0 and again["content"] == first["content"]
    assert again["timings"]["draft_n"] > 0


def test_output_is_unchanged_and_drafts_are_taken_and_rejected(mtp: Server) -> None:
    drafts_keep_the_output(mtp)
    assert re.search(r"MTP context runs 1 NextN head", mtp.log())


def test_three_concurrent_slots(mtp: Server) -> None:
    concurrent_slots_keep_the_output(mtp)


def test_reused_prefixes_and_long_generations(mtp: Server) -> None:
    reused_prefixes_keep_the_output(mtp)


def test_per_request_type_and_length(mtp: Server) -> None:
    one = complete(mtp, PROMPTS[1], **{"speculative.n_max": 1})["timings"]
    assert one["draft_n"] <= one["predicted_n"]
    r = mtp.post("/completion", {"prompt": "x", "n_predict": 4, "speculative.type": "ngram-simple,draft-mtp"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("arch, n_heads", [("glm4moe", 1), ("mimo2", 3)])
def test_same_drafts_as_llama_server(model_path: str, make_server: Any, arch: str, n_heads: int,
                                     llama_server: list[str]) -> None:
    """llama.cpp's llama-server on the same model and prompts: the same text, and as many drafted and accepted
    tokens (fixed 3-token drafts: n_min = n_max turns llamatwist's adaptive draft length off). MiMo-V2's three
    heads are chained: draft token i comes from head i."""
    model = str(mtp_gguf(Path(model_path), arch, n_heads))
    args = ("-m", model, "-np", "1", "-c", "2048", "-t", "2", *EXACT, "--spec-type", "draft-mtp",
            "--spec-draft-n-max", "3", "--spec-draft-n-min", "3")
    ours, theirs = make_server(*args), make_server(*args, command=llama_server)
    assert f"MTP context runs {n_heads} NextN head" in ours.log()
    same_drafts(ours, theirs)


def test_chained_heads_draft_at_most_one_token_each(model_path: str, make_server: Any) -> None:
    model = str(mtp_gguf(Path(model_path), "mimo2", 2))
    srv = make_server("-m", model, "-np", "2", "-c", "2048", "-t", "2", "--metrics", *EXACT,
                      "--spec-type", "draft-mtp", "--spec-draft-n-max", "6", "--spec-draft-n-min", "2")
    with ThreadPoolExecutor(2) as pool:
        spec = list(pool.map(lambda p: complete(srv, p), PROMPTS[:2]))
    for prompt, out in zip(PROMPTS[:2], spec, strict=True):
        assert out["content"] == complete(srv, prompt, **OFF)["content"]
        assert out["timings"]["draft_n"] > 0
    # two heads: every draft is 2 tokens (n_min 2), never more, whatever --spec-draft-n-max says; a request's
    # last may be cut to the one token it has left
    tokens, drafts = metric(srv, "spec_decode_num_draft_tokens_total"), metric(srv, "spec_decode_num_drafts_total")
    assert 2 * drafts - 2 <= tokens <= 2 * drafts, (tokens, drafts)


def test_a_model_without_mtp_layers_stops_the_start_up(make_server: Any, model_path: str) -> None:
    plain = str(mtp_gguf(Path(model_path), n_heads=0))  # glm4moe, its NextN block left out
    srv = make_server("-m", plain, "--spec-type", "draft-mtp", wait=False)
    assert srv.proc.wait(120) == 1
    assert "failed to create MTP context" in srv.log() and "no MTP (NextN) layers" in srv.log()


def test_a_separate_models_mtp_layers_draft(make_server: Any, mtp_model: str, model_path: str) -> None:
    """-md with draft-mtp runs -md's NextN layers (in an MTP context of its own, as llama-server's); a -md
    without them stops the start-up."""
    srv = make_server("-m", mtp_model, "-md", mtp_model, "--spec-type", "draft-mtp", "-c", "1024", "-t", "2", *EXACT)
    out = complete(srv, PROMPTS[0])
    assert out["content"] == complete(srv, PROMPTS[0], **OFF)["content"] and out["timings"]["draft_n_accepted"] > 0
    srv = make_server("-m", mtp_model, "-md", model_path, "--spec-type", "draft-mtp", wait=False)
    assert srv.proc.wait(120) == 1
    assert f"draft model {model_path} has no MTP (NextN) layers" in srv.log()


# This random Gemma 4 target greedily continues a prompt re-evaluated after a long earlier history differently
# from the same prompt evaluated afresh: libllama's sliding-window cache, in llama-server as here (checked side by
# side). Comparisons between requests therefore evaluate each prompt afresh.
FRESH = {"cache_prompt": False}


@pytest.fixture(scope="module")
def gemma4(model_path: str) -> tuple[str, str]:
    target, assistant = gemma4_gguf(Path(model_path))
    return str(target), str(assistant)


def test_a_gemma4_assistant_drafts_over_the_targets_cache(make_server: Any, gemma4: tuple[str, str]) -> None:
    """A Gemma 4 assistant (scripts/make_gemma4_model.py) has no KV cache: its layers attend over the target's.
    Output equal to plain decoding, alone and on 3 slots at once."""
    target, assistant = gemma4
    srv = make_server("-m", target, "-md", assistant, "--spec-type", "draft-mtp", "-np", "3", "-c", "3072", "-t",
                      "2", "--metrics", *EXACT)
    drafts_keep_the_output(srv, 0.4, **FRESH)
    concurrent_slots_keep_the_output(srv, **FRESH)
    assert "the MTP context runs 2 NextN head(s) of gemma4-" in srv.log()


def test_a_gemma4_assistant_drafts_as_llama_server(make_server: Any, gemma4: tuple[str, str],
                                                   llama_server: list[str]) -> None:
    target, assistant = gemma4
    args = ("-m", target, "-md", assistant, "--spec-type", "draft-mtp", "-np", "1", "-c", "2048", "-t", "2", *EXACT,
            "--spec-draft-n-max", "3", "--spec-draft-n-min", "3")
    same_drafts(make_server(*args), make_server(*args, command=llama_server), **FRESH)


def test_a_gemma4_assistant_alone_means_draft_mtp(make_server: Any, gemma4: tuple[str, str],
                                                  mtp_model: str) -> None:
    """-md alone with an assistant: draft-mtp (llama-server loads it and leaves it unused); as draft-simple's
    model, or beside a target that is no Gemma 4, a start-up error that says so."""
    target, assistant = gemma4
    srv = make_server("-m", target, "-md", assistant, "-c", "1024", "-t", "2")
    assert complete(srv, PROMPTS[0])["timings"]["draft_n_accepted"] > 0
    srv = make_server("-m", target, "-md", assistant, "--spec-type", "draft-simple", wait=False)
    assert srv.proc.wait(120) == 1
    assert "not a model draft-simple can run: start the server with --spec-type draft-mtp" in srv.log()
    srv = make_server("-m", mtp_model, "-md", assistant, "--spec-type", "draft-mtp", wait=False)
    assert srv.proc.wait(120) == 1
    assert "is a Gemma 4 assistant, which drafts for Gemma 4 models only" in srv.log()


def test_mtp_drafts_need_the_head(make_server: Any, mtp_model: str) -> None:
    a_request_for_the_type_is_refused(make_server("-m", mtp_model, "-c", "512", "-t", "2"), "draft-mtp",
                                      "start the server with --spec-type draft-mtp")


def test_context_shift_and_a_restored_slot(mtp_model: str, make_server: Any, tmp_path: Path) -> None:
    """The head's cells move with the target's when the context shifts, and a slot restored from a file (the
    target's cells only) drafts on: the output stays plain decoding's."""
    srv = make_server("-m", mtp_model, "-np", "2", "-c", "512", "-t", "2", *EXACT, "--spec-type", "draft-mtp",
                      "--context-shift", "--slot-save-path", str(tmp_path))
    shift_and_restore_keep_the_output(srv)
