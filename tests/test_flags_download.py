"""-mu/--model-url and --offline against a local HTTP server: cache placement, progress, resume with a
Range request, atomic rename, size and magic checks, offline refusal."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llamatwist.cli.download import DownloadError, fetch_model, model_url_path
from tests.conftest import Server
from tests.test_cli import run

BLOB = b"GGUF" + bytes(range(256)) * 4096  # 1 MiB and a bit: several progress updates


class Files(http.server.BaseHTTPRequestHandler):
    """Serves `files` with Range support; records each request's Range header."""

    files: ClassVar[dict[str, bytes]] = {}
    ranges: ClassVar[list[str | None]] = []
    short: bool = False  # announce the full length but send half (a dropped connection)

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        self.ranges.append(self.headers.get("Range"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:len(body) // 2] if self.short else body[start:])

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_files() -> Iterator[str]:
    Files.files, Files.ranges, Files.short = {}, [], False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_into_the_cache_with_progress(http_files: str, tmp_path: Path) -> None:
    Files.files["/dir/m.gguf"] = BLOB
    dest = model_url_path(http_files + "/dir/m.gguf?x=1", tmp_path)
    assert dest == tmp_path / "models" / "m.gguf"
    out = io.StringIO()
    assert fetch_model(http_files + "/dir/m.gguf", dest, out=out) == dest
    assert dest.read_bytes() == BLOB
    assert "100.0%" in out.getvalue() and "[" + "=" * 40 + "]" in out.getvalue()
    assert not list(tmp_path.glob("models/*.downloadInProgress"))
    # cached: no second request
    assert fetch_model(http_files + "/dir/m.gguf", dest) == dest
    assert Files.ranges == [None]


def test_interrupted_download_resumes_with_a_range_request(http_files: str, tmp_path: Path) -> None:
    Files.files["/m.gguf"] = BLOB
    dest = tmp_path / "m.gguf"
    Files.short = True
    with pytest.raises(DownloadError, match=r"got \d+ of \d+ bytes \(run again to resume\)"):
        fetch_model(http_files + "/m.gguf", dest, out=io.StringIO())
    assert not dest.exists()  # never half a model under the real name
    part = tmp_path / "m.gguf.downloadInProgress"
    assert part.stat().st_size == len(BLOB) // 2
    Files.short = False
    fetch_model(http_files + "/m.gguf", dest, out=io.StringIO())
    assert Files.ranges == [None, f"bytes={len(BLOB) // 2}-"]
    assert dest.read_bytes() == BLOB


def test_not_gguf_and_http_errors_are_refused(http_files: str, tmp_path: Path) -> None:
    Files.files["/page.gguf"] = b"<html>login</html>"
    with pytest.raises(DownloadError, match="not a GGUF file"):
        fetch_model(http_files + "/page.gguf", tmp_path / "page.gguf", out=io.StringIO())
    assert not list(tmp_path.iterdir())
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_model(http_files + "/missing.gguf", tmp_path / "missing.gguf", out=io.StringIO())


def test_offline_never_touches_the_network(http_files: str, tmp_path: Path) -> None:
    Files.files["/m.gguf"] = BLOB
    with pytest.raises(DownloadError, match=r"--offline: .*m\.gguf is not in the cache and would be downloaded"):
        fetch_model(http_files + "/m.gguf", tmp_path / "m.gguf", offline=True)
    assert Files.ranges == []


def test_server_starts_from_a_model_url(http_files: str, tmp_path: Path, model_path: str,
                                        make_server: Callable[..., Server]) -> None:
    Files.files["/models/small.gguf"] = Path(model_path).read_bytes()
    env = ["env", f"LLAMATWIST_CACHE_DIR={tmp_path}"]
    import sys

    command = [*env, sys.executable, "-m", "llamatwist"]
    srv = make_server("-mu", http_files + "/models/small.gguf", "-c", "512", "-np", "1", "-t", "1",
                      "--no-warmup", command=command)
    assert (tmp_path / "models" / "small.gguf").stat().st_size == Path(model_path).stat().st_size
    assert srv.get("/props").json()["model_path"] == str(tmp_path / "models" / "small.gguf")
    # offline and missing: a start-up error naming what was looked for
    proc = run("-m", "llamatwist", "--offline", "-mu", http_files + "/other.gguf",
               env={"LLAMATWIST_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert f"{tmp_path}/models/other.gguf is not in the cache" in proc.stderr


def _hub_repo(home: Path, repo: str, files: dict[str, bytes | Path], sha: str = "0123abcd") -> Path:
    """A Hugging Face cache entry in the hub's layout (refs/main, snapshots/<sha>/...; links as the hub's)."""
    repo_dir = home / "hub" / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / sha
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(sha)
    for name, content in files.items():
        if isinstance(content, Path):
            (snap / name).symlink_to(content)
        else:
            (snap / name).write_bytes(content)
    return snap


def test_hf_repo_resolves_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamatwist.cli.hf import resolve_hf

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snap = _hub_repo(tmp_path, "user/model-GGUF", {
        "mmproj-model-Q4_K_M.gguf": BLOB, "model-Q8_0.gguf": BLOB, "model-Q4_K_M.gguf": BLOB, "model-F16.gguf": BLOB,
    })
    assert resolve_hf("user/model-GGUF", offline=True) == snap / "model-Q4_K_M.gguf"  # the default quant
    assert resolve_hf("user/model-GGUF:q8_0", offline=True) == snap / "model-Q8_0.gguf"  # case-insensitive
    assert resolve_hf("user/model-GGUF:Q4_K_M", "model-F16.gguf", offline=True) == snap / "model-F16.gguf"
    with pytest.raises(DownloadError, match=r"--offline: a IQ2_XS GGUF file of user/model-GGUF is not in the "
                                            r"Hugging Face cache .*models--user--model-GGUF"):
        resolve_hf("user/model-GGUF:IQ2_XS", offline=True)


def test_hf_repo_downloads_into_the_hub_cache(http_files: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from llamatwist.cli.hf import resolve_hf

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", http_files)
    Files.files["/api/models/user/m"] = json.dumps({"sha": "feed01", "siblings": [
        {"rfilename": "README.md"}, {"rfilename": "mmproj-m-f16.gguf"}, {"rfilename": "m-Q4_K_M.gguf"}]}).encode()
    Files.files["/user/m/resolve/feed01/m-Q4_K_M.gguf"] = BLOB
    path = resolve_hf("user/m", token="hf_secret")
    assert path == tmp_path / "hub" / "models--user--m" / "snapshots" / "feed01" / "m-Q4_K_M.gguf"
    assert path.read_bytes() == BLOB
    assert (tmp_path / "hub" / "models--user--m" / "refs" / "main").read_text() == "feed01"
    assert resolve_hf("user/m", offline=True) == path  # now cached
    with pytest.raises(DownloadError, match=r"no Q8_0 GGUF file \(available: mmproj-m-f16.gguf, m-Q4_K_M.gguf\)"):
        resolve_hf("user/m:Q8_0")


def test_server_starts_from_an_hf_repo_offline(tmp_path: Path, model_path: str,
                                               make_server: Callable[..., Server]) -> None:
    import sys

    _hub_repo(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", {"smollm2-Q4_1.gguf": Path(model_path)})
    command = ["env", f"HF_HOME={tmp_path}", sys.executable, "-m", "llamatwist"]
    srv = make_server("-hf", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q4_1", "--offline", "-c", "512", "-np", "1",
                      "-t", "1", "--no-warmup", command=command)
    assert srv.get("/props").json()["model_path"].endswith("/snapshots/0123abcd/smollm2-Q4_1.gguf")
    proc = run("-m", "llamatwist", "-hf", "nobody/nothing", "--offline", env={"HF_HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert "nobody/nothing is not in the Hugging Face cache" in proc.stderr
    assert run("-m", "llamatwist", "-hf", "no-slash").returncode == 2


def test_model_presets_set_llama_servers_model_and_parameters(tmp_path: Path, model_path: str,
                                                             make_server: Callable[..., Server]) -> None:
    import sys

    from llamatwist.cli import parse_config

    config = parse_config(["--fim-qwen-7b-spec", "--port", "9000"], {"LLAMA_ARG_BATCH": "512"})
    assert (config.hf_repo, config.hf_file) == ("ggml-org/Qwen2.5-Coder-7B-Q8_0-GGUF", "qwen2.5-coder-7b-q8_0.gguf")
    assert (config.hf_repo_draft, config.sampling.speculative.type) == ("ggml-org/Qwen2.5-Coder-0.5B-Q8_0-GGUF",
                                                                        "draft-simple")
    # the flags and variables given win, wherever they stand
    assert (config.port, config.n_batch, config.n_ubatch, config.sampling.n_cache_reuse) == (9000, 512, 1024, 256)
    gpt = parse_config(["--gpt-oss-20b-default"], {})
    assert (gpt.sampling.temperature, gpt.sampling.top_k, gpt.n_parallel, gpt.n_ctx) == (1.0, 0, 2, 262144)

    _hub_repo(tmp_path, "ggml-org/Qwen2.5-Coder-1.5B-Q8_0-GGUF", {"qwen2.5-coder-1.5b-q8_0.gguf": Path(model_path)})
    command = ["env", f"HF_HOME={tmp_path}", sys.executable, "-m", "llamatwist"]
    srv = make_server("--fim-qwen-1.5b-default", "--offline", "-c", "512", "-np", "1", "-t", "1", "--no-warmup",
                      command=command)
    props = srv.get("/props").json()
    assert props["model_path"].endswith("/qwen2.5-coder-1.5b-q8_0.gguf")


def _mmproj_bytes(tmp_path: Path, model_path: str) -> bytes:
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("make_vision_model", REPO / "scripts" / "make_vision_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "built-mmproj.gguf"
    module.make_mmproj(out, 576)
    return out.read_bytes()


def test_server_downloads_its_projector_from_a_url(http_files: str, tmp_path: Path, model_path: str,
                                                  make_server: Callable[..., Server]) -> None:
    """-mmu (issue 16): the projector into the cache, then the server has vision; offline and missing: an error."""
    import sys

    Files.files["/mm/mmproj.gguf"] = _mmproj_bytes(tmp_path, model_path)
    command = ["env", f"LLAMATWIST_CACHE_DIR={tmp_path}", sys.executable, "-m", "llamatwist"]
    srv = make_server("-m", model_path, "-mmu", http_files + "/mm/mmproj.gguf", "-c", "512", "-np", "1", "-t", "1",
                      "--no-warmup", command=command)
    assert srv.get("/props").json()["modalities"]["vision"] is True
    assert (tmp_path / "models" / "mmproj.gguf").is_file()
    proc = run("-m", "llamatwist", "-m", model_path, "--offline", "-mmu", http_files + "/mm/other.gguf",
               env={"LLAMATWIST_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert "--mmproj-url" in proc.stderr and "other.gguf is not in the cache" in proc.stderr


def test_hf_repo_brings_its_projector_unless_no_mmproj(tmp_path: Path, model_path: str,
                                                      make_server: Callable[..., Server]) -> None:
    import sys

    _hub_repo(tmp_path, "user/vlm-GGUF", {"vlm-Q4_1.gguf": Path(model_path),
                                          "mmproj-vlm-f32.gguf": _mmproj_bytes(tmp_path, model_path)})
    command = ["env", f"HF_HOME={tmp_path}", sys.executable, "-m", "llamatwist"]
    args = ("-hf", "user/vlm-GGUF:q4_1", "--offline", "-c", "512", "-np", "1", "-t", "1", "--no-warmup")
    srv = make_server(*args, command=command)
    props = srv.get("/props").json()
    assert props["model_path"].endswith("vlm-Q4_1.gguf") and props["modalities"]["vision"] is True
    plain = make_server(*args, "--no-mmproj", command=command)
    assert plain.get("/props").json()["modalities"]["vision"] is False


def test_cache_list_shows_the_hub_cache_and_downloads(tmp_path: Path, model_path: str) -> None:
    _hub_repo(tmp_path / "hf", "user/some-GGUF", {"some-Q4_K_M.gguf": Path(model_path),
                                                   "mmproj-some.gguf": b"GGUF", "notes.txt": b"x"})
    (tmp_path / "lt" / "models").mkdir(parents=True)
    (tmp_path / "lt" / "models" / "fetched.gguf").write_bytes(b"GGUF")
    proc = run("-m", "llamatwist", "-cl", env={"HF_HOME": str(tmp_path / "hf"),
                                               "LLAMATWIST_CACHE_DIR": str(tmp_path / "lt")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "number of models in cache: 2",
        "   1. user/some-GGUF:some-Q4_K_M.gguf",  # projectors and other files are not models
        f"   2. {tmp_path}/lt/models/fetched.gguf",
    ]
