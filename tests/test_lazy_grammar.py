"""``grammar_lazy`` + ``grammar_triggers`` (free output until a trigger, then the grammar from the trigger on)
and ``preserved_tokens`` (control tokens written as their text), as llama-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Server

PROMPT = "Here is a short story about a cat:"
BASE = {"prompt": PROMPT, "n_predict": 24, "temperature": 0, "seed": 1, "ignore_eos": True}
GRAMMAR = 'root ::= WORD " is forty-two."\nWORD ::= [A-Za-z]{1,10}'


@pytest.fixture(scope="module")
def srv(model_path: str) -> Iterator[Server]:
    s = Server(["-m", model_path, "-np", "1", "-c", "1024", "-t", "2"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def free(srv: Server) -> dict[str, Any]:
    r = srv.post("/completion", {**BASE, "return_tokens": True}).json()
    assert len(r["content"].split()) > 6
    return dict(r)


def test_free_until_a_word_trigger(srv: Server, free: dict[str, Any]) -> None:
    words = free["content"].split()
    word = next(w for w in words[2:] if w.isalpha() and len(w) >= 3)  # a word into the free output
    before = free["content"][: free["content"].index(word)]
    body = {**BASE, "grammar": GRAMMAR, "grammar_lazy": True, "grammar_triggers": [{"type": 2, "value": word}]}
    r = srv.post("/completion", body).json()
    # the same free text up to the trigger, then the grammar, which the trigger word began
    assert r["content"] == before + word + " is forty-two.", r["content"]
    assert r["stop_type"] == "eos"
    eager = srv.post("/completion", {**BASE, "grammar": GRAMMAR}).json()["content"]
    assert eager.endswith(" is forty-two.") and not eager.startswith(before)
    settings = r["generation_settings"]
    assert settings["grammar_lazy"] is True and settings["grammar_triggers"] == [{"type": 2, "value": word}]


def test_token_trigger_and_preserved_word(srv: Server, free: dict[str, Any]) -> None:
    token = free["tokens"][2]  # the third generated token
    piece = srv.post("/detokenize", {"tokens": [token]}).json()["content"]
    before = srv.post("/detokenize", {"tokens": free["tokens"][:2]}).json()["content"]
    grammar = f'root ::= {_gbnf(piece)} " is forty-two."'
    body = {**BASE, "grammar": grammar, "grammar_lazy": True,
            "grammar_triggers": [{"type": 0, "value": piece, "token": token}]}
    r = srv.post("/completion", body).json()
    assert r["content"] == before + piece + " is forty-two.", r["content"]
    # a trigger word that is one token must be preserved (llama-server's rule), and then works as that token
    word = {**body, "grammar_triggers": [{"type": 1, "value": piece}]}
    refused = srv.post("/completion", word)
    assert refused.status_code == 400 and "preserved token" in refused.json()["error"]["message"]
    ok = srv.post("/completion", {**word, "preserved_tokens": [piece]}).json()
    assert ok["content"] == r["content"]
    assert ok["generation_settings"]["grammar_triggers"] == [{"type": 0, "value": piece, "token": token}]
    assert ok["generation_settings"]["preserved_tokens"] == [token]


def _gbnf(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_preserved_tokens_write_control_tokens(srv: Server) -> None:
    start = srv.post("/tokenize", {"content": "<|im_start|>", "parse_special": True}).json()["tokens"]
    assert len(start) == 1
    body = {"prompt": "Hi", "n_predict": 2, "temperature": 0, "logit_bias": [[start[0], 100]]}
    hidden = srv.post("/completion", body).json()
    assert hidden["tokens_predicted"] == 2 and hidden["content"] == ""  # control tokens are not text
    shown = srv.post("/completion", {**body, "preserved_tokens": ["<|im_start|>"]}).json()
    assert shown["content"] == "<|im_start|><|im_start|>"


@pytest.mark.parametrize("extra, needle", [
    ({"grammar_lazy": "yes"}, "'grammar_lazy' must be a boolean"),
    ({"grammar_lazy": True}, "no triggers set for lazy grammar"),
    ({"grammar_lazy": True, "grammar_triggers": {"type": 1}}, "'grammar_triggers' must be an array"),
    ({"grammar_lazy": True, "grammar_triggers": [{"type": 7, "value": "x"}]}, "'grammar_triggers[0]'"),
    ({"grammar_lazy": True, "grammar_triggers": [{"type": 1}]}, "'grammar_triggers[0]'"),
    ({"grammar_lazy": True, "grammar_triggers": [{"type": 0, "value": "x", "token": -5}]}, "grammar_triggers[0].token"),
    ({"grammar_lazy": True, "grammar_triggers": [{"type": 2, "value": "(unclosed"}]}, "invalid grammar trigger"),
    ({"preserved_tokens": "<|im_start|>"}, "'preserved_tokens' must be an array of strings"),
])  # fmt: skip
def test_bad_lazy_fields_are_400s(srv: Server, extra: dict[str, Any], needle: str) -> None:
    r = srv.post("/completion", {"prompt": "x", "n_predict": 1, "grammar": GRAMMAR, **extra})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
    assert srv.post("/completion", {"prompt": "x", "n_predict": 1}).status_code == 200
