"""Images through the HTTP routes on a real server with a vision projector (scripts/make_vision_model.py: the
default text model plus a seeded random-weight LLaVA-style projector): the official ``openai`` and
``anthropic`` clients, every source form (data: URIs in four formats, file:// under --media-path, http from a
local server), the bad ones refused with a 4xx naming the problem, and the server serving after each."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests import test_multimodal
from tests.conftest import Server
from tests.test_media_load import BIG, PNG, WAV, data_uri, image_bytes, media_http_server

vision_dir = test_multimodal.vision_dir  # the fixture: the generated vision model

BLUE = image_bytes("PNG", (10, 10, 220))
N_IMAGE_TOKENS = 16  # scripts/make_vision_model.py: 32x32 images in 8x8 patches


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("media")
    root = base / "media"
    (root / "sub").mkdir(parents=True)
    (root / "cat.png").write_bytes(PNG)
    (root / "sub" / "blue.png").write_bytes(BLUE)
    (base / "secret.png").write_bytes(PNG)
    (root / "escape.png").symlink_to(base / "secret.png")
    return root


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with media_http_server() as url:
        yield url


@pytest.fixture(scope="module")
def vsrv(vision_dir: Path, media_dir: Path) -> Iterator[Server]:
    srv = Server(["-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                  "--media-path", str(media_dir), "-c", "1024", "-np", "2", "-t", "1"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(vsrv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=vsrv.url + "/v1", api_key="none", max_retries=0)


def user(*content: Any) -> Any:
    """One user message of these parts (typed Any: the clients' TypedDicts know no llama.cpp fields)."""
    return [{"role": "user", "content": list(content)}]


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def ask(client: openai.OpenAI, *parts: dict[str, Any], text: str = "What is in the picture?", n: int = 8) -> Any:
    return client.chat.completions.create(model="m", messages=user(*parts, {"type": "text", "text": text}),
                                          max_tokens=n, temperature=0, extra_body={"ignore_eos": True})


def reply(client: openai.OpenAI, *parts: dict[str, Any]) -> str:
    return str(ask(client, *parts).choices[0].message.content)


def still_serves(client: openai.OpenAI) -> None:
    r = ask(client, image_part(data_uri(PNG)), n=2)
    assert r.choices[0].message.content and r.usage is not None and r.usage.completion_tokens == 2


def test_props_say_vision(vsrv: Server) -> None:
    props = vsrv.get("/props").json()
    assert props["modalities"] == {"vision": True, "video": True, "audio": False}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_data_uri_formats(client: openai.OpenAI, fmt: str) -> None:
    r = ask(client, image_part(data_uri(image_bytes(fmt), f"image/{fmt.lower()}")))
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content
    text_only = ask(client)
    assert r.usage is not None and text_only.usage is not None
    # the image's tokens are in the prompt (the marker itself is no text)
    assert r.usage.prompt_tokens - text_only.usage.prompt_tokens == N_IMAGE_TOKENS


def test_same_image_same_output_different_image_differs(client: openai.OpenAI) -> None:
    first = reply(client, image_part(data_uri(PNG)))
    assert reply(client, image_part(data_uri(PNG))) == first
    assert reply(client, image_part(data_uri(BLUE))) != first


def test_every_source_of_the_same_image_gives_the_same_output(client: openai.OpenAI, media_dir: Path,
                                                              http_url: str) -> None:
    expected = reply(client, image_part(data_uri(PNG)))
    for url in ("file://cat.png", f"file://{media_dir}/cat.png", "file://./cat.png", "file://c%61t.png",
                f"{http_url}/cat.png", f"{http_url}/redirect"):
        assert reply(client, image_part(url)) == expected, url
    assert reply(client, image_part("file://sub/blue.png")) == reply(client, image_part(data_uri(BLUE)))
    # the bare string form some clients send, and raw base64 (llama-server reads both)
    bare = {"type": "image_url", "image_url": data_uri(PNG)}
    assert reply(client, bare) == expected  # type: ignore[arg-type]
    assert reply(client, image_part(base64.b64encode(PNG).decode())) == expected


def test_two_images_in_order(client: openai.OpenAI) -> None:
    red, blue = image_part(data_uri(PNG)), image_part(data_uri(BLUE))
    r = ask(client, red, blue)
    assert r.usage is not None and r.usage.prompt_tokens == ask(client).usage.prompt_tokens + 2 * N_IMAGE_TOKENS  # type: ignore[union-attr]
    assert reply(client, red, blue) != reply(client, blue, red)


def test_stream_with_an_image(client: openai.OpenAI) -> None:
    expected = reply(client, image_part(data_uri(PNG)))
    stream = client.chat.completions.create(
        model="m", stream=True, max_tokens=8, temperature=0, extra_body={"ignore_eos": True},
        messages=user(image_part(data_uri(PNG)), {"type": "text", "text": "What is in the picture?"}))
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected


def test_input_tokens_and_apply_template(vsrv: Server, client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": [image_part(data_uri(PNG)), {"type": "text", "text": "Hi"}]}]
    usage = client.chat.completions.create(model="m", messages=messages, max_tokens=1).usage  # type: ignore[arg-type]
    counted = vsrv.post("/v1/chat/completions/input_tokens", {"messages": messages}).json()["input_tokens"]
    assert usage is not None and counted == usage.prompt_tokens
    prompt = vsrv.post("/apply-template", {"messages": messages}).json()["prompt"]
    assert "<__media__>Hi" in prompt


def test_second_turn_reuses_the_image_in_the_cache(client: openai.OpenAI) -> None:
    turn = [{"role": "user", "content": [image_part(data_uri(BLUE)), {"type": "text", "text": "Look."}]}]
    first = client.chat.completions.create(model="m", messages=turn, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    follow = [*turn, {"role": "assistant", "content": first.choices[0].message.content},
              {"role": "user", "content": "And now?"}]
    second = client.chat.completions.create(model="m", messages=follow, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens is not None
    assert second.usage.prompt_tokens_details.cached_tokens > N_IMAGE_TOKENS  # past the image


# -- refused: a 4xx naming the problem, and the server serves on ---------------------------------------------


@pytest.mark.parametrize(("url", "words"), [
    ("file://../secret.png", "no '..' components"),
    ("file://%2e%2e/secret.png", "no '..' components"),
    ("file://sub/../../secret.png", "no '..' components"),
    ("file://escape.png", "outside --media-path"),
    ("file:///etc/passwd", "outside --media-path"),
    ("file://missing.png", "does not exist"),
    ("data:image/png;base64,!!!!", "not valid base64"),
    ("data:text/plain;base64,aGVsbG8=", "media type 'text/plain'"),
    ("data:image/png;base64,aGVsbG8gd29ybGQ=", "unsupported media format"),
    ("data:image/png;base64," + base64.b64encode(image_bytes("TIFF")).decode(), "unsupported image format TIFF"),
    ("/missing", "HTTP 404"),
    ("/to-file", "only http and https"),
    ("http://127.0.0.1:1/cat.png", "failed to download media"),
    ("ftp://example.com/cat.png", "not valid base64"),
])
def test_bad_sources_are_400(client: openai.OpenAI, http_url: str, url: str, words: str) -> None:
    if url.startswith("/"):
        url = http_url + url
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image_part(url))
    message = info.value.body["message"]  # type: ignore[index]
    assert words in message and "messages[0].content[0]" in message, message
    still_serves(client)


def test_oversized_download_is_413(client: openai.OpenAI, http_url: str) -> None:
    for path in ("/big", "/big-unsized"):
        with pytest.raises(openai.APIStatusError) as info:
            ask(client, image_part(http_url + path))
        assert info.value.status_code == 413
        assert "too large" in info.value.body["message"]  # type: ignore[index]
    assert BIG > 10 * 1024 * 1024
    still_serves(client)


@pytest.mark.parametrize(("part", "words"), [
    ({"type": "input_audio", "input_audio": {"data": base64.b64encode(WAV).decode(), "format": "wav"}},
     "audio input is not supported"),
    ({"type": "image_url", "image_url": {"url": data_uri(WAV, "audio/wav")}}, "multimodal projector does not take"),
    ({"type": "image_url", "image_url": {}}, "image_url.url is required"),
    ({"type": "input_video", "input_video": {"url": "data:video/mp4;base64,AAAA"}}, "unsupported media format"),
])
def test_media_the_projector_cannot_take(client: openai.OpenAI, part: dict[str, Any], words: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, part)
    assert words in info.value.body["message"]  # type: ignore[index]
    still_serves(client)


def test_a_typed_marker_does_not_count_as_media(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image_part(data_uri(PNG)), text="see <__media__> here")
    assert "2 media marker(s)" in info.value.body["message"]  # type: ignore[index]
    still_serves(client)


# -- the other route families -------------------------------------------------------------------------------


def test_anthropic_image_blocks(vsrv: Server, client: openai.OpenAI, http_url: str) -> None:
    expected = reply(client, image_part(data_uri(PNG)))
    claude = anthropic.Anthropic(base_url=vsrv.url, api_key="none", max_retries=0)
    for source in ({"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
                   {"type": "url", "url": f"{http_url}/cat.png"}):
        msg = claude.messages.create(
            model="m", max_tokens=8, extra_body={"ignore_eos": True, "temperature": 0},
            messages=user({"type": "image", "source": source}, {"type": "text", "text": "What is in the picture?"}))
        assert msg.content[0].text == expected  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="m", max_tokens=8, messages=user(
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!!!"}}))
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error" and "not valid base64" in body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="m", max_tokens=8, messages=user(
            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}))
    assert "source.media_type" in str(info.value)
    still_serves(client)


def test_images_in_tool_results(vsrv: Server, client: openai.OpenAI) -> None:
    """An image a tool returns: Anthropic's tool_result image block and a Responses function_call_output's
    input_image reach the model as the chat route's image in a tool message (the same prompt both ways)."""
    png = base64.b64encode(PNG).decode()
    claude = anthropic.Anthropic(base_url=vsrv.url, api_key="none", max_retries=0)
    messages: Any = [
        {"role": "user", "content": "Take a photo."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "camera", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "photo:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}]}]}]
    counted = claude.messages.count_tokens(model="m", messages=messages).input_tokens
    msg = claude.messages.create(model="m", max_tokens=4, messages=messages,
                                 extra_body={"ignore_eos": True, "temperature": 0})
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) == counted
    chat: Any = [{"role": "user", "content": "Take a photo."},
                 {"role": "assistant", "content": "", "tool_calls": [
                     {"id": "t1", "type": "function", "function": {"name": "camera", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": "t1", "name": "camera",
                  "content": [{"type": "text", "text": "photo:"}, image_part(data_uri(PNG))]}]
    plain = client.chat.completions.create(model="m", messages=chat, max_tokens=1)
    assert plain.usage is not None and plain.usage.prompt_tokens == counted
    text_only = [*chat[:2], {**chat[2], "content": "photo:"}]
    without = client.chat.completions.create(model="m", messages=text_only, max_tokens=1)
    assert without.usage is not None and counted - without.usage.prompt_tokens == N_IMAGE_TOKENS
    items: Any = [
        {"role": "user", "content": "Take a photo."},
        {"type": "function_call", "call_id": "t1", "name": "camera", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "t1", "output": [
            {"type": "input_text", "text": "photo:"}, {"type": "input_image", "image_url": data_uri(PNG)}]}]
    r = client.responses.create(model="m", max_output_tokens=1, input=items)
    assert r.usage is not None and r.usage.input_tokens == counted


def test_responses_input_image(client: openai.OpenAI) -> None:
    expected = reply(client, image_part(data_uri(PNG)))
    r = client.responses.create(model="m", max_output_tokens=8, temperature=0, extra_body={"ignore_eos": True},
                                input=[{"role": "user", "content": [  # type: ignore[list-item]
                                    {"type": "input_image", "image_url": data_uri(PNG), "detail": "auto"},
                                    {"type": "input_text", "text": "What is in the picture?"}]}])
    assert r.output_text == expected
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="m", input=[{"role": "user", "content": [  # type: ignore[list-item]
            {"type": "input_image", "file_id": "file-1", "detail": "auto"}]}])
    assert "file ids are not supported" in info.value.body["message"]  # type: ignore[index]


# -- a server without a projector ---------------------------------------------------------------------------


def test_no_projector_is_400_everywhere(server: Server) -> None:
    image = image_part(data_uri(PNG))
    r = server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": [image]}]})
    assert r.status_code == 400 and "no multimodal projector" in r.json()["error"]["message"]
    r = server.post("/v1/messages", {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]})
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert "no multimodal projector" in r.json()["error"]["message"]
    r = server.post("/v1/responses", {"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": data_uri(PNG)}]}]})
    assert r.status_code == 400 and "no multimodal projector" in r.json()["error"]["message"]
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
