"""Reasoning output: the --reasoning-budget constraint (unit) and thinking through a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import requests

from llamatwist.api.chatformat import ReasoningDefaults, build_formatter
from llamatwist.config import ServerConfig
from llamatwist.constrain.base import Constraint
from llamatwist.constrain.reasoning_budget import (
    BudgetState,
    ReasoningBudget,
    ReasoningBudgetConstraint,
    ReasoningBudgetFactory,
    utf8_is_complete,
)
from tests.conftest import Server

# a toy vocabulary: 1,2 = "<think>", 3 = "</think>", 7,8 = the budget message, 5 = half a UTF-8 character
N_VOCAB = 12
PIECES = [b"a"] * N_VOCAB
PIECES[5] = "é".encode()[:1]
START, END, MESSAGE = (1, 2), (3,), (7, 8)


def budget(n: int, prefill: tuple[int, ...] = ()) -> ReasoningBudget:
    return ReasoningBudget(start=START, ends=(END,), forced=MESSAGE + END, budget=n, pieces=PIECES,
                           n_vocab=N_VOCAB, prefill=prefill)


def feed(c: Constraint, tokens: list[int]) -> None:
    for t in tokens:
        c.accept(t)


def only(c: Constraint) -> int:
    logits = np.zeros(N_VOCAB, dtype=np.float32)
    c.fill_mask(logits)
    allowed = np.flatnonzero(np.isfinite(logits))
    assert len(allowed) == 1, allowed
    assert c.allowed_mask().tolist() == np.isfinite(logits).tolist()
    return int(allowed[0])


class Inner:
    """An inner constraint allowing tokens 9..11, finished after two of them."""

    def __init__(self) -> None:
        self.accepted: list[int] = []

    def fill_mask(self, logits: npt.NDArray[np.float32]) -> None:
        logits[:9] = -np.inf

    def allowed_mask(self) -> npt.NDArray[np.bool_]:
        return np.arange(N_VOCAB) >= 9

    def accept(self, token: int) -> None:
        assert token >= 9, token
        self.accepted.append(token)

    def is_finished(self) -> bool:
        return len(self.accepted) >= 2

    def is_accepting(self) -> bool:
        return self.is_finished()

    def reset(self) -> None:
        self.accepted.clear()


def test_utf8_is_complete() -> None:
    assert utf8_is_complete(b"abc") and utf8_is_complete("é".encode()) and utf8_is_complete(b"")
    assert not utf8_is_complete("é".encode()[:1]) and not utf8_is_complete("€".encode()[:2])
    assert utf8_is_complete("a€".encode()) and not utf8_is_complete("😀".encode()[:3])


def test_budget_counts_then_forces_message_and_end_tag() -> None:
    c = ReasoningBudgetConstraint(budget(2), None)
    logits = np.arange(N_VOCAB, dtype=np.float32)
    c.fill_mask(logits)
    assert np.isfinite(logits).all()  # idle: no effect
    feed(c, [4, *START])
    assert c.state is BudgetState.COUNTING
    feed(c, [4, 4])
    assert c.state is BudgetState.FORCING
    forced = []
    while c.state is BudgetState.FORCING:
        forced.append(only(c))
        c.accept(forced[-1])
    assert forced == [7, 8, 3] and c.state is BudgetState.DONE
    c.accept(4)  # passthrough after the block
    assert c.state is BudgetState.DONE and not c.is_finished()
    feed(c, START)  # a second block gets a fresh budget
    assert c.state is BudgetState.COUNTING and c.remaining == 2


def test_natural_end_and_zero_budget_and_prefill() -> None:
    c = ReasoningBudgetConstraint(budget(5), None)
    feed(c, [*START, 4, *END])
    assert c.state is BudgetState.DONE
    zero = ReasoningBudgetConstraint(budget(0, prefill=(6, *START)), None)  # the prompt opened the block
    assert zero.state is BudgetState.FORCING and only(zero) == 7
    closed = ReasoningBudgetConstraint(budget(0, prefill=(*START, *END)), None)  # enable_thinking off
    assert closed.state is BudgetState.DONE
    unlimited = ReasoningBudgetConstraint(budget(-1, prefill=START), None)
    feed(unlimited, [4] * 50)
    assert unlimited.state is BudgetState.COUNTING


def test_budget_waits_for_a_whole_utf8_character() -> None:
    c = ReasoningBudgetConstraint(budget(1, prefill=START), None)
    c.accept(5)  # the budget is spent on the first byte of "é"
    assert c.state is BudgetState.WAITING_UTF8
    c.accept(4)
    assert c.state is BudgetState.FORCING


def test_inner_constraint_applies_outside_the_thinking_block() -> None:
    factory = ReasoningBudgetFactory(budget(1, prefill=START), None)
    assert factory.new().inner is None
    c = ReasoningBudgetConstraint(budget(1, prefill=START), Inner())
    inner = c.inner
    assert isinstance(inner, Inner)
    logits = np.zeros(N_VOCAB, dtype=np.float32)
    c.fill_mask(logits)
    assert np.isfinite(logits).all()  # thinking: the inner grammar waits
    c.accept(4)
    forced = []
    for _ in range(3):
        forced.append(only(c))
        c.accept(forced[-1])
    assert forced == [7, 8, 3]
    assert inner.accepted == [] and not c.is_finished()
    logits = np.zeros(N_VOCAB, dtype=np.float32)
    c.fill_mask(logits)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == [9, 10, 11]
    feed(c, [9, 10])
    assert inner.accepted == [9, 10] and c.is_finished() and c.is_accepting()
    c.reset()
    assert c.state is BudgetState.COUNTING and inner.accepted == []


def test_budget_spec_needs_markers() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        ReasoningBudget(start=(), ends=(END,), forced=END, budget=1, pieces=PIECES, n_vocab=N_VOCAB)



# -- the server's reasoning flags and a template that opens <think> ----------

THINK_TEMPLATE = (
    "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' + (m['content'] or '') + '<|im_end|>\\n' -}}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and not enable_thinking -%}{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}{{- '<think>\\n' -}}{%- endif -%}{%- endif -%}"
)
ASK = [{"role": "user", "content": "What is the capital of France?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}


def test_reasoning_flags_reach_the_template() -> None:
    config = ServerConfig(reasoning="off", reasoning_effort="high", reasoning_budget=3, reasoning_format="none")
    fmt = build_formatter(config, THINK_TEMPLATE, None, "", "", False, False)
    assert fmt.cli_kwargs["enable_thinking"] is False and fmt.cli_kwargs["reasoning_effort"] == "high"
    assert fmt.reasoning == ReasoningDefaults("none", 3, "")
    assert fmt.may_think and not fmt.enable_thinking({})
    assert fmt.enable_thinking({"chat_template_kwargs": {"enable_thinking": True}})
    assert not fmt.enable_thinking({"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "none"})
    assert "enable_thinking" not in build_formatter(ServerConfig(), THINK_TEMPLATE, None, "", "", False, False).cli_kwargs


@pytest.fixture(scope="module")
def thinker(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    template = tmp_path_factory.mktemp("think") / "think.jinja"
    template.write_text(THINK_TEMPLATE)
    srv = Server(["-m", model_path, "-c", "2048", "-np", "2", "-t", "2", "--chat-template-file", str(template),
                  "--reasoning-budget", "0", "--reasoning-budget-message", " Enough."])
    yield srv
    srv.stop()


# What the model writes depends on the CPU's SIMD path (greedy text of a tiny quantized model), and it may
# well close the block or end the reply itself. So every request here biases one word so strongly that the
# model writes nothing else wherever it is free: the text shows exactly what the budget forced, and where.
WORD = " blue"


@pytest.fixture(scope="module")
def word_bias(thinker: Server) -> dict[str, float]:
    (token,) = thinker.post("/tokenize", {"content": WORD}).json()["tokens"]
    return {str(token): 100.0}


def chat(srv: Server, bias: dict[str, float], **body: Any) -> dict[str, Any]:
    r = srv.post("/v1/chat/completions", {"messages": ASK, "max_tokens": 40, "temperature": 0, "logit_bias": bias,
                                          **body})
    assert r.status_code == 200, r.text
    choice: dict[str, Any] = r.json()["choices"][0]
    return choice


def words(n: int) -> str:
    return (WORD * n).strip()


# The reasoning starts with the "\n" the prompt wrote after <think> and keeps the model's spaces, as
# llama-server's does after DeepSeek R1's "<think>\n" (this template shows no reasoning in its history, so
# the bare markers are all that llamatwist reads as them)
LEAD = "\n"


def test_budget_zero_closes_the_block_at_once(thinker: Server, word_bias: dict[str, float]) -> None:
    choice = chat(thinker, word_bias)  # --reasoning-budget 0: message and </think> forced first
    msg = choice["message"]
    assert msg["reasoning_content"] == LEAD + " Enough."
    # everything after the forced end is the answer
    assert choice["finish_reason"] == "length" and msg["content"].startswith(WORD * 20)
    assert msg["content"] == WORD * msg["content"].count(WORD.strip())


def test_small_budget_forces_the_end_tag(thinker: Server, word_bias: dict[str, float]) -> None:
    split = chat(thinker, word_bias, reasoning_budget_tokens=5)["message"]
    # as in llama.cpp the budget counts from the start tag, the prompt's own "\n" after <think> included:
    # four tokens of thought, then the message
    assert split["reasoning_content"] == LEAD + WORD * 4 + " Enough."
    assert split["content"].startswith(WORD * 20)
    raw = chat(thinker, word_bias, reasoning_budget_tokens=5, reasoning_format="none")["message"]
    assert "reasoning_content" not in raw
    # with reasoning_format none the content starts with the block the prompt opened, as llama-server's
    assert raw["content"].count("</think>") == 1
    assert raw["content"].startswith("<think>" + LEAD + WORD * 4 + " Enough.</think>")
    assert raw["content"].endswith(split["content"])


def test_unlimited_budget_keeps_thinking(thinker: Server, word_bias: dict[str, float]) -> None:
    choice = chat(thinker, word_bias, reasoning_budget_tokens=10_000, max_tokens=12)
    assert choice["message"]["content"] == "" and choice["message"]["reasoning_content"] == LEAD + WORD * 12


def test_thinking_off_through_chat_template_kwargs(thinker: Server, word_bias: dict[str, float]) -> None:
    body = {"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}}
    assert thinker.post("/apply-template", body).json()["prompt"].endswith("<think>\n\n</think>\n\n")
    msg = chat(thinker, word_bias, chat_template_kwargs={"enable_thinking": False})["message"]
    # the block the prompt closed takes no budget: no forced message, all 40 tokens are the answer
    # (the prompt's block was the thinking: the reply is all content, as it is)
    assert "reasoning_content" not in msg and msg["content"] == WORD * 40


def test_budget_composes_with_a_json_schema(thinker: Server, word_bias: dict[str, float]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"schema": CITY}}
    choice = chat(thinker, word_bias, reasoning_budget_tokens=3, response_format=fmt)
    msg = choice["message"]
    assert msg["reasoning_content"] == LEAD + WORD * 2 + " Enough."  # budget 3, the prompt's "\n" included
    assert choice["finish_reason"] == "stop"
    assert set(json.loads(msg["content"])) == {"city"}  # the schema applies after </think>


def test_streamed_reasoning_matches(thinker: Server) -> None:
    # the model's own text this time, the same both ways (the prompt evaluated afresh each time)
    full = chat(thinker, {}, reasoning_budget_tokens=5, cache_prompt=False)["message"]
    r = requests.post(thinker.url + "/v1/chat/completions", json={
        "messages": ASK, "max_tokens": 40, "temperature": 0, "reasoning_budget_tokens": 5, "stream": True,
        "cache_prompt": False}, timeout=120)
    deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in r.content.split(b"\n\n") if e.startswith(b"data: {")]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == full["reasoning_content"]
    assert "".join(d.get("content") or "" for d in deltas) == full["content"]


def test_reasoning_control_ends_thinking_at_runtime(thinker: Server, word_bias: dict[str, float]) -> None:
    """llama-server's POST /v1/chat/completions/control: a streamed completion with reasoning_control closes its
    thinking block when asked (message and end tag forced), then answers."""
    body = {"messages": ASK, "max_tokens": 400, "temperature": 0, "logit_bias": word_bias, "stream": True,
            "reasoning_budget_tokens": 10_000, "reasoning_control": True}
    control = thinker.url + "/v1/chat/completions/control"
    with requests.post(thinker.url + "/v1/chat/completions", json=body, stream=True, timeout=120) as r:
        events = (json.loads(line[6:]) for line in r.iter_lines() if line.startswith(b"data: {"))
        first = [next(events) for _ in range(6)]
        cid = first[0]["id"]
        assert requests.post(control, json={"id": cid, "action": "reasoning_end"}, timeout=30).json() == {
            "success": True}
        rest = list(events)
    deltas = [e["choices"][0]["delta"] for e in first + rest if e["choices"]]
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert reasoning.endswith(" Enough.") and reasoning[:-len(" Enough.")] == LEAD + WORD * reasoning.count("blue")
    assert content.startswith(WORD * 20)  # the answer followed the forced end tag
    assert rest[-1]["choices"][0]["finish_reason"] == "length"
    # the completion is over: its id no longer answers
    assert requests.post(control, json={"id": cid, "action": "reasoning_end"}, timeout=30).json() == {
        "success": False, "message": "no active completion for this id"}


def test_reasoning_control_errors(thinker: Server, word_bias: dict[str, float]) -> None:
    control = thinker.url + "/v1/chat/completions/control"

    def error(body: Any) -> tuple[int, str]:
        r = requests.post(control, json=body, timeout=30)
        return r.status_code, r.json()["error"]["message"]

    assert error({"action": "reasoning_end"}) == (400, "missing completion id")
    assert error({"id": "chatcmpl-x", "action": "pause"}) == (400, "unknown control action")
    assert error({"id": 7, "action": "reasoning_end"}) == (400, "missing completion id")
    r = thinker.post("/v1/chat/completions", {"messages": ASK, "reasoning_control": "yes"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "'reasoning_control' must be a boolean"
    # a running completion that did not ask for it
    body = {"messages": ASK, "max_tokens": 300, "temperature": 0, "logit_bias": word_bias, "stream": True,
            "reasoning_budget_tokens": 10_000}
    with requests.post(thinker.url + "/v1/chat/completions", json=body, stream=True, timeout=120) as r:
        events = (json.loads(line[6:]) for line in r.iter_lines() if line.startswith(b"data: {"))
        cid = next(events)["id"]
        answer = requests.post(control, json={"id": cid, "action": "reasoning_end"}, timeout=30).json()
        assert answer == {"success": False, "message": "reasoning control not enabled for this completion"}
        list(events)


# Templates whose thinking markers are their format family's own (no <think>, no enable_thinking): a reply
# without tools is parsed for reasoning too, as llama-server does. The grammar writes the opening marker;
# inside the block it is suspended (the block is the model's), so the block holds free text.
FAMILY_MARKERS = {
    "openai-gpt-oss-120b.jinja": "<|channel|>analysis<|message|>",
    "ByteDance-Seed-OSS.jinja": "<seed:think>",
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": "[THINK]",
}


@pytest.mark.parametrize("name", sorted(FAMILY_MARKERS))
def test_a_family_thinking_block_is_reasoning_without_tools(make_server: Any, model_path: str, name: str) -> None:
    import build_native

    template = build_native.place_source() / "models" / "templates" / name
    srv = make_server("-m", model_path, "-c", "1024", "-np", "1", "-t", "1", "--jinja",
                      "--chat-template-file", str(template))
    marker = FAMILY_MARKERS[name]
    r = srv.post("/v1/chat/completions", {"messages": ASK, "max_tokens": 24, "temperature": 0,
                                          "grammar": f"root ::= {json.dumps(marker + 'Hm.')} [a-z ]*"})
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message.get("reasoning_content"), message
    assert marker not in (message.get("content") or ""), message
