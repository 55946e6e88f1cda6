"""Audio input end to end on a real server with an audio projector (scripts/make_audio_model.py: the default
text model plus a seeded random-weight Ultravox projector, 25 tokens per 30 s of audio).

The audio is generated here (stdlib ``wave``: sine tones), so the tests check plumbing and determinism, not
what the model hears: the same audio gives the same output at temperature 0, a different tone a different
one, the audio's tokens count in prompt_n and usage, the prefix cache reuses an audio's KV in the next turn,
audio past 30 s is several chunks, and bad audio (or an image, which this projector cannot take) is a 400
after which the server serves on.
"""

from __future__ import annotations

import array
import base64
import io
import math
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.conftest import REPO, Server
from tests.media_requests import chat_with, complete, text_tokens
from tests.test_media_load import PNG, data_uri

N_AUDIO = 25  # tokens per 30 s window (scripts/make_audio_model.py: 1500 positions stacked by 60)
QUESTION = "What is this sound?"


def tone(freq: float, seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV of a sine tone (libmtmd resamples other rates to the projector's 16 kHz)."""
    samples = array.array("h", (int(12000 * math.sin(2 * math.pi * freq * i / rate))
                                for i in range(int(seconds * rate))))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


A440, A880 = tone(440), tone(880)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audio_part(data: bytes, fmt: str = "wav") -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": b64(data), "format": fmt}}


def chat(srv: Server, *parts: dict[str, Any], text: str = QUESTION, **extra: Any) -> requests.Response:
    return chat_with(srv, parts, text, **extra)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Path:
    out = tmp_path_factory.mktemp("audio")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_audio_model.py"), "--out-dir", str(out),
                    "--model", model_path], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def asrv(audio_dir: Path) -> Iterator[Server]:
    srv = Server(["-m", str(audio_dir / "model.gguf"), "--mmproj", str(audio_dir / "mmproj.gguf"),
                  "-c", "2048", "-np", "2", "-t", "1"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def marker(asrv: Server) -> str:
    return str(asrv.get("/props").json()["media_marker"])


def serves(srv: Server) -> None:
    """No slot is left busy, and an audio prompt still answers."""
    assert all(not s["is_processing"] for s in srv.get("/slots").json())
    r = chat(srv, audio_part(A440), max_tokens=2)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


def test_props_and_models_say_audio(asrv: Server) -> None:
    props = asrv.get("/props").json()
    assert props["modalities"] == {"vision": False, "video": False, "audio": True}
    assert asrv.get("/v1/models").json()["models"][0]["capabilities"] == ["completion", "multimodal"]


def test_same_audio_same_output_different_audio_different_output(asrv: Server) -> None:
    def run(data: bytes) -> tuple[str, list[float], dict[str, Any]]:
        r = chat(asrv, audio_part(data), cache_prompt=False, logprobs=True, top_logprobs=5)
        assert r.status_code == 200, r.text
        out = r.json()
        # the first token's distribution: the audio's embeddings shape it (the words may agree)
        first = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        return out["choices"][0]["message"]["content"], [p["logprob"] for p in first], out

    a, again, other = run(A440), run(A440), run(A880)
    assert a[:2] == again[:2]
    assert other[1] != a[1]
    # the audio's tokens are in the prompt (the marker itself is no text)
    text_only = chat(asrv, cache_prompt=False).json()
    assert a[2]["usage"]["prompt_tokens"] - text_only["usage"]["prompt_tokens"] == N_AUDIO
    assert a[2]["timings"]["prompt_n"] == a[2]["usage"]["prompt_tokens"]


def test_completion_multimodal_data(asrv: Server, marker: str) -> None:
    prompt = f"Listen: {marker}\nWhat is it?"
    out = complete(asrv, prompt, [b64(A440)], cache_prompt=False).json()
    n_text = text_tokens(asrv, "Listen: ") + text_tokens(asrv, "\nWhat is it?")
    assert out["timings"]["prompt_n"] == out["tokens_evaluated"] == n_text + N_AUDIO
    assert out["prompt"] == prompt  # the prompt reads back with its marker
    assert complete(asrv, prompt, [b64(A440)], cache_prompt=False).json()["content"] == out["content"]


def test_next_turn_reuses_the_audio_in_the_cache(asrv: Server) -> None:
    def turns(data: bytes) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [audio_part(data), {"type": "text", "text": "Listen."}]},
                {"role": "assistant", "content": "A tone."}, {"role": "user", "content": "And now?"}]

    def ask(messages: list[dict[str, Any]]) -> dict[str, Any]:
        r = asrv.post("/v1/chat/completions", {"messages": messages, "max_tokens": 2, "temperature": 0,
                                               "id_slot": 0})
        assert r.status_code == 200, r.text
        return dict(r.json()["timings"])

    first = ask(turns(A440)[:1])
    n_first = first["cache_n"] + first["prompt_n"]  # the first turn's whole prompt (the slot may have had some)
    # everything of the first turn's prompt is reused, the audio's 25 positions included
    assert ask(turns(A440))["cache_n"] >= n_first - 1 > N_AUDIO
    # another audio: only the text before it is reused, never the first audio's cells
    assert ask(turns(A880))["cache_n"] <= n_first - N_AUDIO - text_tokens(asrv, "Listen.")


def test_audio_past_30_seconds_is_a_chunk_per_window(asrv: Server, marker: str) -> None:
    # 31 s (at 8 kHz: resampled by libmtmd) is two 30 s windows, two chunks of 25 tokens for one media item
    # (a 500 once: one chunk per media item was assumed)
    prompt = f"Listen: {marker}\nWhat is it?"
    long = b64(tone(300, 31, rate=8000))
    first = complete(asrv, prompt, [long], id_slot=1)
    assert first.status_code == 200, first.text
    short = complete(asrv, prompt, [b64(A440)], cache_prompt=False).json()
    assert first.json()["timings"]["prompt_n"] == short["timings"]["prompt_n"] + N_AUDIO
    # both chunks are reused by the same audio again
    again = complete(asrv, prompt, [long], id_slot=1).json()
    assert again["timings"]["cache_n"] == first.json()["timings"]["prompt_n"] - 1
    assert again["content"] == first.json()["content"]


def test_an_image_is_refused_naming_the_missing_vision_encoder(asrv: Server, marker: str) -> None:
    r = chat(asrv, {"type": "image_url", "image_url": {"url": data_uri(PNG)}})
    assert r.status_code == 400 and "has no vision encoder" in r.json()["error"]["message"], r.text
    r = complete(asrv, f"Look: {marker} ok", [b64(PNG)])
    assert r.status_code == 400 and "has no vision encoder" in r.json()["error"]["message"], r.text
    serves(asrv)


def _wav_of(n_samples: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x10\x00" * n_samples)
    return buf.getvalue()


@pytest.mark.parametrize(("data", "words"), [
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 30, "could not be decoded"),
    (b"ID3" + b"\x00" * 200, "could not be decoded"),
    (b"fLaC" + b"\x00" * 200, "could not be decoded"),
    (b"RIFF\x24\x00\x00\x00WEBXLIST" + b"\x00" * 30, "neither WAV, AVI nor WebP"),
    (b"RIFF\x24\x00\x00\x00AVI LIST" + b"\x00" * 30, "video"),  # a video: this projector has no vision
    (_wav_of(0), "could not be decoded"),
    # a few samples aborted the whole server in libmtmd's preprocessing (GGML_ASSERT); now a 400
    (_wav_of(1), "too short"),
    (A440[:60], "too short"),  # a header that promises a second, with 8 samples
])  # fmt: skip
@pytest.mark.parametrize("route", ["chat", "completion"])
def test_bad_audio_is_400_and_the_server_serves_on(asrv: Server, marker: str, route: str, data: bytes,
                                                   words: str) -> None:
    if route == "chat":
        r = chat(asrv, audio_part(data))
    else:
        r = complete(asrv, f"Listen: {marker} ok", [b64(data)])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and words in err["message"], err
    serves(asrv)


def test_openai_client_sends_input_audio(asrv: Server) -> None:
    client = openai.OpenAI(base_url=asrv.url + "/v1", api_key="none", max_retries=0)
    r = client.chat.completions.create(
        model="m", max_tokens=6, temperature=0, extra_body={"ignore_eos": True},
        messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": b64(A440), "format": "wav"}},
            {"type": "text", "text": QUESTION}]}])
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == chat(asrv, audio_part(A440)).json()["choices"][0]["message"]["content"]
    assert r.usage is not None and r.usage.prompt_tokens > N_AUDIO
