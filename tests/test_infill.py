"""/infill: the FIM layout (pure) and a real server on a model with FIM tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.infill import InfillRequest, format_infill, parse_infill
from llamatwist.engine.model import FimTokens
from tests.models import smollm2_fim_gguf

FIM = FimTokens(pre=100, suf=101, mid=102, rep=103, sep=104, bos=1, add_bos=True)


def fake_tokenize(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_layout_psm_with_repo_and_files() -> None:
    req = InfillRequest(prefix="ab", suffix="cd", extra=[("f.py", "x")], prompt="p")
    toks = format_infill(fake_tokenize, FIM, req, n_batch=64, n_predict=8, n_ctx=512, spm_infill=False)
    expected = (
        [103, *fake_tokenize("myproject\n"), 104, *fake_tokenize("f.py\n"), ord("x"), 104, *fake_tokenize("filename\n")]
        + [1, 100, ord("a"), ord("b"), ord("p"), 101, ord("c"), ord("d"), 102]
    )
    assert toks == expected


def test_layout_spm_puts_suffix_first() -> None:
    req = InfillRequest(prefix="ab", suffix="cd", extra=[], prompt="")
    fim = FimTokens(pre=100, suf=101, mid=102, rep=-1, sep=-1, bos=1, add_bos=False)
    toks = format_infill(fake_tokenize, fim, req, n_batch=64, n_predict=8, n_ctx=512, spm_infill=True)
    assert toks == [101, ord("c"), ord("d"), 100, ord("a"), ord("b"), 102]


def test_prefix_and_suffix_are_truncated_to_the_batch() -> None:
    req = InfillRequest(prefix="a" * 100, suffix="b" * 100, extra=[], prompt="")
    fim = FimTokens(pre=100, suf=101, mid=102, rep=-1, sep=-1, bos=1, add_bos=False)
    toks = format_infill(fake_tokenize, fim, req, n_batch=40, n_predict=8, n_ctx=512, spm_infill=False)
    assert toks.count(ord("a")) == 30 and toks.count(ord("b")) == 8  # 3/4 and 1/4 of the batch, minus markers


def test_parse_infill_errors() -> None:
    for body in ({}, {"input_prefix": "a"}, {"input_prefix": 1, "input_suffix": ""},
                 {"input_prefix": "", "input_suffix": "", "prompt": 3},
                 {"input_prefix": "", "input_suffix": "", "input_extra": "x"},
                 {"input_prefix": "", "input_suffix": "", "input_extra": [{"filename": "a"}]}):
        with pytest.raises(InvalidRequest):
            parse_infill(body)


@pytest.fixture(scope="module")
def fim_model(model_path: str) -> Path:
    return smollm2_fim_gguf(Path(model_path))


def test_infill_on_a_real_server(make_server: Any, fim_model: Path) -> None:
    srv = make_server("-m", str(fim_model), "-c", "1024", "-np", "1")
    body = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n", "n_predict": 6, "temperature": 0,
            "input_extra": [{"filename": "util.py", "text": "x = 1\n"}]}
    r = srv.post("/infill", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["tokens_predicted"] <= 6 and out["stop"] is True
    n = out["tokens_evaluated"]
    # the prompt holds the FIM markers: prefix, suffix, middle and file separators
    assert n > len(srv.post("/tokenize", {"content": body["input_prefix"]}).json()["tokens"]) + 3
    streamed = srv.post("/infill", {**body, "stream": True}, stream=True)
    events = [line for line in streamed.iter_lines() if line]
    assert events[-1].startswith(b"data: ") and b'"stop":true' in events[-1]
    assert srv.post("/infill", {"input_prefix": "x"}).status_code == 400


def test_infill_without_fim_tokens_is_a_clear_400(server: Any) -> None:
    r = server.post("/infill", {"input_prefix": "a", "input_suffix": "b"})
    assert r.status_code == 400
    assert "prefix token is missing" in r.json()["error"]["message"]


def test_v1_completions_suffix_fills_the_middle(make_server: Any, fim_model: Path) -> None:
    """OpenAI's ``suffix`` on a model with FIM tokens: the prompt is the prefix, laid out as /infill does."""
    srv = make_server("-m", str(fim_model), "-c", "1024", "-np", "2")
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    greedy = {"temperature": 0, "ignore_eos": True, "cache_prompt": False}
    infill = srv.post("/infill", {"input_prefix": prefix, "input_suffix": suffix, "n_predict": 6, **greedy}).json()
    r = srv.post("/v1/completions", {"prompt": prefix, "suffix": suffix, "max_tokens": 6, "echo": True, **greedy})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["text"] == prefix + infill["content"]  # echo shows the client's prompt, not the layout
    assert out["usage"]["prompt_tokens"] == infill["tokens_evaluated"]
    plain = srv.post("/v1/completions", {"prompt": prefix, "max_tokens": 6, **greedy}).json()
    assert out["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 2  # the suffix and the FIM markers
    streamed = srv.post("/v1/completions", {"prompt": prefix, "suffix": suffix, "max_tokens": 6, "stream": True,
                                            **greedy}, stream=True)
    chunks = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith(b"data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == infill["content"]
    bad = srv.post("/v1/completions", {"prompt": [1, 2, 3], "suffix": suffix})
    assert bad.status_code == 400 and "suffix" in bad.json()["error"]["message"]
    assert srv.post("/v1/completions", {"prompt": prefix, "max_tokens": 1}).status_code == 200  # still serving
