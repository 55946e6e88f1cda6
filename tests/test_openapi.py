"""/openapi.json: a valid OpenAPI 3.1 document that lists exactly the routes the server serves, and
schemathesis, driven by it, finds no 5xx on a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from llamatwist.api import openapi, params
from llamatwist.api.app import build_app
from llamatwist.api.http import ApiContext
from llamatwist.config import ServerConfig
from tests.conftest import REPO
from tests.models import minilm_gguf, reranker_gguf


def _app_operations() -> set[tuple[str, str]]:
    ctx = ApiContext(config=ServerConfig(), engine=None, model_path="m")  # type: ignore[arg-type]
    return openapi.registered_operations(build_app(ctx))


def test_document_is_valid_openapi() -> None:
    validate(openapi.document())  # raises on any schema error


def test_every_served_route_is_documented_and_nothing_else() -> None:
    served = _app_operations()
    documented = set(openapi.OPERATIONS)
    assert served - documented == set(), "served but not in openapi.OPERATIONS"
    assert documented - served == set(), "documented but not served"


def test_every_parameter_reader_has_a_schema() -> None:
    missing = {f.names[0] for f in params.FIELDS if f.read not in params.READER_SCHEMAS}
    assert not missing, f"add these readers to params.READER_SCHEMAS: {missing}"
    fields = openapi.document()["components"]["schemas"]["GenerationFields"]["properties"]
    assert fields["temperature"]["type"] == "number"
    assert fields["n_predict"]["type"] == "integer"
    assert "alias of n_predict" in fields["max_tokens"]["description"]


def test_served_document_matches_and_needs_the_key(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "512", "-np", "1", "--api-key", "k1")
    assert srv.get("/openapi.json").status_code == 401
    r = srv.get("/openapi.json", headers={"Authorization": "Bearer k1"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == json.loads(json.dumps(openapi.document()))


def _schemathesis(url: str, tmp: Path, *extra: str) -> int:
    """Run schemathesis against ``url``; the number of requests it sent (from its HAR report)."""
    exe = shutil.which("schemathesis") or shutil.which("st")
    cmd = [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]
    har = tmp / "report.har"
    proc = subprocess.run(
        [*cmd, "run", f"{url}/openapi.json", "--checks", "not_a_server_error", "--workers", "1",
         "--seed", "1", "--report", "har", "--report-har-path", str(har), *extra],
        check=False, capture_output=True, text=True, timeout=600, cwd=tmp,  # it writes .schemathesis/ there
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return len(json.loads(har.read_text())["log"]["entries"])


def test_schemathesis_finds_no_server_error(make_server: Any, model_path: str, tmp_path: Path) -> None:
    slots = tmp_path / "slots"
    slots.mkdir()
    srv = make_server("-m", model_path, "-np", "2", "-c", "512", "-n", "4", "-t", "1", "--slots", "--metrics",
                      "--props", "--slot-save-path", str(slots))
    # embeddings and audio answer 501 on this server, as llama-server (tested on servers that take them below)
    sent = _schemathesis(srv.url, tmp_path, "--max-examples", "20", "--exclude-tag", "embeddings",
                         "--exclude-tag", "audio")
    assert sent >= 2000
    assert srv.get("/health").status_code == 200
    r = srv.post("/completion", {"prompt": "Hello", "n_predict": 2})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2
    assert all(s["is_processing"] is False for s in srv.get("/slots").json())


@pytest.mark.parametrize("kind", ["embeddings", "reranking"])
def test_schemathesis_on_embedding_routes(make_server: Any, tmp_path: Path, kind: str) -> None:
    model = minilm_gguf() if kind == "embeddings" else reranker_gguf()
    srv = make_server("-m", str(model), "-c", "512", "-np", "2", "-t", "1", f"--{kind}")
    # the other kind answers 501 as llama-server (a server not started for it), so it is left out
    routes = "embed" if kind == "embeddings" else "rerank"  # /embedding(s), /v1/embeddings, /api/embed(dings)
    sent = _schemathesis(srv.url, tmp_path, "--max-examples", "25", "--include-path-regex", routes)
    assert sent >= 100
    assert srv.get("/health").status_code == 200


def test_schemathesis_on_transcriptions(make_server: Any, tmp_path: Path, model_path: str) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_audio_model.py"), "--out-dir", str(tmp_path),
                    "--model", model_path], check=True, capture_output=True)
    srv = make_server("-m", str(tmp_path / "model.gguf"), "--mmproj", str(tmp_path / "mmproj.gguf"), "-c", "1024",
                      "-np", "2", "-t", "1", "-n", "2")
    sent = _schemathesis(srv.url, tmp_path, "--max-examples", "25", "--include-tag", "audio")
    assert sent >= 50
    assert srv.get("/health").status_code == 200
