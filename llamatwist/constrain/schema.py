# -*- test-case-name: tests.test_constrain,tests.test_tools_api -*-
"""JSON schemas as llama.cpp reads them, before llguidance compiles them."""

from __future__ import annotations

from typing import Any

__all__ = ["COMPACT_JSON_LAYOUT", "JSON_KINDS", "JSON_LAYOUT", "closed_objects", "inline_schema", "json_kind",
           "may_be_string", "resolve_refs", "value_types"]

# JSON output layout: llama.cpp's (json-schema-to-grammar's SPACE_RULE): around every token of the JSON, nothing,
# one space, or one or two newlines and up to 20 spaces or tabs of indentation. Bounded, so a weak model cannot
# emit whitespace forever, and free enough that a model writes the JSON it would write unconstrained (with no
# room for "{\n", SmolLM2 writes "{}" for a json_object): the same output as llama-server's.
JSON_LAYOUT: dict[str, Any] = {
    "whitespace_flexible": True,
    "whitespace_pattern": "( |\n{1,2}[ \t]{0,20})?",
}

# Tool-call arguments inside a native format's grammar: compact, with a space after separators. A forced call
# has to end within the request's max_tokens, and with free whitespace SmolLM2 (DeepSeek-V3.1's format) spends
# them on newlines around commas (tests/test_tool_choice_forcing.py).
COMPACT_JSON_LAYOUT: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

# JSON Schema keywords holding subschemas (closed_objects looks only there, never into const/enum values)
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def closed_objects(schema: Any) -> Any:
    """``schema`` with ``"additionalProperties": false`` on every object schema that lists ``properties``
    and says nothing about other keys — llama.cpp's reading of a schema (common/json-schema.cpp), which
    llguidance (following JSON Schema) would otherwise leave open: a small model then adds keys of its own
    to a tool call until it runs out of tokens."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            out[key] = [closed_objects(s) for s in schema[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            out[key] = {name: closed_objects(sub) for name, sub in schema[key].items()}
    for key in _SUBSCHEMAS:
        if key in schema:
            out[key] = closed_objects(schema[key])
    if isinstance(schema.get("properties"), dict):
        out.setdefault("additionalProperties", False)
    return out


def inline_schema(schema: Any) -> dict[str, Any]:
    """``schema`` for a grammar's ``%json`` rule (tool-call arguments), read as a ``json_schema`` request is:
    closed objects and no keyword silently ignored; in the compact layout."""
    out = dict(closed_objects(schema)) if isinstance(schema, dict) else {}
    out["x-guidance"] = {**COMPACT_JSON_LAYOUT, "lenient": False, **(out.get("x-guidance") or {})}
    return out


# keywords whose values are data, not subschemas: a "$ref" key inside them is not a reference
_DATA_KEYWORDS = ("const", "enum", "default", "examples")


def resolve_refs(schema: Any) -> Any:
    """``schema`` with each local ``$ref`` (``#/$defs/...``, ``#/definitions/...``) replaced by what it points at
    (its sibling keywords kept), so that any part of it stands alone: a grammar or a parser that takes one
    parameter of a tool at a time (the tagged call formats) sees its real type, as llama.cpp's reading of the
    schema resolves references. A reference inside its own expansion (a recursive model) stays one, with the
    definitions beside it so that it still resolves where it lands."""
    if not isinstance(schema, dict):
        return schema
    defs = {k: schema[k] for k in ("$defs", "definitions") if isinstance(schema.get(k), dict)}

    def target(ref: str) -> Any:
        node: Any = schema
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, dict) else None

    def walk(node: Any, active: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, active) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and (found := target(ref)) is not None:
            if ref in active:
                return {**node, **defs}
            return walk({**found, **{k: v for k, v in node.items() if k != "$ref"}}, active | {ref})
        return {k: v if k in _DATA_KEYWORDS else walk(v, active) for k, v in node.items()}

    return walk(schema, frozenset())


#: JSON Schema's name for each kind of JSON value (bool before int: a bool is an int in Python)
JSON_KINDS: tuple[tuple[type, str], ...] = ((bool, "boolean"), (int, "integer"), (float, "number"), (dict, "object"),
                                            (list, "array"), (type(None), "null"), (str, "string"))


def json_kind(value: Any) -> str:
    """The JSON Schema type name of a decoded JSON value."""
    return next(name for kind, name in JSON_KINDS if isinstance(value, kind))


def value_types(schema: Any) -> frozenset[str] | None:
    """The JSON types a schema lets a value have (``None``: any, or the schema does not say)."""
    if not isinstance(schema, dict):
        return None
    alts = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alts, list):
        kinds = [value_types(alt) for alt in alts]
        return None if any(k is None for k in kinds) else frozenset().union(*(k for k in kinds if k is not None))
    if "const" in schema or "enum" in schema:
        values = schema["enum"] if isinstance(schema.get("enum"), list) else [schema.get("const")]
        return frozenset(json_kind(v) for v in values)
    kind = schema.get("type")
    if isinstance(kind, str | list):
        return frozenset(k for k in (kind if isinstance(kind, list) else [kind]) if isinstance(k, str))
    return frozenset({"object"}) if "properties" in schema else frozenset({"array"}) if "items" in schema else None


_STRING_HINTS = ("pattern", "minLength", "maxLength", "format")  # keywords that make an untyped schema a string's
_STRUCTURE = ("$ref", "oneOf", "anyOf", "type", "const", "enum", "properties", "allOf", "items", "prefixItems",
              *_STRING_HINTS)


def may_be_string(schema: Any) -> bool:
    """Whether a value of ``schema`` (its ``$ref``s resolved) may be a string, as llama.cpp's
    ``common_chat_schema::may_be_string`` reads it, keyword precedence included: where it may, llama.cpp's
    parsers of tagged tool-call formats read the value as raw text. An empty schema (any value) may not."""
    if not isinstance(schema, dict) or "$ref" in schema:  # an unresolved (or cyclic) reference: not a string
        return False
    if "oneOf" in schema or "anyOf" in schema:
        alts = schema["oneOf"] if "oneOf" in schema else schema["anyOf"]
        return isinstance(alts, list) and any(may_be_string(alt) for alt in alts)
    kind = schema.get("type")
    if isinstance(kind, list):
        return any(may_be_string({**schema, "type": k}) for k in kind)
    if "const" in schema:
        return isinstance(schema["const"], str)
    if "enum" in schema:
        return isinstance(schema["enum"], list) and any(isinstance(v, str) for v in schema["enum"])
    has_properties = "properties" in schema or schema.get("additionalProperties", True) is not True
    if kind is None:
        if has_properties:
            return False
        if "allOf" in schema:
            return _all_may_be_string(schema["allOf"])
        if "items" in schema or "prefixItems" in schema:
            return False
        return any(k in schema for k in _STRING_HINTS)
    if kind == "object" and not has_properties and "allOf" in schema:
        return _all_may_be_string(schema["allOf"])
    if kind == "string":
        return _all_may_be_string(schema["allOf"]) if "allOf" in schema else True
    return False


def _all_may_be_string(children: Any) -> bool:
    """Every child of an ``allOf`` lets a value be a string (one that says nothing constrains nothing)."""
    if not isinstance(children, list):
        return False
    said = [c for c in children if not (isinstance(c, dict) and not any(k in c for k in _STRUCTURE))]
    return bool(said) and all(may_be_string(c) for c in said)
