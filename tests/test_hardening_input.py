"""Issue 19 item 1: every malformed request is a 4xx in its route family's error shape, naming the field,
and the server keeps serving. Real server, raw sockets where a client library would not send the bytes."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamatwist.api.http import MAX_JSON_DEPTH
from llamatwist.api.params import FIELDS
from llamatwist.chat.messages import ROLES
from tests.conftest import Server

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

# one request per JSON route family, each valid as it is (a malformed value is put into it); /infill reads the
# body with the same read_json, and the default model has no infill tokens (its 400 comes first)
ROUTES: dict[str, dict[str, Any]] = {
    "/completion": {"prompt": "hi", "n_predict": 1},
    "/v1/completions": {"prompt": "hi", "max_tokens": 1},
    "/v1/chat/completions": CHAT,
    "/apply-template": {"messages": CHAT["messages"]},
    "/v1/chat/completions/input_tokens": {"messages": CHAT["messages"]},
    "/tokenize": {"content": "hi"},
    "/detokenize": {"tokens": [1]},
    "/v1/messages": {"model": "x", "max_tokens": 1, "messages": CHAT["messages"]},
    "/v1/messages/count_tokens": {"model": "x", "messages": CHAT["messages"]},
    "/v1/responses": {"input": "hi", "max_output_tokens": 1},
    "/v1/responses/input_tokens": {"input": "hi"},
    "/api/chat": {"model": "x", "messages": CHAT["messages"], "stream": False, "options": {"num_predict": 1}},
    "/api/generate": {"model": "x", "prompt": "hi", "stream": False, "options": {"num_predict": 1}},
    "/api/show": {"model": "x"},
}


@pytest.fixture(scope="module")
def srv(model_path: str) -> Iterator[Server]:
    s = Server(["-m", model_path, "-c", "512", "-np", "2", "-t", "1"])
    yield s
    s.stop()


def raw_post(srv: Server, path: str, body: bytes, headers: bytes = b"") -> tuple[int, bytes]:
    """POST bytes as they are (no client library re-encodes them); (status, body)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n"
            % (path.encode(), len(body), headers) + body
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        payload = dechunk(payload)
    return int(head.split(b" ", 2)[1]), payload


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + rest[:n], rest[n + 2 :]
    return out


def error_message(path: str, status: int, payload: bytes) -> str:
    """The error's message, after checking the family's shape (Anthropic's for /v1/messages, Ollama's under
    /api/)."""
    body = json.loads(payload)
    if path.startswith("/api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        return str(body["error"])
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        return str(body["error"]["message"])
    assert body["error"]["code"] == status and body["error"]["type"] == "invalid_request_error", body
    return str(body["error"]["message"])


def splice(base: dict[str, Any], text: str) -> bytes:
    """``base`` as JSON with ``text`` (raw JSON, maybe invalid) as the value of an extra field "bad"."""
    return json.dumps(base)[:-1].encode() + b', "bad": ' + text.encode("utf-8", "surrogatepass") + b"}"


MALFORMED: list[tuple[str, bytes | None, str]] = [
    # (case, the body (None: built by splice from the route's own), a text the message must hold)
    ("empty", b"", "empty"),
    ("blank", b" \r\n ", "empty"),
    ("array", b"[1]", "must be a JSON object"),
    ("string", b'"x"', "must be a JSON object"),
    ("null", b"null", "must be a JSON object"),
    ("truncated", b'{"prompt": "hi', "invalid JSON"),
    ("nan", None, "NaN"),
    ("infinity", None, "Infinity"),
    ("huge float", None, "'bad'"),
    ("huge integer", None, "'bad'"),
    ("lone surrogate", None, "'bad[1]'"),
    ("invalid utf-8", None, "utf-8"),
    ("duplicate key", None, 'duplicate key "bad"'),
    ("deep nesting", None, "deeper than"),
    ("very deep nesting", None, "deeper than"),
]
SPLICED = {
    "nan": "NaN", "infinity": "-Infinity", "huge float": "1e999", "huge integer": "1" + "0" * 30,
    "lone surrogate": '["ok", "\\ud800"]', "duplicate key": '1, "bad": 2',
    "deep nesting": "[" * (MAX_JSON_DEPTH + 2) + "]" * (MAX_JSON_DEPTH + 2),
    "very deep nesting": "[" * 100_000 + "]" * 100_000,
}  # fmt: skip


@pytest.mark.parametrize("path", list(ROUTES))
def test_malformed_bodies_are_400s_naming_the_problem(srv: Server, path: str) -> None:
    for case, body, needle in MALFORMED:
        if body is None:
            body = b'{"x": "\xff\xfe"}' if case == "invalid utf-8" else splice(ROUTES[path], SPLICED[case])
        status, payload = raw_post(srv, path, body)
        assert status == 400, (case, payload[:300])
        assert needle in error_message(path, status, payload), (case, payload[:300])
    # the untouched request is fine: the 400s came from the values above
    status, payload = raw_post(srv, path, json.dumps(ROUTES[path]).encode())
    assert status == 200, payload[:300]


def test_malformed_bodies_on_an_embedding_server(model_path: str) -> None:
    emb = Server(["-m", model_path, "-c", "512", "-np", "1", "-t", "1", "--embeddings", "--pooling", "mean"])
    try:
        for path, base in (("/v1/embeddings", {"input": "hi"}), ("/embedding", {"content": "hi"})):
            for case, body, needle in MALFORMED:
                if body is None:
                    body = b'{"x": "\xff"}' if case == "invalid utf-8" else splice(base, SPLICED[case])
                status, payload = raw_post(emb, path, body)
                assert status == 400 and needle in error_message(path, status, payload), (path, case, payload[:300])
            for bad in ({"input": None}, {"input": [1.5]}, {"input": [[1, None]]}, {"input": {"a": 1}}, {"input": []}):
                r = emb.post(path, bad if path == "/v1/embeddings" else {"content": bad["input"]})
                assert r.status_code == 400, (path, bad, r.text)
            assert raw_post(emb, path, json.dumps(base).encode())[0] == 200
    finally:
        emb.stop()


def test_content_type_is_not_required(srv: Server) -> None:
    # as llama-server: the body is JSON whatever the header says (curl -d sends a form type)
    for ctype in (b"application/x-www-form-urlencoded", b"text/plain", b"application/json; charset=latin-1", b""):
        status, payload = raw_post(srv, "/tokenize", b'{"content": "hi"}', b"Content-Type: %s\r\n" % ctype)
        assert (status, json.loads(payload)["tokens"]) == (200, [6004]), ctype


def test_invalid_utf8_in_headers(srv: Server) -> None:
    headers = b"X-Junk: \xff\xfe\x80\r\nOrigin: http://\xc3(\r\nAuthorization: Bearer \xff\r\n"
    status, payload = raw_post(srv, "/tokenize", b'{"content": "hi"}', headers)
    assert status == 200, payload


CHAT_MISTAKES: list[tuple[object, str]] = [
    ([{"content": "hi"}], "Missing 'role'"),
    ([{"role": "alien", "content": "hi"}], 'unknown role "alien"'),
    ([{"role": 7, "content": "hi"}], "'role' must be a string"),
    ([{"role": None, "content": "hi"}], "'role' must be a string"),
    (["hi"], "must contain 'content'"),
    ([None], "must contain 'content'"),
    ({"role": "user", "content": "hi"}, "Expected 'messages' to be an array"),
    ([{"role": "user", "content": 5}], "Expected 'content' to be a string or an array"),
    ([{"role": "user", "content": {"text": "hi"}}], "Expected 'content' to be a string or an array"),
    ([{"role": "user", "content": [5]}], "content"),
    ([{"role": "user", "content": [{"type": "text"}]}], "key 'text' not found"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "type must be string"),
    ([{"role": "user", "content": [{"type": "video"}]}], "unsupported content[].type"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "image input"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "audio input"),
    ([{"role": "user"}], "must contain 'content'"),
    ([{"role": "assistant"}], "'content' or 'tool_calls'"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [{"function": {}}]}], "tool call type"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": 5}], "tool call type"),
    ([{"role": "user", "content": "hi", "name": 5}], "type must be string"),
]


@pytest.mark.parametrize(("messages", "needle"), CHAT_MISTAKES)
def test_chat_message_mistakes(srv: Server, messages: object, needle: str) -> None:
    for path in ("/v1/chat/completions", "/apply-template", "/v1/chat/completions/input_tokens"):
        r = srv.post(path, {"messages": messages, "max_tokens": 1})
        assert r.status_code == 400, (path, r.text)
        assert needle in error_message(path, 400, r.content), (path, r.text)


def test_every_known_role_is_accepted(srv: Server) -> None:
    for role in sorted(ROLES):
        messages = [{"role": "user", "content": "hi"}, {"role": role, "content": "x"}, {"role": "user", "content": "ok"}]
        r = srv.post("/apply-template", {"messages": messages})
        assert r.status_code == 200, (role, r.text)


def test_bad_tools_are_400s(srv: Server) -> None:
    for tools in ("x", [5], [{"type": "function"}], [{"type": "function", "function": {"name": 5}}], [{"type": "x"}]):
        r = srv.post("/v1/chat/completions", {**CHAT, "tools": tools})
        assert r.status_code == 400, (tools, r.text)
        assert "tools" in r.json()["error"]["message"], r.text


# --- property-based: bodies from the parameter table ------------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=8)  # fmt: skip
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)  # fmt: skip


def typed_value(field_name: str, read_name: str) -> st.SearchStrategy[Any]:
    """A value of the field's own type (edge values included) or, as often, any JSON value."""
    own: st.SearchStrategy[Any]
    if read_name == "_int" or read_name == "_n_probs":
        own = st.integers(-(2**63), 2**64 - 1) | st.integers(-3, 130)
    elif read_name == "_float":
        own = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0, 1e308, -1e-308, 0.5])
    elif read_name == "_bool":
        own = st.booleans()
    elif read_name in ("_stop", "_breakers"):
        own = st.lists(st.text(max_size=4), max_size=3) | st.text(max_size=4)
    elif read_name == "_samplers":
        own = st.text(alphabet="edkytpmx?z", max_size=6) | st.lists(st.sampled_from(
            ["top_k", "top_p", "min_p", "temperature", "dry", "penalties", "nope"]), max_size=4)  # fmt: skip
    else:  # logit_bias: [[token, bias]] or {"token": bias}
        own = st.lists(st.tuples(st.integers(-5, 50000) | st.text(max_size=3),
                                 st.floats(allow_nan=False) | st.booleans()).map(list), max_size=3)  # fmt: skip
    return own | JSON_VALUES


# stream and the time/length limits are set by the test, so a request stays short
FIXED = {"n_predict", "stream", "t_max_predict_ms", "t_max_prompt_ms", "id_slot", "n_probs"}
FIELD_VALUES = {f.names[0]: typed_value(f.names[0], getattr(f.read, "__name__", "")) for f in FIELDS
                if f.names[0] not in FIXED}  # fmt: skip
BODIES = st.fixed_dictionaries({}, optional=FIELD_VALUES)

MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from([*sorted(ROLES), "alien", ""]) | JSON_SCALARS,
        "content": st.text(max_size=10) | st.none() | st.lists(st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "video"]) | JSON_SCALARS},
            optional={"text": st.text(max_size=5) | JSON_SCALARS}) | JSON_SCALARS, max_size=3) | JSON_VALUES,
        "tool_calls": st.lists(st.fixed_dictionaries({"type": st.just("function")}, optional={
            "function": st.fixed_dictionaries({"name": st.text(max_size=4) | JSON_SCALARS},
                                              optional={"arguments": st.text(max_size=8) | JSON_VALUES}),
            "id": JSON_SCALARS}), max_size=2) | JSON_VALUES,
        "name": JSON_SCALARS,
        "tool_call_id": JSON_SCALARS,
        "reasoning_content": JSON_SCALARS,
    },
)  # fmt: skip


def check_answer(path: str, r: requests.Response) -> None:
    assert r.status_code < 500, (path, r.status_code, r.text[:500])
    if r.status_code >= 400:
        error_message(path, r.status_code, r.content)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@SETTINGS
@given(body=BODIES, n_predict=st.integers(-1, 3), stream=st.booleans())
def test_property_parameter_table(srv: Server, body: dict[str, Any], n_predict: int, stream: bool) -> None:
    if n_predict == -1:  # unbounded: the time limit ends it
        body["t_max_predict_ms"] = 200
    for path, extra in (("/completion", {"prompt": "Hi", "n_predict": n_predict}),
                        ("/v1/chat/completions", {**CHAT, "max_tokens": n_predict})):  # fmt: skip
        r = requests.post(srv.url + path, json={**body, **extra, "stream": stream}, timeout=120)
        check_answer(path, r)
        if stream and r.status_code == 200:
            assert "error" not in r.text.split("data: [DONE]")[0].replace('"error":null', ""), r.text[-500:]


@SETTINGS
@given(messages=st.lists(MESSAGE, max_size=4) | JSON_VALUES, tools=st.none() | JSON_VALUES)
def test_property_chat_messages(srv: Server, messages: Any, tools: Any) -> None:
    body: dict[str, Any] = {"messages": messages, "max_tokens": 1}
    if tools is not None:
        body["tools"] = tools
    for path in ("/v1/chat/completions", "/apply-template"):
        check_answer(path, requests.post(srv.url + path, json=body, timeout=120))


OLLAMA_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["system", "user", "assistant", "tool", "alien"]) | JSON_SCALARS,
        "content": st.text(max_size=10) | JSON_SCALARS,
        "images": st.lists(st.text(max_size=8), max_size=2) | JSON_VALUES,
        "thinking": JSON_SCALARS,
        "tool_name": JSON_SCALARS,
        "tool_calls": st.lists(st.fixed_dictionaries({}, optional={"function": st.fixed_dictionaries(
            {}, optional={"name": st.text(max_size=4) | JSON_SCALARS, "arguments": JSON_VALUES}) | JSON_SCALARS}),
            max_size=2) | JSON_VALUES,
    },
)  # fmt: skip
OLLAMA_OPTIONS = st.dictionaries(st.sampled_from(["temperature", "top_k", "top_p", "min_p", "stop", "seed", "num_ctx",
                                                  "mirostat", "repeat_penalty", "num_keep", "typical_p", "other"]),
                                 JSON_VALUES, max_size=4)  # fmt: skip


@SETTINGS
@given(messages=st.lists(OLLAMA_MESSAGE, max_size=3) | JSON_VALUES, options=OLLAMA_OPTIONS | JSON_VALUES,
       extra=st.fixed_dictionaries({}, optional={"format": JSON_VALUES | st.just("json"), "think": JSON_VALUES,
                                                 "tools": JSON_VALUES, "stream": st.booleans() | JSON_SCALARS,
                                                 "logprobs": JSON_SCALARS, "top_logprobs": JSON_SCALARS,
                                                 # durations, numbers of any size, and what is neither
                                                 "keep_alive": st.sampled_from(["5m", "0", "-1", "1h30m", "1d",
                                                                                "", "300ms"]) | JSON_SCALARS}))
def test_property_ollama_chat(srv: Server, messages: Any, options: Any, extra: dict[str, Any]) -> None:
    if isinstance(options, dict):
        options["num_predict"] = 1
    r = requests.post(srv.url + "/api/chat", json={"model": "x", "messages": messages, "options": options, **extra},
                      timeout=120)
    check_answer("/api/chat", r)
    if r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson":
        assert json.loads(r.text.splitlines()[-1]).get("done") is True, r.text[-500:]


def test_server_healthy_after_all(srv: Server) -> None:
    assert srv.get("/health").json() == {"status": "ok"}
    r = srv.post("/completion", {"prompt": "Hi", "n_predict": 2})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2
    assert not math.isnan(r.json()["timings"]["predicted_ms"])
    assert "Traceback" not in srv.log(), srv.log()[-3000:]
