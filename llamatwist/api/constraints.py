# -*- test-case-name: tests.test_constrained -*-
"""Request fields that constrain output: ``grammar``, ``json_schema`` and
OpenAI's ``response_format``, compiled off the reactor into a constraint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.http import ApiContext
from llamatwist.constrain import ConstraintError, compile_constraint
from llamatwist.constrain.spec import ConstraintSpec
from llamatwist.runtime import GenerationParams

__all__ = ["apply_constraint", "constraint_spec", "load_default"]


def _response_format(fmt: Any) -> ConstraintSpec:
    if not isinstance(fmt, dict):
        raise InvalidRequest("'response_format' must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return ConstraintSpec()
    if kind == "json_object":
        schema = fmt.get("schema")  # llama-server also takes {"type": "json_object", "schema": {...}}
        return ConstraintSpec(json_schema=schema) if schema is not None else ConstraintSpec(json_object=True)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidRequest("'response_format.json_schema.schema' is required")
        return ConstraintSpec(json_schema=spec["schema"])
    raise InvalidRequest("'response_format.type' must be one of text, json_object, json_schema")


def constraint_spec(body: Mapping[str, Any], server_default: ConstraintSpec) -> ConstraintSpec:
    """The request's constraint (at most one kind), else the server's -j/--grammar default."""
    grammar = body.get("grammar")
    schema = body.get("json_schema")
    fmt = body.get("response_format")
    given = [name for name, v in (("grammar", grammar), ("json_schema", schema), ("response_format", fmt))
             if v is not None]
    if len(given) > 1:
        raise InvalidRequest(f"only one of {', '.join(given)} may be given")
    if grammar is not None:
        if not isinstance(grammar, str):
            raise InvalidRequest("'grammar' must be a string")
        return ConstraintSpec(grammar=grammar) if grammar.strip() else ConstraintSpec()
    if schema is not None:
        if not isinstance(schema, (dict, bool)):
            raise InvalidRequest("'json_schema' must be an object")
        return ConstraintSpec(json_schema=schema)
    if fmt is not None:
        return _response_format(fmt)
    return server_default


async def apply_constraint(ctx: ApiContext, body: Mapping[str, Any], params: GenerationParams) -> GenerationParams:
    """``params`` with the request's compiled constraint (400 naming a grammar
    or schema error). Compiling takes ~0.1 s, so it runs in the thread pool."""
    spec = constraint_spec(body, ctx.default_constraint)
    if spec.empty:
        return params
    tokenizer = await ctx.engine.constraint_tokenizer()
    try:
        factory = await ctx.engine.in_pool(
            compile_constraint, grammar=spec.grammar, json_schema=spec.json_schema,
            json_object=spec.json_object, tokenizer=tokenizer,
        )
    except ConstraintError as exc:
        raise InvalidRequest(str(exc)) from None
    return dataclasses.replace(params, constraint=factory)


def load_default(grammar: str | None, json_schema_text: str | None) -> ConstraintSpec:
    """The server-wide constraint from --grammar/--grammar-file or -j/-jf."""
    if json_schema_text:
        try:
            return ConstraintSpec(json_schema=json.loads(json_schema_text))
        except ValueError as exc:
            raise ValueError(f"invalid JSON schema: {exc}") from None
    return ConstraintSpec(grammar=grammar) if grammar else ConstraintSpec()
