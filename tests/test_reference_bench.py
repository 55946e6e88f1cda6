"""The side-by-side tooling of issue 20's GPU check, run for real on the CPU build.

llama.cpp's own llama-server and llama-quantize, built from the same source and configuration as the
libraries llamatwist loads (``build_native.py --reference``; the first build takes minutes, then it is
cached with the libraries); a random-weight model with SmolLM2's tokenizer (``scripts/make_llama_model.py``,
what the GPU machine builds because no model can be downloaded there) quantized by that llama-quantize;
``bench/vs_llama_server.py`` driving both servers with the same flags; and the device kit's packed
llama.cpp source (``scripts/device_kit.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.models import _script

# The first reference build compiles llama.cpp's common library and server: minutes on 2 cores.
pytestmark = pytest.mark.timeout(1800)

REPO = Path(__file__).resolve().parent.parent
mlm = _script("make_llama_model")
kit = _script("device_kit")


@pytest.fixture(scope="module")
def programs() -> dict[str, Path]:
    bn = kit.build_native_module()
    return dict(bn.ensure_reference(bn.ensure_native(build=False)))


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Path:
    return Path(mlm.make_vocab(tmp_path_factory.mktemp("vocab") / "vocab.gguf", Path(model_path)))


@pytest.fixture(scope="module")
def q4_model(tmp_path_factory: pytest.TempPathFactory, vocab: Path, programs: dict[str, Path]) -> Path:
    d = tmp_path_factory.mktemp("random")
    f16 = mlm.make(d / "tiny-f16.gguf", vocab, shape=mlm.SHAPES["tiny"], dtype="f16")
    q4 = d / "tiny-q4_1.gguf"
    proc = subprocess.run([str(programs["llama-quantize"]), str(f16), str(q4), "Q4_1"], check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return q4


@pytest.fixture
def random_server(q4_model: Path) -> Iterator[Server]:
    srv = Server(["-m", str(q4_model), "-c", "512", "-np", "1", "-t", "2"])
    yield srv
    srv.stop()


def test_the_vocabulary_file_holds_the_tokenizer_only(vocab: Path, model_path: str) -> None:
    import gguf

    reader = gguf.GGUFReader(vocab)
    assert len(reader.tensors) == 0
    assert vocab.stat().st_size < 4 * 2**20  # what the device kit carries
    base = gguf.GGUFReader(model_path)
    names = {f for f in base.fields if f.startswith("tokenizer.")}
    assert names and names <= set(reader.fields)


def test_a_random_model_tokenizes_as_the_default_model(random_server: Server, server: Server) -> None:
    text = "The capital of France is Paris. def fibonacci(n): return n"
    ours = random_server.post("/tokenize", {"content": text}).json()["tokens"]
    assert ours == server.post("/tokenize", {"content": text}).json()["tokens"]
    props = random_server.get("/props").json()
    assert props["model_path"].endswith("tiny-q4_1.gguf")
    out = random_server.post("/completion", {"prompt": text, "n_predict": 8, "temperature": 0,
                                             "ignore_eos": True}).json()
    assert out["tokens_predicted"] == 8 and out["content"]


def test_vs_llama_server_drives_both_with_the_same_flags(programs: dict[str, Path], q4_model: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "vs.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.vs_llama_server", "--llama-server", str(programs["llama-server"]),
         "-m", str(q4_model), "--clients", "1,2", "--duration", "3", "--warmup", "1", "--rounds", "1",
         "-n", "16", "-c", "512", "-t", "2", "--out", str(out)],
        cwd=REPO, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "0 request errors" in proc.stderr
    data = json.loads(out.read_text())
    assert [row["clients"] for row in data["summary"]] == [1, 2]
    for row in data["summary"]:
        assert row["llama-server_tok_s"] > 0 and row["llamatwist_tok_s"] > 0
        assert row["ratio"] == pytest.approx(row["llamatwist_tok_s"] / row["llama-server_tok_s"])
    # each server really streamed tokens, and no request of either failed
    for runs in data["runs"].values():
        assert runs[0]["tok_s"] > 0 and runs[0]["errors"] == 0


def test_the_device_kit_source_rebuilds_the_pinned_tree(tmp_path: Path) -> None:
    tar = kit.pack_source(tmp_path / "llama.cpp.tar.gz")
    assert tar.stat().st_size < 20 * 2**20
    dest = tmp_path / "third_party" / "llama.cpp"
    assert kit.unpack_source(tar, dest)
    for part in ("CMakeLists.txt", "include/llama.h", "ggml/src/ggml-cuda/ggml-cuda.cu", "tools/server/server.cpp",
                 "tools/mtmd/mtmd.h"):
        assert (dest / part).is_file(), part
    assert not (dest / "models").exists() and not (dest / "docs").exists()
    assert kit.unpack_source(tar, dest)  # already there: a no-op
