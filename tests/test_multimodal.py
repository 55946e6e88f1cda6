"""Multimodal through the engine (issue 16): libmtmd's chunks on the decode thread, cached and batched like text.

The vision model is scripts/make_vision_model.py's (the default text model and a seeded random-weight LLaVA
projector: 16 tokens per image), so the tests check plumbing and determinism, not what the model says:
the same pixels give the same output at temperature 0 (whatever the file format), different pixels a
different one, the image's tokens count in prompt_n, the prefix cache reuses an image's KV only for the same
image, image prompts and text streams share the server, and bad media are 400s that cost no slot.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.conftest import REPO, Server, staggered_streams
from tests.models import _script, mtp_gguf
from tests.test_shared_cache import Q_CLOSE, Q_TIE, assert_same_greedy, probs, stream_probs

N_IMAGE = 16  # tokens per image (32x32 in 8x8 patches)
PROMPT = "Here is a picture: <__media__>\nWhat is in it?"
RED = (220, 20, 20)


def image_b64(color: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (40, 30)) -> str:
    img = Image.new("RGB", size, color)
    img.putpixel((1, 1), (0, 0, 0))  # not a flat image
    buf = io.BytesIO()
    img.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return base64.b64encode(buf.getvalue()).decode()


def complete(srv: Server, prompt: str, media: list[str], **extra: Any) -> requests.Response:
    body = {"prompt": {"prompt_string": prompt, "multimodal_data": media}, "n_predict": 8, "temperature": 0,
            **extra}
    return srv.post("/completion", body)


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Path:
    out = tmp_path_factory.mktemp("vision")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_vision_model.py"), "--out-dir", str(out),
                    "--model", model_path], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def vsrv(vision_dir: Path) -> Iterator[Server]:
    srv = Server(["-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                  "-c", "2048", "-np", "2", "-t", "1", "--metrics"])
    yield srv
    srv.stop()


def text_tokens(srv: Server, text: str) -> int:
    return len(srv.post("/tokenize", {"content": text}).json()["tokens"])


def test_props_and_models_tell_the_truth(vsrv: Server, server: Server) -> None:
    props = vsrv.get("/props").json()
    assert props["modalities"] == {"vision": True, "video": True, "audio": False}
    assert props["media_marker"] == "<__media__>"
    models = vsrv.get("/v1/models").json()
    assert models["models"][0]["capabilities"] == ["completion", "multimodal"]
    assert server.get("/props").json()["modalities"]["vision"] is False
    # where the encoder runs: the CPU build has only the CPU (test_gpu.py offloads it)
    assert props["offload"]["mmproj"] == {"offload": True, "backend": "CPU"}
    assert server.get("/props").json()["offload"]["mmproj"] is None
    assert "mmproj.gguf: the vision encoder runs on CPU" in vsrv.log()
    assert server.get("/v1/models").json()["models"][0]["capabilities"] == ["completion"]


def test_same_pixels_same_output_different_pixels_different_output(vsrv: Server) -> None:
    def run(image: str) -> tuple[str, list[float]]:
        out = complete(vsrv, PROMPT, [image], cache_prompt=False, n_probs=5).json()
        # the first token's distribution: the image's embeddings shape it (the words may agree)
        first = out["completion_probabilities"][0]["top_logprobs"]
        return out["content"], [p["logprob"] for p in first]

    red, again = run(image_b64(RED)), run(image_b64(RED))
    webp = run(image_b64(RED, "WEBP"))  # a lossless WebP decodes to the same RGB
    blue = run(image_b64((20, 20, 220)))
    assert red == again == webp
    assert blue[1] != red[1]
    red_out = complete(vsrv, PROMPT, [image_b64(RED)], cache_prompt=False).json()
    # the image's tokens are in the prompt: the text around the marker plus 16
    n_text = text_tokens(vsrv, "Here is a picture: ") + text_tokens(vsrv, "\nWhat is in it?")
    assert red_out["timings"]["prompt_n"] == red_out["tokens_evaluated"] == n_text + N_IMAGE
    assert red_out["prompt"] == PROMPT  # the prompt reads back with its marker


def test_prefix_cache_reuses_an_image_only_for_the_same_image(vsrv: Server) -> None:
    prefix = "Compare: <__media__> and then"
    green, yellow = image_b64((20, 200, 20)), image_b64((220, 220, 20))
    first = complete(vsrv, prefix + " tell me.", [green], id_slot=0).json()
    n_before = text_tokens(vsrv, "Compare: ")
    # the same image in the next turn: its KV is reused (everything up to the new text)
    same = complete(vsrv, prefix + " describe it.", [green], id_slot=0).json()
    assert same["timings"]["cache_n"] >= n_before + N_IMAGE, (first["timings"], same["timings"])
    # a different image: only the text before it is reused, never the other image's cells
    other = complete(vsrv, prefix + " describe it.", [yellow], id_slot=0).json()
    assert other["timings"]["cache_n"] == n_before
    # and the answer is what the image alone gives
    fresh = complete(vsrv, prefix + " describe it.", [yellow], cache_prompt=False).json()
    assert other["content"] == fresh["content"]


def test_two_images_in_one_prompt(vsrv: Server) -> None:
    a, b = image_b64((200, 100, 0)), image_b64((0, 100, 200))
    ab = complete(vsrv, "<__media__> then <__media__> compare", [a, b], cache_prompt=False).json()
    ba = complete(vsrv, "<__media__> then <__media__> compare", [b, a], cache_prompt=False).json()
    assert ab["timings"]["prompt_n"] == 2 * N_IMAGE + text_tokens(vsrv, " then ") + text_tokens(vsrv, " compare")
    assert ab["timings"]["prompt_n"] == ba["timings"]["prompt_n"]


def test_text_streams_keep_going_while_images_are_evaluated(vsrv: Server) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 48, "ignore_eos": True, "temperature": 0,
            "cache_prompt": False, "stream": True}
    reference = vsrv.post("/completion", {**body, "stream": False}).json()["content"]
    pieces: list[str] = []
    arrivals: list[float] = []

    def stream() -> None:
        with requests.post(vsrv.url + "/completion", json=body, stream=True, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith(b"data: "):
                    pieces.append(json.loads(line[6:])["content"])
                    arrivals.append(time.monotonic())

    t = threading.Thread(target=stream)
    t.start()
    images = [complete(vsrv, PROMPT, [image_b64((30 * i, 60, 90))], cache_prompt=False) for i in range(3)]
    t.join(120)
    assert all(r.status_code == 200 for r in images)
    assert "".join(pieces) == reference  # the text slot's output is untouched by the image chunks beside it
    assert len(arrivals) >= 48


def test_generations_with_images_take_turns_in_a_full_pool(make_server: Callable[..., Server],
                                                            vision_dir: Path) -> None:
    """Two generations after two images in one 512-cell pool: together they run out of cells. The one started
    last stops and goes on once the other has ended, its image encoded again and its tokens decoded again:
    both reach their tokens with the text each gets alone."""
    srv = make_server("-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                      "-c", "512", "-np", "2", "-kvu", "-t", "2")
    body = {"n_predict": 320, "ignore_eos": True, "temperature": 0, "cache_prompt": False, "n_probs": 2}
    media = [image_b64(RED), image_b64((20, 20, 220))]

    together = staggered_streams(srv, [{**body, "prompt": {"prompt_string": PROMPT, "multimodal_data": [image]}}
                                       for image in media], delay=0.3)
    log = srv.log()
    assert "it stops until other tasks leave room" in log and "goes on: " in log, log[-3000:]
    for chunks, image in zip(together, media, strict=True):
        alone = complete(srv, PROMPT, [image], **body)
        final = chunks[-1]
        assert final["stop"] and final["tokens_predicted"] == 320 and not final["truncated"], final
        if assert_same_greedy(stream_probs(chunks), probs(alone.json()), Q_CLOSE, Q_TIE):
            assert "".join(c["content"] for c in chunks) == alone.json()["content"]



@pytest.mark.parametrize("prompt, media, needle", [
    (PROMPT, ["not base64!"], "'multimodal_data[0]' is not valid base64"),
    (PROMPT, [base64.b64encode(b"\x00" * 64).decode()], "unsupported media format"),
    (PROMPT, [base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()], "image"),
    (PROMPT, [], "0 media file(s)"),
    ("no marker here", [image_b64(RED)], "0 media marker(s)"),
    ("ends with the image <__media__>", [image_b64(RED)], "text after its last media item"),
    (PROMPT, [image_b64(RED, size=(9000, 9000))], "too large"),
    (PROMPT, [base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEfmt ").decode()], "audio input is not supported"),
])  # fmt: skip
def test_bad_media_are_400s_and_cost_no_slot(vsrv: Server, prompt: str, media: list[str], needle: str) -> None:
    r = complete(vsrv, prompt, media)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle in err["message"], err
    assert all(not s["is_processing"] for s in vsrv.get("/slots").json())
    assert complete(vsrv, PROMPT, [image_b64(RED)]).status_code == 200


def test_token_ids_cannot_be_mixed_with_media(vsrv: Server) -> None:
    r = vsrv.post("/completion", {"prompt": {"prompt_string": [5, "x <__media__> y"],
                                             "multimodal_data": [image_b64(RED)]}, "n_predict": 1})
    assert r.status_code == 400 and "'prompt_string' must be a string" in r.json()["error"]["message"]


def _make_mmproj(out: Path, n_embd: int) -> None:
    spec = importlib.util.spec_from_file_location("make_vision_model", REPO / "scripts" / "make_vision_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_mmproj(out, n_embd)


def test_projector_start_up_errors(make_server: Callable[..., Server], model_path: str, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-mmproj.gguf"
    _make_mmproj(wrong, 128)  # projects into 128 dimensions; the model has 576
    for path, needle in ((wrong, str(wrong)), (tmp_path / "missing.gguf", "not found")):
        srv = make_server("-m", model_path, "--mmproj", str(path), "-c", "512", "-t", "1", wait=False)
        assert srv.proc.wait(60) == 1
        log = srv.log()
        assert "multimodal projector" in log and needle in log, log[-2000:]
        assert "Traceback" not in log


def test_a_model_whose_graph_refuses_images_stops_the_start_up(make_server: Callable[..., Server], model_path: str,
                                                              tmp_path: Path) -> None:
    """libllama's GLM-4 graphs abort the process at the first image unless the GGUF has M-RoPE sections
    (llama-server's with it): --mmproj is refused for them at start-up instead."""
    model, mmproj = _script("make_vision_model").make(tmp_path, mtp_gguf(Path(model_path)))  # a glm4moe
    srv = make_server("-m", str(model), "--mmproj", str(mmproj), "-c", "512", "-t", "1", wait=False)
    assert srv.proc.wait(60) == 1
    assert "this glm4moe model cannot take image or audio input" in srv.log(), srv.log()[-2000:]


def test_sleeping_server_wakes_for_an_image(make_server: Callable[..., Server], vision_dir: Path) -> None:
    srv = make_server("-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                      "-c", "1024", "-np", "1", "-t", "1", "--sleep-idle-seconds", "1")
    awake = complete(srv, PROMPT, [image_b64(RED)], cache_prompt=False).json()["content"]
    deadline = time.monotonic() + 20
    while not srv.get("/props").json()["is_sleeping"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert srv.get("/props").json()["is_sleeping"]
    woken = complete(srv, PROMPT, [image_b64(RED)], cache_prompt=False)
    assert woken.status_code == 200 and woken.json()["content"] == awake


@pytest.mark.parametrize(("args", "env"), [(("-mmdev", "none"), {}), ((), {"MTMD_BACKEND_DEVICE": "none"})])
def test_mmproj_device_none_keeps_the_encoder_on_the_cpu(
    make_server: Callable[..., Server], vision_dir: Path, vsrv: Server, args: tuple[str, ...], env: dict[str, str]
) -> None:
    command = ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "llamatwist"]
    srv = make_server("-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                      "-c", "1024", "-np", "1", "-t", "1", *args, command=command)
    # as --no-mmproj-offload (test_gpu.py shows the difference where there is a GPU)
    assert srv.get("/props").json()["offload"]["mmproj"] == {"offload": False, "backend": "CPU"}
    assert "mmproj.gguf: the vision encoder runs on CPU" in srv.log()
    same = [complete(s, PROMPT, [image_b64(RED)], cache_prompt=False).json()["content"] for s in (srv, vsrv)]
    assert same[0] == same[1]


@pytest.mark.parametrize("device", ["CPU", "Vulkan7"])
def test_mmproj_device_unknown_fails_start_up(make_server: Callable[..., Server], vision_dir: Path,
                                              device: str) -> None:
    # CPU is no offload device (as -dev: --list-devices does not list it); 'none' is the CPU's spelling
    srv = make_server("-m", str(vision_dir / "model.gguf"), "--mmproj", str(vision_dir / "mmproj.gguf"),
                      "-c", "1024", "-t", "1", "-mmdev", device, wait=False)
    assert srv.proc.wait(60) == 2
    log = srv.log()
    assert f"-mmdev/--mmproj-device: invalid device: {device}" in log and "Traceback" not in log, log
    assert "this build has no GPU devices (CPU only)" in log or "devices of this build: " in log
