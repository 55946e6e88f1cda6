"""Video input end to end on a real server with the generated vision projector (scripts/make_vision_model.py:
16 tokens per image, so per frame).

The videos are made here with ffmpeg (lavfi test sources, 64x64, 4 frames a second for one second); libmtmd's
helper decodes them with ffprobe/ffmpeg into "Video:", frames at --video-fps and a timestamp text every
--video-timestamp-interval ms. The tests check plumbing and determinism, not what the model sees: the same
video gives the same output at temperature 0, another video another one, the frames count in prompt_n (and
--video-fps changes how many), the next turn reuses the video's KV, the openai client's video part works,
and bad videos, a server without a projector and a missing ffmpeg are 400s after which the server serves on.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests import test_multimodal
from tests.conftest import Server
from tests.media_requests import chat_with, complete, text_tokens
from tests.test_media_load import PNG, data_uri, media_http_server

vision_dir = test_multimodal.vision_dir  # the fixture: the generated vision model

N_FRAME = 16  # tokens per frame (a 32x32 image in 8x8 patches)
QUESTION = "What happens in the video?"


def _need_ffmpeg() -> None:
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return
    reason = "ffmpeg and ffprobe are not installed (apt-get install ffmpeg)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _make_video(out: Path, source: str, *codec: str) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"{source}=size=64x64:rate=4", "-t", "1",
                    *codec, str(out)], check=True, capture_output=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    _need_ffmpeg()
    out = tmp_path_factory.mktemp("videos")
    h264 = ("-pix_fmt", "yuv420p")
    return {
        "a.mp4": _make_video(out / "a.mp4", "testsrc", *h264),
        "b.mp4": _make_video(out / "b.mp4", "testsrc2", *h264),
        "a.webm": _make_video(out / "a.webm", "testsrc", "-c:v", "libvpx", "-b:v", "200k"),
        "a.avi": _make_video(out / "a.avi", "testsrc", "-c:v", "mpeg4"),
    }


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory, videos: dict[str, bytes]) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "a.mp4").write_bytes(videos["a.mp4"])
    return root


@pytest.fixture(scope="module")
def vsrv(vision_dir: Path, media_dir: Path) -> Iterator[Server]:
    srv = Server(["-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                  "--media-path", str(media_dir), "-c", "2048", "-np", "2", "-t", "1"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http_url(media_dir: Path) -> Iterator[str]:
    with media_http_server(functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(media_dir))) as url:
        yield url


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def video_part(url: str, key: str = "input_video") -> dict[str, Any]:
    return {"type": key, key: {"url": url}}


def chat(srv: Server, *parts: dict[str, Any], text: str = QUESTION, **extra: Any) -> requests.Response:
    return chat_with(srv, parts, text, **extra)


def serves(srv: Server, video: bytes) -> None:
    """No slot is left busy, and a video prompt still answers."""
    assert all(not s["is_processing"] for s in srv.get("/slots").json())
    r = chat(srv, video_part(data_uri(video, "video/mp4")), max_tokens=2)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2, r.text


def test_props_and_models_say_video(vsrv: Server, server: Server) -> None:
    assert vsrv.get("/props").json()["modalities"] == {"vision": True, "video": True, "audio": False}
    assert vsrv.get("/v1/models").json()["models"][0]["capabilities"] == ["completion", "multimodal"]
    assert server.get("/props").json()["modalities"]["video"] is False  # no projector


def test_same_video_same_output_different_video_different_output(vsrv: Server, videos: dict[str, bytes]) -> None:
    def run(data: bytes) -> tuple[str, list[float]]:
        r = chat(vsrv, video_part(data_uri(data, "video/mp4")), cache_prompt=False, logprobs=True, top_logprobs=5)
        assert r.status_code == 200, r.text
        out = r.json()
        first = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]  # the frames' embeddings shape it
        return out["choices"][0]["message"]["content"], [p["logprob"] for p in first]

    a, again, other = run(videos["a.mp4"]), run(videos["a.mp4"]), run(videos["b.mp4"])
    assert a == again
    assert other[1] != a[1]


def test_frames_count_in_prompt_n(vsrv: Server, videos: dict[str, bytes]) -> None:
    prompt = "Watch: <__media__>\nWhat is it?"
    out = complete(vsrv, prompt, [b64(videos["a.mp4"])], cache_prompt=False).json()
    # libmtmd's parts: "Video:", then 4 frames (4 fps, 1 s) with a timestamp text after the first
    n_text = text_tokens(vsrv, "Watch: ") + text_tokens(vsrv, "\nWhat is it?")
    n_video_text = text_tokens(vsrv, "Video:") + text_tokens(vsrv, "[0m0.00s]")
    assert out["timings"]["prompt_n"] == out["tokens_evaluated"] == n_text + n_video_text + 4 * N_FRAME
    # reads back with libmtmd's texts, a marker for each run of frames between them
    assert out["prompt"] == "Watch: Video:<__media__>[0m0.00s]<__media__>\nWhat is it?"
    again = complete(vsrv, prompt, [b64(videos["a.mp4"])], cache_prompt=False).json()
    assert again["content"] == out["content"]


def test_video_fps_and_timestamp_interval_flags(vision_dir: Path, vsrv: Server, videos: dict[str, bytes],
                                                make_server: Callable[..., Server]) -> None:
    srv = make_server("-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                      "-c", "1024", "-np", "1", "-t", "1", "--video-fps", "2", "--video-timestamp-interval", "0")
    prompt = "Watch: <__media__>\nWhat is it?"
    four = complete(vsrv, prompt, [b64(videos["a.mp4"])], cache_prompt=False).json()["timings"]["prompt_n"]
    two = complete(srv, prompt, [b64(videos["a.mp4"])], cache_prompt=False).json()["timings"]["prompt_n"]
    # half the frames, and no timestamp text
    assert four - two == 2 * N_FRAME + text_tokens(vsrv, "[0m0.00s]")


def test_next_turn_reuses_the_video_in_the_cache(vsrv: Server, videos: dict[str, bytes]) -> None:
    def turns(data: bytes) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [video_part(data_uri(data, "video/mp4")),
                                             {"type": "text", "text": "Watch."}]},
                {"role": "assistant", "content": "A test pattern."}, {"role": "user", "content": "And now?"}]

    def ask(messages: list[dict[str, Any]]) -> dict[str, Any]:
        r = vsrv.post("/v1/chat/completions", {"messages": messages, "max_tokens": 2, "temperature": 0,
                                               "id_slot": 0})
        assert r.status_code == 200, r.text
        return dict(r.json()["timings"])

    first = ask(turns(videos["a.mp4"])[:1])
    n_first = first["cache_n"] + first["prompt_n"]
    # the whole first turn is reused, the 4 frames' 64 positions included
    assert ask(turns(videos["a.mp4"]))["cache_n"] >= n_first - 1 > 4 * N_FRAME
    # another video: at most the text before its first frame ("Video:" included), never the other's frames
    assert ask(turns(videos["b.mp4"]))["cache_n"] <= n_first - 4 * N_FRAME - text_tokens(vsrv, "Watch.")


def test_containers_and_sources(vsrv: Server, videos: dict[str, bytes], http_url: str) -> None:
    reference = chat(vsrv, video_part(data_uri(videos["a.mp4"], "video/mp4")), cache_prompt=False).json()
    # the same file from --media-path, over http, as video_url (the OpenAI-style alias) and as raw base64
    for part in (video_part("file://a.mp4"), video_part(http_url + "/a.mp4"),
                 video_part(data_uri(videos["a.mp4"], "video/mp4"), "video_url"),
                 {"type": "input_video", "input_video": {"data": b64(videos["a.mp4"])}}):
        r = chat(vsrv, part, cache_prompt=False)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == reference["choices"][0]["message"]["content"]
    # other containers and codecs: as many frames (the pixels differ: lossy codecs)
    for name, mime in (("a.webm", "video/webm"), ("a.avi", "video/x-msvideo")):
        r = chat(vsrv, video_part(data_uri(videos[name], mime)), cache_prompt=False)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == reference["usage"]["prompt_tokens"]


def test_openai_client_sends_a_video_part(vsrv: Server, videos: dict[str, bytes]) -> None:
    client = openai.OpenAI(base_url=vsrv.url + "/v1", api_key="none", max_retries=0)
    url = data_uri(videos["a.mp4"], "video/mp4")
    r = client.chat.completions.create(
        model="m", max_tokens=6, temperature=0, extra_body={"ignore_eos": True},
        messages=[{"role": "user", "content": [video_part(url, "video_url"),  # type: ignore[list-item]
                                                {"type": "text", "text": QUESTION}]}])
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == chat(vsrv, video_part(url)).json()["choices"][0]["message"]["content"]
    assert r.usage is not None and r.usage.prompt_tokens > 4 * N_FRAME


def _bad_videos(videos: dict[str, bytes]) -> list[tuple[bytes, str]]:
    mp4 = videos["a.mp4"]
    return [
        (mp4[:600], "could not be decoded"),  # truncated: no moov atom
        (mp4[:32] + bytes(range(256)) * 8, "could not be decoded"),  # an MP4 header, then noise
        (b"\x1a\x45\xdf\xa3" + b"\x00" * 200, "could not be decoded"),  # a Matroska magic, nothing else
        (b"\x00" * 64, "unsupported media format"),
    ]


@pytest.mark.parametrize("route", ["chat", "completion"])
def test_bad_videos_are_400s_and_the_server_serves_on(vsrv: Server, videos: dict[str, bytes], route: str) -> None:
    for data, words in _bad_videos(videos):
        if route == "chat":
            r = chat(vsrv, video_part(data_uri(data, "video/mp4")))
        else:
            r = complete(vsrv, "Watch: <__media__> ok", [b64(data)])
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and words in err["message"], err
    # a video in an image part (and an image in a video part) is named
    r = chat(vsrv, {"type": "image_url", "image_url": {"url": data_uri(videos["a.mp4"], "video/mp4")}})
    assert r.status_code == 400 and "the image part holds video" in r.json()["error"]["message"]
    r = chat(vsrv, video_part(data_uri(PNG)))
    assert r.status_code == 400 and "the video part holds image" in r.json()["error"]["message"]
    serves(vsrv, videos["a.mp4"])


def test_video_without_a_projector_is_a_400(server: Server, videos: dict[str, bytes]) -> None:
    r = chat(server, video_part(data_uri(videos["a.mp4"], "video/mp4")))
    assert r.status_code == 400
    assert "video input is not supported" in r.json()["error"]["message"]
    assert "--mmproj" in r.json()["error"]["message"]
    r = complete(server, "Watch: <__media__> ok", [b64(videos["a.mp4"])])
    assert r.status_code == 400 and "needs a multimodal projector" in r.json()["error"]["message"]


def test_missing_ffmpeg_is_a_400_naming_it(vision_dir: Path, videos: dict[str, bytes], tmp_path: Path,
                                           make_server: Callable[..., Server]) -> None:
    empty = tmp_path / "no-ffmpeg"
    empty.mkdir()
    srv = make_server("-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                      "-c", "1024", "-np", "1", "-t", "1", "--video-ffmpeg-dir", str(empty))
    assert f"ffprobe and ffmpeg not found in --video-ffmpeg-dir {empty}" in srv.log()  # a start-up warning
    for r in (chat(srv, video_part(data_uri(videos["a.mp4"], "video/mp4"))),
              complete(srv, "Watch: <__media__> ok", [b64(videos["a.mp4"])])):
        assert r.status_code == 400, r.text
        assert f"video input needs ffprobe and ffmpeg: ffprobe and ffmpeg not found in --video-ffmpeg-dir {empty}" \
            in r.json()["error"]["message"]
    # images do not need ffmpeg
    r = chat(srv, {"type": "image_url", "image_url": {"url": data_uri(PNG)}})
    assert r.status_code == 200, r.text
