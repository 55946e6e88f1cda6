"""-hf/-hfd take what llama-server takes from a Hugging Face repository: every shard of a split model, the
projector beside the model, and the draft heads it ships (``dflash-*.gguf``, ``dspark-*.gguf``,
``eagle3-*.gguf``, ``mtp-*.gguf``) for the speculative types asked, or, for -hfd without --spec-type, whichever it ships, which
then sets the type; a repository with a preset.ini at its root makes a router serving its presets. A local HTTP
server stands in for the hub (HF_ENDPOINT): its API listing, its files."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llamatwist.cli.hf import best_sibling, resolve_hf_files, split_files
from tests.conftest import Server
from tests.models import dflash_gguf, gemma4_gguf
from tests.test_cli import run
from tests.test_flags_download import BLOB, Files, _mmproj_bytes, http_files  # noqa: F401  # the fixture

MODEL = "m-Q4_K_M.gguf"


def test_siblings_are_picked_as_llama_cpp_picks_them() -> None:
    names = ["mmproj-F16.gguf", "sub/mmproj-F32.gguf", "sub/mmproj-Q8_0.gguf", "other/mmproj-Q4_K_M.gguf",
             "sub/model-Q4_K_M.gguf", "dflash-model-Q8_0.gguf", "sub/dflash-model-F16.gguf", "README.md"]
    # the model's own directory first, then the nearest quant bits to the model's (4: Q8_0 before F32)
    assert best_sibling(names, "sub/model-Q4_K_M.gguf", "mmproj") == "sub/mmproj-Q8_0.gguf"
    assert best_sibling(names, "model-Q4_K_M.gguf", "mmproj") == "mmproj-F16.gguf"  # not another directory's
    # the directory counts before the tag; a directory above the model's serves too
    assert best_sibling(names, "sub/model-Q4_K_M.gguf", "dflash-", "Q8_0") == "sub/dflash-model-F16.gguf"
    assert best_sibling(names, "model-Q4_K_M.gguf", "dflash-") == "dflash-model-Q8_0.gguf"
    # in one directory an exact tag wins over nearer bits
    pair = ["d/dflash-m-Q8_0.gguf", "d/dflash-m-Q4_0.gguf", "d/dflash-m-F16.gguf"]
    assert best_sibling(pair, "d/m-Q4_K_M.gguf", "dflash-", "F16") == "d/dflash-m-F16.gguf"
    assert best_sibling(pair, "d/m-Q4_K_M.gguf", "dflash-") == "d/dflash-m-Q4_0.gguf"
    assert best_sibling(pair, "d/m-Q4_K_M.gguf", "dflash-", "Q6_K") == "d/dflash-m-Q8_0.gguf"  # |8-6| = |4-6|: the first
    assert best_sibling(names, "model-Q4_K_M.gguf", "eagle3-") is None
    shards = ["big-Q4_K_M-00002-of-00003.gguf", "big-Q4_K_M-00001-of-00003.gguf", "big-Q4_K_M-00003-of-00003.gguf",
              "big-Q8_0-00001-of-00002.gguf"]
    assert split_files(shards, "big-Q4_K_M-00001-of-00003.gguf") == tuple(sorted(shards[:3]))
    assert split_files(shards, "single.gguf") == ("single.gguf",)


def _hub(base: str, repo: str, files: dict[str, bytes], sha: str = "c0ffee") -> None:
    Files.files[f"/api/models/{repo}"] = json.dumps(
        {"sha": sha, "siblings": [{"rfilename": n} for n in ["README.md", *files]]}).encode()
    for name, data in files.items():
        Files.files[f"/{repo}/resolve/{sha}/{name}"] = data


def test_a_split_model_comes_whole_with_its_projector(http_files: str, tmp_path: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", http_files)
    _hub(http_files, "user/big", {"big-Q4_K_M-00001-of-00002.gguf": BLOB, "big-Q4_K_M-00002-of-00002.gguf": BLOB,
                                  "big-Q8_0.gguf": BLOB, "mmproj-big-f16.gguf": BLOB, "mmproj-big-q8_0.gguf": BLOB})
    files = resolve_hf_files("user/big", mmproj=True)
    snap = tmp_path / "hub" / "models--user--big" / "snapshots" / "c0ffee"
    assert files.model == snap / "big-Q4_K_M-00001-of-00002.gguf"
    assert (snap / "big-Q4_K_M-00002-of-00002.gguf").read_bytes() == BLOB  # the other shard too
    assert files.mmproj == snap / "mmproj-big-q8_0.gguf"  # 8 bits: the nearest to the model's 4
    assert not (snap / "big-Q8_0.gguf").exists() and not (snap / "mmproj-big-f16.gguf").exists()
    # cached: offline finds the same files; a new revision on the hub fetches nothing already there
    assert resolve_hf_files("user/big", mmproj=True, offline=True) == files
    _hub(http_files, "user/big", {"big-Q4_K_M-00001-of-00002.gguf": b"new", "big-Q4_K_M-00002-of-00002.gguf": b"new",
                                  "mmproj-big-q8_0.gguf": b"new"}, sha="beef")
    assert resolve_hf_files("user/big", mmproj=True) == files and files.model.read_bytes() == BLOB


def _server(make_server: Callable[..., Server], tmp_path: Path, base: str, *args: str, wait: bool = True) -> Server:
    command = ["env", f"HF_HOME={tmp_path}", f"HF_ENDPOINT={base}", sys.executable, "-m", "llamatwist"]
    return make_server(*args, "-c", "1024", "-np", "1", "-t", "2", "--no-warmup", command=command, wait=wait)


def test_hf_downloads_the_projector_beside_the_model(http_files: str, tmp_path: Path, model_path: str,  # noqa: F811
                                                    make_server: Callable[..., Server]) -> None:
    """llama-server's -hf brings the model's projector, so a vision model sees; --no-mmproj leaves it."""
    _hub(http_files, "user/vlm-GGUF", {"vlm-Q4_1.gguf": Path(model_path).read_bytes(),
                                       "mmproj-vlm-f32.gguf": _mmproj_bytes(tmp_path, model_path)})
    plain = _server(make_server, tmp_path / "a", http_files, "-hf", "user/vlm-GGUF:Q4_1", "--no-mmproj")
    assert plain.get("/props").json()["modalities"]["vision"] is False
    assert not list((tmp_path / "a").rglob("mmproj-*.gguf"))
    srv = _server(make_server, tmp_path / "b", http_files, "-hf", "user/vlm-GGUF:Q4_1")
    props = srv.get("/props").json()
    assert props["model_path"].endswith("/snapshots/c0ffee/vlm-Q4_1.gguf") and props["modalities"]["vision"] is True


@pytest.fixture(scope="module")
def pair(model_path: str) -> tuple[bytes, bytes]:
    target, draft = dflash_gguf(Path(model_path), kind="dspark")
    return target.read_bytes(), draft.read_bytes()


def _drafts(srv: Server) -> int:
    r = srv.post("/completion", {"prompt": "Hello world, this is", "n_predict": 32, "temperature": 0})
    assert r.status_code == 200, r.text
    return int(r.json()["timings"].get("draft_n", 0))


def test_draft_heads_from_the_repositories(http_files: str, tmp_path: Path,  # noqa: F811
                                           make_server: Callable[..., Server], pair: tuple[bytes, bytes]) -> None:
    target, draft = pair
    _hub(http_files, "user/t-GGUF", {"t-Q4_K_M.gguf": target, "dspark-t-Q4_K_M.gguf": draft})
    # -hf with the type: the repository's head of that type is the draft
    srv = _server(make_server, tmp_path / "a", http_files, "-hf", "user/t-GGUF", "--spec-type", "draft-dspark")
    assert _drafts(srv) > 0 and "DSpark draft dspark-t-Q4_K_M.gguf" in srv.log()
    # -hfd without a type: the head it ships sets the type (its GGUF says DSpark)
    srv = _server(make_server, tmp_path / "b", http_files, "-hf", "user/t-GGUF", "-hfd", "user/t-GGUF")
    assert _drafts(srv) > 0 and "DSpark draft dspark-t-Q4_K_M.gguf" in srv.log()
    # no head of the type asked: a start-up error naming what is missing
    srv = _server(make_server, tmp_path / "c", http_files, "-hf", "user/t-GGUF", "--spec-type", "draft-eagle3",
                  wait=False)
    assert srv.proc.wait(120) == 1
    assert "--spec-type draft-eagle3 needs a draft model: user/t-GGUF ships no eagle3-*.gguf beside its model" \
        in srv.log()


def test_an_mtp_head_from_the_repository(http_files: str, tmp_path: Path, model_path: str,  # noqa: F811
                                         make_server: Callable[..., Server]) -> None:
    """draft-mtp takes the repository's mtp-* head (here a Gemma 4 assistant) as llama-server; without one the
    model's own MTP layers would run, and this model has none: the MTP context's error, not a missing file's."""
    target, assistant = (p.read_bytes() for p in gemma4_gguf(Path(model_path)))
    _hub(http_files, "user/g-GGUF", {"g-Q4_K_M.gguf": target, "mtp-g-Q4_K_M.gguf": assistant})
    srv = _server(make_server, tmp_path / "a", http_files, "-hf", "user/g-GGUF", "--spec-type", "draft-mtp")
    assert _drafts(srv) > 0 and "NextN head(s) of mtp-g-Q4_K_M.gguf" in srv.log()
    _hub(http_files, "user/h-GGUF", {"h-Q4_K_M.gguf": target})
    srv = _server(make_server, tmp_path / "b", http_files, "-hf", "user/h-GGUF", "--spec-type", "draft-mtp",
                  wait=False)
    assert srv.proc.wait(120) == 1
    assert "failed to create MTP context" in srv.log() and "ships no" not in srv.log()


def test_an_hfd_model_of_a_head_type_sets_the_type(http_files: str, tmp_path: Path,  # noqa: F811
                                                   make_server: Callable[..., Server],
                                                   pair: tuple[bytes, bytes]) -> None:
    """-hfd naming a repository whose model is a draft head (no sidecar name): its GGUF sets the type, as -md's
    does; a given --spec-type stays and is checked against it at load."""
    target, draft = pair
    _hub(http_files, "user/t-GGUF", {"t-Q4_K_M.gguf": target})
    _hub(http_files, "user/d-GGUF", {"d-Q4_K_M.gguf": draft})
    srv = _server(make_server, tmp_path / "a", http_files, "-hf", "user/t-GGUF", "-hfd", "user/d-GGUF")
    assert _drafts(srv) > 0 and "DSpark draft d-Q4_K_M.gguf" in srv.log()
    srv = _server(make_server, tmp_path / "b", http_files, "-hf", "user/t-GGUF", "-hfd", "user/d-GGUF",
                  "--spec-type", "draft-simple", wait=False)
    assert srv.proc.wait(120) == 1
    assert "not a model draft-simple can run" in srv.log()


def test_offline_without_the_head_is_an_error(tmp_path: Path, model_path: str) -> None:
    from tests.test_flags_download import _hub_repo

    _hub_repo(tmp_path, "user/t-GGUF", {"t-Q4_K_M.gguf": Path(model_path)})
    proc = run("-m", "llamatwist", "-hf", "user/t-GGUF", "--spec-type", "draft-dflash", "--offline",
               env={"HF_HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert "user/t-GGUF ships no dflash-*.gguf beside its model" in proc.stderr


def test_a_preset_repository_makes_a_router(http_files: str, tmp_path: Path, model_path: str,  # noqa: F811
                                            make_server: Callable[..., Server]) -> None:
    """-hf naming a repository with a preset.ini at its root: a router serving its presets, as llama-server (which
    warns that a preset is to be trusted); a preset's hf-repo model is fetched when it loads."""
    _hub(http_files, "user/presets", {"preset.ini": b"[tiny]\nhf-repo = user/m-GGUF:Q4_1\nctx-size = 512\n"
                                                    b"[tiny-2]\nhf-repo = user/m-GGUF:Q4_1\nparallel = 2\n"})
    _hub(http_files, "user/m-GGUF", {"m-Q4_1.gguf": Path(model_path).read_bytes()})
    srv = _server(make_server, tmp_path, http_files, "-hf", "user/presets")
    assert "using preset.ini from HF repo 'user/presets'" in srv.log()
    listed = {m["id"] for m in srv.get("/v1/models").json()["data"]}
    assert {"tiny", "tiny-2"} <= listed
    r = srv.post("/completion", {"model": "tiny", "prompt": "Hello", "n_predict": 2})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2, r.text
    assert (tmp_path / "hub" / "models--user--m-GGUF" / "snapshots" / "c0ffee" / "m-Q4_1.gguf").is_file()
