"""llamatwist.media.load: every media source form a client may name, good and bad — data: URIs, file:// under
--media-path, http(s) against a local HTTP server (size, time and redirect limits), raw base64 — and the chat
layer's media parts (markers, the rendered text around them)."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest as trial

from llamatwist.chat import ChatInputError, parse_messages
from llamatwist.chat.messages import extract_media
from llamatwist.media import MEDIA_MARKER, MediaError, MediaInput, sniff_video, split_at_markers
from llamatwist.media.load import MediaLimits, MediaTooLarge, load_media, read_data_uri, read_local_file


def image_bytes(fmt: str, color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


PNG = image_bytes("PNG")
NOISE = Image.frombytes("RGB", (64, 64), bytes((i * 7919) % 251 for i in range(64 * 64 * 3)))
_buf = io.BytesIO()
NOISE.save(_buf, format="PNG")
TRUNCATED = _buf.getvalue()[: len(_buf.getvalue()) // 2]  # a valid header, half the pixel data
WAV = (b"RIFF" + (36 + 4).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
       + bytes.fromhex("0100010044ac00008858010002001000") + b"data" + (4).to_bytes(4, "little") + b"\0\0\0\0")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def now(fn: Any, *args: Any) -> Deferred[Any]:
    """An ``in_thread`` that runs at once (the pure tests need no thread pool)."""
    return succeed(fn(*args))


def run(coro: Any) -> Any:
    """Drive a coroutine that never waits on the reactor (data:, file:// and base64 sources)."""
    d = Deferred.fromCoroutine(coro)
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the coroutine waited on the reactor"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


# -- data: URIs and raw base64 ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_data_uri_images_decode_to_rgb(fmt: str) -> None:
    media = run(load_media(data_uri(image_bytes(fmt), f"image/{fmt.lower()}"), None, now))
    assert (media.kind, media.width, media.height) == ("image", 8, 6)
    assert len(media.data) == 8 * 6 * 3
    r, g, b = media.data[:3]
    assert r > 150 and g < 60 and b < 60  # the red survives JPEG's loss too


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (4, 4), c) for c in ((0, 0, 255), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    media = run(load_media(data_uri(buf.getvalue(), "image/gif"), None, now))
    assert media.data[:3] == bytes((0, 0, 255))


def test_audio_stays_encoded() -> None:
    media = run(load_media(data_uri(WAV, "audio/wav"), None, now))
    assert media == MediaInput("audio", WAV)
    assert run(load_media(base64.b64encode(WAV).decode(), None, now)) == media  # input_audio's raw base64


@pytest.mark.parametrize(("head", "container"), [
    (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "MP4/MOV"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "Matroska/WebM"),
    (b"RIFF\x24\x00\x00\x00AVI LIST", "AVI"),
    (b"\x00\x00\x01\xba\x44\x00", "MPEG"),
    (b"\x47" + bytes(187) + b"\x47" + bytes(187) + b"\x47" + bytes(10), "MPEG-TS"),
])  # fmt: skip
def test_video_stays_encoded(head: bytes, container: str) -> None:
    # recognised by its container (libmtmd's ffmpeg decodes it at tokenization), from data:video/ URIs too
    data = head + bytes(64)
    assert sniff_video(data) == container
    assert run(load_media(data_uri(data, "video/mp4"), None, now)) == MediaInput("video", data)
    assert sniff_video(PNG) is None and sniff_video(WAV) is None


def test_raw_base64_image() -> None:
    assert run(load_media(base64.b64encode(PNG).decode(), None, now)).kind == "image"


def test_line_wrapped_base64_is_fine() -> None:
    text = base64.encodebytes(PNG).decode()  # 76-column lines
    assert read_data_uri("data:image/png;base64," + text) == PNG


@pytest.mark.parametrize(("url", "words"), [
    ("data:image/png;base64,!!!!", "not valid base64"),
    ("data:image/png;base64,iVBORw0KGgo", "not valid base64"),  # bad padding
    ("data:image/png;base64,", "empty"),
    ("data:image/png,plain", "base64 encoded"),
    ("data:text/plain;base64,aGVsbG8=", "media type 'text/plain'"),
    ("data:image/png;base64", "invalid data: URI"),
    ("data:image/png;base64,aGVsbG8gd29ybGQ=", "unsupported media format"),  # "hello world"
    ("data:image/png;base64," + base64.b64encode(TRUNCATED).decode(), "cannot be decoded"),
    ("data:image/bmp;base64," + base64.b64encode(image_bytes("TIFF")).decode(), "unsupported image format TIFF"),
    ("not base64 at all!", "not valid base64"),
    ("", "empty"),
])
def test_bad_data_is_a_media_error(url: str, words: str) -> None:
    with pytest.raises(MediaError, match=words):
        run(load_media(url, None, now))


def test_data_uri_size_limit() -> None:
    with pytest.raises(MediaTooLarge, match="limit is 100 bytes"):
        read_data_uri(data_uri(bytes(200)), MediaLimits(max_bytes=100))
    assert read_data_uri(data_uri(bytes(100)), MediaLimits(max_bytes=100)) == bytes(100)


# -- file:// under --media-path -----------------------------------------------------------------------------


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "cat.png").write_bytes(PNG)
    (root / "sub" / "dog.png").write_bytes(image_bytes("PNG", (0, 0, 200)))
    (tmp_path / "secret.png").write_bytes(PNG)
    (root / "escape.png").symlink_to(tmp_path / "secret.png")
    (root / "inside.png").symlink_to(root / "cat.png")
    (root / "dir.png").mkdir()
    (root / "big.png").write_bytes(bytes(2000))
    return root


@pytest.mark.parametrize("rel", ["cat.png", "sub/dog.png", "./cat.png", "sub/./dog.png",
                                 "inside.png", "c%61t.png"])
def test_file_under_media_path(media_dir: Path, rel: str) -> None:
    media = run(load_media("file://" + rel, str(media_dir), now))
    assert media.kind == "image" and media.width == 8


def test_absolute_file_under_media_path(media_dir: Path) -> None:
    assert read_local_file(f"file://{media_dir}/cat.png", str(media_dir)) == PNG


@pytest.mark.parametrize(("rel", "words"), [
    ("../secret.png", "no '..' components"),
    ("sub/../../secret.png", "no '..' components"),
    ("%2e%2e/secret.png", "no '..' components"),
    ("%2E%2E%2fsecret.png", "no '..' components"),
    ("..\\secret.png", "no '..' components"),
    ("escape.png", "outside --media-path"),
    ("/etc/passwd", "outside --media-path"),
    ("", "outside --media-path"),
    ("cat.png%00.txt", "NUL"),
    ("missing.png", "does not exist"),
    ("dir.png", "not a regular file|cannot be opened"),
])
def test_file_refused(media_dir: Path, rel: str, words: str) -> None:
    with pytest.raises(MediaError, match=words):
        read_local_file("file://" + rel, str(media_dir))


def test_file_needs_media_path() -> None:
    with pytest.raises(MediaError, match="not allowed unless --media-path"):
        run(load_media("file://cat.png", None, now))


def test_file_size_limit(media_dir: Path) -> None:
    with pytest.raises(MediaTooLarge, match="limit is 1000 bytes"):
        read_local_file("file://big.png", str(media_dir), MediaLimits(max_bytes=1000))


# -- the chat layer: media parts become markers -------------------------------------------------------------


def test_media_parts_become_markers() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        {"type": "text", "text": "and"}, {"type": "image_url", "image_url": "https://example.com/x.png"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]
    marked, refs = extract_media(messages, {"image", "audio"})
    assert [(r.kind, r.url, r.where) for r in refs] == [
        ("image", "data:image/png;base64,AA", "messages[0].content[1]"),
        ("image", "https://example.com/x.png", "messages[0].content[3]"),
        ("audio", "UklGRg==", "messages[0].content[4]")]
    assert messages[0]["content"][1]["type"] == "image_url"  # the request itself is left as it was
    msg = parse_messages(marked)[0]
    # llama.cpp's to_json_oaicompat: no newline before or after a marker
    assert msg.to_template_json()["content"] == f"look{MEDIA_MARKER}and{MEDIA_MARKER}{MEDIA_MARKER}"
    assert msg.legacy_text() == f"look\n{MEDIA_MARKER}\nand\n{MEDIA_MARKER}\n{MEDIA_MARKER}"
    # a text message is untouched
    assert extract_media([{"role": "user", "content": "hi"}], {"image"}) == ([{"role": "user", "content": "hi"}], [])


@pytest.mark.parametrize(("part", "kinds", "words"), [
    ({"type": "image_url", "image_url": {"url": "x"}}, set(),
     "image input is not supported: this server has no multimodal projector"),
    ({"type": "image_url", "image_url": {"url": "x"}}, {"audio"}, "image input is not supported"),
    ({"type": "input_audio", "input_audio": {"data": "x"}}, {"image"}, "audio input is not supported"),
    ({"type": "input_video", "input_video": {"url": "x"}}, {"image", "audio"}, "video input is not supported"),
    ({"type": "image_url"}, {"image"}, r"messages\[0\].content\[0\].image_url.url is required"),
    ({"type": "image_url", "image_url": {"url": 5}}, {"image"}, "image_url.url is required"),
    ({"type": "input_audio", "input_audio": "AAAA"}, {"audio"}, "must be an object"),
    ({"type": "input_audio", "input_audio": {"format": "wav"}}, {"audio"}, "input_audio.data is required"),
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "ogg"}}, {"audio"}, "format must be"),
])
def test_bad_media_parts(part: dict[str, Any], kinds: set[str], words: str) -> None:
    with pytest.raises(ChatInputError, match=words) as info:
        extract_media([{"role": "user", "content": [part]}], kinds)
    assert info.value.status == 400


def test_a_client_cannot_send_marker_parts() -> None:
    with pytest.raises(ChatInputError, match="unsupported content"):
        parse_messages([{"role": "user", "content": [{"type": "media_marker", "text": MEDIA_MARKER}]}])


def test_typed_marker_text_mismatches() -> None:
    media = [MediaInput("image", bytes(3), 1, 1)]
    assert split_at_markers(f"a{MEDIA_MARKER}b", media) == ["a", media[0], "b"]
    with pytest.raises(MediaError, match="2 media marker"):
        split_at_markers(f"a{MEDIA_MARKER}b{MEDIA_MARKER}", media)


# -- http(s): a local HTTP server ---------------------------------------------------------------------------

BIG = 11 * 1024 * 1024
DEFAULT = MediaLimits()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, body: bytes, code: int = 200, length: bool = True, ctype: str = "image/png") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, to: str, code: int = 302) -> None:
        self.send_response(code)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = self.path
        if path == "/cat.png":
            self._send(PNG)
        elif path == "/big":  # honest Content-Length past the limit
            self._send(bytes(BIG))
        elif path == "/big-unsized":  # no length: cut off while reading
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(BIG // 65536 + 1):
                    self.wfile.write(bytes(65536))
            except OSError:
                pass  # the client hung up, as it should
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG[:10])
            self.wfile.flush()
            time.sleep(3)
        elif path == "/missing":
            self._send(b"not here", 404, ctype="text/plain")
        elif path == "/error":
            self._send(b"oops", 500, ctype="text/plain")
        elif path == "/redirect":
            self._redirect("/cat.png", 301)
        elif path == "/redirect-relative":
            self._redirect("cat.png", 307)
        elif path.startswith("/hops/"):
            n = int(path.rsplit("/", 1)[1])
            self._redirect(f"/hops/{n - 1}" if n > 0 else "/cat.png")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path == "/text":
            self._send(b"<html>not an image</html>", ctype="text/html")
        else:
            self._send(b"?", 404)


@contextmanager
def media_http_server(handler: Callable[..., BaseHTTPRequestHandler] = _Handler) -> Iterator[str]:
    """A local HTTP server (by default of good and bad media; also used by tests/test_multimodal_api.py and
    tests/test_multimodal_video.py); its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with media_http_server() as url:
        yield url


def in_thread(fn: Any, *args: Any) -> Deferred[Any]:
    return threads.deferToThread(fn, *args)


class HttpSources(trial.TestCase):
    """Downloads through treq on the real reactor (trial spins it)."""

    url = ""
    timeout = 60

    @pytest.fixture(autouse=True)
    def _server(self, http_url: str) -> None:
        self.url = http_url

    async def _load(self, path: str, limits: MediaLimits = DEFAULT) -> MediaInput:
        return await load_media(self.url + path, None, in_thread, limits)

    def _refused(self, path: str, words: str, limits: MediaLimits = DEFAULT,
                 error: type[MediaError] = MediaError) -> Deferred[None]:
        async def go() -> None:
            started = time.monotonic()
            try:
                await self._load(path, limits)
            except error as exc:
                assert words in str(exc), str(exc)
                assert time.monotonic() - started < limits.timeout + 2
            else:
                raise AssertionError(f"{path} was not refused")
        return Deferred.fromCoroutine(go())

    def test_download(self) -> Deferred[None]:
        async def go() -> None:
            media = await self._load("/cat.png")
            assert (media.kind, media.width, media.height) == ("image", 8, 6)
        return Deferred.fromCoroutine(go())

    def test_redirects_followed(self) -> Deferred[None]:
        async def go() -> None:
            for path in ("/redirect", "/redirect-relative", "/hops/4"):
                assert (await self._load(path)).width == 8
        return Deferred.fromCoroutine(go())

    def test_too_many_redirects(self) -> Deferred[None]:
        return self._refused("/hops/5", "more than 5 redirects")

    def test_redirect_to_another_scheme(self) -> Deferred[None]:
        return self._refused("/to-file", "only http and https")

    def test_not_found(self) -> Deferred[None]:
        return self._refused("/missing", "HTTP 404")

    def test_server_error(self) -> Deferred[None]:
        return self._refused("/error", "HTTP 500")

    def test_not_an_image(self) -> Deferred[None]:
        return self._refused("/text", "unsupported media format")

    def test_declared_size_over_the_limit(self) -> Deferred[None]:
        return self._refused("/big", f"({BIG} bytes) is too large", error=MediaTooLarge)

    def test_body_over_the_limit_is_cut_off(self) -> Deferred[None]:
        return self._refused("/big-unsized", "is too large (the limit is 10485760 bytes)", error=MediaTooLarge)

    def test_time_limit(self) -> Deferred[None]:
        return self._refused("/slow", "no complete answer within 0.5 s", MediaLimits(timeout=0.5))

    def test_unreachable(self) -> Deferred[None]:
        return self._refused_at("http://127.0.0.1:1/x.png", "failed to download media")

    def test_bad_url(self) -> Deferred[None]:
        return self._refused_at("http://[::1/x.png", "failed to download media")

    def _refused_at(self, url: str, words: str) -> Deferred[None]:
        async def go() -> None:
            try:
                await load_media(url, None, in_thread)
            except MediaError as exc:
                assert words in str(exc), str(exc)
            else:
                raise AssertionError(f"{url} was not refused")
        return Deferred.fromCoroutine(go())

