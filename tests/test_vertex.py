"""Google Cloud Vertex AI custom containers (AIP_MODE=PREDICTION): the port, health and predict routes, as
llama-server's GCP compatibility, on a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from llamatwist.api.vertex import camel_name
from llamatwist.cli.environ import vertex_from_env
from tests.conftest import REPO, free_port

CHAT = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6, "temperature": 0}


def test_routes_and_names() -> None:
    assert vertex_from_env({}) is None
    assert vertex_from_env({"AIP_MODE": "PREDICTION"}) == (("", "/predict"), 8080)
    env = {"AIP_MODE": "PREDICTION", "AIP_HEALTH_ROUTE": "healthz", "AIP_PREDICT_ROUTE": "/v1/predict",
           "AIP_HTTP_PORT": "9000"}
    assert vertex_from_env(env) == (("/healthz", "/v1/predict"), 9000)
    assert camel_name("/v1/chat/completions") == "chatCompletions"
    assert camel_name("/apply-template") == "applyTemplate"
    assert camel_name("/slots/{id_slot}") == "slots"


@pytest.fixture(scope="module")
def vertex(model_path: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "AIP_MODE": "PREDICTION", "AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": "/healthz"}
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"llamatwist-vertex-{port}.log"
    with open(log, "wb") as out:
        # --port says 1: AIP_HTTP_PORT wins, as on Vertex
        proc = subprocess.Popen([sys.executable, "-m", "llamatwist", "-m", model_path, "--port", "1", "-c", "2048",
                                 "-np", "2", "-t", "2", "--api-key", "k"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    assert "AIP_HTTP_PORT" in log.read_text()  # the override is said
    yield url
    proc.terminate()
    proc.wait(30)


def predict(url: str, body: Any, key: str = "k") -> requests.Response:
    return requests.post(url + "/predict", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_predict_dispatches_each_instance(vertex: str) -> None:
    direct = requests.post(vertex + "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"},
                           timeout=120).json()
    r = predict(vertex, {"instances": [
        {"@requestFormat": "chatCompletions", **CHAT, "stream": True},  # never streamed
        {"@requestFormat": "/completion", "prompt": "Hello", "n_predict": 2},
        {"@requestFormat": "tokenize", "content": "Hello world"},
        {"@requestFormat": "no/such/route"},
        {"@requestFormat": "chatCompletions", "messages": []},
        {"messages": []},
        5,
    ]})
    assert r.status_code == 200, r.text
    chat, completion, tokens, unknown, mistake, no_format, not_object = r.json()["predictions"]
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    assert completion["tokens_predicted"] == 2
    assert len(tokens["tokens"]) >= 2
    assert unknown["error"]["message"] == "no handler registered for @requestFormat: no/such/route"
    assert mistake["error"]["code"] == 400 and mistake["error"]["message"] == "'messages' must not be empty"
    assert no_format["error"]["message"] == "each instance must include a string @requestFormat"
    assert not_object["error"]["message"] == "each instance must be a JSON object"


def test_predict_mistakes_and_keys(vertex: str) -> None:
    def error(r: requests.Response) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["message"]

    assert error(predict(vertex, [1])) == (400, "request body must be a JSON object")
    assert error(predict(vertex, {"instances": {}})) == (400, "request body must include an array field named instances")
    too_many = {"instances": [{"@requestFormat": "health"}] * 129}
    assert error(predict(vertex, too_many)) == (400, "instances array exceeds maximum size of 128")
    assert predict(vertex, {"instances": []}, key="wrong").status_code == 401
    assert predict(vertex, {"instances": []}).json() == {"predictions": []}
    assert requests.get(vertex + "/health", timeout=10).status_code == 200


def test_predict_through_a_router(tmp_path: Path, model_path: str) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "smol.gguf").symlink_to(model_path)
    port = free_port()
    env = {**os.environ, "AIP_MODE": "PREDICTION", "AIP_HTTP_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "llamatwist", "--models-dir", str(models), "-c", "1024",
                             "-np", "1", "-t", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=REPO, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        r = requests.post(url + "/predict", json={"instances": [
            {"@requestFormat": "chatCompletions", "model": "smol", **CHAT},
            {"@requestFormat": "chatCompletions", **CHAT}]}, timeout=120)
        chat, unnamed = r.json()["predictions"]
        assert chat["model"] == "smol" and chat["choices"][0]["message"]["content"]
        assert unnamed["error"]["message"] == "model name is missing from the request"
    finally:
        proc.terminate()
        proc.wait(30)
