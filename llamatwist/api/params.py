# -*- test-case-name: tests.test_params -*-
"""Request parameters: one declarative table, parsed by pure functions.

llama-server silently falls back to defaults on a mistyped field; here a
client's mistake is a 400 that names the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llamatwist.api.errors import InvalidRequest
from llamatwist.config import SamplingDefaults
from llamatwist.engine.sampling import RANDOM_SEED, SamplerSettings
from llamatwist.runtime.task import GenerationParams

__all__ = [
    "CompletionRequest",
    "Prompt",
    "PromptPart",
    "TokenizeRequest",
    "parse_completion",
    "parse_detokenize",
    "parse_json_body",
    "parse_prompts",
    "parse_tokenize",
]

PromptPart = str | int
Prompt = list[PromptPart]  # a string, token ids, or a mix, in order


def parse_json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"invalid JSON in request body: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


# -- typed field readers -------------------------------------------------

def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise InvalidRequest(f"'{name}' must be an integer, got {json.dumps(v)}")
    return int(v)


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidRequest(f"'{name}' must be a number, got {json.dumps(v)}")
    return float(v)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise InvalidRequest(f"'{name}' must be a boolean, got {json.dumps(v)}")
    return v


def _stop(name: str, v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,) if v else ()
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return tuple(s for s in v if s)
    raise InvalidRequest(f"'{name}' must be a string or an array of strings")


@dataclass(frozen=True)
class Field:
    names: tuple[str, ...]  # first is canonical, the rest are aliases
    read: Callable[[str, Any], Any]
    target: str  # attribute of _Fields
    check: Callable[[Any], bool] | None = None
    rule: str = ""


def _ge(lo: float) -> Callable[[Any], bool]:
    return lambda x: x >= lo


FIELDS: tuple[Field, ...] = (
    Field(("n_predict", "max_completion_tokens", "max_tokens"), _int, "n_predict", _ge(-1), ">= -1"),
    Field(("n_keep",), _int, "n_keep", _ge(-1), ">= -1"),
    Field(("temperature",), _float, "temperature"),
    Field(("top_k",), _int, "top_k"),
    Field(("top_p",), _float, "top_p"),
    Field(("min_p",), _float, "min_p"),
    Field(("typical_p",), _float, "typical_p"),
    Field(("min_keep",), _int, "min_keep", _ge(0), ">= 0"),
    Field(("repeat_last_n",), _int, "repeat_last_n", _ge(-1), ">= -1"),
    Field(("repeat_penalty",), _float, "repeat_penalty", _ge(0), ">= 0"),
    Field(("presence_penalty",), _float, "presence_penalty"),
    Field(("frequency_penalty",), _float, "frequency_penalty"),
    Field(("seed",), _int, "seed"),
    Field(("ignore_eos",), _bool, "ignore_eos"),
    Field(("stop",), _stop, "stop"),
    Field(("n_probs",), _int, "n_probs", lambda x: 0 <= x <= 100, "between 0 and 100"),
    Field(("cache_prompt",), _bool, "cache_prompt"),
    Field(("id_slot",), _int, "id_slot", _ge(-1), ">= -1"),
    Field(("stream",), _bool, "stream"),
    Field(("return_tokens",), _bool, "return_tokens"),
)


def read_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values of every field present in ``body`` (None counts as absent)."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        for name in f.names:
            if body.get(name) is None:
                continue
            value = f.read(name, body[name])
            if f.check is not None and not f.check(value):
                raise InvalidRequest(f"'{name}' must be {f.rule}, got {json.dumps(body[name])}")
            out[f.target] = value
            break
    return out


def generation_params(body: Mapping[str, Any], defaults: SamplingDefaults) -> GenerationParams:
    v = read_fields(body)
    seed = v.get("seed", defaults.seed)
    sampler = SamplerSettings(
        seed=RANDOM_SEED if seed < 0 else seed,
        temperature=v.get("temperature", defaults.temperature),
        top_k=v.get("top_k", defaults.top_k),
        top_p=v.get("top_p", defaults.top_p),
        min_p=v.get("min_p", defaults.min_p),
        typical_p=v.get("typical_p", 1.0),
        repeat_last_n=v.get("repeat_last_n", defaults.repeat_last_n),
        repeat_penalty=v.get("repeat_penalty", defaults.repeat_penalty),
        presence_penalty=v.get("presence_penalty", defaults.presence_penalty),
        frequency_penalty=v.get("frequency_penalty", defaults.frequency_penalty),
        min_keep=v.get("min_keep", 0),
        ignore_eos=v.get("ignore_eos", False),
    )
    return GenerationParams(
        n_predict=v.get("n_predict", defaults.n_predict),
        n_keep=v.get("n_keep", defaults.n_keep),
        stop=v.get("stop", ()),
        n_probs=v.get("n_probs", 0),
        cache_prompt=v.get("cache_prompt", True),
        id_slot=v.get("id_slot", -1),
        stream=v.get("stream", False),
        return_tokens=v.get("return_tokens", False),
        sampler=sampler,
    )


def _prompt_part(v: Any) -> Prompt | None:
    """One prompt from a JSON value, or None when ``v`` is not a single prompt."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    if isinstance(v, list) and all(
        isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool)) for x in v
    ):
        # A list of strings only is several prompts (llama-server); a list with
        # any token id is one mixed prompt.
        if v and all(isinstance(x, str) for x in v):
            return None
        return list(v)
    return None


def parse_prompts(body: Mapping[str, Any], field: str = "prompt") -> list[Prompt]:
    """The prompt(s) of a request: a string, token ids, a mix, or a list of those."""
    if field not in body or body[field] is None:
        raise InvalidRequest(f"'{field}' is required")
    v = body[field]
    single = _prompt_part(v)
    if single is not None:
        if not single:
            raise InvalidRequest(f"'{field}' must not be empty")
        return [single]
    if isinstance(v, list) and v:
        prompts = []
        for item in v:
            p = _prompt_part(item)
            if p is None or not p:
                raise InvalidRequest(f"'{field}' elements must be strings or token arrays")
            prompts.append(p)
        return prompts
    raise InvalidRequest(f"'{field}' must be a string, an array of token ids, or an array of those")


@dataclass(frozen=True)
class CompletionRequest:
    prompts: list[Prompt]
    params: GenerationParams
    n_cmpl: int = 1  # completions per prompt


def parse_n_cmpl(body: Mapping[str, Any], n_slots: int) -> int:
    """``n_cmpl`` (alias ``n``): 1 .. number of slots, as llama-server."""
    for name in ("n_cmpl", "n"):
        if body.get(name) is not None:
            n = _int(name, body[name])
            if not 1 <= n <= n_slots:
                raise InvalidRequest(f"'{name}' must be between 1 and {n_slots} (the number of slots), got {n}")
            return n
    return 1


def parse_completion(body: Mapping[str, Any], defaults: SamplingDefaults, n_slots: int = 1) -> CompletionRequest:
    return CompletionRequest(parse_prompts(body), generation_params(body, defaults), parse_n_cmpl(body, n_slots))


@dataclass(frozen=True)
class TokenizeRequest:
    content: Prompt
    add_special: bool
    parse_special: bool
    with_pieces: bool


def parse_tokenize(body: Mapping[str, Any]) -> TokenizeRequest:
    content = body.get("content")
    if content is None:
        raise InvalidRequest("'content' is required")
    part = _prompt_part(content)
    if part is None:
        if isinstance(content, list) and all(isinstance(x, str) for x in content):
            part = list(content)
        else:
            raise InvalidRequest("'content' must be a string or an array of strings and token ids")
    return TokenizeRequest(
        content=part,
        add_special=_bool("add_special", body.get("add_special", False)),
        parse_special=_bool("parse_special", body.get("parse_special", True)),
        with_pieces=_bool("with_pieces", body.get("with_pieces", False)),
    )


def parse_detokenize(body: Mapping[str, Any]) -> list[int]:
    tokens = body.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise InvalidRequest("'tokens' must be an array of token ids")
    return tokens
