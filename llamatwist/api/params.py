# -*- test-case-name: tests.test_params -*-
"""Request parameters: one declarative table, parsed by pure functions.

llama-server silently falls back to defaults on a mistyped field; here a
client's mistake is a 400 that names the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llamatwist.api.errors import InvalidRequest
from llamatwist.api.lora import read_lora
from llamatwist.config import REASONING_FORMATS
from llamatwist.media import EncodedMedia, MediaError, MediaInput, decode_base64, split_at_markers
from llamatwist.runtime import GenerationParams
from llamatwist.sampling_defaults import (
    RANDOM_SEED,
    SPEC_TYPES,
    LogitBias,
    SamplerSettings,
    SamplingDefaults,
    SpecParams,
    parse_spec_types,
    samplers_from_chars,
    samplers_from_names,
)

__all__ = [
    "CHAT_FORMATS",
    "FIELDS",
    "FIELDS_ELSEWHERE",
    "INT32_MAX",
    "READER_SCHEMAS",
    "CompletionRequest",
    "OutputOptions",
    "Prompt",
    "PromptPart",
    "TokenizeRequest",
    "check_parser_fields",
    "field_schema",
    "optional",
    "parse_chat_format",
    "parse_completion",
    "parse_detokenize",
    "parse_output_options",
    "parse_prompts",
    "parse_reasoning_format",
    "parse_response_fields",
    "parse_tokenize",
    "parse_verbose",
    "parser_settings",
    "project_fields",
    "read_budget_tokens",
    "read_int",
    "read_n_probs",
    "refuse_response_fields",
]

PromptPart = str | int | EncodedMedia | MediaInput
Prompt = list[PromptPart]  # a string, token ids, or a mix, in order; media (multimodal_data, image parts) between


# -- typed field readers -------------------------------------------------

def optional(body: Mapping[str, Any], name: str, default: Any) -> Any:
    """``body[name]``, or ``default`` where it is missing or null: as in llama-server, a client sends null to ask
    for the default."""
    value = body.get(name)
    return default if value is None else value


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


def _logit_bias_key(name: str, k: Any) -> int | str:
    if isinstance(k, str):
        # the OpenAI map keys token ids as strings; any other key is a text to tokenize
        return int(k) if re.fullmatch(r"[+-]?[0-9]+", k.strip()) else k
    if isinstance(k, int) and not isinstance(k, bool):
        return k
    raise InvalidRequest(f"'{name}' keys must be token ids or strings, got {json.dumps(k)}")


def _logit_bias_value(name: str, v: Any) -> float:
    if v is False:
        return float("-inf")  # llama-server: false bans the token
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise InvalidRequest(f"'{name}' biases must be numbers (or false to ban a token), got {json.dumps(v)}")
    return float(v)


def _logit_bias(name: str, v: Any) -> tuple[LogitBias, ...]:
    """``[[token, bias], ...]`` or ``{"token": bias}``; a token is an id or a
    string (every token of its tokenization is biased)."""
    if isinstance(v, list):
        out: list[LogitBias] = []
        for el in v:
            if not isinstance(el, list) or len(el) != 2:
                raise InvalidRequest(f"'{name}' must be an array of [token, bias] pairs or an object")
            key = el[0] if isinstance(el[0], str) else _logit_bias_key(name, el[0])
            out.append((key, _logit_bias_value(name, el[1])))
        return tuple(out)
    if isinstance(v, dict):
        return tuple((_logit_bias_key(name, k), _logit_bias_value(name, b)) for k, b in v.items())
    raise InvalidRequest(f"'{name}' must be an array of [token, bias] pairs or an object")


def _samplers(name: str, v: Any) -> tuple[str, ...]:
    """Sampler names in order, or the short form as one string of characters."""
    if isinstance(v, str):
        return samplers_from_chars(v)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return samplers_from_names(v)
    raise InvalidRequest(f"'{name}' must be an array of sampler names or a string of sampler characters")


def _n_probs(name: str, v: Any) -> int:
    # "logprobs" is llama-server's alias of n_probs; there a boolean reads as 0 or 1 (chat's logprobs: true)
    if name == "logprobs" and isinstance(v, bool):
        return int(v)
    return _int(name, v)


def _breakers(name: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise InvalidRequest(f"'{name}' must be a non-empty array of strings")


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Field:
    names: tuple[str, ...]  # first is canonical, the rest are aliases
    read: Callable[[str, Any], Any]
    target: str  # attribute of _Fields
    check: Callable[[Any], bool] | None = None  # a value outside is a 400 (llama-server's set_hard_limits)
    rule: str = ""
    clamp: tuple[float, float] | None = None  # a value outside is clamped (llama-server's set_limits)


def _within(lo: float, hi: float) -> tuple[Callable[[Any], bool], str]:
    """llama-server's set_hard_limits(lo, hi): the check and its rule."""
    return (lambda x: lo <= x <= hi), f"between {lo} and {hi}"


_COUNT = _within(0, INT32_MAX)  # llama-server's int32 counts
_COUNT_OR_ALL = _within(-1, INT32_MAX)  # ...where -1 means unlimited (or the whole context)
_MILLIS = _within(-1, INT64_MAX)


_UNIT = (0.0, 1.0)


FIELDS: tuple[Field, ...] = (
    Field(("n_predict", "max_completion_tokens", "max_tokens"), _int, "n_predict", *_COUNT_OR_ALL),
    Field(("n_keep",), _int, "n_keep", *_COUNT_OR_ALL),
    Field(("n_discard",), _int, "n_discard", *_COUNT),
    Field(("n_cache_reuse",), _int, "n_cache_reuse", *_COUNT),
    Field(("temperature",), _float, "temperature", clamp=(0.0, math.inf)),
    Field(("dynatemp_range",), _float, "dynatemp_range"),
    Field(("dynatemp_exponent",), _float, "dynatemp_exponent"),
    Field(("top_k",), _int, "top_k", clamp=(0, INT32_MAX)),
    Field(("top_p",), _float, "top_p", clamp=_UNIT),
    Field(("min_p",), _float, "min_p", clamp=_UNIT),
    Field(("top_n_sigma",), _float, "top_n_sigma"),
    Field(("xtc_probability",), _float, "xtc_probability", clamp=_UNIT),
    Field(("xtc_threshold",), _float, "xtc_threshold", clamp=_UNIT),
    Field(("typical_p",), _float, "typical_p"),
    Field(("min_keep",), _int, "min_keep", *_COUNT),
    Field(("repeat_last_n",), _int, "repeat_last_n", *_COUNT),
    # libllama's penalties sampler refuses it (llama-server: "Failed to initialize samplers")
    Field(("repeat_penalty",), _float, "repeat_penalty", lambda x: x > 0, "> 0"),
    Field(("presence_penalty",), _float, "presence_penalty"),
    Field(("frequency_penalty",), _float, "frequency_penalty"),
    Field(("dry_multiplier",), _float, "dry_multiplier"),
    Field(("dry_base",), _float, "dry_base"),  # < 1: the server default (generation_params)
    Field(("dry_allowed_length",), _int, "dry_allowed_length", *_COUNT),
    Field(("dry_penalty_last_n",), _int, "dry_penalty_last_n", *_COUNT),
    Field(("dry_sequence_breakers",), _breakers, "dry_sequence_breakers"),
    Field(("mirostat",), _int, "mirostat", clamp=(0, 2)),
    Field(("mirostat_tau",), _float, "mirostat_tau"),
    Field(("mirostat_eta",), _float, "mirostat_eta"),
    Field(("adaptive_target",), _float, "adaptive_target", clamp=(-math.inf, 1.0)),
    Field(("adaptive_decay",), _float, "adaptive_decay", *_within(0, 0.99)),
    Field(("seed",), _int, "seed"),
    Field(("ignore_eos",), _bool, "ignore_eos"),
    Field(("logit_bias",), _logit_bias, "logit_bias"),
    Field(("samplers",), _samplers, "samplers"),
    Field(("post_sampling_probs",), _bool, "post_sampling_probs"),
    Field(("backend_sampling",), _bool, "backend_sampling"),
    Field(("stop",), _stop, "stop"),
    # llama-server sets no upper limit: more than the vocabulary gives all of it
    Field(("n_probs", "logprobs"), _n_probs, "n_probs", *_COUNT),
    Field(("cache_prompt",), _bool, "cache_prompt"),
    Field(("id_slot",), _int, "id_slot", *_COUNT_OR_ALL),
    Field(("stream",), _bool, "stream"),
    Field(("return_tokens",), _bool, "return_tokens"),
    Field(("timings_per_token",), _bool, "timings_per_token"),
    Field(("return_progress",), _bool, "return_progress"),
    Field(("t_max_predict_ms",), _int, "t_max_predict_ms", *_MILLIS),
    Field(("t_max_prompt_ms",), _int, "t_max_prompt_ms", *_MILLIS),
    Field(("n_indent",), _int, "n_indent", *_COUNT),
    Field(("sse_ping_interval",), _int, "sse_ping_interval", *_COUNT_OR_ALL),
)


# llama-server's request fields (tools/server/server-schema.cpp) that are read outside FIELDS, and where.
# With FIELDS this covers every field of its schema (tests/test_params.py reads the pinned source).
FIELDS_ELSEWHERE: dict[str, str] = {
    "verbose": "params.parse_verbose: __verbose (the native result) on OpenAI results",
    "stream_options": "openai.protocol.parse_stream_options (include_usage); checked on native requests",
    "include_usage": "inside stream_options",
    "n_cmpl": "params.parse_n_cmpl (alias n): completions per prompt, up to the slot count",
    "n": "params.parse_n_cmpl",
    "response_fields": "params.parse_response_fields: native results projected; a 400 on OpenAI routes",
    "lora": "params.read_lora: per-request adapter scales",
    "json_schema": "api.constraints: compiled by llguidance",
    "grammar": "api.constraints: GBNF or Lark, compiled by llguidance",
    "grammar_lazy": "api.constraints + constrain.lazy: the grammar applies from a trigger",
    "grammar_triggers": "api.constraints: token, word, pattern and full-pattern triggers",
    "preserved_tokens": "api.constraints: control tokens written as text",
    "chat_format": "params.parse_chat_format: checked and echoed (the template picks the chat parser)",
    "reasoning_format": "params.parse_reasoning_format: chat parsing; echoed on native results",
    "generation_prompt": "native reasoning budget prefill; echoed in generation_settings",
    "parse_tool_calls": "params.check_parser_fields: checked (native content stays raw, as llama-server)",
    "chat_parser": "a 400: llama.cpp's PEG parser definitions are not supported",
    "continue_final_message": "chat templates (prefill); checked on native requests",
    "echo": "/v1/completions echo; checked on native requests",
    "reasoning_control": "openai.chat: its thinking can be ended at runtime (POST /v1/chat/completions/control); "
                         "a 400 when true on native requests",
    "reasoning_budget_tokens": "the reasoning budget (chat and native requests)",
    "reasoning_budget_start_tag": "native reasoning budget",
    "reasoning_budget_end_tags": "native reasoning budget",
    "reasoning_budget_end_tag": "native reasoning budget (alias)",
    "reasoning_budget_message": "the reasoning budget (chat and native requests)",
    **{name: "params.parse_speculative: this request's speculative decoding" for name in (
        "speculative.n_max", "speculative.n_min", "speculative.p_min", "speculative.type",
        "speculative.ngram_size_n", "speculative.ngram_size_m", "speculative.ngram_min_hits")},
}

_STRINGS = {"type": "array", "items": {"type": "string"}}
# The JSON Schema of what each reader takes, for /openapi.json; a reader missing here documents as any value.
READER_SCHEMAS: dict[Callable[[str, Any], Any], dict[str, Any]] = {
    _int: {"type": "integer"},
    _float: {"type": "number"},
    _bool: {"type": "boolean"},
    _stop: {"oneOf": [{"type": "string"}, _STRINGS]},
    _logit_bias: {"oneOf": [{"type": "array", "items": {"type": "array"}}, {"type": "object"}]},
    _samplers: {"oneOf": [_STRINGS, {"type": "string"}]},
    _n_probs: {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
    _breakers: _STRINGS,
}


def field_schema(f: Field) -> dict[str, Any]:
    """A table row as JSON Schema: its reader's type, its limit or clamp as a description."""
    schema = dict(READER_SCHEMAS.get(f.read, {}))
    if f.rule:
        schema["description"] = f"must be {f.rule}"
    elif f.clamp is not None:
        schema["description"] = f"clamped to [{f.clamp[0]}, {f.clamp[1]}]"
    return schema


def _checked(name: str, v: Any, read: Callable[[str, Any], Any], check: Callable[[Any], bool] | None,
             rule: str) -> Any:
    value = read(name, v)
    if check is not None and not check(value):
        raise InvalidRequest(f"'{name}' must be {rule}, got {json.dumps(v)}")
    return value


def read_int(name: str, v: Any, lo: int, hi: int) -> int:
    """An integer field from ``lo`` to ``hi`` (a JSON number with no fraction, as llama-server reads ints)."""
    n: int = _checked(name, v, _int, *_within(lo, hi))
    return n


def read_n_probs(name: str, v: Any) -> int:
    """How many top tokens to give probabilities for (``n_probs``, its alias ``logprobs``, OpenAI's
    ``top_logprobs``): 0 or more, as many as the vocabulary at most; ``logprobs: true`` is 1."""
    n: int = _checked(name, v, _n_probs, *_COUNT)
    return n


def read_budget_tokens(name: str, v: Any) -> int:
    """A reasoning budget in tokens (``reasoning_budget_tokens``): -1 (none) up to llama-server's int32 limit."""
    n: int = _checked(name, v, _int, *_COUNT_OR_ALL)
    return n


def read_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values of every field present in ``body`` (None counts as absent)."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        for name in f.names:
            if body.get(name) is None:
                continue
            value = _checked(name, body[name], f.read, f.check, f.rule)
            if f.clamp is not None:
                value = type(value)(min(max(value, f.clamp[0]), f.clamp[1]))
            out[f.target] = value
            break
    return out


_SAMPLER_FIELDS = tuple(f.name for f in dataclasses.fields(SamplerSettings))
# the GenerationParams fields a request sets; a field it leaves out keeps GenerationParams' default
_REQUEST_FIELDS = ("n_discard", "stop", "n_probs", "cache_prompt", "id_slot", "stream", "return_tokens",
                   "timings_per_token", "return_progress", "t_max_predict_ms", "t_max_prompt_ms", "n_indent")


def generation_params(body: Mapping[str, Any], defaults: SamplingDefaults) -> GenerationParams:
    """The request's fields over the server's defaults (a request's logit_bias
    replaces the -l/--logit-bias ones, as llama-server)."""
    v = read_fields(body)
    sampler = {name: v.get(name, getattr(defaults, name)) for name in _SAMPLER_FIELDS}
    # llama-server reads the seed as a uint32 (-5 is 4294967291); only -1 (RANDOM_SEED) draws a random one
    sampler["seed"] = sampler["seed"] & RANDOM_SEED
    if sampler["dry_base"] < 1.0:
        sampler["dry_base"] = defaults.dry_base  # as llama-server
    if not v.get("stop"):  # as llama-server: no effective stop strings -> the -r ones
        v["stop"] = defaults.stop
    v.setdefault("cache_prompt", defaults.cache_prompt)
    return GenerationParams(
        n_predict=v.get("n_predict", defaults.n_predict),
        n_keep=v.get("n_keep", defaults.n_keep),
        n_cache_reuse=v.get("n_cache_reuse", defaults.n_cache_reuse),
        sse_ping_interval=v.get("sse_ping_interval", defaults.sse_ping_interval),
        sampler=SamplerSettings(**sampler),
        lora=read_lora(body["lora"]) if body.get("lora") is not None else None,
        speculative=parse_speculative(body, defaults.speculative),
        **{name: v[name] for name in _REQUEST_FIELDS if name in v},
    )


# llama-server's per-request speculative fields (flat, dotted names), as SpecParams fields
_SPEC_FIELDS: dict[str, tuple[str, Callable[[str, Any], Any], Callable[[Any], bool], str]] = {
    "speculative.n_max": ("n_max", _int, *_COUNT),
    "speculative.n_min": ("n_min", _int, *_COUNT),
    "speculative.p_min": ("p_min", _float, *_within(0, 1)),
    "speculative.ngram_size_n": ("ngram_size_n", _int, *_within(1, INT32_MAX)),
    "speculative.ngram_size_m": ("ngram_size_m", _int, *_within(1, INT32_MAX)),
    "speculative.ngram_min_hits": ("ngram_min_hits", _int, *_within(1, INT32_MAX)),
}


def parse_speculative(body: Mapping[str, Any], default: SpecParams) -> SpecParams:
    """A request's speculation: llama-server's ``speculative.n_max``, ``.n_min``, ``.p_min``, ``.type``
    (``"none"`` turns it off) and the n-gram sizes, over the server's --spec-* defaults."""
    changes: dict[str, Any] = {}
    for name, (attr, read, check, rule) in _SPEC_FIELDS.items():
        if body.get(name) is not None:
            changes[attr] = _checked(name, body[name], read, check, rule)
    kind = body.get("speculative.type")
    if kind is not None:
        try:
            kind = parse_spec_types(kind) if isinstance(kind, str) else None
        except ValueError:
            kind = None
        if kind is None:
            raise InvalidRequest(f"'speculative.type' must be one of {', '.join(SPEC_TYPES)} (or a comma list of "
                                 f"them), got {json.dumps(body['speculative.type'])}")
        if "draft-simple" in kind.split(",") and not default.has_draft_model:
            raise InvalidRequest("'speculative.type' draft-simple needs a draft model: start the server with -md")
        for name, has, what in (("draft-eagle3", default.has_eagle3, "an EAGLE-3"),
                                ("draft-dflash", default.has_dflash, "a DFlash"),
                                ("draft-dspark", default.has_dspark, "a DSpark")):
            if name in kind.split(",") and not has:
                raise InvalidRequest(f"'speculative.type' {name} needs {what} draft model: start the server with -md "
                                     f"and --spec-type {name}")
        if "draft-mtp" in kind.split(",") and not default.has_mtp:
            raise InvalidRequest("'speculative.type' draft-mtp needs the model's MTP head: start the server with "
                                 "--spec-type draft-mtp")
        changes["type"] = kind
    return dataclasses.replace(default, **changes) if changes else default


def _prompt_part(v: Any) -> list[str | int] | None:
    """One prompt from a JSON value, or None when ``v`` is not a single prompt."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) or _is_token(x) for x in v):
        # A list of strings only is several prompts (llama-server); a list with
        # any token id is one mixed prompt.
        if v and all(isinstance(x, str) for x in v):
            return None
        return list(v)
    return None


def _is_token(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


MULTIMODAL_UNSUPPORTED = (
    "Multimodal data provided, but the embedding routes take no media: 'multimodal_data' is for completions "
    "on a server with a multimodal projector (--mmproj)"
)
_MEDIA_PARTS = {"image_url": "image", "input_audio": "audio", "input_video": "video", "video_url": "video"}


def _element_error(field: str, content_parts: bool) -> InvalidRequest:
    shapes = ["a string", "an array of token ids", "an array of strings and token ids",
              "an object with 'prompt_string'"]
    if content_parts:
        shapes.append("an object with 'content' (an array of text parts)")
    return InvalidRequest(f"'{field}' elements must be {', '.join(shapes[:-1])} or {shapes[-1]}")


def _prompt_object(field: str, v: dict[str, Any], content_parts: bool) -> Prompt:
    """llama-server's object prompts: ``{"prompt_string": ..., "multimodal_data": [...]}`` and, for
    embeddings, ``{"content": [{"type": "text", "text": ...}, ...]}`` (the texts joined)."""
    if content_parts and "content" in v:
        return [_content_text(field, v["content"])]
    if "prompt_string" not in v:
        raise _element_error(field, content_parts)
    text = v["prompt_string"]
    if v.get("multimodal_data") is not None:
        if content_parts:
            raise InvalidRequest(f"'{field}': {MULTIMODAL_UNSUPPORTED}")
        return _multimodal_prompt(field, text, v["multimodal_data"])
    if isinstance(text, str):
        return [text]
    if isinstance(text, list) and text and all(isinstance(x, str) or _is_token(x) for x in text):
        return list(text)  # tokenized as one mixed prompt, as llama-server's tokenize_mixed
    raise InvalidRequest(f"'{field}': 'prompt_string' must be a string or an array of strings and token ids")


def _multimodal_prompt(field: str, text: Any, data: Any) -> Prompt:
    """llama-server's ``{"prompt_string": "... <__media__> ...", "multimodal_data": [base64, ...]}``: one media
    file per marker, in order (decoded later, off the reactor thread)."""
    if not isinstance(data, list):
        raise InvalidRequest(f"'{field}': 'multimodal_data' must be an array of base64 strings")
    if not isinstance(text, str):
        raise InvalidRequest(f"'{field}': 'prompt_string' must be a string when 'multimodal_data' is given")
    try:
        media = [decode_base64(item, f"'multimodal_data[{i}]'") for i, item in enumerate(data)]
    except MediaError as exc:
        raise InvalidRequest(f"'{field}': {exc}") from None
    try:
        parts: Prompt = []
        parts.extend(split_at_markers(text, media))
        return parts
    except MediaError as exc:
        raise InvalidRequest(f"'{field}': 'prompt_string' and 'multimodal_data' disagree: {exc}") from None


def _content_text(field: str, parts: Any) -> str:
    """The text of an OpenAI content array; media parts need a multimodal projector."""
    if not isinstance(parts, list):
        raise InvalidRequest(f"'{field}': \"content\" must be an array of content parts")
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text", "")
            if not isinstance(text, str):
                raise InvalidRequest(f"'{field}': a text part's \"text\" must be a string")
            texts.append(text)
        elif kind in _MEDIA_PARTS:
            raise InvalidRequest(
                f"'{field}': {_MEDIA_PARTS[kind]} input is not supported - it needs a multimodal projector "
                "(--mmproj), which llamatwist does not support yet"
            )
        else:
            raise InvalidRequest(
                f"'{field}': unsupported content[].type {json.dumps(kind)} (expected \"text\")"
            )
    return "".join(texts)


def _subprompt(field: str, v: Any, content_parts: bool) -> Prompt:
    """One prompt (llama-server's tokenize_input_subprompt)."""
    if isinstance(v, dict):
        return _prompt_object(field, v, content_parts)
    p = _prompt_part(v)
    if p is None or not p:
        raise _element_error(field, content_parts)
    return list[PromptPart](p)


def parse_prompts(body: Mapping[str, Any], field: str = "prompt", content_parts: bool = False) -> list[Prompt]:
    """The prompt(s) of a request, as llama-server's tokenize_input_prompts: a string, token ids, a mix of
    strings and token ids, an object with ``prompt_string`` (and, with ``content_parts``, an object with an
    OpenAI ``content`` array), or an array of those -- one prompt each. An array holding any token id at its
    top level is one prompt."""
    if field not in body or body[field] is None:
        raise InvalidRequest(f"'{field}' is required")
    v = body[field]
    if isinstance(v, list) and not any(_is_token(x) for x in v):
        if not v:
            raise InvalidRequest(f"'{field}' must not be empty")
        return [_subprompt(field, item, content_parts) for item in v]
    if isinstance(v, (str, list, dict)):  # a bare token id is not a prompt (llama-server: a 400)
        return [_subprompt(field, v, content_parts)]
    raise InvalidRequest(
        f"'{field}' must be a string, an array of token ids, an object with 'prompt_string', or an array of those"
    )


# -- response options (native responses and the output parser) ----------

# llama-server's common_chat_format values, by number (the request's chat_format is the number)
CHAT_FORMATS = ("Content-only", "peg-simple", "peg-native", "peg-gemma4", "peg-minimax-m3")


def parse_chat_format(body: Mapping[str, Any]) -> int:
    """``chat_format``: llama-server's internal output-parser format, a number (0 = Content-only)."""
    v = body.get("chat_format")
    if v is None:
        return 0
    if not _is_token(v) or not 0 <= v < len(CHAT_FORMATS):
        names = ", ".join(f"{i} ({n})" for i, n in enumerate(CHAT_FORMATS))
        raise InvalidRequest(f"'chat_format' must be one of llama-server's chat format numbers {names}, "
                             f"got {json.dumps(v)}")
    return v


def parse_verbose(body: Mapping[str, Any], default: bool) -> bool:
    """``verbose``: OpenAI-shaped results carry the native result as ``__verbose`` (default: -v)."""
    v = body.get("verbose")
    return default if v is None else _bool("verbose", v)


def parse_response_fields(body: Mapping[str, Any]) -> tuple[str, ...]:
    v = body.get("response_fields")
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise InvalidRequest("'response_fields' must be an array of field names or paths "
                             f"(such as \"generation_settings/n_predict\"), got {json.dumps(v)}")
    return tuple(v)


def project_fields(obj: Mapping[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """llama-server's response_fields projection (json_get_nested_values): each path that exists, keyed
    by the path itself ("generation_settings/n_predict" lifts n_predict to the root under that name);
    missing paths are left out."""
    out: dict[str, Any] = {}
    for path in paths:
        current: Any = obj
        for key in path.split("/"):
            if not isinstance(current, Mapping) or key not in current:
                break
            current = current[key]
        else:
            out[path] = current
    return out


def refuse_response_fields(body: Mapping[str, Any]) -> None:
    """OpenAI-shaped responses are not projected (llama-server applies response_fields to its native
    responses only): a non-empty list there is a 400 rather than a silent no-op."""
    if parse_response_fields(body):
        raise InvalidRequest("'response_fields' applies to native responses only (/completion, /infill); "
                             "OpenAI-shaped responses are not projected")


@dataclass(frozen=True)
class OutputOptions:
    """Request fields that shape a native (/completion, /infill) response rather than the generation."""

    response_fields: tuple[str, ...] = ()
    chat_format: int = 0
    reasoning_format: str = "auto"
    generation_prompt: str = ""

    def echoed_by(self, params: GenerationParams) -> GenerationParams:
        """``params`` that list these parser settings in generation_settings and /slots."""
        return dataclasses.replace(params, parser_settings=parser_settings(
            CHAT_FORMATS[self.chat_format], self.reasoning_format, params.stream, self.generation_prompt))


def parser_settings(chat_format: str, reasoning_format: str, stream: bool,
                    generation_prompt: str) -> tuple[tuple[str, str | bool], ...]:
    """The output parser's entries of generation_settings, as llama-server lists them."""
    return (("chat_format", chat_format), ("reasoning_format", reasoning_format),
            ("reasoning_in_content", stream and reasoning_format == "deepseek-legacy"),
            ("generation_prompt", generation_prompt))


def parse_reasoning_format(body: Mapping[str, Any], default: str) -> str:
    v = body.get("reasoning_format")
    if v is None:
        return default
    if v not in REASONING_FORMATS:
        raise InvalidRequest(f"'reasoning_format' must be one of {', '.join(REASONING_FORMATS)}, got {json.dumps(v)}")
    return str(v)


def parse_output_options(body: Mapping[str, Any], reasoning_format: str) -> OutputOptions:
    """``response_fields``, ``chat_format`` and ``reasoning_format`` (default: the server's
    --reasoning-format) of a native request."""
    check_parser_fields(body)
    prompt = body.get("generation_prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequest("'generation_prompt' must be a string")
    return OutputOptions(
        parse_response_fields(body), parse_chat_format(body), parse_reasoning_format(body, reasoning_format),
        prompt or "",
    )


def check_parser_fields(body: Mapping[str, Any]) -> None:
    """The chat-parser fields llama-server takes on every completion request. On a native request they do
    not change its raw content (as in llama-server) but must be well formed; ``chat_parser`` (a llama.cpp
    PEG parser definition) cannot be honoured and is refused."""
    if body.get("chat_parser") is not None:
        raise InvalidRequest("'chat_parser' (a llama.cpp PEG parser definition) is not supported by llamatwist")
    for name in ("parse_tool_calls", "echo"):
        if body.get(name) is not None:
            _bool(name, body[name])
    cont = body.get("continue_final_message")
    if cont is not None and not isinstance(cont, (bool, str)):
        raise InvalidRequest("'continue_final_message' must be a boolean or a string")
    grammar_type = body.get("grammar_type")
    if grammar_type is not None and not isinstance(grammar_type, str):
        raise InvalidRequest("'grammar_type' must be a string")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object")
        if options.get("include_usage") is not None:
            _bool("stream_options.include_usage", options["include_usage"])


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
    content: list[str | int]
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
        add_special=_bool("add_special", optional(body, "add_special", False)),
        parse_special=_bool("parse_special", optional(body, "parse_special", True)),
        with_pieces=_bool("with_pieces", optional(body, "with_pieces", False)),
    )


def parse_detokenize(body: Mapping[str, Any]) -> list[int]:
    tokens = optional(body, "tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise InvalidRequest("'tokens' must be an array of token ids")
    return tokens
