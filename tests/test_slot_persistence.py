"""Slot save / restore / erase (POST /slots/{id}?action=...) and the slot file format."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from llamatwist.runtime.slotfile import SlotFile, SlotFileError, read_slot_file, validate_filename, write_slot_file
from tests.conftest import REPO

PROMPT = "In a distant galaxy there was a small planet where"


@pytest.mark.parametrize("name", ["", ".hidden", "../x", "a/b", "a\\b", "/abs", "x\x00y", 5, None, "a" * 300])
def test_bad_filenames(name: Any) -> None:
    with pytest.raises(SlotFileError):
        validate_filename(name)


def test_file_round_trip_and_model_check(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    n = write_slot_file(path, SlotFile("model-a", [1, 2, 3], b"state"))
    assert n == path.stat().st_size
    back = read_slot_file(path, "model-a")
    assert back.tokens == [1, 2, 3] and back.state == b"state"
    with pytest.raises(SlotFileError, match="different model"):
        read_slot_file(path, "model-b")
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(SlotFileError):
        read_slot_file(path, "model-a")
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(SlotFileError, match="not a llamatwist slot file"):
        read_slot_file(tmp_path / "junk", "model-a")


def test_kill_mid_save_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    """A writer killed with SIGKILL at a random point leaves either no file or a whole one."""
    script = (
        "import sys; from pathlib import Path; from llamatwist.runtime.slotfile import SlotFile, write_slot_file\n"
        "big = b'x' * (64 << 20)\n"
        "while True:\n"
        "    write_slot_file(Path(sys.argv[1]), SlotFile('m', list(range(1000)), big))\n"
    )
    target = tmp_path / "slot.bin"
    for delay in (0.05, 0.2, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=REPO)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if target.exists():
            saved = read_slot_file(target, "m")  # whole, or this raises
            assert len(saved.state) == 64 << 20 and saved.tokens == list(range(1000))


def test_save_restore_erase_through_the_server(make_server: Any, model_path: str, tmp_path: Path) -> None:
    save_dir = tmp_path / "slots"
    srv = make_server("-m", model_path, "-np", "2", "-c", "2048", "--slot-save-path", str(save_dir))
    req = {"prompt": PROMPT, "n_predict": 8, "temperature": 0, "id_slot": 0}
    first = srv.post("/completion", req).json()
    saved = srv.post("/slots/0?action=save", {"filename": "s0.bin"}).json()
    assert saved["id_slot"] == 0 and saved["filename"] == "s0.bin" and saved["n_saved"] > 0
    assert (save_dir / "s0.bin").stat().st_size == saved["n_written"]
    erased = srv.post("/slots/0?action=erase").json()
    assert erased == {"id_slot": 0, "n_erased": saved["n_saved"]}
    restored = srv.post("/slots/1?action=restore", {"filename": "s0.bin"}).json()
    assert restored["n_restored"] == saved["n_saved"] and restored["id_slot"] == 1
    again = srv.post("/completion", {**req, "id_slot": 1}).json()
    assert again["timings"]["cache_n"] > 0  # the restored KV is reused
    assert again["content"] == first["content"]
    # bad input
    assert srv.post("/slots/0?action=save", {"filename": "../evil"}).status_code == 400
    assert srv.post("/slots/0?action=save", {"filename": ".hidden"}).status_code == 400
    assert srv.post("/slots/0?action=explode", {"filename": "x"}).status_code == 400
    assert srv.post("/slots/9?action=erase").status_code == 400
    missing = srv.post("/slots/0?action=restore", {"filename": "nope.bin"})
    assert missing.status_code == 400 and "not found" in missing.json()["error"]["message"]
    (save_dir / "junk.bin").write_bytes(b"junk")
    assert srv.post("/slots/0?action=restore", {"filename": "junk.bin"}).status_code == 400
    assert srv.post("/completion", {"prompt": "x", "n_predict": 2}).status_code == 200


def test_slot_actions_need_the_flag(server: Any) -> None:
    r = server.post("/slots/0?action=erase")
    assert r.status_code == 501 and "--slot-save-path" in r.json()["error"]["message"]


def test_an_action_on_a_busy_slot_waits_for_its_task(make_server: Any, model_path: str, tmp_path: Path) -> None:
    """As llama-server (it defers the task): a save sent while the slot generates runs once the slot is free,
    and saves everything that task left; the other slot keeps serving meanwhile."""
    import threading

    import requests

    save_dir = tmp_path / "slots"
    srv = make_server("-m", model_path, "-np", "2", "-c", "2048", "-t", "1", "--slot-save-path", str(save_dir))
    long = {"prompt": PROMPT, "n_predict": 64, "ignore_eos": True, "id_slot": 0}
    done: dict[str, Any] = {}

    def generate() -> None:
        done.update(requests.post(srv.url + "/completion", json=long, timeout=120).json())
        done["at"] = time.monotonic()

    worker = threading.Thread(target=generate)
    worker.start()
    while not srv.get("/slots").json()[0]["is_processing"]:
        time.sleep(0.02)
    save = srv.post("/slots/0?action=save", {"filename": "busy.bin"})
    saved_at = time.monotonic()
    worker.join()
    assert save.status_code == 200, save.text
    assert saved_at >= done["at"] - 0.5  # answered only once the task was over
    n_tokens = done["tokens_evaluated"] + done["tokens_predicted"] - 1  # the last token is sampled, not decoded
    assert save.json()["n_saved"] == n_tokens
    assert srv.post("/completion", {"prompt": "x", "n_predict": 2, "id_slot": 1}).status_code == 200


def test_restore_gives_back_parked_prefixes_when_the_pool_is_full(make_server: Any, model_path: str,
                                                                 tmp_path: Path) -> None:
    """One KV pool for every slot (-kvu) holding parked prefixes: a restore evicts them to fit (the soak's
    "does not fit this slot's context" under load)."""
    srv = make_server("-m", model_path, "-np", "2", "-kvu", "-c", "512", "-t", "1", "--metrics",
                      "--slot-save-path", str(tmp_path / "slots"))
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
             "nu", "xi", "omicron", "pi", "rho"]

    def prompt(seed: int, n: int) -> str:
        return " ".join(words[(seed * 7 + i * 3) % len(words)] + str(seed) for i in range(n))

    first = srv.post("/completion", {"prompt": prompt(1, 80), "n_predict": 4, "id_slot": 0}).json()
    saved = srv.post("/slots/0?action=save", {"filename": "a.bin"}).json()
    assert saved["n_saved"] > 170, (first["timings"], saved)
    # slot 0 takes other work, its old content parked: the pool (512 cells) has no room left for a.bin
    srv.post("/completion", {"prompt": prompt(2, 80), "n_predict": 4, "id_slot": 0})
    assert "llamacpp:prefix_cache_entries 1" in srv.get("/metrics").text
    restored = srv.post("/slots/1?action=restore", {"filename": "a.bin"})
    assert restored.status_code == 200, restored.text
    assert restored.json()["n_restored"] == saved["n_saved"]
    again = srv.post("/completion", {"prompt": prompt(1, 80), "n_predict": 4, "id_slot": 1}).json()
    assert again["timings"]["cache_n"] >= saved["n_saved"] - 4 and again["content"] == first["content"]


def test_a_restore_purges_idle_slots_of_a_full_pool(make_server: Any, model_path: str, tmp_path: Path) -> None:
    """One 1024-cell pool: a saved 640-token state comes back into a slot while another idle slot's prompt
    holds the cells it needs; that prompt is purged, as for a new prompt (it used to fail the restore)."""
    save_dir = tmp_path / "slots"
    save_dir.mkdir()
    srv = make_server("-m", model_path, "-c", "1024", "-t", "2", "--slot-save-path", str(save_dir))
    first, second = (" ".join(f"{word} {k}" for k in range(150)) for word in ("apple", "river"))
    srv.post("/completion", {"prompt": first, "n_predict": 4, "temperature": 0, "id_slot": 0})
    assert srv.post("/slots/0?action=save", {"filename": "first.bin"}).status_code == 200
    srv.post("/completion", {"prompt": second, "n_predict": 4, "temperature": 0, "id_slot": 1})  # purges slot 0
    restored = srv.post("/slots/2?action=restore", {"filename": "first.bin"})
    assert restored.status_code == 200, restored.text
    assert "purging slot 1 with" in srv.log()
    again = srv.post("/completion", {"prompt": first, "n_predict": 4, "temperature": 0, "id_slot": 2}).json()
    assert again["timings"]["cache_n"] > 600  # the restored state is reused
