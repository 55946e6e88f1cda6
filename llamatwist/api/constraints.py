# -*- test-case-name: tests.test_constrained -*-
"""Request fields that constrain output: ``grammar``, ``json_schema`` and
OpenAI's ``response_format``, compiled off the reactor into a constraint."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.http import ApiContext
from llamatwist.api.params import read_budget_tokens
from llamatwist.constrain import ConstraintError, ConstraintFactory, compile_constraint
from llamatwist.constrain.lazy import LazyFactory, LazyTriggers
from llamatwist.constrain.reasoning_budget import ReasoningBudget, ReasoningBudgetFactory, ReasoningSwitch
from llamatwist.constrain.spec import ConstraintSpec
from llamatwist.runtime import GenerationParams

Trigger = tuple[int, str, int]  # (type, value, token id or -1)

__all__ = ["apply_constraint", "apply_reasoning_fields", "constraint_spec", "load_default", "with_reasoning_budget"]


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
    or schema error), made lazy by ``grammar_lazy``/``grammar_triggers``, and its ``preserved_tokens``; every
    route's tokenizing step, so its logit_bias text keys become token ids here too.
    Compiling takes ~0.1 s, so it runs in the thread pool."""
    spec = constraint_spec(body, ctx.default_constraint)
    params = await _token_biases(ctx, params)
    preserved = params.preserved_tokens | await _preserved_tokens(ctx, body.get("preserved_tokens"))
    lazy = body.get("grammar_lazy")
    if lazy is not None and not isinstance(lazy, bool):
        raise InvalidRequest("'grammar_lazy' must be a boolean")
    triggers = await _triggers(ctx, body.get("grammar_triggers"), preserved)
    params = dataclasses.replace(params, preserved_tokens=preserved, grammar_lazy=bool(lazy),
                                 grammar_triggers=triggers)
    if spec.empty:
        return params
    tokenizer = await ctx.engine.constraint_tokenizer()
    try:
        factory: ConstraintFactory = await ctx.engine.in_pool(
            compile_constraint, grammar=spec.grammar, json_schema=spec.json_schema,
            json_object=spec.json_object, tokenizer=tokenizer,
        )
        if lazy:
            factory = LazyFactory(factory, _lazy_triggers(triggers), tokenizer.tokens, tokenizer.n_vocab,
                                  tokenizer.tokenize)
    except ConstraintError as exc:
        raise InvalidRequest(str(exc)) from None
    return dataclasses.replace(params, constraint=factory, grammar_text=spec.text)


async def _token_biases(ctx: ApiContext, params: GenerationParams) -> GenerationParams:
    """``params`` with logit_bias by token id, as llama-server lists them in generation_settings: a text key
    becomes every token of its tokenization, an id outside the vocabulary goes."""
    biases = params.sampler.logit_bias
    if all(isinstance(key, int) and ctx.engine.valid_token(key) for key, _ in biases):
        return params
    resolved: list[tuple[int | str, float]] = []
    for key, bias in biases:
        if isinstance(key, str):
            resolved.extend((t, bias) for t in await ctx.engine.tokenize([key], False, False))
        elif ctx.engine.valid_token(key):
            resolved.append((key, bias))
    sampler = dataclasses.replace(params.sampler, logit_bias=tuple(resolved))
    return dataclasses.replace(params, sampler=sampler)


async def _tokens(ctx: ApiContext, text: str) -> tuple[int, ...]:
    return tuple(await ctx.engine.tokenize([text], False, True)) if text else ()


async def with_reasoning_budget(ctx: ApiContext, params: GenerationParams, start_tag: str, end_tags: Sequence[str],
                                message: str, budget: int, generation_prompt: str,
                                switch: ReasoningSwitch | None = None) -> GenerationParams:
    """``params`` with a reasoning budget (llama.cpp's reasoning-budget sampler) around its constraint: at
    most ``budget`` tokens (< 0: unlimited, the block still suspends the constraint) between the start tag
    and an end tag, then ``message`` and the first end tag are forced. Whether ``generation_prompt`` opened
    the block is read from its text, as the parser does (the tag's tokens in context need not be its own)."""
    start = await _tokens(ctx, start_tag)
    ends = tuple([await _tokens(ctx, tag) for tag in end_tags])
    # the budget counts from the start tag, the prompt's own tokens after it included (llama.cpp)
    opened = generation_prompt.rfind(start_tag)
    after = generation_prompt[opened + len(start_tag):] if opened >= 0 else ""
    is_open = opened >= 0 and not any(tag in after for tag in end_tags)
    prefill = start + await _tokens(ctx, after) if is_open else ()
    info = await ctx.engine.constraint_tokenizer()
    spec = ReasoningBudget(start=start, ends=ends, forced=await _tokens(ctx, message) + ends[0], budget=budget,
                           pieces=info.tokens, n_vocab=info.n_vocab, prefill=prefill)
    return dataclasses.replace(params, constraint=ReasoningBudgetFactory(spec, params.constraint, switch))


def _string(body: Mapping[str, Any], name: str) -> str:
    v = body.get(name)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise InvalidRequest(f"'{name}' must be a string")
    return v


async def apply_reasoning_fields(ctx: ApiContext, body: Mapping[str, Any], params: GenerationParams,
                                 ) -> GenerationParams:
    """A native request's reasoning budget, as llama-server reads it: ``reasoning_budget_tokens`` (>= 0)
    with ``reasoning_budget_start_tag`` and ``reasoning_budget_end_tags`` (or one
    ``reasoning_budget_end_tag``), ``reasoning_budget_message``, and ``generation_prompt`` (the prompt's tail,
    which may have opened the block). ``reasoning_control`` (ending reasoning at runtime) is refused."""
    if body.get("reasoning_control") is not None:
        if not isinstance(body["reasoning_control"], bool):
            raise InvalidRequest("'reasoning_control' must be a boolean")
        if body["reasoning_control"]:
            raise InvalidRequest("'reasoning_control' (ending reasoning at runtime) is not supported by llamatwist")
    budget = body.get("reasoning_budget_tokens")
    if budget is not None:
        budget = read_budget_tokens("reasoning_budget_tokens", budget)
    start = _string(body, "reasoning_budget_start_tag")
    ends = body.get("reasoning_budget_end_tags")
    if ends is None:
        ends = [_string(body, "reasoning_budget_end_tag")]
    elif not isinstance(ends, list) or not all(isinstance(t, str) for t in ends):
        raise InvalidRequest("'reasoning_budget_end_tags' must be an array of strings")
    ends = [t for t in ends if t]
    message = _string(body, "reasoning_budget_message")
    prompt = _string(body, "generation_prompt")
    if budget is None or budget < 0 or not start or not ends:
        return params
    return await with_reasoning_budget(ctx, params, start, ends, message, budget, prompt)


# llama.cpp's common_grammar_trigger_type, by number
TRIGGER_TOKEN, TRIGGER_WORD, TRIGGER_PATTERN, TRIGGER_PATTERN_FULL = range(4)


async def _single_token(ctx: ApiContext, text: str) -> int | None:
    ids = await ctx.engine.tokenize([text], False, True)
    return ids[0] if len(ids) == 1 else None


async def _preserved_tokens(ctx: ApiContext, value: Any) -> frozenset[int]:
    """Texts that are one token each: those tokens are written as their text in the output."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidRequest("'preserved_tokens' must be an array of strings")
    found = [await _single_token(ctx, text) for text in value]
    return frozenset(t for t in found if t is not None)


async def _triggers(ctx: ApiContext, value: Any, preserved: frozenset[int]) -> tuple[Trigger, ...]:
    """``grammar_triggers`` as llama-server reads them: ``{"type": 0..3, "value": str[, "token": id]}``; a
    word that is one token becomes a token trigger and must be a preserved token."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest("'grammar_triggers' must be an array of {\"type\", \"value\"} objects")
    out: list[Trigger] = []
    for i, t in enumerate(value):
        where = f"grammar_triggers[{i}]"
        kind = t.get("type") if isinstance(t, dict) else None
        text = t.get("value") if isinstance(t, dict) else None
        if not isinstance(kind, int) or isinstance(kind, bool) or kind not in range(4) or not isinstance(text, str):
            raise InvalidRequest(f"'{where}' must be an object with 'type' (0 token, 1 word, 2 pattern, "
                                 "3 full pattern) and a string 'value'")
        if kind == TRIGGER_TOKEN:
            token = t.get("token")
            if not isinstance(token, int) or isinstance(token, bool) or not ctx.engine.valid_token(token):
                raise InvalidRequest(f"'{where}.token' must be a token id of this model")
            out.append((kind, text, token))
        elif kind == TRIGGER_WORD and (token := await _single_token(ctx, text)) is not None:
            if token not in preserved:
                raise InvalidRequest(f"Grammar trigger word should be marked as preserved token: {text}")
            out.append((TRIGGER_TOKEN, text, token))
        else:
            out.append((kind, text, -1))
    return tuple(out)


def _lazy_triggers(triggers: tuple[Trigger, ...]) -> LazyTriggers:
    patterns = []
    for kind, text, _ in triggers:
        if kind == TRIGGER_WORD:
            patterns.append(re.escape(text))
        elif kind == TRIGGER_PATTERN:
            patterns.append(text)
        elif kind == TRIGGER_PATTERN_FULL:
            patterns.append(("" if text.startswith("^") else "^") + text + ("" if text.endswith("$") else "$"))
    return LazyTriggers(tuple(patterns), frozenset(tok for kind, _, tok in triggers if kind == TRIGGER_TOKEN))


def load_default(grammar: str | None, json_schema_text: str | None) -> ConstraintSpec:
    """The server-wide constraint from --grammar/--grammar-file or -j/-jf."""
    if json_schema_text:
        try:
            return ConstraintSpec(json_schema=json.loads(json_schema_text))
        except ValueError as exc:
            raise ValueError(f"invalid JSON schema: {exc}") from None
    return ConstraintSpec(grammar=grammar) if grammar else ConstraintSpec()
