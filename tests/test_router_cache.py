"""The router's third source, as llama-server's: the Hugging Face hub cache (what -hf downloaded), listed as
``<user>/<model>:<TAG>``, served with -hf (from the cache: no network) and removable with DELETE /models."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import ollama
import pytest
import requests

from llamatwist.cli.hf import split_tag
from llamatwist.router.catalog import load_catalog, remove_cached_model
from tests.conftest import Server
from tests.test_flags_download import Files, _mmproj_bytes


def _hub(root: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """A repository in the hub's layout: snapshot files linked to blobs (or written, for bytes)."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / "c0ffee"
    snap.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("c0ffee")
    for i, (name, content) in enumerate(files.items()):
        blob = repo_dir / "blobs" / f"blob{i}"
        if isinstance(content, Path):
            blob.symlink_to(content)
        else:
            blob.write_bytes(content)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snap


@pytest.mark.parametrize(("name", "expected"), [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", ("SmolLM2-135M-Instruct.Q4_1", "Q4_1", 1)),
    ("model-q4_k_m-00002-of-00003.gguf", ("model-q4_k_m", "Q4_K_M", 2)),
    ("model.gguf", ("model", "", 1)),
    ("gemma-3-4b-it-BF16.gguf", ("gemma-3-4b-it-BF16", "BF16", 1)),
])
def test_split_tag_is_llama_cpps(name: str, expected: tuple[str, str, int]) -> None:
    assert split_tag(name) == expected


def test_cache_models_are_listed_merged_and_deduplicated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    gguf = b"GGUF"
    _hub(hub, "org/smol", {"smol-Q4_1.gguf": gguf, "smol-F16-00001-of-00002.gguf": gguf,
                           "smol-F16-00002-of-00002.gguf": gguf, "mmproj-smol-f16.gguf": gguf,
                           "mtp-smol-Q8_0.gguf": gguf, "notag.gguf": gguf})
    _hub(hub, "org/other", {"other-Q8_0.gguf": gguf})
    models = tmp_path / "models"
    models.mkdir()
    (models / "local.gguf").write_bytes(gguf)

    catalog = load_catalog(str(models), None)
    assert set(catalog) == {"org/smol:Q4_1", "org/smol:F16", "org/other:Q8_0", "local"}
    entry = catalog["org/smol:Q4_1"]
    assert (entry.source, entry.options) == ("cache", ("-hf", "org/smol:Q4_1"))
    assert entry.mmproj is not None and entry.mmproj.endswith("mmproj-smol-f16.gguf")
    assert catalog["local"].source == "models_dir"

    ini = tmp_path / "p.ini"
    ini.write_text("[*]\nc = 1024\n"
                   "[org/smol:Q4_1]\nn-predict = 5\n"  # a section named after a cache model adds to it
                   "[mine]\nhf-repo = org/other:Q8_0\ndedup-cache-models = true\n")
    catalog = load_catalog(str(models), str(ini))
    assert "org/other:Q8_0" not in catalog  # served by "mine" already
    assert catalog["mine"].source == "preset"
    smol = catalog["org/smol:Q4_1"]
    assert smol.source == "preset" and smol.options == ("-c", "1024", "-hf", "org/smol:Q4_1", "--n-predict", "5")
    assert catalog["org/smol:F16"].options == ("-c", "1024", "-hf", "org/smol:F16")  # [*] too
    assert catalog["org/smol:F16"].source == "cache"


def test_remove_deletes_the_files_and_their_blobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snap = _hub(hub, "org/smol", {"smol-F16-00001-of-00002.gguf": b"GGUF", "smol-F16-00002-of-00002.gguf": b"GGUF",
                                  "smol-Q4_1.gguf": b"GGUF"})
    removed = remove_cached_model("org/smol:F16")
    assert len(removed) == 4  # two shards and their two blobs
    assert sorted(p.name for p in snap.iterdir()) == ["smol-Q4_1.gguf"]
    assert (snap / "smol-Q4_1.gguf").read_bytes() == b"GGUF"  # the other model's file and blob are kept
    assert remove_cached_model("org/smol:F16") == []


@pytest.fixture
def cache_router(tmp_path: Path, model_path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, Path]]:
    hub = tmp_path / "hub"
    snap = _hub(hub, "test/smol", {"SmolLM2-135M-Instruct.Q4_1.gguf": Path(model_path)})
    models = tmp_path / "models"
    models.mkdir()
    (models / "local.gguf").symlink_to(model_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # no network: the children must read the cache
    srv = Server(["--models-dir", str(models), "-np", "1", "-c", "1024", "-t", "2"])
    yield srv, snap
    srv.stop()


def _models(srv: Server) -> dict[str, Any]:
    return {m["id"]: m for m in srv.get("/v1/models").json()["data"]}


def test_router_serves_and_removes_a_cache_model(cache_router: tuple[Server, Path], model_path: str) -> None:
    srv, snap = cache_router
    models = _models(srv)
    assert set(models) == {"test/smol:Q4_1", "local"}
    cached = models["test/smol:Q4_1"]
    assert (cached["source"], cached["can_remove"]) == ("cache", True)
    assert (models["local"]["source"], models["local"]["can_remove"]) == ("models_dir", False)

    out = srv.post("/completion", {"model": "test/smol:Q4_1", "prompt": "Hello", "n_predict": 3})
    assert out.status_code == 200, out.text
    assert out.json()["tokens_predicted"] == 3
    running = _models(srv)["test/smol:Q4_1"]
    assert running["status"]["value"] == "loaded"
    assert running["status"]["args"][3:5] == ["-hf", "test/smol:Q4_1"]

    gone = requests.delete(srv.url + "/models", params={"model": "test/smol:Q4_1"}, timeout=60)
    assert gone.status_code == 200 and gone.json() == {"success": True}, gone.text
    assert set(_models(srv)) == {"local"}
    assert not list(snap.iterdir())  # the link and its blob are gone, the model file they led to is not
    assert os.path.getsize(model_path) > 0
    assert "Traceback" not in srv.log()

    again = requests.delete(srv.url + "/models", params={"model": "test/smol:Q4_1"}, timeout=60)
    assert again.status_code == 404 and again.json()["error"]["type"] == "not_found_error"
    local = requests.delete(srv.url + "/models", params={"model": "local"}, timeout=60)
    assert local.status_code == 400 and "not removable (not from the cache)" in local.json()["error"]["message"]
    missing = requests.delete(srv.url + "/models", timeout=60)
    assert missing.status_code == 400 and "model must be a non-empty string" in missing.json()["error"]["message"]
    post = srv.post("/models", {"model": "org/new:Q4_K_M"})  # the hub does not answer (HF_ENDPOINT): a 503
    assert post.status_code == 503, post.text
    assert "cannot reach the Hugging Face hub" in post.json()["error"]["message"]

    # the next reload reads the cache again: a model put there since is listed
    _hub(snap.parent.parent.parent, "test/again", {"again-Q8_0.gguf": Path(model_path)})
    deadline = time.monotonic() + 10
    while "test/again:Q8_0" not in {m["id"] for m in srv.get("/models?reload=1").json()["data"]}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert srv.get("/health").status_code == 200


class _Events:
    """/models/sse read in a thread: every event, in order."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        host, _, port = url.removeprefix("http://").partition(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self._conn.request("GET", "/models/sse")
        self._response = self._conn.getresponse()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # closing from the test thread ends the read with one of these (AttributeError: a half-closed response)
        with contextlib.suppress(OSError, ValueError, AttributeError, http.client.HTTPException):
            while line := self._response.readline():
                if line.startswith(b"data: "):
                    self.events.append(json.loads(line[6:]))

    def wait(self, model: str, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in list(self.events):
                if (e["model"], e["event"]) == (model, event):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no {event} for {model}: {self.events}")

    def close(self) -> None:
        if self._conn.sock is not None:  # unblocks the reader at once
            self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()


class _Slow(Files):
    """Serves its files 64 KiB at a time, `pause` apart: a download that can be watched and cancelled."""

    pause: ClassVar[float] = 0.0

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None or not self.path.endswith(".gguf"):
            super().do_GET()
            return
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        with contextlib.suppress(OSError):
            for i in range(start, len(body), 1 << 16):
                self.wfile.write(body[i:i + (1 << 16)])
                time.sleep(self.pause)


@pytest.fixture
def hub_api(tmp_path: Path, model_path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A fake Hugging Face hub (slow to send files) and an empty cache; the model file it offers is the real one."""
    Files.files, Files.ranges, _Slow.pause = {}, [], 0.0
    Files.files["/api/models/org/new"] = json.dumps({"sha": "feed01", "siblings": [
        {"rfilename": "README.md"}, {"rfilename": "new-Q4_K_M.gguf"}, {"rfilename": "new-Q8_0.gguf"},
        {"rfilename": "mmproj-new-f16.gguf"}]}).encode()
    Files.files["/org/new/resolve/feed01/new-Q4_K_M.gguf"] = Path(model_path).read_bytes()
    Files.files["/org/new/resolve/feed01/mmproj-new-f16.gguf"] = _mmproj_bytes(tmp_path, model_path)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
    models = tmp_path / "models"
    models.mkdir()
    (models / "local.gguf").symlink_to(model_path)
    yield str(models), hub
    httpd.shutdown()
    httpd.server_close()


def test_post_models_downloads_into_the_cache(hub_api: tuple[str, Path], make_server: Any) -> None:
    models_dir, hub = hub_api
    srv = make_server("--models-dir", models_dir, "-np", "1", "-c", "1024", "-t", "2")
    events = _Events(srv.url)
    try:
        started = srv.post("/models", {"model": "org/new"})
        assert started.status_code == 200 and started.json() == {"success": True}, started.text
        listed = _models(srv)
        if "org/new" in listed:  # still downloading: listed as such, with its progress
            assert listed["org/new"]["status"]["value"] == "downloading"
            assert listed["org/new"]["can_remove"] is True
        progress = events.wait("org/new", "download_progress")["data"]["progress"]
        assert list(progress) == [os.environ["HF_ENDPOINT"] + "/org/new/resolve/feed01/new-Q4_K_M.gguf"]
        events.wait("org/new", "download_finished", timeout=120)
    finally:
        events.close()
    deadline = time.monotonic() + 10
    while "org/new:Q4_K_M" not in _models(srv):  # listed under the cache's name once the catalog is read again
        assert time.monotonic() < deadline, _models(srv)
        time.sleep(0.1)
    assert "org/new" not in _models(srv)
    assert _models(srv)["org/new:Q4_K_M"]["source"] == "cache"
    assert (hub / "models--org--new" / "snapshots" / "feed01" / "new-Q4_K_M.gguf").is_file()
    assert (hub / "models--org--new" / "snapshots" / "feed01" / "mmproj-new-f16.gguf").is_file()  # as -hf's
    out = srv.post("/completion", {"model": "org/new:Q4_K_M", "prompt": "Hello", "n_predict": 2})
    assert out.status_code == 200 and out.json()["tokens_predicted"] == 2, out.text

    # the client's mistakes: each a 400 that names it, and the router keeps serving
    for body, message in [({"model": "org/new:Q4_K_M"}, "model 'org/new:Q4_K_M' already exists"),
                          ({"model": "local"}, "invalid Hugging Face repository"),
                          ({"model": "org/missing"}, "model validation failed, unable to download"),
                          ({"model": "org/new:IQ1_S"}, "no IQ1_S GGUF file"),
                          ({}, "model must be a non-empty string")]:
        bad = srv.post("/models", body)
        assert bad.status_code == 400 and message in bad.json()["error"]["message"], (body, bad.text)
    assert srv.get("/health").status_code == 200


def test_delete_cancels_a_download(hub_api: tuple[str, Path], make_server: Any) -> None:
    models_dir, hub = hub_api
    _Slow.pause = 0.02  # about 3 MiB/s: still going when it is cancelled
    srv = make_server("--models-dir", models_dir, "-np", "1", "-c", "1024", "-t", "2")
    events = _Events(srv.url)
    try:
        assert srv.post("/models", {"model": "org/new:Q4_K_M"}).status_code == 200
        deadline = time.monotonic() + 60
        while not any(e["event"] == "download_progress" and next(iter(e["data"]["progress"].values()))["done"]
                      for e in list(events.events)):
            assert time.monotonic() < deadline, events.events
            time.sleep(0.05)
        assert _models(srv)["org/new:Q4_K_M"]["status"]["value"] == "downloading"
        gone = requests.delete(srv.url + "/models", params={"model": "org/new:Q4_K_M"}, timeout=60)
        assert gone.status_code == 200 and gone.json() == {"success": True}, gone.text
        events.wait("org/new:Q4_K_M", "model_remove")
    finally:
        events.close()
    assert set(_models(srv)) == {"local"}
    snap = hub / "models--org--new" / "snapshots" / "feed01"
    assert not (snap / "new-Q4_K_M.gguf").exists()
    assert [p.name for p in snap.iterdir()] == ["new-Q4_K_M.gguf.downloadInProgress"]  # kept: a resume starts there
    assert "Traceback" not in srv.log()


def test_ollama_pull_and_delete_go_through_the_cache(hub_api: tuple[str, Path], make_server: Any,
                                                     model_path: str) -> None:
    """`ollama pull` / `ollama rm` against a router: Ollama's Hugging Face names, progress lines, the catalog."""
    models_dir, hub = hub_api
    srv = make_server("--models-dir", models_dir, "-np", "1", "-c", "1024", "-t", "2")
    client = ollama.Client(host=srv.url, timeout=120)
    assert [p.status for p in client.pull("local", stream=True)] == ["pulling manifest", "success"]  # listed

    progress = list(client.pull("hf.co/org/new:Q4_K_M", stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success", progress
    pulling = [p for p in progress if p.status == "pulling new-Q4_K_M.gguf"]
    size = Path(model_path).stat().st_size
    assert pulling and pulling[-1].completed == pulling[-1].total > size, progress  # with its projector
    assert all(p.digest == os.environ["HF_ENDPOINT"] + "/org/new/resolve/feed01/new-Q4_K_M.gguf" for p in pulling)
    assert "org/new:Q4_K_M" in [m.model for m in client.list().models]  # listed once the pull answered
    assert (hub / "models--org--new" / "snapshots" / "feed01" / "new-Q4_K_M.gguf").is_file()
    reply = client.generate(model="org/new:Q4_K_M", prompt="Hello", raw=True, options={"num_predict": 2})
    assert reply.eval_count == 2
    assert client.pull("org/new:Q4_K_M").status == "success"  # there already: nothing downloaded again

    # a file the hub lists but cannot send: the pull fails after its first line (streamed) or as a 502
    lines = [json.loads(line) for line in requests.post(srv.url + "/api/pull", json={"model": "org/new:Q8_0"},
                                                         timeout=120).iter_lines() if line]
    assert lines[0] == {"status": "pulling manifest"} and set(lines[-1]) == {"error"}, lines
    assert "pulling org/new:Q8_0 failed" in lines[-1]["error"]
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("org/new:Q8_0")
    assert err.value.status_code == 502
    # the client's mistakes: 4xx before anything is downloaded, in Ollama's shape
    for name, status in (("org/missing", 400), ("not-a-repo", 400), ("hf.co/org/new:IQ1_S", 400)):
        r = srv.post("/api/pull", {"model": name})
        assert r.status_code == status and isinstance(r.json()["error"], str), (name, r.text)
    assert srv.post("/api/pull", {}).status_code == 400

    assert client.delete("org/new:Q4_K_M").status == "success"
    assert [m.model for m in client.list().models] == ["local"]
    assert not (hub / "models--org--new" / "snapshots" / "feed01" / "new-Q4_K_M.gguf").exists()
    gone = requests.delete(srv.url + "/api/delete", json={"model": "org/new:Q4_K_M"}, timeout=30)
    assert gone.status_code == 404 and isinstance(gone.json()["error"], str)
    kept = requests.delete(srv.url + "/api/delete", json={"model": "local"}, timeout=30)
    assert kept.status_code == 400 and "not removable" in kept.json()["error"]  # a --models-dir file stays
    for path in ("/api/create", "/api/copy", "/api/push"):
        r = srv.post(path, {"model": "local", "source": "local", "destination": "x"})
        assert r.status_code == 403 and "not supported" in r.json()["error"], (path, r.text)
    assert client.generate(model="local", prompt="Hello", raw=True, options={"num_predict": 2}).eval_count == 2
    assert "Traceback" not in srv.log()
