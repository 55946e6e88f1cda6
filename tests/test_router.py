"""Router mode (--models-dir / --models-preset): real router processes, real child servers, real clients."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ollama
import pytest
import requests
from openai import NotFoundError, OpenAI

from tests.conftest import Server
from tests.models import swa_gguf

CHAT = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 12, "temperature": 0}
PROMPT = "Once upon a time, in a land far away, there lived a"
COMMON = ["-np", "4", "-c", "4096", "-t", "2"]  # the session server's shape: greedy outputs match it


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Path:
    root = tmp_path_factory.mktemp("router")
    models = root / "models"
    models.mkdir()
    (models / "smol.gguf").symlink_to(model_path)
    (models / "tiny").mkdir()
    (models / "tiny" / "olmo2-swa.gguf").symlink_to(swa_gguf(Path(model_path)))
    (models / "broken.gguf").write_bytes(b"this is no GGUF file")
    (models / "notes.txt").write_text("not a model")
    (root / "presets.ini").write_text(
        "version = 1\n"
        "[*]\n"
        "c = 512\n"  # the command line's -c 4096 wins over this
        "[smol]\n"
        "alias = small, smollm\n"
        "; a preset's own option: the command line says nothing of it\n"
        "n-predict = 5\n"
        "[smol-again]\n"
        f"model = {model_path}\n"
        "LLAMA_ARG_CACHE_RAM = 0\n"
        "stop-timeout = 2\n"
    )
    return root


def _models(srv: Server) -> dict[str, Any]:
    return {m["id"]: m for m in srv.get("/v1/models").json()["data"]}


def _status(srv: Server, name: str) -> str:
    return str(_models(srv)[name]["status"]["value"])


def _wait_status(srv: Server, name: str, value: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = _models(srv)[name]
        if model["status"]["value"] == value:
            return model
        time.sleep(0.1)
    raise AssertionError(f"{name} not {value}: {_models(srv)[name]}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _child_port(model: dict[str, Any]) -> int:
    args = model["status"]["args"]
    return int(args[args.index("--port") + 1])


@pytest.fixture(scope="module")
def router(catalog: Path) -> Iterator[Server]:
    srv = Server(["--models-dir", str(catalog / "models"), "--models-preset", str(catalog / "presets.ini"),
                  "--models-max", "2", "--ui-config", '{"theme": "dark"}', *COMMON])
    yield srv
    srv.stop()


def test_lists_the_catalog_unloaded(router: Server, catalog: Path) -> None:
    assert router.get("/health").json() == {"status": "ok"}
    models = _models(router)
    assert set(models) == {"smol", "tiny", "broken", "smol-again"}
    assert models["smol"]["aliases"] == ["small", "smollm"]
    assert models["smol"]["source"] == "preset" and models["tiny"]["source"] == "models_dir"
    assert all(m["status"]["value"] == "unloaded" and m["object"] == "model" for m in models.values())
    props = router.get("/props").json()
    assert props["role"] == "router" and props["max_instances"] == 2 and props["models_autoload"] is True
    assert props["ui_settings"] == {"theme": "dark"}
    # the web UI is served by the router itself
    page = router.get("/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<html" in page.text
    # the same list on both paths
    assert router.get("/models").json()["data"][0]["id"] == router.get("/v1/models").json()["data"][0]["id"]
    # one model by name or alias (OpenAI's models.retrieve); a name the catalog has not got is a 404
    client = OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    assert client.models.retrieve("smollm").id == "smol"
    one = router.get("/models/tiny").json()  # the same entry, but for the time it was asked (both forms of it)
    assert one == {**models["tiny"], "created": one["created"], "created_at": one["created_at"]}
    with pytest.raises(NotFoundError, match="nothing"):
        client.models.retrieve("nothing")


def test_chat_loads_the_model_and_matches_a_plain_server(router: Server, server: Server, model_path: str) -> None:
    client = OpenAI(base_url=router.url + "/v1", api_key="unused")
    got = client.chat.completions.create(model="smol-again", **CHAT)  # type: ignore[call-overload]
    want = server.post("/v1/chat/completions", {**CHAT, "model": "x"}).json()
    assert got.model == "smol-again"
    assert got.choices[0].message.content == want["choices"][0]["message"]["content"]
    loaded = _models(router)["smol-again"]
    assert loaded["status"]["value"] == "loaded"
    args = loaded["status"]["args"]
    assert args[:3] == [sys.executable, "-m", "llamatwist"] and args[args.index("--model") + 1] == model_path
    # a loaded model's entry carries its server's own /v1/models fields
    assert loaded["meta"]["n_ctx"] == 4096 // 4  # per slot: -c 4096 (the command line) beats [*] c = 512
    # streamed through the router: the same text, event by event
    stream = client.chat.completions.create(model="smol-again", stream=True, **CHAT)  # type: ignore[call-overload]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == got.choices[0].message.content


def test_stored_responses_are_found_without_naming_the_model(router: Server) -> None:
    client = OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    made = client.responses.create(model="smol-again", input="Hi", max_output_tokens=4)
    # OpenAI's SDK names no model here: the router asks its loaded models which one stored it
    assert client.responses.retrieve(made.id).output_text == made.output_text
    assert [i.role for i in client.responses.input_items.list(made.id).data] == ["user"]  # type: ignore[union-attr]
    assert router.get(f"/v1/responses/{made.id}", params={"model": "smol-again"}).json()["id"] == made.id
    client.responses.delete(made.id)
    for call in (lambda: client.responses.retrieve(made.id), lambda: client.responses.delete(made.id)):
        with pytest.raises(NotFoundError):
            call()


def test_ollama_clients_see_the_catalog_and_reach_its_models(router: Server, model_path: str) -> None:
    client = ollama.Client(host=router.url, timeout=120)
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"smol", "tiny", "broken", "smol-again"}
    assert listed["smol-again"].size == Path(model_path).stat().st_size
    r = client.chat(model="smol-again", messages=[{"role": "user", "content": "Hi"}],
                    options={"num_predict": 3, "ignore_eos": True}, stream=False)
    assert r.model == "smol-again" and r.eval_count == 3 and r.done_reason == "length"
    running = {m.model: m for m in client.ps().models}
    assert "smol-again" in running and running["smol-again"].details.quantization_level == "Q4_1"  # type: ignore[union-attr]
    assert running["smol-again"].context_length == 4096 // 4  # its own server's answer
    # `ollama stop`: its server sleeps (weights freed) and is no longer running; the next request loads it
    assert client.generate(model="smol-again", keep_alive=0).done_reason == "unload"
    deadline = time.monotonic() + 30
    while "smol-again" in {m.model for m in client.ps().models}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.generate(model="smol-again", prompt="Hi", keep_alive="1h", options={"num_predict": 2}).done
    expires = {m.model: m for m in client.ps().models}["smol-again"].expires_at
    assert expires is not None and 3500 < (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds() <= 3600
    assert router.get("/api/version").json()["version"]
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nothing", messages=[{"role": "user", "content": "Hi"}], stream=False)
    assert 400 <= err.value.status_code < 500 and "nothing" in str(err.value.error)
    assert isinstance(router.post("/api/chat", {"model": "nothing"}).json()["error"], str)  # Ollama's shape


def test_alias_and_preset_options(router: Server) -> None:
    r = router.post("/completion", {"model": "smollm", "prompt": PROMPT, "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert r.json()["tokens_predicted"] == 5  # the preset's n-predict
    props = router.get("/props", params={"model": "small"}).json()
    assert props["ui_settings"] == {"theme": "dark"}  # the router's --ui-config reaches its models too
    assert props["model_alias"] == "smol" and props["default_generation_settings"]["n_ctx"] == 4096 // 4
    # GET routes go by ?model=
    slots = router.get("/slots", params={"model": "smol"})
    assert slots.status_code == 200 and len(slots.json()) == 4


def test_a_client_mistake_is_a_4xx(router: Server) -> None:
    def error(r: requests.Response) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["message"]

    assert error(router.post("/v1/chat/completions", CHAT)) == (400, "model name is missing from the request")
    assert error(router.post("/v1/chat/completions", {**CHAT, "model": "nope"})) == (400, "model 'nope' not found")
    assert error(router.post("/v1/chat/completions", {**CHAT, "model": 7})) == (
        400, "model name is missing from the request")
    bad = requests.post(router.url + "/v1/chat/completions", data=b"{not json", timeout=10)
    assert bad.status_code == 400 and "invalid JSON" in bad.json()["error"]["message"]
    assert error(router.get("/slots")) == (400, "model name is missing from the request")
    assert error(router.post("/models/load", {"model": "nope"})) == (404, "model is not found")
    assert error(router.post("/models/unload", {"model": "nope"})) == (400, "model is not found")
    assert error(router.post("/models/unload", {"model": "tiny"})) == (400, "model is not running")
    assert router.post("/models/load", {}).status_code == 404
    code, message = error(router.post("/models", {"model": "x"}))  # POST /models downloads: x is no hub name
    assert code == 400 and "invalid Hugging Face repository" in message
    assert router.get("/tools").status_code == 403 and router.post("/cors-proxy", {}).status_code == 403
    assert router.get("/no/such/route", params={"model": "nope"}).status_code == 400
    # a body past 100 kB (Twisted keeps it in a temporary file) is forwarded whole: the model answers it
    big = router.post("/completion", {"model": "smol", "prompt": "word " * 40_000, "n_predict": 1})
    assert big.status_code == 400 and big.json()["error"]["type"] == "exceed_context_size_error", big.text
    # a model's own 4xx comes back as it is
    r = router.post("/v1/chat/completions", {"model": "smol", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert router.get("/health").status_code == 200


def test_a_model_that_fails_to_load(router: Server) -> None:
    r = router.post("/v1/chat/completions", {**CHAT, "model": "broken"})
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "model broken failed to load (exit status 1)"
    status = _models(router)["broken"]["status"]
    assert status["value"] == "unloaded" and status["failed"] is True and status["exit_code"] == 1
    assert "not a GGUF file" in router.log()  # the child's own message, in the router's log
    # the router and its other models keep serving
    assert router.post("/v1/chat/completions", {**CHAT, "model": "smol"}).status_code == 200


def test_load_unload_and_the_least_recently_used(router: Server) -> None:
    for name, model in _models(router).items():
        if model["status"]["value"] != "unloaded":
            assert router.post("/models/unload", {"model": name}).json() == {"success": True}
            _wait_status(router, name, "unloaded")
    assert router.post("/completion", {"model": "smol", "prompt": PROMPT, "n_predict": 3}).status_code == 200
    assert router.post("/models/load", {"model": "smol"}).json()["error"]["message"] == "model is already running"
    assert router.post("/models/load", {"model": "tiny"}).json() == {"success": True}
    tiny = _wait_status(router, "tiny", "loaded")
    assert router.post("/completion", {"model": "tiny", "prompt": PROMPT, "n_predict": 3}).status_code == 200
    # --models-max 2: a third model stops the least recently used idle one (smol)
    smol_port = _child_port(_models(router)["smol"])
    r = router.post("/completion", {"model": "smol-again", "prompt": PROMPT, "n_predict": 3})
    assert r.status_code == 200, r.text
    assert _status(router, "smol") == "unloaded" and _status(router, "tiny") == "loaded"
    assert not _listening(smol_port)
    # an unload stops the server: its port closes
    assert router.post("/models/unload", {"model": "tiny"}).json() == {"success": True}
    _wait_status(router, "tiny", "unloaded")
    assert not _listening(_child_port(tiny))
    assert "failed" not in _models(router)["tiny"]["status"]


def test_client_leaving_a_stream_frees_the_slot(router: Server) -> None:
    r = requests.post(router.url + "/completion", json={
        "model": "smol-again", "prompt": PROMPT, "n_predict": 3000, "ignore_eos": True, "stream": True,
    }, stream=True, timeout=60)
    lines = (line for line in r.iter_lines() if line)
    first = [json.loads(next(lines)[6:]) for _ in range(3)]
    assert all("content" in event for event in first)
    r.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        slots = router.get("/slots", params={"model": "smol-again"}).json()
        if not any(s["is_processing"] for s in slots):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"slot still busy: {slots}")
    assert "Unhandled error" not in router.log()


def test_models_sse_reports_status(router: Server) -> None:
    with requests.get(router.url + "/models/sse", stream=True, timeout=60) as events:
        lines = events.iter_lines()
        assert next(lines) == b": connected"
        assert router.post("/models/load", {"model": "tiny"}).status_code == 200
        seen = []
        for line in lines:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                seen.append((event["model"], event["data"]["status"]))
                if seen[-1] == ("tiny", "loaded"):
                    break
    assert ("tiny", "loading") in seen


def test_no_autoload(catalog: Path, make_server: Any) -> None:
    srv = make_server("--models-dir", str(catalog / "models"), "--no-models-autoload", *COMMON)
    r = srv.post("/completion", {"model": "smol", "prompt": PROMPT, "n_predict": 2})
    assert (r.status_code, r.json()["error"]["message"]) == (400, "model is not loaded")
    assert srv.get("/props").json()["models_autoload"] is False
    r = requests.post(srv.url + "/completion?autoload=true", json={"model": "smol", "prompt": PROMPT,
                                                                   "n_predict": 2}, timeout=120)
    assert r.status_code == 200, r.text
    assert srv.post("/completion", {"model": "smol", "prompt": PROMPT, "n_predict": 2}).status_code == 200


def test_api_key_and_prefix(catalog: Path, make_server: Any) -> None:
    srv = make_server("--models-dir", str(catalog / "models"), "--api-key", "sekret", "--api-prefix", "/llm",
                      *COMMON, wait=False)
    deadline = time.monotonic() + 60
    while not _up(srv.url + "/llm/health") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.get("/llm/v1/models").status_code == 401
    client = OpenAI(base_url=srv.url + "/llm/v1", api_key="sekret")
    reply = client.chat.completions.create(model="smol", **CHAT)  # type: ignore[call-overload]
    assert reply.choices[0].message.content
    # the children listen on 127.0.0.1 only, without the router's key and prefix
    args = _models_with_key(srv)["smol"]["status"]["args"]
    assert "sekret" not in args and "/llm" not in args
    assert args[args.index("--host") + 1] == "127.0.0.1"


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _models_with_key(srv: Server) -> dict[str, Any]:
    r = requests.get(srv.url + "/llm/v1/models", headers={"Authorization": "Bearer sekret"}, timeout=10)
    return {m["id"]: m for m in r.json()["data"]}


def test_stopping_the_router_stops_its_models(catalog: Path, make_server: Any) -> None:
    srv = make_server("--models-dir", str(catalog / "models"), *COMMON)
    assert srv.post("/completion", {"model": "smol", "prompt": PROMPT, "n_predict": 2}).status_code == 200
    port = _child_port(_models(srv)["smol"])
    assert _listening(port)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == 0
    assert not _listening(port)


def test_bad_catalogs_stop_the_start(tmp_path: Path, catalog: Path) -> None:
    def start(*args: str) -> tuple[int, str]:
        srv = Server(list(args), wait=False)
        code = srv.proc.wait(60)
        return code, srv.log()

    code, log = start("--models-dir", str(tmp_path / "missing"))
    assert code == 2 and "does not exist or is not a directory" in log
    ini = tmp_path / "bad.ini"
    ini.write_text("[m]\nmodel = x.gguf\nno-such-flag = 1\n")
    code, log = start("--models-preset", str(ini))
    assert code == 1 and "option 'no-such-flag' not recognized in preset 'm'" in log
    ini.write_text("[m]\nc = 512\n")
    code, log = start("--models-preset", str(ini))
    assert code == 1 and "preset 'm' names no model" in log
    ini.write_text("[a]\nmodel = x.gguf\nload-on-startup = true\n[b]\nmodel = y.gguf\nload-on-startup = true\n")
    code, log = start("--models-preset", str(ini), "--models-max", "1")
    assert code == 1 and "number of models to load on startup (2) exceeds models_max (1)" in log


def test_load_on_startup(tmp_path: Path, model_path: str, make_server: Any) -> None:
    ini = tmp_path / "p.ini"
    ini.write_text(f"[eager]\nmodel = {model_path}\nload-on-startup = true\n[lazy]\nmodel = {model_path}\n")
    srv = make_server("--models-preset", str(ini), *COMMON)
    _wait_status(srv, "eager", "loaded")
    assert _status(srv, "lazy") == "unloaded"
    assert os.path.exists(model_path)


def test_a_busy_model_is_not_stopped_for_another(catalog: Path, make_server: Any) -> None:
    srv = make_server("--models-dir", str(catalog / "models"), "--models-max", "1", *COMMON)
    stream = requests.post(srv.url + "/completion", json={
        "model": "smol", "prompt": PROMPT, "n_predict": 150, "ignore_eos": True, "stream": True,
    }, stream=True, timeout=120)
    events = (json.loads(line[6:]) for line in stream.iter_lines() if line)
    next(events)  # smol is generating
    def tiny() -> tuple[int, float]:
        r = srv.post("/completion", {"model": "tiny", "prompt": PROMPT, "n_predict": 2})
        return r.status_code, time.monotonic()

    with ThreadPoolExecutor(2) as pool:
        # two requests for tiny at once: tiny starts once, after smol's stream ends
        waiting = [pool.submit(tiny) for _ in range(2)]
        rest = list(events)
        ended = time.monotonic()
        assert rest[-1]["stop"] is True and rest[-1]["tokens_predicted"] == 150  # not cut short
        answers = [w.result() for w in waiting]
    assert [code for code, _ in answers] == [200, 200]
    assert all(at > ended for _, at in answers)
    assert _status(srv, "smol") == "unloaded" and _status(srv, "tiny") == "loaded"
    assert srv.log().count("starting model tiny") == 1


def test_reload_reads_the_catalog_again(tmp_path: Path, model_path: str, make_server: Any) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").symlink_to(model_path)
    (models / "b.gguf").symlink_to(model_path)
    srv = make_server("--models-dir", str(models), *COMMON)
    assert srv.post("/completion", {"model": "a", "prompt": PROMPT, "n_predict": 2}).status_code == 200
    port = _child_port(_models(srv)["a"])
    (models / "a.gguf").unlink()  # a running model whose file went
    (models / "b.gguf").unlink()  # an idle one
    (models / "c.gguf").symlink_to(model_path)  # a new one
    assert set(_models(srv)) == {"a", "b"}  # nothing changes until asked
    listed = srv.get("/v1/models", params={"reload": "1"}).json()["data"]
    assert [m["id"] for m in listed] == ["c"] and listed[0]["status"]["value"] == "unloaded"
    assert not _listening(port)  # a was stopped
    r = srv.post("/completion", {"model": "a", "prompt": PROMPT, "n_predict": 2})
    assert (r.status_code, r.json()["error"]["message"]) == (400, "model 'a' not found")
    assert srv.post("/completion", {"model": "c", "prompt": PROMPT, "n_predict": 2}).status_code == 200


def test_a_killed_routers_models_stop(tmp_path: Path, model_path: str, make_server: Any) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "smol.gguf").symlink_to(model_path)
    srv = make_server("--models-dir", str(models), *COMMON)
    assert srv.post("/completion", {"model": "smol", "prompt": PROMPT, "n_predict": 2}).status_code == 200
    port = _child_port(_models(srv)["smol"])
    srv.proc.kill()  # SIGKILL: the router cannot stop its models itself
    srv.proc.wait(10)
    deadline = time.monotonic() + 30
    while _listening(port):
        assert time.monotonic() < deadline, "the orphaned model server is still running"
        time.sleep(0.2)


def test_a_sleeping_model_says_so(tmp_path: Path, model_path: str, make_server: Any) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "smol.gguf").symlink_to(model_path)
    srv = make_server("--models-dir", str(models), "--sleep-idle-seconds", "1", *COMMON)
    assert srv.post("/completion", {"model": "smol", "prompt": PROMPT, "n_predict": 2}).status_code == 200
    _wait_status(srv, "smol", "sleeping", timeout=30)  # the child's --sleep-idle-seconds, as llama-server says it
    r = srv.post("/completion", {"model": "smol", "prompt": PROMPT, "n_predict": 2})  # wakes it
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2


def test_a_client_leaving_while_its_model_loads(catalog: Path, make_server: Any) -> None:
    """A waiting request whose client leaves is dropped; the others waiting for the model are answered."""
    srv = make_server("--models-dir", str(catalog / "models"), *COMMON)
    body = {"model": "smol", "prompt": PROMPT, "n_predict": 2}
    try:
        requests.post(srv.url + "/completion", json=body, timeout=0.05)
    except requests.exceptions.ReadTimeout:
        pass
    time.sleep(0.1)  # its wait is cancelled before the model is up
    r = requests.post(srv.url + "/completion", json=body, timeout=60)  # waits behind it
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2
