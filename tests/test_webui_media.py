"""The web UI's media in a real browser (web/tests/chat.test.mjs: Playwright driving headless Chromium): on a
server with a vision projector an image attached with the file picker, or pasted, is sent as an ``image_url``
part, answered and shown in the conversation (and after a reload); without a projector there is nothing to
attach but text files and a pasted image is refused; with "Send PDFs as page images" a PDF's pages go as
``image_url`` parts. An audio clip (audio projector) goes as ``input_audio``, so does a recording from the
microphone button (as WAV), a video (vision projector and ffmpeg) as ``video_url``, each shown as a player."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_multimodal, test_multimodal_audio, test_multimodal_video
from tests.conftest import Server
from tests.test_media_load import image_bytes
from tests.test_webui import WEB, _browser_ready

vision_dir = test_multimodal.vision_dir  # the fixtures: the generated vision and audio models, test videos
audio_dir = test_multimodal_audio.audio_dir
videos = test_multimodal_video.videos


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "red.png"
    path.write_bytes(image_bytes("PNG", (220, 30, 30), (40, 30)))
    return path


@pytest.fixture(scope="module")
def vision_server(vision_dir: Path) -> Iterator[Server]:
    srv = Server(["-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"), "-c", "1024",
                  "-np", "1", "-t", "2", "-n", "16"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def jpx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JPEG 2000 codestream (Pillow's OpenJPEG) of a red 40x30 image: a scanned page's picture in a PDF."""
    from PIL import Image

    path = tmp_path_factory.mktemp("jpx") / "red.j2k"
    Image.new("RGB", (40, 30), (220, 30, 30)).save(path, format="JPEG2000")
    assert path.read_bytes()[:4] == b"\xff\x4f\xff\x51"  # a raw codestream (SOC, SIZ), as PDFs embed them
    return path


def run_scenarios(url: str, image: Path, *names: str, clip: Path | None = None, jpx: Path | None = None) -> None:
    reason = _browser_ready()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    proc = subprocess.run(["node", "tests/chat.test.mjs", *names], check=False, cwd=WEB, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "LLAMATWIST_URL": url, "LLAMATWIST_IMAGE": str(image),
                               "LLAMATWIST_CLIP": str(clip or ""), "LLAMATWIST_JPX": str(jpx or "")})
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(f"ok {name}" in proc.stdout for name in names), proc.stdout


def test_browser_attach_and_paste_an_image(vision_server: Server, image: Path) -> None:
    run_scenarios(vision_server.url + "/", image, "vision")


def test_browser_sends_pdf_pages_as_images(vision_server: Server, image: Path, jpx: Path) -> None:
    run_scenarios(vision_server.url + "/", image, "pdfimages", jpx=jpx)


def test_browser_without_vision(server: Server, image: Path) -> None:
    run_scenarios(server.url + "/", image, "novision")


def test_browser_sends_an_audio_clip(audio_dir: Path, image: Path, tmp_path: Path) -> None:
    clip = tmp_path / "tone.wav"
    clip.write_bytes(test_multimodal_audio.A440)
    srv = Server(["-m", str(audio_dir / "model.gguf"), "--mmproj", str(audio_dir / "mmproj.gguf"), "-c", "1024",
                  "-np", "1", "-t", "2", "-n", "16"])
    try:
        run_scenarios(srv.url + "/", image, "audio", "record", clip=clip)
    finally:
        srv.stop()


def test_browser_sends_a_video(vision_server: Server, image: Path, videos: dict[str, bytes], tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(videos["a.mp4"])
    run_scenarios(vision_server.url + "/", image, "video", clip=clip)
