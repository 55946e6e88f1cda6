"""Context checkpoints (-ctxcp, -cms) on a real server with a sliding-window model.

The model (scripts/make_swa_model.py) is a tiny random olmo2 with a 16-token window: its sliding KV cache
keeps 256 cells per slot here, so once a slot has run 256 positions past a point, cutting its sequence back
to that point leaves nothing for the window. A checkpoint taken near the end of the prompt is then what
lets a follow-up that diverges there reuse most of the prompt (llama-server's case: a regenerated last turn).
Cached output must equal the same request under ``cache_prompt: false`` token for token (F32 KV, no flash
attention: the layout of the cells does not move the logits).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Server
from tests.models import swa_gguf

StartServer = Callable[..., Server]

# one slot, small physical batches (checkpoints 4 + 64 and 4 tokens before a prompt's end), exact KV
ARGS = ("-np", "1", "-c", "2048", "-b", "256", "-ub", "64", "-t", "2", "-fa", "off", "-ctk", "f32", "-ctv", "f32")
N_PROMPT = 600
N_GEN = 320  # moves the 256-cell sliding cache past the prompt's end


@pytest.fixture(scope="module")
def swa_model(model_path: str) -> str:
    return str(swa_gguf(Path(model_path)))


def _prompt(srv: Server) -> list[int]:
    words = " ".join(f"w{i}" for i in range(400))
    tokens = [int(t) for t in srv.post("/tokenize", json={"content": words}).json()["tokens"]]
    assert len(tokens) >= N_PROMPT
    return tokens[:N_PROMPT]


def _complete(srv: Server, prompt: list[int], n_predict: int = 12, **extra: Any) -> dict[str, Any]:
    r = srv.post("/completion", json={"prompt": prompt, "n_predict": n_predict, "temperature": 0,
                                      "ignore_eos": True, "return_tokens": True, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _created(log: str) -> list[tuple[int, int]]:
    """(index, of) of every 'created context checkpoint I of N' line."""
    return [(int(a), int(b)) for a, b in re.findall(r"created context checkpoint (\d+) of (\d+)", log)]


def _regenerate(srv: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    """A long first request, then one that shares all but the prompt's last 10 tokens; the second run
    cached and uncached."""
    first = _prompt(srv)
    _complete(srv, first, N_GEN)
    second = [*first[:-10], *range(200, 210)]
    return _complete(srv, second), _complete(srv, second, cache_prompt=False)


def test_checkpoint_restored(make_server: StartServer, swa_model: str) -> None:
    srv = make_server("-m", swa_model, *ARGS)
    cached, fresh = _regenerate(srv)
    # the checkpoint 4 + 64 tokens before the first prompt's end; its last position is recomputed
    assert cached["timings"]["cache_n"] == N_PROMPT - 4 - 64 - 1
    assert cached["timings"]["prompt_n"] == N_PROMPT - cached["timings"]["cache_n"]
    assert fresh["timings"]["cache_n"] == 0
    assert cached["tokens"] == fresh["tokens"] and cached["content"] == fresh["content"]
    log = srv.log()
    assert "context checkpoints enabled, max = 32, min spacing = 8192" in log
    assert "restored context checkpoint (pos_min = " in log
    assert _created(log)[:2] == [(1, 32), (2, 32)]


def test_window_kept_needs_no_checkpoint(make_server: StartServer, swa_model: str) -> None:
    # while the sliding cache still holds the window before the divergence, the prefix is kept as it is
    srv = make_server("-m", swa_model, *ARGS)
    first = _prompt(srv)
    _complete(srv, first, 8)
    second = [*first[:500], *range(300, 330)]
    cached, fresh = _complete(srv, second), _complete(srv, second, cache_prompt=False)
    assert cached["timings"]["cache_n"] == 500
    assert cached["tokens"] == fresh["tokens"]
    assert "restored context checkpoint" not in srv.log()


def test_no_checkpoints_recomputes(make_server: StartServer, swa_model: str) -> None:
    srv = make_server("-m", swa_model, *ARGS, "-ctxcp", "0")
    cached, fresh = _regenerate(srv)
    assert cached["timings"]["cache_n"] == 0  # the window is gone and nothing was kept: from the start
    assert cached["tokens"] == fresh["tokens"]
    log = srv.log()
    assert "context checkpoints disabled" in log
    assert "forcing full prompt re-processing" in log
    assert not _created(log)


def _conversation(srv: Server) -> list[tuple[int, int]]:
    """Three requests in one slot, each extending the last (two checkpoints each)."""
    prompt = _prompt(srv)[:200]
    for _ in range(3):
        out = _complete(srv, prompt, 4)
        prompt = [*prompt, *out["tokens"], *range(400, 500)]
    return _created(srv.log())


def test_min_spacing(make_server: StartServer, swa_model: str) -> None:
    # -ctxcp 3: once full, -cms 0 only drops the oldest (always 3 kept) ...
    srv = make_server("-m", swa_model, *ARGS, "-ctxcp", "3", "-cms", "0")
    assert _conversation(srv) == [(1, 3), (2, 3), (3, 3), (3, 3), (3, 3), (3, 3)]
    # ... a large -cms first drops the earlier tasks' checkpoints that lie within it of the one before
    srv = make_server("-m", swa_model, *ARGS, "-ctxcp", "3", "--checkpoint-min-step", "100000")
    assert _conversation(srv) == [(1, 3), (2, 3), (2, 3), (3, 3), (2, 3), (3, 3)]


def test_full_attention_model_takes_none(make_server: StartServer, model_path: str) -> None:
    srv = make_server("-m", model_path, "-np", "1", "-c", "1024", "-t", "2", "-ctxcp", "4")
    _complete(srv, list(range(1000, 1100)), 2)
    log = srv.log()
    assert "context checkpoint" not in log


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["-cms", "-1"], {}, "--checkpoint-min-step: must be >= 0"),
    (["--checkpoint-min-step", "x"], {}, "expected an integer"),
    (["-ctxcp", "many"], {}, "--ctx-checkpoints"),
    ([], {"LLAMA_ARG_CHECKPOINT_MIN_SPACING_NT": "-5"}, "LLAMA_ARG_CHECKPOINT_MIN_SPACING_NT: must be >= 0"),
    ([], {"LLAMA_ARG_CTX_CHECKPOINTS": "x"}, "LLAMA_ARG_CTX_CHECKPOINTS"),
])
def test_bad_values(args: list[str], env: dict[str, str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "llamatwist", *args], check=False, capture_output=True,
                          text=True, cwd=REPO, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr


def test_help_lists_the_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "llamatwist", "--help"], check=True, capture_output=True,
                         text=True, cwd=REPO, timeout=60).stdout
    flat = " ".join(out.split())
    assert "-ctxcp N, --ctx-checkpoints N, --swa-checkpoints N" in flat
    assert "(default: 32) (env: LLAMA_ARG_CTX_CHECKPOINTS)" in flat
    assert "-cms N, --checkpoint-min-step N" in flat
    assert "(default: 8192) (env: LLAMA_ARG_CHECKPOINT_MIN_SPACING_NT)" in flat
