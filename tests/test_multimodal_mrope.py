"""M-RoPE vision models (Qwen2-VL and kin) on a real server, beside llama.cpp's own llama-server.

The model is scripts/make_vision_model.py's ``--projector qwen2vl`` pair: a tiny random qwen2vl text model
(M-RoPE, SmolLM2's tokenizer) and a random Qwen2-VL projector, where a 112x112 image is 16 embeddings laid
out on a 4x4 grid of 2-D positions that span only 4 sequence positions. So the next text token's position is
4 past the image's start while the image holds 16 KV cells: token lists, prefix reuse and the context limit
must keep positions and cells apart. The same files are served by llama.cpp's llama-server (built by
``build_native.py --reference``; cached after the first build): the answers must be the same text.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Server
from tests.models import _script

# the first reference build compiles llama.cpp's common library and server: minutes on 2 cores
pytestmark = pytest.mark.timeout(1800)

mvm = _script("make_vision_model")
N_TOKENS, N_POS = mvm.QWEN2VL_N_IMAGE_TOKENS, mvm.QWEN2VL_N_IMAGE_POS
SIZE = mvm.QWEN2VL_IMAGE_SIZE
ARGS = ("-c", "2048", "-np", "2", "-t", "2")


def image_url(kind: str, size: tuple[int, int] = (SIZE, SIZE)) -> str:
    w, h = size
    img = Image.new("RGB", (w, h))
    px = img.load()
    assert px is not None
    for y in range(h):
        for x in range(w):
            px[x, y] = {"check": (200, 30, 90) if (x // 14 + y // 14) % 2 else (20, 180, 240),
                        "ramp": (x * 2 % 256, y * 2 % 256, 128)}.get(kind, (250, 250, 250))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat(srv: Server, *turns: tuple[str, str | None], max_tokens: int = 12, **extra: Any) -> dict[str, Any]:
    """One user message per (text, image url or None) turn."""
    messages = [{"role": "user", "content": [{"type": "text", "text": text},
                                              *([{"type": "image_url", "image_url": {"url": url}}] if url else [])]}
                for text, url in turns]
    r = srv.post("/v1/chat/completions", {"messages": messages, "temperature": 0, "max_tokens": max_tokens,
                                          **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def text_of(out: dict[str, Any]) -> str:
    return str(out["choices"][0]["message"]["content"])


@pytest.fixture(scope="module")
def qwen2vl(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Path:
    out = tmp_path_factory.mktemp("qwen2vl")
    mvm.make(out, Path(model_path), projector="qwen2vl")
    return out


@pytest.fixture(scope="module")
def srv(qwen2vl: Path) -> Iterator[Server]:
    server = Server(["-m", str(qwen2vl / "model.gguf"), "--mmproj", str(qwen2vl / "mmproj.gguf"), *ARGS])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reference(qwen2vl: Path, llama_server: list[str]) -> Iterator[Server]:
    server = Server(["-m", str(qwen2vl / "model.gguf"), "--mmproj", str(qwen2vl / "mmproj.gguf"), *ARGS],
                    command=llama_server)
    yield server
    server.stop()


def test_answers_as_llama_server_does(srv: Server, reference: Server) -> None:
    assert "M-RoPE" not in srv.log()  # loaded, not refused
    turns = [
        (("What is in this image?", image_url("check")),),
        (("What is in this image?", image_url("ramp")),),
        (("Describe it.", image_url("white", (SIZE, SIZE // 2))),),  # 8 embeddings, 4 positions
        (("First:", image_url("check")), ("and second:", image_url("ramp")), ("Compare them.", None)),
    ]
    for turn in turns:
        ours, theirs = chat(srv, *turn, cache_prompt=False), chat(reference, *turn, cache_prompt=False)
        assert text_of(ours) == text_of(theirs), turn[0][0]
        # tokens as llama-server counts them: an image's embeddings, not its positions
        assert ours["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"]
        assert ours["timings"]["prompt_n"] == theirs["timings"]["prompt_n"]
    one = chat(srv, ("What is in this image?", image_url("check")), cache_prompt=False)
    text_only = chat(srv, ("What is in this image?", None), cache_prompt=False)
    assert one["usage"]["prompt_tokens"] - text_only["usage"]["prompt_tokens"] > N_TOKENS  # with the markers
    assert text_of(chat(srv, ("What is in this image?", image_url("ramp")))) != text_of(one)


def test_next_turn_reuses_the_image_and_matches_recompute(srv: Server) -> None:
    first = ("Look at this:", image_url("check"))
    out = chat(srv, first, id_slot=0)
    follow = (first, ("assistant said " + text_of(out), None), ("And the colours?", None))
    cached = chat(srv, *follow, id_slot=0)
    fresh = chat(srv, *follow, cache_prompt=False)
    # everything up to the new text came from the cache, the image's 16 cells included
    assert cached["timings"]["cache_n"] > N_TOKENS
    assert cached["timings"]["cache_n"] + cached["timings"]["prompt_n"] == fresh["timings"]["prompt_n"]
    assert text_of(cached) == text_of(fresh)
    # another image at the same place: nothing of the first image's cells is reused
    other = ((first[0], image_url("ramp")), follow[1], follow[2])
    swapped, fresh = chat(srv, *other, id_slot=0), chat(srv, *other, cache_prompt=False)
    assert swapped["timings"]["cache_n"] < cached["timings"]["cache_n"] - N_TOKENS
    assert text_of(swapped) == text_of(fresh)


def test_the_context_limit_counts_cells(make_server: Any, qwen2vl: Path, llama_server: list[str]) -> None:
    # -c 100 is padded to 256 (as llama-server); a 224x224 image is 64 cells on 8 positions
    files = ("-m", str(qwen2vl / "model.gguf"), "--mmproj", str(qwen2vl / "mmproj.gguf"))
    small = make_server(*files, "-c", "100", "-np", "1", "-t", "2")
    assert small.get("/props").json()["default_generation_settings"]["n_ctx"] == 256
    picture = image_url("check", (224, 224))
    too_long = (" ".join(["word"] * 150), picture)
    r = small.post("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": too_long[0]}, {"type": "image_url", "image_url": {"url": picture}}]}],
        "max_tokens": 4})
    # 258 cells on 202 positions: the positions would fit, the cells do not -- llama-server's 400
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "exceed_context_size_error"
    assert r.json()["error"]["n_prompt_tokens"] == 258
    # generation stops where the cells run out (about 27 tokens on), not the positions (83), as llama-server
    fits = (" ".join(["word"] * 120), picture)
    out = chat(small, fits, max_tokens=64, ignore_eos=True)
    ref = make_server(*files, "-c", "100", "-np", "1", "-t", "2", command=llama_server)
    theirs = chat(ref, fits, max_tokens=64, ignore_eos=True)
    assert out["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == theirs["usage"]
    assert out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"] <= 256  # the last one not decoded
    assert text_of(out) == text_of(theirs)
    assert small.get("/health").status_code == 200
