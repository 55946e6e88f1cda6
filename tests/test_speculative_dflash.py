"""``--spec-type draft-dflash``: block drafts from a DFlash draft model, which reads the target's hidden states.

The models are a tiny random target and a DFlash draft for it (scripts/make_dflash_model.py) whose block's first
token is mostly, not always, what the target samples next (the later ones rarely are), so both accepted and
rejected drafts occur. Greedy output is the same with and without drafting, at 1 and 3 concurrent slots,
across reused prefixes, through a context shift, after a slot restore and on a hybrid target; llama.cpp's own
llama-server, built from the same source, drafts and accepts exactly as many tokens on the same prompts; a
draft is never longer than the draft's block; the wrong model for the type, a missing draft model and a request
for DFlash drafts from a server without one are clear errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.models import dflash_gguf, eagle3_gguf
from tests.test_speculative import metric
from tests.test_speculative_mtp import (
    EXACT,
    OFF,
    PROMPTS,
    a_request_for_the_type_is_refused,
    complete,
    concurrent_slots_keep_the_output,
    drafts_keep_the_output,
    reused_prefixes_keep_the_output,
    same_drafts,
    shift_and_restore_keep_the_output,
)

# The first reference build (llama.cpp's llama-server) compiles for minutes on 2 cores.
pytestmark = pytest.mark.timeout(1800)

MIN_RATE = 0.15  # of a 3-token block the first token is mostly taken, the later ones rarely


@pytest.fixture(scope="module")
def models(model_path: str) -> tuple[str, str]:
    target, draft = dflash_gguf(Path(model_path))
    return str(target), str(draft)


@pytest.fixture(scope="module")
def dflash(models: tuple[str, str]) -> Iterator[Server]:
    target, draft = models
    srv = Server(["-m", target, "-md", draft, "--spec-type", "draft-dflash", "-np", "3", "-c", "3072", "-t", "2",
                  "--metrics", *EXACT])
    yield srv
    srv.stop()


def test_output_is_unchanged_and_drafts_are_taken_and_rejected(dflash: Server) -> None:
    drafts_keep_the_output(dflash, MIN_RATE)
    assert "DFlash draft dflash-llama" in dflash.log() and "reads target layers 1, 2, 3" in dflash.log()


def test_three_concurrent_slots(dflash: Server) -> None:
    concurrent_slots_keep_the_output(dflash)


def test_reused_prefixes_and_long_generations(dflash: Server) -> None:
    reused_prefixes_keep_the_output(dflash)


def test_same_drafts_as_llama_server(model_path: str, make_server: Any, models: tuple[str, str],
                                     llama_server: list[str]) -> None:
    """llama.cpp's llama-server on the same models and prompts: the same text, and as many drafted and accepted
    tokens (fixed 3-token drafts: n_min = n_max turns llamatwist's adaptive draft length off)."""
    target, draft = models
    args = ("-m", target, "-md", draft, "--spec-type", "draft-dflash", "-np", "1", "-c", "2048", "-t", "2", *EXACT,
            "--spec-draft-n-max", "3", "--spec-draft-n-min", "3")
    same_drafts(make_server(*args), make_server(*args, command=llama_server))


def test_a_draft_is_at_most_a_block(make_server: Any, models: tuple[str, str]) -> None:
    # the draft's block holds 8 tokens: the pending one and 7 MASKs, whatever --spec-draft-n-max says
    target, draft = models
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-dflash", "-c", "2048", "-t", "2", "--metrics",
                      *EXACT, "--spec-draft-n-max", "12", "--spec-draft-n-min", "7")
    out = complete(srv, PROMPTS[0])
    assert out["content"] == complete(srv, PROMPTS[0], **OFF)["content"]
    tokens, drafts = metric(srv, "spec_decode_num_draft_tokens_total"), metric(srv, "spec_decode_num_drafts_total")
    assert drafts > 0 and tokens <= 7 * drafts and out["timings"]["draft_n_accepted"] > 0, (tokens, drafts)


def test_a_hybrid_target(model_path: str, make_server: Any) -> None:
    """On LFM2's hybrid memory a rejected draft restores the state and feeds the accepted tokens again, whose
    hidden states the draft's cache takes again: the output stays plain decoding's and drafts go on being
    taken, with no failed decode of the draft."""
    target, draft = map(str, dflash_gguf(Path(model_path), "lfm2"))
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-dflash", "-np", "2", "-c", "2048", "-t", "2",
                      *EXACT, "--spec-draft-n-max", "3", "--spec-draft-n-min", "3")
    drafted = accepted = 0
    with ThreadPoolExecutor(2) as pool:
        spec = list(pool.map(lambda p: complete(srv, p), PROMPTS))
    for prompt, out in zip(PROMPTS, spec, strict=True):
        assert out["content"] == complete(srv, prompt, **OFF)["content"]
        drafted, accepted = drafted + out["timings"]["draft_n"], accepted + out["timings"]["draft_n_accepted"]
    assert MIN_RATE * drafted < accepted < drafted, (drafted, accepted)
    assert "DFlash draft:" not in srv.log()  # its warnings: a decode of the draft that failed


def test_context_shift_and_a_restored_slot(models: tuple[str, str], make_server: Any, tmp_path: Path) -> None:
    target, draft = models
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-dflash", "-np", "2", "-c", "512", "-t", "2",
                      *EXACT, "--context-shift", "--slot-save-path", str(tmp_path))
    shift_and_restore_keep_the_output(srv)


def test_errors(make_server: Any, models: tuple[str, str], model_path: str) -> None:
    target, draft = models
    # -md alone means the type its GGUF is made for, as llama-server's; draft-simple cannot run a DFlash draft
    assert complete(make_server("-m", target, "-md", draft, "-c", "1024", "-t", "2"), PROMPTS[0])["timings"][
        "draft_n_accepted"] > 0
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-simple", wait=False)
    assert srv.proc.wait(120) == 1
    assert "is a dflash draft, not a model draft-simple can run: start the server with --spec-type draft-dflash" \
        in srv.log()
    srv = make_server("-m", target, "--spec-type", "draft-dflash", wait=False)
    assert srv.proc.wait(60) == 2
    assert "--spec-type draft-dflash needs a DFlash draft model (-md/--model-draft)" in srv.log()
    # an EAGLE-3 draft is no DFlash draft
    e3_target, e3_draft = map(str, eagle3_gguf(Path(model_path)))
    srv = make_server("-m", e3_target, "-md", e3_draft, "--spec-type", "draft-dflash", wait=False)
    assert srv.proc.wait(120) == 1
    assert "with --spec-type draft-dflash: it is not a DFlash draft model" in srv.log()
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-eagle3,draft-dflash", wait=False)
    assert srv.proc.wait(60) == 2
    assert "draft-eagle3 and draft-dflash all draft with -md's model" in srv.log()


def test_dflash_drafts_need_the_draft(make_server: Any, models: tuple[str, str]) -> None:
    a_request_for_the_type_is_refused(make_server("-m", models[0], "-c", "512", "-t", "2"), "draft-dflash",
                                      "start the server with -md and --spec-type draft-dflash")
