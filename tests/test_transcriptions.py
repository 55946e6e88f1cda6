"""OpenAI /v1/audio/transcriptions on a real server with an audio projector (scripts/make_audio_model.py), through
the openai client, and through a router: the same text as the chat request it stands for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.conftest import Server
from tests.test_multimodal_audio import A440, A880, audio_dir, audio_part

ASR = "Transcribe audio to text"
__all__ = ["audio_dir"]  # the audio model's fixture, shared with tests/test_multimodal_audio.py


@pytest.fixture(scope="module")
def asrv(audio_dir: Path) -> Iterator[Server]:
    srv = Server(["-m", str(audio_dir / "model.gguf"), "--mmproj", str(audio_dir / "mmproj.gguf"),
                  "-c", "2048", "-np", "2", "-t", "2", "--temp", "0", "-n", "8"])
    yield srv
    srv.stop()


def chat_text(srv: Server, prompt: str, audio: bytes, **extra: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": prompt}, audio_part(audio)]}],
            **extra}
    r = srv.post("/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def transcribe(srv: Server, audio: bytes | None, **fields: str) -> requests.Response:
    files = {"file": ("clip.wav", audio, "audio/wav")} if audio is not None else None
    return requests.post(srv.url + "/v1/audio/transcriptions", data={"model": "whisper-1", **fields},
                         files=files, timeout=120)


def test_openai_client_transcribes_as_the_chat_request(asrv: Server) -> None:
    client = openai.OpenAI(base_url=asrv.url + "/v1", api_key="unused")
    got = client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", A440, "audio/wav"))
    want = chat_text(asrv, ASR, A440)
    assert got.text == want["choices"][0]["message"]["content"]
    raw = transcribe(asrv, A440).json()
    assert raw["type"] == "transcript.text.done" and raw["text"] == got.text
    assert raw["usage"]["input_tokens"] == want["usage"]["prompt_tokens"]
    assert raw["usage"]["output_tokens"] == want["usage"]["completion_tokens"]
    assert raw["usage"]["total_tokens"] == raw["usage"]["input_tokens"] + raw["usage"]["output_tokens"]
    assert set(raw["usage"]) == {"type", "input_tokens", "output_tokens", "total_tokens", "input_tokens_details"}


def test_prompt_language_and_sampling_fields(asrv: Server) -> None:
    got = transcribe(asrv, A880, prompt="Write down the words", language="fr", max_tokens="3", temperature="0")
    want = chat_text(asrv, "Write down the words (language: fr)", A880, max_tokens=3, temperature=0)
    assert got.status_code == 200, got.text
    assert got.json()["text"] == want["choices"][0]["message"]["content"]
    assert got.json()["usage"]["output_tokens"] <= 3


def test_stream(asrv: Server) -> None:
    r = requests.post(asrv.url + "/v1/audio/transcriptions", data={"model": "m", "stream": "true"},
                      files={"file": ("clip.wav", A440, "audio/wav")}, stream=True, timeout=120)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert parsed[-1]["type"] == "transcript.text.done"
    deltas = [e["delta"] for e in parsed[:-1]]
    assert all(e["type"] == "transcript.text.delta" for e in parsed[:-1]) and deltas
    assert "".join(deltas) == parsed[-1]["text"] == transcribe(asrv, A440).json()["text"]


@pytest.mark.parametrize(("audio", "fields", "status", "message"), [
    (None, {}, 400, "No input file found for transcription"),
    (A440, {"response_format": "text"}, 400, "Only 'json' response_format is supported for transcription"),
    (A440, {"temperature": "warm"}, 400, "'temperature' must be a number"),
    (A440, {"max_tokens": "1.5"}, 400, "'max_tokens' must be a number"),
    (b"not audio at all", {}, 400, ""),
])
def test_client_mistakes(asrv: Server, audio: bytes | None, fields: dict[str, str], status: int,
                         message: str) -> None:
    r = transcribe(asrv, audio, **fields)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert transcribe(asrv, A440, max_tokens="1").status_code == 200  # and it serves on


def test_a_model_without_audio(server: Server) -> None:
    r = transcribe(server, A440)
    assert r.status_code == 501
    assert r.json()["error"] == {"code": 501, "message": "The current model does not support audio input.",
                                 "type": "not_supported_error"}


def test_through_a_router(audio_dir: Path, asrv: Server, tmp_path: Path, make_server: Any) -> None:
    models = tmp_path / "models"
    (models / "ultravox").mkdir(parents=True)
    (models / "ultravox" / "model.gguf").symlink_to(audio_dir / "model.gguf")
    (models / "ultravox" / "mmproj-ultravox.gguf").symlink_to(audio_dir / "mmproj.gguf")
    router = make_server("--models-dir", str(models), "-c", "2048", "-np", "2", "-t", "2", "--temp", "0", "-n", "8")
    listed = router.get("/v1/models").json()["data"][0]
    assert listed["id"] == "ultravox" and listed["architecture"]["input_modalities"] == ["text", "audio"]
    r = requests.post(router.url + "/v1/audio/transcriptions", data={"model": "ultravox"},
                      files={"file": ("clip.wav", A440, "audio/wav")}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["text"] == transcribe(asrv, A440).json()["text"]
    missing = requests.post(router.url + "/v1/audio/transcriptions", files={"file": ("clip.wav", A440)}, timeout=60)
    assert missing.status_code == 400 and missing.json()["error"]["message"] == "model name is missing from the request"
