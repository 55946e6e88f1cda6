"""``--spec-type draft-dspark``: block drafts from a DSpark draft model (DFlash with a Markov head), and DFlash2
drafts (a selector head) under ``--spec-type draft-dflash``.

The models are test_speculative_dflash.py's tiny random target and DFlash draft with the extra heads
(scripts/make_dflash_model.py --kind): a DSpark draft whose Markov head mostly follows the target's chain and
whose confidence head scores each row around 0.5; one with a bonus anchor slot and no confidence head; a
DFlash2 draft. Greedy output is the same with and without drafting, at 1 and 3 concurrent slots and across
reused prefixes; llama.cpp's own llama-server, built from the same source, drafts and accepts exactly as many
tokens on the same prompts, with and without a p_min (which DSpark applies to its confidence head, DFlash2 to
its lattice's scores); an anchor-first block drafts a whole block; the wrong model for the type and a request
for DSpark drafts from a server without a DSpark draft are clear errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.models import dflash_gguf
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
)

# The first reference build (llama.cpp's llama-server) compiles for minutes on 2 cores.
pytestmark = pytest.mark.timeout(1800)

MIN_RATE = 0.2  # the Markov chain follows the target's about half the time
FIXED = ("--spec-draft-n-max", "3", "--spec-draft-n-min", "3")  # n_min = n_max: no adaptive draft length


@pytest.fixture(scope="module")
def models(model_path: str) -> tuple[str, str]:
    target, draft = dflash_gguf(Path(model_path), kind="dspark")
    return str(target), str(draft)


@pytest.fixture(scope="module")
def dspark(models: tuple[str, str]) -> Iterator[Server]:
    target, draft = models
    srv = Server(["-m", target, "-md", draft, "--spec-type", "draft-dspark", "-np", "3", "-c", "3072", "-t", "2",
                  "--metrics", *EXACT])
    yield srv
    srv.stop()


def test_output_is_unchanged_and_drafts_are_taken_and_rejected(dspark: Server) -> None:
    drafts_keep_the_output(dspark, MIN_RATE)
    assert "DSpark draft dspark-llama" in dspark.log() and "reads target layers 1, 2, 3" in dspark.log()


def test_three_concurrent_slots(dspark: Server) -> None:
    concurrent_slots_keep_the_output(dspark)


def test_reused_prefixes_and_long_generations(dspark: Server) -> None:
    reused_prefixes_keep_the_output(dspark)


@pytest.mark.parametrize("p_min", ["0", "0.5"])
def test_same_drafts_as_llama_server(make_server: Any, models: tuple[str, str], p_min: str,
                                     llama_server: list[str]) -> None:
    """p_min 0.5 stops drafts where the confidence head's score falls below it: as many fewer as llama-server's."""
    target, draft = models
    args = ("-m", target, "-md", draft, "--spec-type", "draft-dspark", "-np", "1", "-c", "2048", "-t", "2", *EXACT,
            *FIXED, "--spec-draft-p-min", p_min, "--metrics")
    ours = make_server(*args)
    same_drafts(ours, make_server(*args, command=llama_server))
    if p_min != "0":  # the confidence head stopped some drafts: fewer tokens than 3 a draft
        assert metric(ours, "spec_decode_num_draft_tokens_total") < 3 * metric(ours, "spec_decode_num_drafts_total")


def test_a_bonus_anchor_slot_without_a_confidence_head(make_server: Any, model_path: str,
                                                       llama_server: list[str]) -> None:
    """dflash.sample_from_anchor false: the pending token's row drafts nothing (a block of 4 rows drafts 3), as
    llama-server's; with no confidence head a p_min is refused at start-up, as llama-server refuses it."""
    target, draft = map(str, dflash_gguf(Path(model_path), kind="dspark-bonus"))
    args = ("-m", target, "-md", draft, "--spec-type", "draft-dspark", "-np", "1", "-c", "2048", "-t", "2", *EXACT,
            *FIXED)
    same_drafts(make_server(*args), make_server(*args, command=llama_server))
    srv = make_server(*args, "--spec-draft-p-min", "0.5", wait=False)
    assert srv.proc.wait(120) == 1
    assert "with --spec-type draft-dspark: it has no confidence head: please set --spec-draft-p-min 0" in srv.log()


def test_an_anchor_first_block_drafts_a_whole_block(make_server: Any, models: tuple[str, str]) -> None:
    # the draft's block holds 8 rows, the pending token's included, and every one drafts (a DFlash block of 8
    # drafts 7); the last drafts of a generation are shorter, to fit n_predict
    target, draft = models
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-dspark", "-c", "2048", "-t", "2", "--metrics",
                      *EXACT, "--spec-draft-n-max", "12", "--spec-draft-n-min", "8")
    out = complete(srv, PROMPTS[0])
    assert out["content"] == complete(srv, PROMPTS[0], **OFF)["content"]
    tokens, drafts = metric(srv, "spec_decode_num_draft_tokens_total"), metric(srv, "spec_decode_num_drafts_total")
    assert drafts > 0 and 7 * drafts < tokens <= 8 * drafts and out["timings"]["draft_n_accepted"] > 0, (tokens, drafts)


def test_dflash2_drafts_as_llama_server(make_server: Any, model_path: str, llama_server: list[str]) -> None:
    """A DFlash2 draft under draft-dflash: drafts walk its selector lattice, the same as llama-server's, with and
    without a p_min over the lattice's scores; the output is plain decoding's."""
    target, draft = map(str, dflash_gguf(Path(model_path), kind="dflash2"))
    for p_min in ("0", "0.6"):
        args = ("-m", target, "-md", draft, "--spec-type", "draft-dflash", "-np", "1", "-c", "2048", "-t", "2",
                *EXACT, *FIXED, "--spec-draft-p-min", p_min)
        same_drafts(make_server(*args), make_server(*args, command=llama_server))


def test_errors(make_server: Any, models: tuple[str, str], model_path: str) -> None:
    target, draft = models
    # -md alone means the type its GGUF is made for, as llama-server's: a Markov head makes it draft-dspark
    srv = make_server("-m", target, "-md", draft, "-c", "1024", "-t", "2", "--metrics")
    assert complete(srv, PROMPTS[0])["timings"]["draft_n_accepted"] > 0
    assert "DSpark draft" in srv.log()
    srv = make_server("-m", target, "--spec-type", "draft-dspark", wait=False)
    assert srv.proc.wait(60) == 2
    assert "--spec-type draft-dspark needs a DSpark draft model (-md/--model-draft)" in srv.log()
    # a DFlash draft has no Markov head
    d_target, d_draft = map(str, dflash_gguf(Path(model_path)))
    srv = make_server("-m", d_target, "-md", d_draft, "--spec-type", "draft-dspark", wait=False)
    assert srv.proc.wait(120) == 1
    assert "with --spec-type draft-dspark: it is not a DSpark draft model (it has no Markov head): start the " \
           "server with --spec-type draft-dflash" in srv.log()
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-dflash,draft-dspark", wait=False)
    assert srv.proc.wait(60) == 2
    assert "draft-dflash and draft-dspark all draft with -md's model" in srv.log()


def test_dspark_drafts_need_the_draft(make_server: Any, models: tuple[str, str]) -> None:
    a_request_for_the_type_is_refused(make_server("-m", models[0], "-c", "512", "-t", "2"), "draft-dspark",
                                      "start the server with -md and --spec-type draft-dspark")
