"""-dr/--docker-repo against a local registry (token service, manifest, blob), as Docker Hub answers them:
the pull, the cache file, the digest check, --offline, and each way the registry can fail."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llamatwist.cli.docker import docker_model_path, parse_docker_repo, resolve_docker
from llamatwist.cli.download import DownloadError
from tests.conftest import Server

TOKEN = "pull-token-1"


class Registry(http.server.BaseHTTPRequestHandler):
    blobs: ClassVar[dict[str, bytes]] = {}  # "repo:tag" -> the GGUF
    media_type: ClassVar[str] = "application/vnd.docker.ai.gguf.v3"
    wrong_digest: ClassVar[bool] = False
    seen: ClassVar[list[str]] = []

    def _json(self, obj: Any, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path.startswith("/token?"):
            self._json({"token": TOKEN})
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._json({"errors": [{"code": "UNAUTHORIZED"}]}, 401)
            return
        parts = self.path.split("/")  # /v2/<ns>/<name>/manifests/<tag> or .../blobs/sha256:<hex>
        repo, kind, ref = "/".join(parts[2:4]), parts[4], parts[5]
        if kind == "manifests":
            blob = self.blobs.get(f"{repo}:{ref}")
            if blob is None:
                self._json({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, 404)
                return
            digest = hashlib.sha256(blob + (b"x" if self.wrong_digest else b"")).hexdigest()
            self._json({"schemaVersion": 2, "layers": [
                {"mediaType": "application/vnd.docker.ai.license", "digest": "sha256:" + "0" * 64},
                {"mediaType": self.media_type, "digest": f"sha256:{digest}", "size": len(blob)}]})
            return
        for blob in self.blobs.values():
            if ref == "sha256:" + hashlib.sha256(blob).hexdigest() or self.wrong_digest:
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)
                return
        self._json({"errors": [{"code": "BLOB_UNKNOWN"}]}, 404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    Registry.blobs, Registry.seen = {}, []
    Registry.media_type, Registry.wrong_digest = "application/vnd.docker.ai.gguf.v3", False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("LLAMATWIST_DOCKER_REGISTRY", url)
    monkeypatch.setenv("LLAMATWIST_DOCKER_AUTH", url)
    yield url
    server.shutdown()
    server.server_close()


def test_names() -> None:
    assert parse_docker_repo("smollm2:135M-Q4_0") == ("ai/smollm2", "135M-Q4_0")
    assert parse_docker_repo("me/model") == ("me/model", "latest")
    assert docker_model_path(Path("/c"), "ai/smollm2", "135M-Q4_0") == Path("/c/models/ai_smollm2_135M-Q4_0.gguf")


def test_pull_and_cache(registry: str, tmp_path: Path) -> None:
    blob = b"GGUF" + bytes(range(256)) * 64
    Registry.blobs["ai/tiny:Q4"] = blob
    path = resolve_docker("tiny:Q4", tmp_path)
    assert path == tmp_path / "models" / "ai_tiny_Q4.gguf" and path.read_bytes() == blob
    assert Registry.seen[0] == "/token?service=registry.docker.io&scope=repository%3Aai%2Ftiny%3Apull"
    n = len(Registry.seen)
    assert resolve_docker("tiny:Q4", tmp_path, offline=True) == path  # cached: no request
    assert resolve_docker("tiny:Q4", tmp_path) == path and len(Registry.seen) == n


@pytest.mark.parametrize(("setup", "spec", "message"), [
    (lambda: None, "missing:Q4", "the manifest of ai/missing:Q4: HTTP 404"),
    (lambda: setattr(Registry, "media_type", "application/vnd.oci.image.layer.v1.tar"), "tiny:Q4",
     "no GGUF layer in its manifest"),
    (lambda: setattr(Registry, "wrong_digest", True), "tiny:Q4", "is not the"),
])
def test_registry_failures(registry: str, tmp_path: Path, setup: Any, spec: str, message: str) -> None:
    Registry.blobs["ai/tiny:Q4"] = b"GGUF" + b"\0" * 100
    setup()
    with pytest.raises(DownloadError, match=message):
        resolve_docker(spec, tmp_path)
    assert not list((tmp_path / "models").glob("*.gguf")) if (tmp_path / "models").exists() else True


def test_offline_without_the_file(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="--offline: .* would be pulled from Docker Hub"):
        resolve_docker("tiny:Q4", tmp_path, offline=True)


def test_server_serves_a_pulled_model(registry: str, tmp_path: Path, model_path: str, make_server: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    Registry.blobs["ai/smollm2:135M"] = Path(model_path).read_bytes()
    monkeypatch.setenv("LLAMATWIST_CACHE_DIR", str(tmp_path))
    srv = make_server("-dr", "smollm2:135M", "-c", "512", "-np", "1", "-t", "2")
    assert srv.get("/props").json()["model_path"] == str(tmp_path / "models" / "ai_smollm2_135M.gguf")
    assert srv.post("/completion", {"prompt": "Hello", "n_predict": 2}).json()["tokens_predicted"] == 2
    srv.stop()
    Registry.blobs.clear()  # offline: the cached file, no registry
    again = make_server("-dr", "smollm2:135M", "--offline", "-c", "512", "-np", "1", "-t", "2")
    assert again.get("/health").status_code == 200
    failing = Server(["-dr", "nosuch:model", "-c", "512"], wait=False)
    assert failing.proc.wait(60) == 1
    assert "the manifest of ai/nosuch:model: HTTP 404" in failing.log()
    failing.stop()
