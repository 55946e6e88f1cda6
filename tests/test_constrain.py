"""Constrained decoding (llamatwist.constrain) against the real default model.

SmolLM2-135M is weak: the constraints do all the work, so every generated
output must parse and validate, at any temperature.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import urlparse

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import numpy as np
import numpy.typing as npt
import pytest

from llamatwist.constrain import (
    Constraint,
    ConstraintError,
    LLGConstraint,
    LLGFactory,
    TokenizerInfo,
    compile_constraint,
    fill_masks,
)
from llamatwist.engine.batch import Batch
from llamatwist.engine.context import Context, ContextParams
from llamatwist.engine.model import Model
from llamatwist.engine.sampling import Sampler
from llamatwist.native.binding import lib
from llamatwist.sampling_defaults import SamplerSettings

# What the model picks depends on the CPU's SIMD path (greedy text of a tiny quantized model), so every schema
# below bounds its strings, numbers (multipleOf: a number's digits are otherwise endless, and a greedy model
# will write 1.000000... until the limit) and arrays: the grammar completes within MAX_TOKENS whatever the
# model picks (the longest, FORMATS, is ~120 tokens at one character per token).
MAX_TOKENS = 256


@pytest.fixture(scope="module")
def model(model_path: str) -> Model:
    return Model(model_path)


@pytest.fixture(scope="module")
def info(model: Model) -> TokenizerInfo:
    v = model.vocab
    n = v.n_tokens
    pieces = [v.token_to_piece(i, special=True) for i in range(n)]
    attrs = [int(lib.llama_vocab_get_attr(v.ptr, i)) for i in range(n)]
    eog = [i for i in range(n) if v.is_eog(i)]

    def tokenize(data: bytes) -> list[int]:
        return v.tokenize(data.decode("utf-8", "replace"), add_special=False)

    return TokenizerInfo.from_attrs(pieces, attrs, eog, tokenize, bos_id=v.bos)


@pytest.fixture(scope="module")
def ctx(model: Model) -> Context:
    return Context(model, ContextParams(n_ctx=1024, n_seq_max=2, n_threads=2, n_threads_batch=2))


def _draw(logits: npt.NDArray[np.float32], temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


def takes(c: Constraint, info: TokenizerInfo, text: str) -> bool:
    """Whether ``c`` lets every token of ``text`` through (the tokens are then accepted)."""
    for t in info.tokenize(text.encode("utf-8")):
        if not c.allowed_mask()[t]:
            return False
        c.accept(t)
    return True


def generate(model: Model, ctx: Context, info: TokenizerInfo, c: Constraint, prompt: str,
             temperature: float = 0.0, seed: int = 0, max_tokens: int = MAX_TOKENS) -> tuple[str, bool]:
    """The decode loop the server runs, sampling with numpy from the masked
    logits copy.  Returns the text and whether the grammar completed."""
    ctx.clear()
    rng = np.random.default_rng(seed)
    eog = set(info.eog_ids)
    tokens = model.vocab.tokenize(prompt)
    b = Batch(512)
    idx = b.add_sequence(tokens, 0, 0, True)
    ctx.decode(b)
    pos, out = len(tokens), []
    for _ in range(max_tokens):
        logits = ctx.logits(idx)
        c.fill_mask(logits)
        t = _draw(logits, temperature, rng)
        c.accept(t)
        if t in eog:
            break
        out.append(t)
        if c.is_finished():
            break
        b.clear()
        idx = b.add(t, pos, 0, True)
        pos += 1
        ctx.decode(b)
    text = b"".join(info.tokens[t] for t in out).decode("utf-8")
    return text, c.is_accepting()


# -- JSON schemas covering the listed features ---------------------------------

PERSON: dict[str, Any] = {  # all JSON types, properties / required / additionalProperties, bounds
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "height": {"type": "number", "exclusiveMinimum": 0, "maximum": 3, "multipleOf": 0.25},
        "married": {"type": "boolean"},
        "spouse": {"type": "null"},
        "nickname": {"type": "string", "maxLength": 8},
    },
    "required": ["name", "age", "height", "married", "spouse"],
    "additionalProperties": False,
}

CHOICES: dict[str, Any] = {  # enum, const, anyOf, oneOf, allOf
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "kind": {"const": "widget"},
        "size": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 9},
                           {"type": "string", "enum": ["S", "M", "L"]}]},
        "id": {"oneOf": [{"type": "string", "format": "uuid"},
                         {"type": "integer", "minimum": 0, "maximum": 999}]},
        "flags": {"allOf": [
            {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {}},
             "required": ["a"], "additionalProperties": False},
            {"properties": {"a": {}, "b": {"type": "boolean"}}, "required": ["b"], "additionalProperties": False},
        ]},
    },
    "required": ["color", "kind", "size", "id", "flags"],
    "additionalProperties": False,
}

ARRAYS: dict[str, Any] = {  # items / prefixItems / minItems / maxItems, nested arrays
    "type": "object",
    "properties": {
        "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100},
                   "minItems": 2, "maxItems": 4},
        "point": {"type": "array", "prefixItems": [
            {"type": "number", "minimum": -10, "maximum": 10, "multipleOf": 0.25},
            {"type": "number", "minimum": -10, "maximum": 10, "multipleOf": 0.5},
            {"type": "string", "maxLength": 5},
        ], "items": False, "minItems": 3},
        "matrix": {"type": "array", "minItems": 1, "maxItems": 2,
                   "items": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2}},
    },
    "required": ["scores", "point", "matrix"],
    "additionalProperties": False,
}

REFS: dict[str, Any] = {  # nested objects, $ref / $defs, pattern
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string", "maxLength": 20},
                           "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        },
        "person": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12}, "home": {"$ref": "#/$defs/address"}},
            "required": ["name", "home"],
            "additionalProperties": False,
        },
    },
    "type": "object",
    "properties": {"owner": {"$ref": "#/$defs/person"}, "office": {"$ref": "#/$defs/address"}},
    "required": ["owner", "office"],
    "additionalProperties": False,
}

FORMATS: dict[str, Any] = {  # date / time formats (fractional seconds are unbounded: cap the length)
    "type": "object",
    "properties": {
        "day": {"type": "string", "format": "date"},
        "clock": {"type": "string", "format": "time", "maxLength": 16},
        "stamp": {"type": "string", "format": "date-time", "maxLength": 30},
        "id": {"type": "string", "format": "uuid"},
    },
    "required": ["day", "clock", "stamp", "id"],
    "additionalProperties": False,
}

STRINGS: dict[str, Any] = {  # email, uri, pattern, minLength / maxLength
    "type": "object",
    "properties": {
        "mail": {"type": "string", "format": "email", "maxLength": 24},
        "site": {"type": "string", "format": "uri", "maxLength": 24},
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
        "word": {"type": "string", "minLength": 3, "maxLength": 6},
    },
    "required": ["mail", "site", "code", "word"],
    "additionalProperties": False,
}

SCALARS: list[dict[str, Any]] = [  # top-level values of every type
    {"type": "string", "maxLength": 10},
    {"type": "integer", "minimum": -50, "maximum": 50},
    {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.125},
    {"type": "boolean"},
    {"type": "null"},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 5},
    {"type": "object", "properties": {"k": {"type": "string", "maxLength": 4}}, "required": ["k"],
     "additionalProperties": False},
]

SCHEMAS = {"person": PERSON, "choices": CHOICES, "arrays": ARRAYS, "refs": REFS, "formats": FORMATS,
           "strings": STRINGS}
PROMPTS = {
    "person": "A person as JSON:\n",
    "choices": "A product as JSON:\n",
    "arrays": "Some numbers as JSON:\n",
    "refs": "An owner and an office as JSON:\n",
    "formats": "A calendar event as JSON:\n",
    "strings": "A contact as JSON:\n",
}


def check_formats(value: Any, schema: dict[str, Any]) -> None:
    """jsonschema checks formats only where it has a checker: uri needs rfc3987."""
    validator = jsonschema.Draft202012Validator
    jsonschema.validate(value, schema, cls=validator, format_checker=validator.FORMAT_CHECKER)
    if schema is FORMATS:
        uuid.UUID(value["id"])
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", value["day"])
    if schema is STRINGS:
        assert urlparse(value["site"]).scheme, value["site"]
        assert "@" in value["mail"]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize(("temperature", "seed"), [(0.0, 0), (0.8, 1), (1.5, 2)])
def test_json_schema_outputs_validate(model: Model, ctx: Context, info: TokenizerInfo,
                                      name: str, temperature: float, seed: int) -> None:
    schema = SCHEMAS[name]
    factory = compile_constraint(json_schema=schema, tokenizer=info)
    text, done = generate(model, ctx, info, factory.new(), PROMPTS[name], temperature, seed)
    assert done, f"grammar not complete after {MAX_TOKENS} tokens: {text!r}"
    check_formats(json.loads(text), schema)


@pytest.mark.parametrize("schema", SCALARS, ids=[s["type"] for s in SCALARS])
def test_top_level_types(model: Model, ctx: Context, info: TokenizerInfo, schema: dict[str, Any]) -> None:
    factory = compile_constraint(json_schema=schema, tokenizer=info)
    for temperature, seed in ((0.0, 0), (1.0, 3)):
        text, done = generate(model, ctx, info, factory.new(), "Value:", temperature, seed)
        assert done, text
        check_formats(json.loads(text), schema)


def test_json_object_and_schema_forms(model: Model, ctx: Context, info: TokenizerInfo) -> None:
    factory = compile_constraint(json_object=True, tokenizer=info)
    assert factory.description == "json_object"
    for temperature, seed in ((0.0, 0), (0.7, 5)):
        text, done = generate(model, ctx, info, factory.new(), 'A user, as JSON: {"name": "Bob", "id": 3}\n',
                              temperature, seed, max_tokens=256)
        if done:  # "any object" has no length bound: a weak model may ramble on
            assert isinstance(json.loads(text), dict)
        else:
            assert text.startswith("{")
    # a schema may also come as JSON text, and `true` means any value
    assert compile_constraint(json_schema=json.dumps(PERSON), tokenizer=info).description == "json_schema"
    compile_constraint(json_schema=True, tokenizer=info)


def test_listed_properties_close_an_object(model: Model, ctx: Context, info: TokenizerInfo) -> None:
    """As llama.cpp reads a schema: an object listing properties takes no others
    unless additionalProperties says so (JSON Schema itself would allow them)."""
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}}, "required": ["name"]}
    factory = compile_constraint(json_schema=schema, tokenizer=info)
    prompt = 'Users as JSON:\n{"name": "Bob", "id": 3, "email": "bob@example.com", "age": 40}\n'
    for temperature, seed in ((0.0, 0), (1.0, 1), (1.5, 2)):
        text, done = generate(model, ctx, info, factory.new(), prompt, temperature, seed, max_tokens=64)
        assert done and set(json.loads(text)) == {"name"}, text
    assert not takes(factory.new(), info, '{"name": "Bob", ')  # nothing after the listed one
    # additionalProperties opens it, to what it says. Checked on fixed text: the model could name properties
    # (unbounded strings) until the token limit.
    open_factory = compile_constraint(json_schema={**schema, "additionalProperties": {"type": "integer"}},
                                      tokenizer=info)
    c = open_factory.new()
    assert takes(c, info, '{"name": "Bob", "id": 3, "age": 40}') and c.is_accepting()
    assert not takes(open_factory.new(), info, '{"name": "Bob", "email": "b')


# -- GBNF -----------------------------------------------------------------------

ARITH = r"""
root  ::= expr
expr  ::= term (("+" | "-") term){0,3}
term  ::= factor (("*" | "/") factor){0,2}
factor ::= num | "(" expr ")"
num   ::= [1-9] [0-9]{0,2}
"""


def test_gbnf_yes_no(model: Model, ctx: Context, info: TokenizerInfo) -> None:
    factory = compile_constraint(grammar='root ::= "yes" | "no"', tokenizer=info)
    for temperature, seed in ((0.0, 0), (1.0, 1), (2.0, 2)):
        text, done = generate(model, ctx, info, factory.new(), "Is the sky blue? Answer:", temperature, seed)
        assert done and text in ("yes", "no"), text


def test_gbnf_arithmetic(model: Model, ctx: Context, info: TokenizerInfo) -> None:
    factory = compile_constraint(grammar=ARITH, tokenizer=info)
    pattern = re.compile(r"[0-9+\-*/()]+")
    for temperature, seed in ((0.0, 0), (0.8, 1), (1.5, 2)):
        text, done = generate(model, ctx, info, factory.new(), "2+3*4 = 14\n10/2-1 = 4\n", temperature, seed, 96)
        assert done and pattern.fullmatch(text), text
        eval(compile(text, "<arith>", "eval"), {"__builtins__": {}})  # well-formed expression


def test_gbnf_llama_cpp_grammar_files(info: TokenizerInfo) -> None:
    """The example grammars shipped with the pinned llama.cpp all compile."""
    import build_native

    src = build_native.place_source()  # a fresh clone has no third_party/ yet: extract the pinned sdist
    grammars = sorted((src / "grammars").glob("*.gbnf"))
    assert len(grammars) >= 8
    for path in grammars:
        compile_constraint(grammar=path.read_text(), tokenizer=info)


def test_gbnf_with_libllama_sampler_chain(model: Model, ctx: Context, info: TokenizerInfo) -> None:
    """The server's path: mask libllama's logits row in place, then its chain samples."""
    factory = compile_constraint(grammar='root ::= ("cat" | "dog" | "bird") " " [0-9]', tokenizer=info)
    for seed in (1, 2, 3):
        c = factory.new()
        sampler = Sampler(model, SamplerSettings(temperature=1.5, seed=seed, top_k=0, top_p=1.0, min_p=0.0))
        ctx.clear()
        tokens = model.vocab.tokenize("Pets:")
        b = Batch(64)
        idx = b.add_sequence(tokens, 0, 0, True)
        ctx.decode(b)
        pos, out = len(tokens), []
        while True:
            c.fill_mask(ctx.logits_view(idx))
            t = sampler.sample(ctx, idx)
            c.accept(t)
            if t in info.eog_ids or c.is_finished():
                if t not in info.eog_ids:
                    out.append(t)
                break
            out.append(t)
            b.clear()
            idx = b.add(t, pos, 0, True)
            pos += 1
            ctx.decode(b)
        text = model.vocab.detokenize(out)
        assert re.fullmatch(r"(cat|dog|bird) [0-9]", text), text


# -- errors ---------------------------------------------------------------------

@pytest.mark.parametrize(("grammar", "message"), [
    ('root ::= "yes" | "no', "Unexpected end of input"),
    ("root ::= foo", "Rule 'foo' not found"),
    ('answer ::= "yes"', "No 'root' rule"),
    ("root ::= [a-", "Unexpected end"),
    ("   ", "empty"),
])
def test_bad_grammar(info: TokenizerInfo, grammar: str, message: str) -> None:
    with pytest.raises(ConstraintError, match=re.escape(message)):
        compile_constraint(grammar=grammar, tokenizer=info)


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "array", "contains": {"type": "integer"}}, "contains"),
    ({"not": {"type": "integer"}}, "not"),
    ({"if": {"type": "integer"}, "then": {"minimum": 1}}, "if"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
    ({"type": "string", "format": "bogus"}, "Unknown format: bogus"),
    ({"$ref": "https://example.com/schema.json"}, "https://example.com/schema.json"),
    ({"$ref": "#/$defs/missing"}, "missing"),
    ([1, 2], "must be an object"),
    ("{not json", "not valid JSON"),
    (False, "matches nothing"),
])
def test_unsupported_schema(info: TokenizerInfo, schema: Any, message: str) -> None:
    with pytest.raises(ConstraintError, match=re.escape(message)):
        compile_constraint(json_schema=schema, tokenizer=info)


def test_lenient_cannot_be_switched_on(info: TokenizerInfo) -> None:
    schema = {"type": "array", "uniqueItems": True, "x-guidance": {"lenient": True}}
    with pytest.raises(ConstraintError, match="uniqueItems"):
        compile_constraint(json_schema=schema, tokenizer=info)


def test_exactly_one_source(info: TokenizerInfo) -> None:
    with pytest.raises(ConstraintError, match="exactly one"):
        compile_constraint(tokenizer=info)
    with pytest.raises(ConstraintError, match="grammar, json_schema"):
        compile_constraint(grammar='root ::= "a"', json_schema={}, tokenizer=info)


# -- state machine --------------------------------------------------------------

def test_accept_mask_finish_reset(info: TokenizerInfo) -> None:
    factory = compile_constraint(grammar='root ::= "yes" | "no"', tokenizer=info)
    c = factory.new()
    assert isinstance(c, Constraint) and isinstance(c, LLGConstraint)
    allowed = c.allowed_mask()
    assert allowed.dtype == np.bool_ and allowed.shape == (info.n_vocab,)
    texts = {info.tokens[t] for t in np.flatnonzero(allowed).tolist()}
    assert texts and all(b"yes".startswith(t) or b"no".startswith(t) for t in texts)
    assert not any(allowed[t] for t in info.eog_ids)  # nothing complete yet
    logits = np.zeros(info.n_vocab, dtype=np.float32)
    c.fill_mask(logits)
    assert np.array_equal(np.isfinite(logits), allowed)
    # a token outside the grammar is refused
    bad = info.tokens.index(b"maybe") if b"maybe" in info.tokens else info.tokens.index(b"m")
    with pytest.raises(ConstraintError, match="rejected"):
        c.accept(bad)
    c = factory.new()
    (yes,) = info.tokenize(b"yes")
    c.accept(yes)
    assert c.is_accepting() and c.is_finished()
    # complete: only end-of-generation tokens remain allowed, and one is accepted
    assert set(np.flatnonzero(c.allowed_mask()).tolist()) == set(info.eog_ids)
    c.accept(info.eog_ids[0])
    assert c.is_finished() and c.stop_reason() in ("EndOfSentence", "NoExtension")
    c.reset()
    assert not c.is_accepting() and np.array_equal(c.allowed_mask(), allowed)


def test_optional_tail_allows_eog(info: TokenizerInfo) -> None:
    c = compile_constraint(grammar='root ::= "a" "b"?', tokenizer=info).new()
    c.accept(info.tokens.index(b"a"))
    mask = c.allowed_mask()
    assert c.is_accepting() and not c.is_finished()
    assert all(mask[t] for t in info.eog_ids) and mask[info.tokens.index(b"b")]


def test_special_tokens_not_produced_by_text(info: TokenizerInfo) -> None:
    """A literal "<|im_end|>" in a grammar spells the characters, never the control token."""
    c = compile_constraint(grammar='root ::= "<|im_end|>"', tokenizer=info).new()
    mask = c.allowed_mask()
    assert not any(mask[t] for t in info.special_ids)


def test_fill_masks_batch_matches_single(info: TokenizerInfo) -> None:
    factories: list[LLGFactory] = [compile_constraint(json_schema=s, tokenizer=info) for s in (PERSON, ARRAYS)]
    factories.append(compile_constraint(grammar=ARITH, tokenizer=info))
    rng = np.random.default_rng(0)
    batch = [f.new() for f in factories]
    single = [f.new() for f in factories]
    for _ in range(3):
        rows = [rng.standard_normal(info.n_vocab).astype(np.float32) for _ in batch]
        copies = [r.copy() for r in rows]
        fill_masks(list(zip(batch, rows)))
        for c, r in zip(single, copies):
            c.fill_mask(r)
        for r1, r2 in zip(rows, copies):
            assert np.array_equal(r1, r2)
        for c1, c2, r in zip(batch, single, rows):
            t = int(np.argmax(r))
            c1.accept(t)
            c2.accept(t)


def test_a_forced_text_value_closes_at_its_marker(info: TokenizerInfo) -> None:
    """A required call in an XML-valued format (Seed-OSS, Qwen3-Coder, GLM, MiniMax...) without a maxLength:
    a text value ends at its closing tag, written as text tokens (a greedy lexeme would read on past it and
    never close), and may hold other tags."""
    from llamatwist.chat.toolcalls.forced import ForcedCall, forced_call_grammar

    function = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                      "required": ["city"]}}
    grammar = forced_call_grammar(ForcedCall("seed-oss", (function,)), {})
    head = "<seed:tool_call>\n<function=get_weather>\n<parameter=city>"
    for value in ("Paris", "<b>Paris</b>", "Paris</parameter_1>"):
        c = compile_constraint(grammar=grammar, tokenizer=info).new()
        assert takes(c, info, head + value + "</parameter>\n</function>\n</seed:tool_call>"), value
        assert c.is_finished(), value
