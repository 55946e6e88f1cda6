"""Issue 19 item 4 (the faults reachable from outside the decode loop): a bad model file is a clear start-up
error, and a slot save that cannot be written (the disk full) leaves no file and the slot intact."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Server

StartServer = Callable[..., Server]

# the server under a file-size limit: a write past it fails with EFBIG, as a full disk fails with ENOSPC
# (Python ignores SIGXFSZ, so the write returns the error instead of killing the process)
LIMITED = [sys.executable, "-c",
           ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000)); "
            "sys.argv[0] = 'llamatwist'; runpy.run_module('llamatwist', run_name='__main__')")]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(os.urandom(1000)), "not a GGUF file"),
        (lambda p: p.write_bytes(b""), "not a GGUF file"),
        (lambda p: p.mkdir(), "is a directory"),
        (None, "model file not found"),
        ("truncated", "is corrupted or incomplete"),
    ],
)
def test_bad_model_files_are_startup_errors(make_server: StartServer, model_path: str, tmp_path: Path,
                                            make: object, message: str) -> None:  # fmt: skip
    path = tmp_path / "model.gguf"
    if make == "truncated":
        with open(model_path, "rb") as src:
            path.write_bytes(src.read(2_000_000))
    elif callable(make):
        make(path)
    srv = make_server("-m", str(path), "-c", "512", "-t", "1", wait=False)
    assert srv.proc.wait(60) == 1
    log = srv.log()
    assert message in log, log[-2000:]
    assert "Traceback" not in log


def _larger_than_memory(model_path: str, tmp_path: Path) -> Path:
    """The real model with a sparse tail of zeros: a file bigger than this machine's memory (libllama reads
    the tensors it lists and ignores the tail)."""
    available = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    path = tmp_path / "huge.gguf"
    path.write_bytes(Path(model_path).read_bytes())
    os.truncate(path, 2 * available)
    return path


@pytest.mark.parametrize("mode", [("-lm", "none"), ("--mlock",), ("--no-mmap",)])
def test_a_model_larger_than_memory_is_a_startup_error(make_server: StartServer, model_path: str,
                                                       tmp_path: Path, mode: tuple[str, ...]) -> None:
    path = _larger_than_memory(model_path, tmp_path)
    srv = make_server("-m", str(path), *mode, "-c", "512", "-t", "1", wait=False)
    assert srv.proc.wait(60) == 1
    log = srv.log()
    assert f"model file {path} is " in log and "GiB of memory is available" in log, log[-2000:]
    assert "Traceback" not in log


def test_a_mapped_model_larger_than_memory_only_warns(make_server: StartServer, model_path: str,
                                                      tmp_path: Path) -> None:
    path = _larger_than_memory(model_path, tmp_path)
    srv = make_server("-m", str(path), "-c", "512", "-t", "1")  # mapped: pages come from the file as needed
    assert "it will be paged in from the file as it runs" in srv.log()
    assert srv.post("/completion", {"prompt": "Hi", "n_predict": 2}).status_code == 200


def test_slot_save_on_a_full_disk(make_server: StartServer, model_path: str, tmp_path: Path) -> None:
    slots = tmp_path / "slots"
    srv = make_server("-m", model_path, "-c", "1024", "-np", "2", "-t", "1", "--slot-save-path", str(slots),
                      command=LIMITED)  # fmt: skip
    prompt = "Tell me a long story about a dragon who lived under a mountain and guarded gold. " * 3
    req = {"prompt": prompt, "n_predict": 4, "temperature": 0, "id_slot": 0, "cache_prompt": True}
    first = srv.post("/completion", req).json()
    r = srv.post("/slots/0?action=save", {"filename": "big.bin"})
    assert r.status_code == 500, r.text  # the server's disk, not the client's mistake
    assert r.json()["error"]["message"].startswith("cannot write big.bin: "), r.text
    assert os.listdir(slots) == []  # no partial file, no temporary left behind
    # the slot is intact: the same request reuses its cache and answers the same
    again = srv.post("/completion", req).json()
    assert again["timings"]["cache_n"] > 0 and again["content"] == first["content"]
    assert srv.post("/slots/0?action=restore", {"filename": "big.bin"}).status_code == 400  # nothing to restore
    assert srv.get("/health").json() == {"status": "ok"}


def test_context_full_mid_generation_ends_that_slot_only(make_server: StartServer, model_path: str) -> None:
    import threading

    import requests

    srv = make_server("-m", model_path, "-c", "256", "-np", "2", "-t", "1")
    long: dict[str, object] = {}

    def fill() -> None:
        body = {"prompt": "Once upon a time " * 5, "n_predict": 1000, "ignore_eos": True, "id_slot": 0}
        long.update(requests.post(srv.url + "/completion", json=body, timeout=300).json())

    worker = threading.Thread(target=fill)
    worker.start()
    shorts = []
    while worker.is_alive() or not shorts:  # the other slot keeps serving while slot 0 fills its context
        r = srv.post("/completion", {"prompt": "Hi", "n_predict": 4, "id_slot": 1})
        shorts.append((r.status_code, r.json().get("tokens_predicted")))
    worker.join()
    # the full slot ends cleanly with a length finish, short of its n_predict
    assert long["stop_type"] == "limit" and 0 < long["tokens_predicted"] < 1000, long  # type: ignore[operator]
    assert all(s == (200, 4) for s in shorts), shorts
    chat = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 50}], "max_tokens": 500,
                                                     "ignore_eos": True})
    assert chat.status_code == 200 and chat.json()["choices"][0]["finish_reason"] == "length", chat.text
    assert srv.get("/health").json() == {"status": "ok"}


def test_a_failed_decode_ends_its_batch_and_the_server_keeps_serving(
    make_server: StartServer, model_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama_decode failing (libllama's own abort path, triggered by the test hook in engine/context.py) for
    the 2nd decode: a stream mid-generation gets an error event; later requests are served as if it had not
    happened (the failed batch's cells are gone from the KV cache)."""
    import json

    import requests

    body = {"prompt": "The capital of France is", "n_predict": 6, "temperature": 0, "seed": 1}
    args = ("-m", model_path, "-c", "512", "-np", "2", "-t", "1", "--no-warmup")
    reference = make_server(*args).post("/completion", body).json()["content"]

    monkeypatch.setenv("LLAMATWIST_FAULT_DECODE_ABORT", "2")
    srv = make_server(*args)
    events = []
    with requests.post(srv.url + "/completion", json={**body, "stream": True}, stream=True, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    assert "content" in events[0] and events[0]["stop"] is False  # the token sampled from the prompt's decode
    assert events[-1]["error"]["code"] == 500 and "decode aborted" in events[-1]["error"]["message"], events
    assert "llama_decode failed" in srv.log()

    for _ in range(2):  # the next requests decode normally, from a clean sequence
        again = srv.post("/completion", body)
        assert again.status_code == 200 and again.json()["content"] == reference, again.text
    assert all(not s["is_processing"] for s in srv.get("/slots").json())
    assert srv.get("/health").json() == {"status": "ok"}


# the server with a bug planted in the decode loop: its third step raises (a fault injected from outside; the
# engine itself is real)
BUGGY_STEP = [sys.executable, "-c",
              ("import runpy, sys\n"
               "import llamatwist.runtime.step as step\n"
               "run, calls = step.Step.run, []\n"
               "def buggy(self):\n"
               "    calls.append(1)\n"
               "    if len(calls) == 3:\n"
               "        raise RuntimeError('planted bug')\n"
               "    return run(self)\n"
               "step.Step.run = buggy\n"
               "sys.argv[0] = 'llamatwist'; runpy.run_module('llamatwist', run_name='__main__')")]  # fmt: skip


def test_a_crashed_decode_loop_fails_its_requests_and_exits(make_server: StartServer, model_path: str) -> None:
    # nothing would serve the queue any more: the request fails and the process exits non-zero (llama-server
    # aborts), so that a supervisor (systemd's Restart=on-failure) starts it again, rather than hanging clients
    srv = make_server("-m", model_path, "-c", "512", "-t", "1", command=BUGGY_STEP)
    r = srv.post("/completion", {"prompt": "Hi", "n_predict": 16})
    assert r.status_code == 500, r.text
    assert r.json()["error"] == {"code": 500, "message": "decode loop crashed", "type": "server_error"}
    assert srv.proc.wait(30) == 1
    log = srv.log()
    assert "RuntimeError: planted bug" in log and "error: decode loop crashed: planted bug" in log, log[-2000:]
