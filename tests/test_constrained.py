"""Constrained output through a real server: JSON schema, GBNF, response_format."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import pytest
from openai import OpenAI

from tests.conftest import Server

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "born": {"type": "string", "format": "date"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "role", "born", "tags"],
    "additionalProperties": False,
}
CHECKER = jsonschema.Draft202012Validator(PERSON, format_checker=jsonschema.FormatChecker())
# Every string, number and array of PERSON is bounded, so the grammar completes within a known number of tokens
# whatever the model picks (its picks depend on the CPU's SIMD path): ~40 of structure and 63 characters of
# values, each at worst a 6-character \u escape, and the whitespace between tokens (at most two newlines and
# 20 spaces in each of ~30 places).
PERSON_TOKENS = 520


@pytest.mark.parametrize("temperature, seed", [(0.0, 0), (0.8, 1), (0.8, 2), (1.5, 3)])
def test_json_schema_outputs_validate(server: Server, temperature: float, seed: int) -> None:
    r = server.post("/completion", {"prompt": "A user record as JSON:", "n_predict": PERSON_TOKENS, "json_schema": PERSON,
                                    "temperature": temperature, "seed": seed})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stop_type"] == "eos", body["content"]  # the grammar completed
    CHECKER.validate(json.loads(body["content"]))


def test_gbnf_grammar(server: Server) -> None:
    grammar = 'root ::= ("yes" | "no") " because " [a-z ]{3,20} "."'
    for seed in range(3):
        body = server.post("/completion", {"prompt": "Is the sky blue?", "n_predict": 40, "grammar": grammar,
                                           "temperature": 1.0, "seed": seed}).json()
        assert re.fullmatch(r"(yes|no) because [a-z ]{3,20}\.", body["content"]), body["content"]


def test_streamed_constrained_output(server: Server) -> None:
    r = server.post("/completion", {"prompt": "Answer:", "n_predict": 8, "grammar": 'root ::= "yes" | "no"',
                                    "stream": True}, stream=True)
    events = [json.loads(line[6:]) for line in r.iter_lines() if line]
    assert "".join(e["content"] for e in events) in ("yes", "no")
    assert events[-1]["stop"] is True


def test_response_format_with_openai_client(server: Server) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Make up a user."}], max_tokens=PERSON_TOKENS, temperature=0.7,
        seed=5, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    )
    CHECKER.validate(json.loads(r.choices[0].message.content or ""))
    assert r.choices[0].finish_reason == "stop"
    obj = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Any JSON object."}], max_tokens=48,
        response_format={"type": "json_object"},
    )
    text = obj.choices[0].message.content or ""
    assert text.startswith("{")
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    comp = client.completions.create(model="m", prompt="Record:", max_tokens=PERSON_TOKENS, extra_body={"json_schema": PERSON})
    CHECKER.validate(json.loads(comp.choices[0].text))


def test_constrained_and_free_requests_share_a_batch(make_server: Any, model_path: str) -> None:
    # --cache-ram 0 keeps a KV stream per slot, so the free request's output does not depend
    # on the other sequence's cells (see tests/test_shared_cache.py) and can be compared exactly
    server = make_server("-m", model_path, "-c", "2048", "-np", "2", "-t", "2", "--cache-ram", "0")
    free = {"prompt": "Once upon a time", "n_predict": 24, "temperature": 0, "ignore_eos": True}
    alone = server.post("/completion", free).json()["content"]
    constrained = {"prompt": "A user record as JSON:", "n_predict": PERSON_TOKENS, "json_schema": PERSON, "temperature": 0}
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(server.post, "/completion", {**free, "id_slot": 0})
        b = pool.submit(server.post, "/completion", {**constrained, "id_slot": 1})
        free_out, json_out = a.result().json(), b.result().json()
    assert free_out["content"] == alone  # the other slot's mask does not leak
    CHECKER.validate(json.loads(json_out["content"]))


@pytest.mark.parametrize("body, needle", [
    ({"grammar": "root ::= foo"}, "foo"),
    ({"grammar": 'root ::= "unterminated'}, "grammar"),
    ({"json_schema": {"type": "array", "uniqueItems": True}}, "uniqueItems"),
    ({"json_schema": {"type": "string", "format": "bogus"}}, "bogus"),
    ({"json_schema": {"$ref": "#/$defs/missing"}}, "missing"),
    ({"json_schema": "not a schema"}, "json_schema"),
    ({"grammar": 5}, "grammar"),
    ({"grammar": 'root ::= "a"', "json_schema": {}}, "only one"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "schema"),
])
def test_bad_constraints_are_400(server: Server, body: dict[str, Any], needle: str) -> None:
    r = server.post("/completion", {"prompt": "x", "n_predict": 4, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle in err["message"]
    assert server.post("/completion", {"prompt": "x", "n_predict": 2}).status_code == 200


def test_server_wide_json_schema_flag(make_server: Any, model_path: str, tmp_path: Any) -> None:
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(PERSON))
    srv = make_server("-m", model_path, "-c", "1024", "-np", "1", "-jf", str(schema_file))
    body = srv.post("/completion", {"prompt": "Record:", "n_predict": PERSON_TOKENS, "temperature": 0}).json()
    CHECKER.validate(json.loads(body["content"]))
    free = srv.post("/completion", {"prompt": "Answer:", "n_predict": 4, "grammar": 'root ::= "ok"'}).json()
    assert free["content"] == "ok"  # a request's own constraint replaces the server default


JSON_CASES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"response_format": {"type": "json_object"}, "max_tokens": 8}),
    ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
        "required": ["city", "temp"]}}}, "max_tokens": 40}),
    ("/completion", {"prompt": "A JSON list of three fruits:", "json_schema": {"type": "array", "items": {"type": "string"}},
                     "n_predict": 40}),
    ("/completion", {"prompt": "Person as JSON:", "n_predict": 8, "json_schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}),
]


def test_json_output_is_llama_servers(model_path: str, llama_server: list[str]) -> None:
    """JSON constraints leave a model the whitespace llama.cpp's grammars do (nothing, a space, or up to two
    newlines and 20 spaces or tabs between tokens), so greedy JSON is llama-server's, character for character.
    With no room for "{\n", SmolLM2 wrote "{}" for a json_object and "[]" for a list of three fruits."""
    args = ["-m", model_path, "-np", "1", "-c", "2048", "-t", "2", "--jinja"]
    messages = [{"role": "user", "content": "What is the weather in Paris? Answer in JSON."}]
    texts = []
    for srv in (Server(args), Server(args, command=llama_server)):
        try:
            out = []
            for path, body in JSON_CASES:
                extra = {"messages": messages} if path.startswith("/v1/chat") else {}
                r = srv.post(path, {**body, **extra, "temperature": 0})
                assert r.status_code == 200, r.text
                j = r.json()
                out.append(j["choices"][0]["message"]["content"] if "choices" in j else j["content"])
            texts.append(out)
        finally:
            srv.stop()
    ours, theirs = texts
    assert ours == theirs
    assert ours[0].startswith("{\n") and len(json.loads(ours[2])) >= 3
