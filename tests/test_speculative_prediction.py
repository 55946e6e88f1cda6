"""OpenAI's Predicted Outputs (chat ``prediction``): the predicted text drafts for speculative decoding. Greedy
output is the same with and without a prediction, right or wrong, on the F32 model; a prediction the reply
repeats is mostly accepted; usage reports the accepted and rejected prediction tokens; bad shapes are 400s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.openai.chat import parse_prediction
from llamatwist.runtime.prediction import Prediction
from llamatwist.sampling_defaults import PREDICTION_DRAFT_MAX, SpecParams
from tests.conftest import Server
from tests.test_speculative import EXACT, PASSAGE, f32_model  # noqa: F401  # f32_model: a fixture

COPY = [{"role": "user", "content": f"Repeat this text exactly, nothing else:\n\n{PASSAGE}"}]
GREEDY = {"temperature": 0, "max_tokens": 40, "ignore_eos": True, "cache_prompt": False}


def test_prediction_drafts_what_follows_the_reply_in_it() -> None:
    pred = Prediction([10, 11, 12, 13, 14, 15, 16, 17])
    assert pred.draft([], 10, 4) == [11, 12, 13, 14]  # the first token, where the prediction starts
    pred.accept(4)
    assert pred.draft([10, 11, 12, 13], 14, 8) == [15, 16, 17]  # up to its end
    pred.accept(3)
    assert pred.draft([10, 11, 12, 13, 14, 15, 16], 17, 8) == []  # nothing after the end


def test_prediction_realigns_after_an_edit() -> None:
    tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 4, 20, 21]
    pred = Prediction(tokens)
    assert pred.draft([], 1, 3) == [2, 3, 4]
    pred.accept(1)  # the reply wrote 1 2, then 30 (an edit) instead of 3
    assert pred.draft([1, 2], 30, 4) == []  # 30 is nowhere in the prediction
    # after the edit the reply writes 4 5: two tokens place it again, where it was, not at the later "3 4"
    assert pred.draft([1, 2, 30, 4], 5, 3) == [6, 7, 8]
    pred.accept(3)
    # one common token alone places nothing, unless it is the one the prediction has next
    assert pred.draft([1, 2, 30, 4, 5, 6, 7, 8], 9, 2) == [3, 4]
    pred.accept(0)
    assert pred.draft([1, 2, 30, 4, 5, 6, 7, 8, 9, 40], 4, 2) == []
    # two tokens that occur twice: the occurrence past where the reply was
    assert pred.draft([1, 2, 30, 4, 5, 6, 7, 8, 9, 40, 4], 3, 2) == [4, 20]


def test_prediction_is_a_draft_type_of_its_own() -> None:
    spec = SpecParams(prediction=(1, 2))
    assert spec.types == ("prediction",) and spec.active and spec.limit == PREDICTION_DRAFT_MAX
    both = SpecParams(type="ngram-simple", prediction=(1,))
    assert both.types == ("prediction", "ngram-simple")
    assert not SpecParams().active


def test_parse_prediction() -> None:
    assert parse_prediction({}) == "" and parse_prediction({"prediction": None}) == ""
    assert parse_prediction({"prediction": {"type": "content", "content": "abc"}}) == "abc"
    parts = [{"type": "text", "text": "ab"}, {"type": "text", "text": "c"}]
    assert parse_prediction({"prediction": {"type": "content", "content": parts}}) == "abc"
    for bad in ("abc", {"content": "x"}, {"type": "text", "content": "x"}, {"type": "content", "content": 3},
                {"type": "content", "content": [{"type": "image_url"}]}):
        with pytest.raises(InvalidRequest, match="prediction"):
            parse_prediction({"prediction": bad})


@pytest.fixture(scope="module")
def srv(f32_model: str) -> Iterator[Server]:  # noqa: F811
    s = Server(["-m", f32_model, "-np", "2", "-c", "2048", "-t", "2", "--metrics", *EXACT])
    yield s
    s.stop()


def _chat(srv: Server, prediction: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": COPY, **GREEDY, **extra}
    if prediction is not None:
        body["prediction"] = {"type": "content", "content": prediction}
    r = srv.post("/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_the_reply_is_unchanged_and_a_right_prediction_is_taken(srv: Server) -> None:
    plain = _chat(srv)
    text = plain["choices"][0]["message"]["content"]
    assert "completion_tokens_details" not in plain["usage"] and "draft_n" not in plain["timings"]
    right = _chat(srv, text)
    assert right["choices"][0]["message"]["content"] == text
    details = right["usage"]["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] >= 30  # of 40: the prediction is the reply
    assert details["accepted_prediction_tokens"] + details["rejected_prediction_tokens"] == right["timings"]["draft_n"]
    assert right["timings"]["draft_n_accepted"] == details["accepted_prediction_tokens"]
    # an edited prediction (a word replaced) and a wrong one: the same reply
    words = text.split(" ")
    edited = " ".join([*words[:3], "purple", *words[4:]])
    again = _chat(srv, edited)
    assert again["choices"][0]["message"]["content"] == text
    assert again["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] > 10
    wrong = _chat(srv, "Nothing at all like it.")
    assert wrong["choices"][0]["message"]["content"] == text
    # the text parts form, through OpenAI's SDK, streamed with the usage chunk
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="m", messages=COPY, temperature=0, max_tokens=40, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True, "cache_prompt": False},
        prediction={"type": "content", "content": [{"type": "text", "text": text}]})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (usage.completion_tokens_details.accepted_prediction_tokens or 0) >= 30


def test_sampling_with_a_seed_is_unchanged_too(srv: Server) -> None:
    sampled = {"temperature": 0.9, "seed": 7, "top_k": 40}
    text = _chat(srv, **sampled)["choices"][0]["message"]["content"]
    assert _chat(srv, text, **sampled)["choices"][0]["message"]["content"] == text


def test_a_bad_prediction_is_a_400_and_the_server_goes_on(srv: Server) -> None:
    for bad in ("text", {"type": "content"}, {"type": "content", "content": [{"type": "text", "text": 1}]}):
        r = srv.post("/v1/chat/completions", {"messages": COPY, "max_tokens": 2, "prediction": bad})
        assert r.status_code == 400 and "prediction" in r.json()["error"]["message"], r.text
    assert _chat(srv, max_tokens=2)["usage"]["completion_tokens"] == 2
