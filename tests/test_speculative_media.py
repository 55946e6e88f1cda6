"""Speculative decoding of requests with images, beside llama.cpp's own llama-server (which drafts for them).

- ``draft-simple``: at an image's positions the draft model reads the target's embeddings of it when it is as
  wide as the target's input (the vision model drafting for itself takes every draft, as many as llama-server
  makes), zero rows when it is not (a tiny random draft of another width: llama-server's stand-in too) or when
  M-RoPE gave the image more embeddings than positions (Qwen2-VL; its draft takes 4 positions per row).
- The draft heads: DFlash reads the hidden states of an image's rows, as llama-server's; MTP and EAGLE-3 start
  again after it (llama-server's fail the request).
- The n-gram types look up a history that holds the image's placeholders: a draft stops before them (they are
  no tokens; llama-server's lists hold LLAMA_TOKEN_NULL there).

Whatever drafts, the target's output is that of the same request without speculation.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamatwist.engine.mtmd import placeholder_ids
from llamatwist.runtime.speculative import Drafters
from llamatwist.sampling_defaults import SpecParams
from tests.conftest import REPO, Server
from tests.models import _script, dflash_gguf, eagle3_gguf, mtp_gguf
from tests.test_multimodal import RED, image_b64
from tests.test_multimodal_audio import audio_part, tone
from tests.test_multimodal_mrope import chat
from tests.test_multimodal_mrope import image_url as qwen_image

# the first reference build compiles llama.cpp's common library and server: minutes on 2 cores
pytestmark = pytest.mark.timeout(1800)

OFF = {"speculative.type": "none"}
ARGS = ("-c", "2048", "-np", "2", "-t", "2", "--spec-type", "draft-simple")
FIXED = ("--draft-p-min", "0", "--spec-draft-n-min", "3")  # 3-token drafts always: llamatwist shortens rejected ones
COUNT = "What is in it? Count from 1 to 20: 1 2 3"


def image_url(color: tuple[int, int, int]) -> str:
    return "data:image/png;base64," + image_b64(color)


def drafts(out: dict[str, Any]) -> tuple[int, int]:
    return out["timings"].get("draft_n", 0), out["timings"].get("draft_n_accepted", 0)


def text(out: dict[str, Any]) -> str:
    return str(out["choices"][0]["message"]["content"])


def same_as_plain(srv: Server, *turn: tuple[str, str | None], **extra: Any) -> dict[str, Any]:
    """The request with speculation, checked against the same request without."""
    spec = chat(srv, *turn, max_tokens=40, cache_prompt=False, **extra)
    plain = chat(srv, *turn, max_tokens=40, cache_prompt=False, **OFF, **extra)
    assert text(spec) == text(plain) and "draft_n" not in plain["timings"]
    return spec


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("vision")
    model, mmproj = _script("make_vision_model").make(out, Path(model_path))
    return str(model), str(mmproj)


@pytest.fixture(scope="module")
def narrow_draft(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> str:
    """A random llama of SmolLM2's vocabulary, 64 wide where the target's input is 576."""
    out = tmp_path_factory.mktemp("narrow") / "draft.gguf"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_llama_model.py"), "--out", str(out),
                    "--base", model_path, "--shape", "tiny"], check=True, capture_output=True)
    return str(out)


@pytest.fixture(scope="module")
def pair(vision: tuple[str, str], narrow_draft: str,
         llama_server: list[str]) -> Iterator[dict[tuple[str, str], Server]]:
    """Ours and llama-server's, each with the vision model drafting for itself and with the narrow draft."""
    model, mmproj = vision
    servers: dict[tuple[str, str], Server] = {}
    try:
        for name, command in (("ours", None), ("theirs", llama_server)):
            for kind, draft, extra in (("self", model, ()), ("narrow", narrow_draft, FIXED)):
                servers[name, kind] = Server(["-m", model, "--mmproj", mmproj, "-md", draft, *ARGS, *extra],
                                             command=command)
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()


def test_ngram_drafts_stop_before_media() -> None:
    text_before = list(range(100, 112))
    image = placeholder_ids("ab" * 16, 4)
    history = [*text_before, 200, 201, *image, 300, *text_before[:-1]]
    sampled = text_before[-1]  # the text before the image again: what followed it is 200 201 <image> 300
    for kind, extra in (("ngram-simple", {"ngram_size_n": 4, "ngram_size_m": 8}),
                        ("ngram-mod", {"mod_n_match": 4, "mod_n_min": 1, "mod_n_max": 8}),
                        ("ngram-map-k", {"map_k_size_n": 4, "map_k_size_m": 8, "map_k_min_hits": 1}),
                        ("ngram-map-k4v", {"map_k4v_size_n": 4, "map_k4v_size_m": 8, "map_k4v_min_hits": 1})):
        spec = SpecParams(type=kind, **extra)
        drafters = Drafters(None)
        draft = drafters.draft(0, object(), history, spec, history, sampled, 16)
        assert draft == [200, 201], kind


def test_a_draft_reads_the_image_as_llama_servers_does(pair: dict[tuple[str, str], Server]) -> None:
    for prompt in (COUNT, "Tell me a story."):
        turn = (prompt, image_url(RED))
        ours, theirs = same_as_plain(pair["ours", "self"], turn), chat(pair["theirs", "self"], turn, max_tokens=40,
                                                                         cache_prompt=False)
        assert text(ours) == text(theirs)
        # the target's own embeddings of the image: every draft is taken, as many drafted as llama-server's
        n, accepted = drafts(ours)
        assert n > 0 and accepted == n and drafts(ours) == drafts(theirs), (prompt, ours["timings"])
    # another image: another answer, drafted as well
    other = same_as_plain(pair["ours", "self"], (COUNT, image_url((20, 20, 220))), id_slot=1)
    assert drafts(other)[0] > 0


def test_a_narrower_draft_reads_zeros_at_the_image(pair: dict[tuple[str, str], Server]) -> None:
    turn = (COUNT, image_url(RED))
    ours = same_as_plain(pair["ours", "narrow"], turn)
    theirs = chat(pair["theirs", "narrow"], turn, max_tokens=40, cache_prompt=False)
    assert text(ours) == text(theirs)
    assert drafts(ours)[0] > 0 and drafts(ours) == drafts(theirs), (ours["timings"], theirs["timings"])
    assert "draft_n" in ours["timings"]


def test_an_mrope_model_drafts_for_its_image(make_server: Any, tmp_path: Path, model_path: str) -> None:
    model, mmproj = _script("make_vision_model").make(tmp_path, Path(model_path), projector="qwen2vl")
    srv = make_server("-m", str(model), "--mmproj", str(mmproj), "-md", str(model), *ARGS)
    out = same_as_plain(srv, ("What is in this image?", qwen_image("check")))
    assert drafts(out)[0] > 0
    assert srv.get("/health").status_code == 200


def test_a_draft_reads_long_audio_as_llama_servers_does(make_server: Any, tmp_path: Path, model_path: str,
                                                        llama_server: list[str]) -> None:
    """40 s of audio is two 30 s chunks of one item (their placeholders continue the item's run): the draft
    reads the target's rows of each."""
    model, mmproj = _script("make_audio_model").make(tmp_path, Path(model_path))
    args = ("-m", str(model), "--mmproj", str(mmproj), "-md", str(model), *ARGS)
    body = {"messages": [{"role": "user", "content": [audio_part(tone(440, 40.0)), {"type": "text", "text": COUNT}]}],
            "max_tokens": 40, "temperature": 0, "cache_prompt": False}
    ours = make_server(*args)
    spec, plain = ours.post("/v1/chat/completions", body).json(), ours.post("/v1/chat/completions", {**body, **OFF}).json()
    theirs = make_server(*args, command=llama_server).post("/v1/chat/completions", body).json()
    assert text(spec) == text(plain) == text(theirs)
    n, accepted = drafts(spec)
    assert n > 0 and accepted == n and drafts(spec) == drafts(theirs), (spec["timings"], theirs["timings"])


@pytest.mark.parametrize("kind", ["draft-mtp", "draft-eagle3", "draft-dflash"])
def test_draft_heads_draft_after_an_image(make_server: Any, tmp_path: Path, model_path: str, kind: str,
                                          llama_server: list[str]) -> None:
    """A head follows the target's decodes. DFlash reads the hidden states of the image's rows as a batch's (as
    many drafted and taken as llama-server's); MTP and EAGLE-3 take a token beside each state, so their
    sequence starts again after the image (the pinned llama-server fails such a request: a 500, "failed to
    process speculative batch")."""
    if kind == "draft-mtp":  # MiMo-V2's chained heads: libllama's GLM-4 graphs take no images
        target, extra = mtp_gguf(Path(model_path), "mimo2", 3), ()
    else:
        target, draft = (eagle3_gguf if kind == "draft-eagle3" else dflash_gguf)(Path(model_path))
        extra = ("-md", str(draft))
    model, mmproj = _script("make_vision_model").make(tmp_path, target)
    args = ("-m", str(model), "--mmproj", str(mmproj), *extra, "--spec-type", kind, "-c", "2048", "-np", "1",
            "-t", "2", "-fa", "off", "-ctk", "f32", "-ctv", "f32", "--spec-draft-n-max", "3",
            "--spec-draft-n-min", "3")  # fixed drafts, as llama-server's
    turn = (COUNT, image_url(RED))
    out = same_as_plain(make_server(*args), turn)
    assert drafts(out)[1] > 0, out["timings"]
    if kind == "draft-dflash":
        ref = chat(make_server(*args, command=llama_server), turn, max_tokens=40, cache_prompt=False)
        assert text(out) == text(ref) and drafts(out) == drafts(ref), (out["timings"], ref["timings"])


def test_ngram_types_on_a_prompt_with_images(make_server: Any, vision: tuple[str, str]) -> None:
    model, mmproj = vision
    srv = make_server("-m", model, "--mmproj", mmproj, "-c", "2048", "-np", "1", "-t", "2",
                      "--spec-type", "ngram-map-k,ngram-mod,ngram-simple", "--spec-ngram-mod-n-min", "1",
                      "--spec-ngram-mod-n-match", "4")
    passage = "The old keeper climbed the stairs every evening and lit the lamp for the ships."
    # the passage is followed by the image each time: a lookup of it leads into the image's placeholders
    prompt = f"Copy.\n{passage} <__media__>\n{passage} <__media__>\n{passage}"
    body = {"prompt": {"prompt_string": prompt, "multimodal_data": [image_b64(RED), image_b64(RED)]},
            "n_predict": 48, "temperature": 0, "cache_prompt": False}
    spec = srv.post("/completion", body).json()
    plain = srv.post("/completion", {**body, **OFF}).json()
    assert spec["content"] == plain["content"] and spec["timings"].get("draft_n", 0) > 0, spec
    assert srv.get("/health").status_code == 200
