"""llama-server's request forms through a real server: object and mixed prompts, embedding content
parts, chat token counting, response_fields, logprobs / reasoning_format / chat_format on /completion.

Never the model's words: shapes, counts, and equality between two paths on the same server (greedy, no
prompt cache, ignore_eos so every reply runs to its limit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import Server
from tests.models import smollm2_fim_gguf

PROMPT = "The capital of France is"
GREEDY = {"temperature": 0, "n_predict": 6, "ignore_eos": True, "cache_prompt": False, "return_tokens": True}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def error_of(r: requests.Response, field: str, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"code", "message", "type"} and err["code"] == status
    assert err["type"] == "invalid_request_error"
    assert field in err["message"], err["message"]
    return dict(err)


def still_serves(srv: Server) -> None:
    assert srv.get("/health").status_code == 200
    r = srv.post("/completion", {"prompt": PROMPT, "n_predict": 1})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 1


def stream_events(srv: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = requests.post(srv.url + path, json={**body, "stream": True}, stream=True, timeout=120)
    assert r.status_code == 200, r.text
    return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith(b"data: ") and line != b"data: [DONE]"]


def tokens_of(srv: Server, text: str) -> list[int]:
    return list(srv.post("/tokenize", {"content": text, "add_special": True}).json()["tokens"])


# -- prompt forms ---------------------------------------------------------


def test_prompt_object_is_the_same_prompt(server: Server) -> None:
    tokens = tokens_of(server, PROMPT)
    plain = server.post("/completion", {"prompt": PROMPT, **GREEDY}).json()
    for prompt in ({"prompt_string": PROMPT}, {"prompt_string": [PROMPT]}, {"prompt_string": tokens},
                   {"prompt_string": PROMPT, "extra": 1}):
        body = server.post("/completion", {"prompt": prompt, **GREEDY}).json()
        assert body["tokens"] == plain["tokens"], prompt
        assert body["tokens_evaluated"] == plain["tokens_evaluated"] == len(tokens)
        assert body["prompt"] == plain["prompt"]
    oai = server.post("/v1/completions", {"prompt": {"prompt_string": PROMPT}, **GREEDY}).json()
    assert oai["choices"][0]["text"] == plain["content"]
    assert oai["usage"]["prompt_tokens"] == len(tokens)


@pytest.mark.parametrize("path", ["/completion", "/completions"])
def test_mixed_prompt_list_is_one_completion_per_element(server: Server, path: str) -> None:
    tokens = tokens_of(server, PROMPT)
    first, rest = PROMPT.split(" ", 1)
    prompts = [tokens, PROMPT, {"prompt_string": PROMPT}, [*tokens_of(server, first), " " + rest]]
    body = server.post(path, {"prompt": prompts, "n_predict": 2}).json()
    assert isinstance(body, list) and [b["index"] for b in body] == [0, 1, 2, 3]
    assert [b["tokens_evaluated"] for b in body[:3]] == [len(tokens)] * 3
    assert body[0]["prompt"] == body[1]["prompt"] == body[2]["prompt"]
    assert all(b["tokens_predicted"] == 2 or b["stop_type"] != "limit" for b in body)
    # a top-level array with a token id is one prompt (strings and ids in order)
    one = server.post(path, {"prompt": [tokens[0], " Paris"], "n_predict": 1}).json()
    assert isinstance(one, dict) and one["tokens_evaluated"] == 1 + len(tokens_of(server, " Paris"))


def test_mixed_prompt_list_on_openai_completions(server: Server) -> None:
    tokens = tokens_of(server, PROMPT)
    body = server.post("/v1/completions", {"prompt": [tokens, {"prompt_string": PROMPT}, PROMPT],
                                           "max_tokens": 2}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["prompt_tokens"] == 3 * len(tokens)


@pytest.mark.parametrize("path", ["/completion", "/v1/completions"])
@pytest.mark.parametrize("prompt, field", [
    ({"prompt_string": PROMPT + "<__media__>", "multimodal_data": ["iVBORw0KGgo="]}, "multimodal_data"),
    ([PROMPT, {"prompt_string": PROMPT + "<__media__>.", "multimodal_data": ["iVBORw0KGgo="]}], "multimodal_data"),
    ({"text": PROMPT}, "prompt_string"),
    ({"prompt_string": 5}, "prompt_string"),
    ({"prompt_string": [[1, 2]]}, "prompt_string"),
    ([1, [2, 3]], "prompt"),
    ([PROMPT, None], "prompt"),
    ([], "prompt"),
    (True, "prompt"),
])
def test_bad_prompt_forms(server: Server, path: str, prompt: Any, field: str) -> None:
    err = error_of(server.post(path, {"prompt": prompt, "n_predict": 1}), field)
    if field == "multimodal_data":
        assert "multimodal" in err["message"] and "--mmproj" in err["message"]
    still_serves(server)


# -- embedding content parts ----------------------------------------------


@pytest.fixture(scope="module")
def embed_server(model_path: str) -> Any:
    srv = Server(["-m", model_path, "--embeddings", "--pooling", "mean", "-np", "2", "-c", "1024", "-t", "2"])
    yield srv
    srv.stop()


def test_embedding_content_parts_equal_the_joined_text(embed_server: Server) -> None:
    parts = {"content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]}
    for path in ("/v1/embeddings", "/embeddings"):
        alone = embed_server.post(path, {"input": "hello world"}).json()
        body = embed_server.post(path, {"input": ["hello world", parts, {"prompt_string": "hello world"}]}).json()
        if path == "/v1/embeddings":
            vectors = [d["embedding"] for d in body["data"]]
            assert [d["index"] for d in body["data"]] == [0, 1, 2]
            assert body["usage"]["prompt_tokens"] == 3 * alone["usage"]["prompt_tokens"]
            reference = alone["data"][0]["embedding"]
        else:
            vectors = [d["embedding"][0] for d in body]
            reference = alone[0]["embedding"][0]
        assert len(vectors) == 3
        for v in vectors:
            assert np.allclose(v, reference, atol=1e-5)
    single = embed_server.post("/v1/embeddings", {"input": parts}).json()
    assert len(single["data"]) == 1 and np.allclose(single["data"][0]["embedding"], reference, atol=1e-5)
    native = embed_server.post("/embedding", {"content": parts}).json()
    assert len(native) == 1 and np.allclose(native[0]["embedding"][0], reference, atol=1e-5)


@pytest.mark.parametrize("item, words", [
    ({"content": "hello"}, ["content", "array"]),
    ({"content": [{"type": "unknown"}]}, ["content[].type"]),
    ({"content": [{"text": "no type"}]}, ["content[].type"]),
    ({"content": ["hello"]}, ["content[].type"]),
    ({"content": [{"type": "text", "text": 5}]}, ["text"]),
    ({"content": [IMAGE]}, ["image", "--mmproj"]),
    ({"content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}, ["audio", "--mmproj"]),
    ({"content": [{"type": "input_video", "input_video": {"url": "data:video/mp4;base64,AAAA"}}]},
     ["video", "--mmproj"]),
    ({"prompt_string": "x", "multimodal_data": ["AAAA"]}, ["multimodal_data"]),
    ({"other": 1}, ["content"]),
])
def test_bad_embedding_items(embed_server: Server, item: Any, words: list[str]) -> None:
    for body in ({"input": item}, {"input": ["fine", item]}):
        err = error_of(embed_server.post("/v1/embeddings", body), "'input'")
        assert all(w in err["message"] for w in words), err["message"]
    error_of(embed_server.post("/embedding", {"content": item}), "'content'")
    ok = embed_server.post("/v1/embeddings", {"input": "still serving"})
    assert ok.status_code == 200 and len(ok.json()["data"]) == 1


# -- counting a chat request's tokens ---------------------------------------


@pytest.mark.parametrize("path", ["/chat/completions/input_tokens", "/v1/chat/completions/input_tokens"])
def test_input_tokens_counts_the_chat_prompt(server: Server, path: str) -> None:
    body = server.post(path, {"messages": MESSAGES}).json()
    assert set(body) == {"object", "input_tokens"} and body["object"] == "response.input_tokens"
    chat = server.post("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1}).json()
    assert body["input_tokens"] == chat["usage"]["prompt_tokens"]
    rendered = server.post("/apply-template", {"messages": MESSAGES}).json()["prompt"]
    assert body["input_tokens"] == len(tokens_of(server, rendered))
    longer = server.post(path, {"messages": [*MESSAGES, {"role": "assistant", "content": "Red."},
                                             {"role": "user", "content": "Another one."}]}).json()
    assert longer["input_tokens"] > body["input_tokens"]


def test_input_tokens_bad_requests(server: Server) -> None:
    path = "/v1/chat/completions/input_tokens"
    error_of(server.post(path, {}), "messages")
    error_of(server.post(path, {"messages": []}), "messages")
    error_of(server.post(path, {"messages": MESSAGES, "chat_format": "chatml"}), "chat_format")
    r = requests.post(server.url + path, data=b"{", timeout=30)
    assert r.status_code == 400
    assert server.get(path).status_code == 405
    still_serves(server)


# -- response_fields ----------------------------------------------------------


def test_a_streamed_completion_names_each_prompt_in_its_final_event(server: Server) -> None:
    """The prompt texts are read back beside the generation (not before its first token); each final event
    still carries its own, as the non-streamed answer does."""
    prompts = [PROMPT, "Once upon a time", "1, 2, 3,"]
    whole = server.post("/completion", {"prompt": prompts, **GREEDY}).json()
    events = server.stream("/completion", {"prompt": prompts, **GREEDY, "stream": True})
    finals = sorted((e for e in events if e.get("stop")), key=lambda e: e["index"])
    assert [f["prompt"] for f in finals] == [w["prompt"] for w in whole] == prompts
    texts = ["".join(e["content"] for e in events if e["index"] == i) for i in range(len(prompts))]
    assert texts == [w["content"] for w in whole]
    assert all(events.index(f) > max(j for j, e in enumerate(events) if e["index"] == f["index"] and not e["stop"])
               for f in finals)  # each final after its own tokens


def test_response_fields_project_the_native_response(server: Server) -> None:
    fields = ["content", "generation_settings/n_predict", "prompt", "timings/predicted_n", "no_such_field",
              "generation_settings/no_such_field", "content/not_an_object"]
    full = server.post("/completion", {"prompt": PROMPT, **GREEDY}).json()
    body = server.post("/completion", {"prompt": PROMPT, **GREEDY, "response_fields": fields}).json()
    assert set(body) == {"content", "generation_settings/n_predict", "prompt", "timings/predicted_n"}
    assert body["generation_settings/n_predict"] == GREEDY["n_predict"]
    assert body["timings/predicted_n"] == GREEDY["n_predict"]
    assert body["content"] == full["content"] and body["prompt"] == full["prompt"]
    # an empty list is no projection
    assert set(server.post("/completion", {"prompt": PROMPT, **GREEDY, "response_fields": []}).json()) == set(full)
    many = server.post("/completion", {"prompt": [PROMPT, PROMPT], "n_predict": 1,
                                       "response_fields": ["index", "tokens_evaluated"]}).json()
    assert [set(b) for b in many] == [{"index", "tokens_evaluated"}] * 2 and [b["index"] for b in many] == [0, 1]


def test_response_fields_project_the_final_stream_event(server: Server) -> None:
    events = stream_events(server, "/completion", {"prompt": PROMPT, **GREEDY,
                                                   "response_fields": ["stop", "generation_settings/stream"]})
    *partials, final = events
    assert final == {"stop": True, "generation_settings/stream": True}
    assert len(partials) == GREEDY["n_predict"] and all("content" in e and e["stop"] is False for e in partials)


def test_response_fields_on_infill(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", str(smollm2_fim_gguf(Path(model_path))), "-c", "1024", "-t", "2")
    req = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n", "n_predict": 3, "temperature": 0}
    body = srv.post("/infill", {**req, "response_fields": ["content", "generation_settings/n_predict"]}).json()
    assert set(body) == {"content", "generation_settings/n_predict"} and body["generation_settings/n_predict"] == 3
    error_of(srv.post("/infill", {**req, "response_fields": "content"}), "response_fields")


@pytest.mark.parametrize("value", ["content", [1], {"content": True}, [["content"]], True])
def test_bad_response_fields(server: Server, value: Any) -> None:
    error_of(server.post("/completion", {"prompt": PROMPT, "n_predict": 1, "response_fields": value}),
             "response_fields")
    still_serves(server)


def test_response_fields_on_openai_routes_are_refused(server: Server) -> None:
    # llama-server projects its native responses only; an OpenAI response would ignore them silently
    chat = {"messages": MESSAGES, "max_tokens": 1}
    for path, body in (("/v1/chat/completions", chat), ("/v1/completions", {"prompt": PROMPT, "max_tokens": 1})):
        error_of(server.post(path, {**body, "response_fields": ["content"]}), "response_fields")
        assert server.post(path, {**body, "response_fields": []}).status_code == 200


# -- logprobs on /completion ----------------------------------------------------


def test_logprobs_is_n_probs_on_completion(server: Server) -> None:
    a = server.post("/completion", {"prompt": PROMPT, **GREEDY, "n_probs": 3}).json()
    b = server.post("/completion", {"prompt": PROMPT, **GREEDY, "logprobs": 3}).json()
    assert b["generation_settings"]["n_probs"] == 3
    assert len(b["completion_probabilities"]) == GREEDY["n_predict"]
    assert b["completion_probabilities"] == a["completion_probabilities"]
    yes = server.post("/completion", {"prompt": PROMPT, **GREEDY, "logprobs": True}).json()
    assert yes["generation_settings"]["n_probs"] == 1
    assert all(len(p["top_logprobs"]) == 1 for p in yes["completion_probabilities"])
    no = server.post("/completion", {"prompt": PROMPT, **GREEDY, "logprobs": False}).json()
    assert "completion_probabilities" not in no and no["generation_settings"]["n_probs"] == 0
    # n_probs wins over its alias, as in llama-server
    both = server.post("/completion", {"prompt": PROMPT, **GREEDY, "n_probs": 2, "logprobs": 5}).json()
    assert both["generation_settings"]["n_probs"] == 2
    streamed = stream_events(server, "/completion", {"prompt": PROMPT, **GREEDY, "logprobs": 2})
    assert all(len(e["completion_probabilities"][0]["top_logprobs"]) == 2 for e in streamed[:-1])


@pytest.mark.parametrize("value", ["3", 2**31, -1, 1.5, [3], {"n": 1}])
def test_bad_logprobs_on_completion(server: Server, value: Any) -> None:
    error_of(server.post("/completion", {"prompt": PROMPT, "n_predict": 1, "logprobs": value}), "logprobs")
    still_serves(server)


def test_probability_counts_past_openais_limits(server: Server) -> None:
    """llama-server sets no upper limit on n_probs (OpenAI's top_logprobs stops at 20, its legacy logprobs at 5):
    every API family gives as many as asked, and a count past the vocabulary gives all of it."""
    native = server.post("/completion", {"prompt": PROMPT, **GREEDY, "n_predict": 2, "n_probs": 150}).json()
    assert [len(p["top_logprobs"]) for p in native["completion_probabilities"]] == [150, 150]
    chat = server.post("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2, "temperature": 0,
                                                "logprobs": True, "top_logprobs": 30}).json()
    assert [len(e["top_logprobs"]) for e in chat["choices"][0]["logprobs"]["content"]] == [30, 30]
    for lp, n in ((40, 40), (True, 1)):
        oai = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 1, "logprobs": lp}).json()
        assert len(oai["choices"][0]["logprobs"]["top_logprobs"][0]) == n, oai
    n_vocab = server.get("/v1/models").json()["data"][0]["meta"]["n_vocab"]
    everything = server.post("/completion", {"prompt": PROMPT, "n_predict": 1, "n_probs": 10**6}).json()
    assert len(everything["completion_probabilities"][0]["top_logprobs"]) == n_vocab
    for path, body in (("/v1/chat/completions", {"messages": MESSAGES, "logprobs": True, "top_logprobs": -1}),
                       ("/v1/completions", {"prompt": PROMPT, "logprobs": -1})):
        error_of(server.post(path, {**body, "max_tokens": 1}), "logprobs")
    still_serves(server)


@pytest.mark.parametrize("field, limit", [
    ("n_predict", 2**31 - 1), ("max_tokens", 2**31 - 1), ("n_keep", 2**31 - 1), ("n_indent", 2**31 - 1),
    ("n_discard", 2**31 - 1), ("repeat_last_n", 2**31 - 1), ("min_keep", 2**31 - 1),
    ("dry_penalty_last_n", 2**31 - 1), ("t_max_predict_ms", 2**63 - 1), ("reasoning_budget_tokens", 2**31 - 1),
])  # fmt: skip
def test_llama_servers_upper_limits(server: Server, field: str, limit: int) -> None:
    """llama-server's hard limits (server-schema.cpp set_hard_limits) bound these from above too: one past
    the limit is a 400 naming the field and its range (a huge float such as 1e308 as well), the limit
    itself is served."""
    # n_predict wins over its aliases, and a grammar of one word ends a reply of unlimited length at once
    base = {"prompt": PROMPT, **({"grammar": 'root ::= "a"'} if field in ("n_predict", "max_tokens")
                                 else {"n_predict": 1})}
    for bad in (limit + 1, 1e308):
        err = error_of(server.post("/completion", {**base, field: bad}), field)
        assert str(limit) in err["message"], err
    ok = server.post("/completion", {**base, field: limit})
    assert ok.status_code == 200, ok.text
    still_serves(server)


def test_stream_options_without_stream_are_ignored(server: Server) -> None:
    """OpenAI refuses them; llama-server ignores them, so a client written for it may send them always."""
    for path, body in (("/v1/chat/completions", {"messages": MESSAGES}), ("/v1/completions", {"prompt": PROMPT})):
        r = server.post(path, {**body, "max_tokens": 2, "stream_options": {"include_usage": True}})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2, r.text
        error_of(server.post(path, {**body, "max_tokens": 2, "stream_options": {"include_usage": 1}}),
                 "stream_options.include_usage")


@pytest.mark.parametrize("path, body, field", [
    ("/tokenize", {"content": PROMPT}, "add_special"),
    ("/tokenize", {"content": PROMPT}, "with_pieces"),
    ("/tokenize", {"content": PROMPT}, "parse_special"),
    ("/detokenize", {}, "tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3, "temperature": 0}, "add_generation_prompt"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3, "temperature": 0}, "logprobs"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3, "temperature": 0}, "reasoning_control"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "temperature": 0}, "echo"),
    ("/v1/messages", {"messages": MESSAGES[1:], "max_tokens": 3, "temperature": 0}, "stream"),
    ("/v1/messages", {"messages": MESSAGES[1:], "max_tokens": 3, "temperature": 0}, "model"),
    ("/v1/responses", {"input": "Name a colour.", "max_output_tokens": 3, "temperature": 0}, "store"),
])  # fmt: skip
def test_null_asks_for_the_default(server: Server, path: str, body: dict[str, Any], field: str) -> None:
    """As in llama-server, a field sent as null is a field left out (typed clients send their unset options so)."""
    plain = server.post(path, body)
    null = server.post(path, {**body, field: None})
    assert plain.status_code == null.status_code == 200, null.text

    def stable(r: requests.Response) -> Any:
        j = r.json()
        return {k: j[k] for k in ("tokens", "content", "choices", "output_text") if k in j}

    if path.startswith("/v1/chat") or path == "/v1/completions":
        assert [c.get("message", c.get("text")) for c in null.json()["choices"]] == \
            [c.get("message", c.get("text")) for c in plain.json()["choices"]]
    else:
        assert stable(null) == stable(plain)


def test_negative_seeds_are_uint32_as_in_llama_server(server: Server) -> None:
    """llama-server reads the seed as a uint32: -5 is the fixed seed 4294967291, only -1 draws a random one."""
    body = {"prompt": PROMPT, "n_predict": 8, "temperature": 1.5, "cache_prompt": False}
    a = server.post("/completion", {**body, "seed": -5}).json()
    b = server.post("/completion", {**body, "seed": 2**32 - 5}).json()
    assert a["generation_settings"]["seed"] == 2**32 - 5 and a["content"] == b["content"]
    assert server.post("/completion", {**body, "seed": 2**32 + 7}).json()["generation_settings"]["seed"] == 7


# -- reasoning_format and chat_format -------------------------------------------


def test_reasoning_format_on_completion_leaves_the_text_raw(server: Server) -> None:
    plain = server.post("/completion", {"prompt": PROMPT, **GREEDY}).json()
    assert plain["generation_settings"]["reasoning_format"] == "deepseek"  # the server's --reasoning-format (unset: deepseek, as llama-server)
    assert plain["generation_settings"]["reasoning_in_content"] is False
    for fmt in ("none", "auto", "deepseek", "deepseek-legacy"):
        body = server.post("/completion", {"prompt": PROMPT, **GREEDY, "reasoning_format": fmt}).json()
        assert body["generation_settings"]["reasoning_format"] == fmt
        assert body["content"] == plain["content"] and "reasoning_content" not in body
    final = stream_events(server, "/completion", {"prompt": PROMPT, **GREEDY, "reasoning_format": "deepseek-legacy"})[-1]
    assert final["generation_settings"]["reasoning_in_content"] is True


def test_reasoning_format_follows_the_server_flag(make_server: Any, model_path: str) -> None:
    srv = make_server("-m", model_path, "-c", "512", "-t", "2", "--reasoning-format", "none")
    body = srv.post("/completion", {"prompt": PROMPT, "n_predict": 1}).json()
    assert body["generation_settings"]["reasoning_format"] == "none"


@pytest.mark.parametrize("path, base", [
    ("/completion", {"prompt": PROMPT, "n_predict": 1}),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 1}),
])
@pytest.mark.parametrize("value", ["deep", 3, True, ["auto"]])
def test_bad_reasoning_format(server: Server, path: str, base: dict[str, Any], value: Any) -> None:
    error_of(server.post(path, {**base, "reasoning_format": value}), "reasoning_format")
    still_serves(server)


def test_chat_format_on_completion(server: Server) -> None:
    plain = server.post("/completion", {"prompt": PROMPT, **GREEDY}).json()
    assert plain["generation_settings"]["chat_format"] == "Content-only"
    names = ["Content-only", "peg-simple", "peg-native", "peg-gemma4", "peg-minimax-m3"]
    for number, name in enumerate(names):
        body = server.post("/completion", {"prompt": PROMPT, **GREEDY, "chat_format": number}).json()
        assert body["generation_settings"]["chat_format"] == name
        assert body["content"] == plain["content"]
    assert server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 1, "chat_format": 2}).status_code == 200


def test_chat_format_on_chat_keeps_the_template_format(server: Server) -> None:
    req = {"messages": MESSAGES, "max_tokens": 4, "temperature": 0, "ignore_eos": True, "cache_prompt": False}
    plain = server.post("/v1/chat/completions", req).json()["choices"][0]["message"]
    for number in (0, 2):
        r = server.post("/v1/chat/completions", {**req, "chat_format": number})
        assert r.status_code == 200 and r.json()["choices"][0]["message"] == plain


@pytest.mark.parametrize("path, base", [
    ("/completion", {"prompt": PROMPT, "n_predict": 1}),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 1}),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1}),
])
@pytest.mark.parametrize("value", [5, -1, "peg-native", True, 1.5])
def test_bad_chat_format(server: Server, path: str, base: dict[str, Any], value: Any) -> None:
    error_of(server.post(path, {**base, "chat_format": value}), "chat_format")
    still_serves(server)
