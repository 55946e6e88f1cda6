"""``--spec-type draft-eagle3``: drafts from an EAGLE-3 draft model, which reads the target's hidden states.

The models are a tiny random target and an EAGLE-3 draft for it (scripts/make_eagle3_model.py) that predicts
mostly, not always, what the target samples, so both accepted and rejected drafts occur. Greedy output is the
same with and without drafting, at 1 and 3 concurrent slots, across reused prefixes, through a context shift
and after a slot restore; llama.cpp's own llama-server, built from the same source, drafts and accepts exactly
as many tokens on the same prompts (with the draft reading inner layers, and the target's final state); the
wrong model for the type, a missing draft model and a request for EAGLE-3 drafts from a server without one are
clear errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from llamatwist.runtime.draft_head import LAYER_INPUT_ARCHS, Segment
from llamatwist.runtime.speculative import Drafters
from llamatwist.sampling_defaults import SpecParams
from tests.conftest import Server
from tests.models import _script, eagle3_gguf, mtp_gguf
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


@pytest.fixture(scope="module")
def models(model_path: str) -> tuple[str, str]:
    target, draft = eagle3_gguf(Path(model_path))
    return str(target), str(draft)


@pytest.fixture(scope="module")
def eagle3(models: tuple[str, str]) -> Iterator[Server]:
    target, draft = models
    srv = Server(["-m", target, "-md", draft, "--spec-type", "draft-eagle3", "-np", "3", "-c", "3072", "-t", "2",
                  "--metrics", *EXACT])
    yield srv
    srv.stop()


def test_output_is_unchanged_and_drafts_are_taken_and_rejected(eagle3: Server) -> None:
    drafts_keep_the_output(eagle3)
    assert "EAGLE-3 draft" in eagle3.log() and "reads target layers 1, 2, 3" in eagle3.log()


def test_three_concurrent_slots(eagle3: Server) -> None:
    concurrent_slots_keep_the_output(eagle3)


def test_reused_prefixes_and_long_generations(eagle3: Server) -> None:
    reused_prefixes_keep_the_output(eagle3)


def test_per_request_types(eagle3: Server) -> None:
    r = eagle3.post("/completion", {"prompt": "x", "n_predict": 4, "speculative.type": "ngram-simple,draft-eagle3"})
    assert r.status_code == 200, r.text
    # -md is the EAGLE-3 draft here: there is no model draft-simple could run
    r = eagle3.post("/completion", {"prompt": "x", "n_predict": 4, "speculative.type": "draft-simple"})
    assert r.status_code == 400, r.text
    assert complete(eagle3, "x", n_predict=2)["timings"]["predicted_n"] == 2


@pytest.mark.parametrize("layers", [(1, 2, 3), (0, 2, 4)], ids=["inner-layers", "with-final-state"])
def test_same_drafts_as_llama_server(model_path: str, make_server: Any, layers: tuple[int, ...],
                                     llama_server: list[str]) -> None:
    """llama.cpp's llama-server on the same models and prompts: the same text, and as many drafted and accepted
    tokens (fixed 3-token drafts: n_min = n_max turns llamatwist's adaptive draft length off). Layer 4 of the
    4-layer target is its final hidden state, which libllama hands out as the NextN one."""
    target, draft = map(str, eagle3_gguf(Path(model_path), layers))
    args = ("-m", target, "-md", draft, "--spec-type", "draft-eagle3", "-np", "1", "-c", "2048", "-t", "2", *EXACT,
            "--spec-draft-n-max", "3", "--spec-draft-n-min", "3")
    same_drafts(make_server(*args), make_server(*args, command=llama_server))


def test_a_hybrid_target(model_path: str, make_server: Any) -> None:
    """LFM2's hybrid memory (a convolution state per sequence beside the KV cache) cannot be cut back to the last
    accepted token: a rejected draft restores the state from before the batch and feeds the accepted tokens
    again, and the draft's pending pair goes back with it. The output stays plain decoding's, drafts go on being
    taken, and the draft's cache stays consistent (no decode of it fails)."""
    target, draft = map(str, eagle3_gguf(Path(model_path), arch="lfm2"))
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-eagle3", "-np", "2", "-c", "2048", "-t", "2",
                      *EXACT, "--spec-draft-n-max", "3", "--spec-draft-n-min", "3")
    drafted = accepted = 0
    with ThreadPoolExecutor(2) as pool:
        spec = list(pool.map(lambda p: complete(srv, p), PROMPTS))
    for prompt, out in zip(PROMPTS, spec, strict=True):
        assert out["content"] == complete(srv, prompt, **OFF)["content"]
        drafted, accepted = drafted + out["timings"]["draft_n"], accepted + out["timings"]["draft_n_accepted"]
    assert 0.3 * drafted < accepted < drafted, (drafted, accepted)
    assert "EAGLE-3 draft:" not in srv.log()  # its warnings: a decode of the draft that failed


class _RecordingHead:
    """A draft head that records what it is asked to draft (the drafters' dispatch alone, no model)."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def process(self, segments: Sequence[Segment]) -> None: ...

    def draft(self, seq: int, token: int, pos: int, n_max: int, p_min: float) -> list[int]:
        self.asked.append(pos)
        return [1, 2]

    def accept(self, seq: int, n_accepted: int, n_draft: int) -> None: ...

    def rewind(self, seq: int) -> None: ...

    def close(self) -> None: ...


def test_the_head_drafts_only_once_it_has_followed_every_token() -> None:
    """After a rollback the accepted tokens are fed again before the pending one: the head has not seen them
    yet, so it drafts nothing that step (llama-server's replay step drafts nothing); other types still may."""
    head = _RecordingHead()
    drafters = Drafters(None, head=head)
    spec = SpecParams(type="ngram-simple,draft-eagle3", has_eagle3=True, ngram_size_n=2, ngram_size_m=2)
    task = object()
    history = [5, 6, 7, 8, 9, 5, 6, 7]  # then 8: ngram-simple finds "7 8" earlier and drafts "9 5"
    assert drafters.draft(0, task, [5], spec, history[:4], 9, 3, pos=5, head_ready=False) == []
    assert drafters.draft(0, task, [5], spec, history, 8, 3, pos=8, head_ready=False) == [9, 5]
    assert head.asked == []
    assert drafters.draft(0, task, [5], spec, history[:4], 9, 3, pos=5) == [1, 2]
    assert head.asked == [5]


def test_context_shift_and_a_restored_slot(models: tuple[str, str], make_server: Any, tmp_path: Path) -> None:
    """The draft's cells move with the target's when the context shifts, and a slot restored from a file (the
    target's cells only) drafts on: the output stays plain decoding's."""
    target, draft = models
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-eagle3", "-np", "2", "-c", "512", "-t", "2",
                      *EXACT, "--context-shift", "--slot-save-path", str(tmp_path))
    shift_and_restore_keep_the_output(srv)


def test_an_eagle3_draft_alone_means_its_type(make_server: Any, models: tuple[str, str]) -> None:
    # -md alone: the type its GGUF is made for (llama-server infers DFlash and MTP drafts so, and leaves an
    # EAGLE-3 draft unused); draft-simple asked for cannot run it
    target, draft = models
    srv = make_server("-m", target, "-md", draft, "-c", "1024", "-t", "2")
    out = complete(srv, PROMPTS[0])
    assert out["timings"]["draft_n_accepted"] > 0 and "EAGLE-3 draft" in srv.log()
    srv = make_server("-m", target, "-md", draft, "--spec-type", "draft-simple", wait=False)
    assert srv.proc.wait(120) == 1
    assert "is a eagle3 draft, not a model draft-simple can run: start the server with --spec-type draft-eagle3" \
        in srv.log()


def test_draft_eagle3_needs_an_eagle3_draft(make_server: Any, models: tuple[str, str], model_path: str) -> None:
    target, _ = models
    srv = make_server("-m", target, "--spec-type", "draft-eagle3", wait=False)
    assert srv.proc.wait(60) == 2
    assert "--spec-type draft-eagle3 needs an EAGLE-3 draft model (-md/--model-draft)" in srv.log()
    # a model of the same vocabulary that is no EAGLE-3 draft
    plain = str(mtp_gguf(Path(model_path), n_heads=0))
    srv = make_server("-m", target, "-md", plain, "--spec-type", "draft-eagle3", wait=False)
    assert srv.proc.wait(120) == 1
    assert "cannot draft for" in srv.log() and "it is not an EAGLE-3 draft model (expected 3 target layers, got 0)" \
        in srv.log()
    srv = make_server("-m", target, "-md", plain, "--spec-type", "draft-simple,draft-eagle3", wait=False)
    assert srv.proc.wait(60) == 2
    assert "draft-simple and draft-eagle3 all draft with -md's model" in srv.log()


def test_a_target_that_cannot_hand_out_layer_states_is_refused(make_server: Any, models: tuple[str, str],
                                                               model_path: str) -> None:
    # glm4moe's graph does not hand out its layers' inputs: libllama would abort at the first decode
    target = str(mtp_gguf(Path(model_path), n_heads=0))
    srv = make_server("-m", target, "-md", models[1], "--spec-type", "draft-eagle3", wait=False)
    assert srv.proc.wait(120) == 1
    assert "the target's architecture (glm4moe) does not hand out its layers' hidden states" in srv.log()


def test_the_architectures_that_hand_out_layer_states_are_the_pinned_sources() -> None:
    """Derived from the pinned llama.cpp: the graphs that record their layers' inputs, the classes that build
    them (and subclasses keeping their graph), and the architectures made as those classes."""
    src = _script("device_kit").build_native_module().place_source() / "src"
    classes: set[str] = set()
    for graph in (src / "models").glob("*.cpp"):
        text = graph.read_text()
        if "t_layer_inp[" in text:
            classes |= set(re.findall(r"llama_model_(\w+)::build_arch_graph", text))
    header = (src / "models" / "models.h").read_text()
    for sub, base, body in re.findall(r"struct llama_model_(\w+) : public llama_model_(\w+) \{(.*?)\n\};", header,
                                      re.DOTALL):
        if base in classes and "build_arch_graph" not in body:
            classes.add(sub)
    made = re.findall(r"case LLM_ARCH_(\w+):\s*return new llama_model_(\w+)\(", (src / "llama-model.cpp").read_text())
    names = dict(re.findall(r'\{\s*LLM_ARCH_(\w+),\s*"([^"]+)"\s*\}', (src / "llama-arch.cpp").read_text()))
    assert {names[arch] for arch, cls in made if cls in classes} == LAYER_INPUT_ARCHS


def test_eagle3_drafts_need_the_draft(make_server: Any, models: tuple[str, str]) -> None:
    a_request_for_the_type_is_refused(make_server("-m", models[0], "-c", "512", "-t", "2"), "draft-eagle3",
                                      "start the server with -md and --spec-type draft-eagle3")
