# -*- test-case-name: tests.test_tool_choice_forcing -*-
"""Grammars that force one tool call in a native format (``tool_choice: "required"`` or a named function).

llama-server constrains such a reply to the template's own call syntax; without it a model that would
rather chat (or write bare code) answers with content. Each native family writes a call its own way, so
each has a small builder here; the arguments inside are llguidance ``%json`` schemas (the tool's own
``parameters``), so the call is well-formed and its arguments validate.

The markers are written as the vocabulary spells them: a marker that is one control token of this model
(``<|python_tag|>`` in Llama 3, ``<｜tool▁sep｜>`` in DeepSeek) must be that token — a grammar string could
only spell it out of ordinary pieces — so ``specials`` maps such markers to their token ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamatwist.constrain.schema import inline_schema, resolve_refs, value_types

from .formats import DSML, MINIMAX_NS

__all__ = ["FORCED_FAMILIES", "ForcedCall", "forced_call_grammar"]


@dataclass(frozen=True)
class ForcedCall:
    """What a forced call's grammar needs: the family, the functions it may call, and the template's
    source (a family may write calls in more than one way, e.g. Mistral's JSON array or ``[ARGS]`` form)."""

    family: str
    functions: tuple[Mapping[str, Any], ...] = field(compare=False)
    template_source: str = field(default="", compare=False, repr=False)


class _Lark:
    """Accumulates named rules; ``lit`` spells a marker, ``args`` adds a %json rule."""

    def __init__(self, specials: Mapping[str, int]) -> None:
        self.specials = specials
        self.rules: list[str] = []

    def lit(self, text: str) -> str:
        """``text`` as grammar: its control token when it is one, else the literal characters."""
        if text in self.specials:
            return f"<[{self.specials[text]}]>"
        return json.dumps(text, ensure_ascii=False)

    def seq(self, *parts: str) -> str:
        """Literal text and rule references (``_Ref``), in order."""
        return " ".join(p if isinstance(p, _Ref) else self.lit(p) for p in parts if p)

    def rule(self, body: str) -> _Ref:
        name = _Ref(f"r{len(self.rules)}")
        self.rules.append(f"{name}: {body}")
        return name

    def token(self, regex: str) -> _Ref:
        """A lexeme (llguidance's ``&``/``~`` work on lexemes only)."""
        name = _Ref(f"T{len(self.rules)}")
        self.rules.append(f"{name}: {regex}")
        return name

    def json(self, schema: Any) -> _Ref:
        return self.rule("%json " + json.dumps(inline_schema(schema), ensure_ascii=False))

    def text(self, start: str) -> str:
        """``start: ...``, the rules after it."""
        return "\n".join([f"start: {start}", *self.rules]) + "\n"


class _Ref(str):
    """A rule name, as opposed to literal text."""


def _params(f: Mapping[str, Any]) -> Any:
    """The tool's parameters schema, its references resolved (the tagged formats constrain each parameter
    alone, away from the definitions)."""
    p = f.get("parameters")
    return resolve_refs(p) if isinstance(p, dict) and p else {"type": "object"}


def _call_object(f: Mapping[str, Any], name: str = "name", args: str = "arguments",
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = dict(extra or {})
    props[name] = {"const": f["name"]}
    props[args] = _params(f)
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _one_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return objects[0] if len(objects) == 1 else {"anyOf": objects}


Builder = Callable[[_Lark, Sequence[Mapping[str, Any]], str], str]


def _json_call(open_: str, close: str = "", name: str = "name", args: str = "arguments",
               array: bool = False, extra: Mapping[str, Any] | None = None, between: str = "") -> Builder:
    """``OPEN {"name": ..., "arguments": {...}} CLOSE`` (or an array of one such object)."""

    def build(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
        call = _one_of([_call_object(f, name, args, extra) for f in functions])
        schema = {"type": "array", "items": call, "minItems": 1, "maxItems": 1} if array else call
        return g.seq(open_, between, g.json(schema), between, close)

    return build


def _named(open_: str, name_end: str, close: str = "", after_args: str = "") -> Builder:
    """``OPEN NAME NAME_END {arguments} AFTER CLOSE``, one alternative per function."""

    def build(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
        return _alternatives(g.seq(open_, f["name"], name_end, g.json(_params(f)), after_args, close)
                             for f in functions)

    return build


def _alternatives(alts: Iterable[str]) -> str:
    return " | ".join(f"({a})" for a in alts)


def _mistral(g: _Lark, functions: Sequence[Mapping[str, Any]], src: str) -> str:
    if "[ARGS]" in src:  # Small 3.2, Devstral, Ministral: [TOOL_CALLS]NAME[ARGS]{...}
        return _alternatives(g.seq("[TOOL_CALLS]", f["name"], "[ARGS]", g.json(_params(f))) for f in functions)
    # Nemo: [TOOL_CALLS][{"name": ..., "arguments": {...}, "id": "<9 alphanumerics>"}]
    ident = {"id": {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}}
    objects = []
    for f in functions:
        obj = _call_object(f)
        obj["properties"] = {**obj["properties"], **ident}
        obj["required"] = [*obj["required"], "id"]
        objects.append(obj)
    schema = {"type": "array", "items": _one_of(objects), "minItems": 1, "maxItems": 1}
    return g.seq("[TOOL_CALLS]", g.json(schema))


_REGEX_META = set("\\.+*?()|[]{}^$#&-~/")


def _free_text(g: _Lark, prop: Any, end: str) -> str:
    """Free text closed by ``end``, within the property's maxLength, the marker included. A text marker closes
    a lazy rule (llguidance's ``suffix``: the text ends at the marker's first occurrence); a greedy lexeme
    would read on past it and never let the value close. A control-token marker cannot be text, so the
    lexeme ends where the model writes it."""
    limit = prop.get("maxLength") if isinstance(prop, dict) else None
    size = f"{{0,{int(limit)}}}" if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else "*"
    if end in g.specials:
        return g.seq(g.token(f"/(?s:.{size})/"), end)
    name = _Ref(f"r{len(g.rules)}")
    g.rules.append(f"{name}[suffix={json.dumps(end, ensure_ascii=False)}]: /(?s:.{size})/")
    return name


def _may_be_string(schema: Any) -> bool:
    """Whether a value under ``schema`` may be a string, so that any text is one (untyped values too)."""
    types = value_types(schema)
    return types is None or "string" in types


def _value(g: _Lark, prop: Any, end: str) -> tuple[str, bool]:
    """A parameter of a format that writes values untyped, then ``end`` (the marker closing it), and whether
    it is text: a string is free text, anything else JSON (read back as JSON by the parser) under the
    parameter's own schema."""
    if _may_be_string(prop):
        return _free_text(g, prop, end), True
    return g.seq(g.json(prop), end), False


def _required(params: Any) -> tuple[dict[str, Any], list[str]]:
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    return props, [k for k in params.get("required", []) if isinstance(k, str)]


Parts = tuple[str, ...]


def _tagged_call(open_: Callable[[str], Parts], param: Callable[[str, bool], tuple[Parts, Parts]], close: Parts,
                 value_end: str) -> Builder:
    """A call whose arguments are tagged key/value pairs (GLM, MiniMax-M2, DeepSeek's DSML, Seed-OSS):
    ``open_(name)``, then per required parameter ``param(key, is_text)`` around its value and the
    ``value_end`` marker after it, then ``close``; a text value is free text, any other JSON under the
    parameter's schema."""

    def build(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
        alts = []
        for f in functions:
            props, required = _required(_params(f))
            parts = []
            for key in required:
                value, text = _value(g, props.get(key), value_end)
                before, after = param(key, text)
                parts.append(g.seq(*before, _Ref(value), *after))
            alts.append(" ".join([g.seq(*open_(f["name"])), *parts, g.seq(*close)]))
        return _alternatives(alts)

    return build


def _glm(g: _Lark, functions: Sequence[Mapping[str, Any]], src: str) -> str:
    """``<tool_call>NAME<arg_key>KEY</arg_key><arg_value>VALUE</arg_value>...</tool_call>``, with newlines
    between the parts where the template writes them (GLM 4.5/4.6) or none (4.7)."""
    nl = "\n" if any("</arg_key>" + end in src for end in ("\n", "\\n")) else ""
    build = _tagged_call(lambda name: ("<tool_call>", name + nl),
                         lambda key, _text: (("<arg_key>", key, "</arg_key>", nl, "<arg_value>"), (nl,)),
                         ("</tool_call>",), "</arg_value>")
    return build(g, functions, src)


def _dsml(g: _Lark, functions: Sequence[Mapping[str, Any]], src: str) -> str:
    """DeepSeek V3.2/V4: ``<｜DSML｜function_calls>`` (V4: ``tool_calls``) around ``<｜DSML｜invoke name="NAME">``
    with ``<｜DSML｜parameter name="KEY" string="true|false">VALUE</｜DSML｜parameter>``s."""
    d = DSML
    block = "function_calls" if d + "function_calls" in src or "function_calls>" in src else "tool_calls"
    build = _tagged_call(
        lambda name: (f"<{d}{block}>", f'\n<{d}invoke name="{name}">\n'),
        lambda key, text: ((f'<{d}parameter name="{key}" string="{"true" if text else "false"}">',), ("\n",)),
        (f"</{d}invoke>\n", f"</{d}{block}>"), f"</{d}parameter>")
    return build(g, functions, src)


def _solar(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    ident = g.token("/[a-zA-Z0-9_]{9}/")
    return _alternatives(g.seq("<|tool_calls|>", "<|tool_call:begin|>", ident, "<|tool_call:name|>", f["name"],
                               "<|tool_call:args|>", g.json(_params(f)), "<|tool_call:end|>", "<|calls|>")
                         for f in functions)


def _lfm2(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    """``<|tool_call_start|>[NAME(key=value, ...)]<|tool_call_end|>``: the required parameters as JSON values
    (the parser reads them as Python literals, JSON's true/false/null too)."""
    alts = []
    for f in functions:
        props, required = _required(_params(f))
        args = ' ", " '.join(g.seq(f"{key}=", g.json(props.get(key, {}))) for key in required)
        alts.append(" ".join(p for p in (g.seq("<|tool_call_start|>", f"[{f['name']}("), args,
                                         g.seq(")]", "<|tool_call_end|>")) if p))
    return _alternatives(alts)


def _gigachat(*opening: str) -> Builder:
    """One call object after ``opening`` (3.1: ``<|function_call|>``; 3: a ``function call`` message)."""

    def build(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
        return g.seq(*opening, g.json(_one_of([_call_object(f) for f in functions])))

    return build


def _kimi_k2(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    return _alternatives(g.seq("<|tool_calls_section_begin|>", "<|tool_call_begin|>", f"functions.{f['name']}:0",
                               "<|tool_call_argument_begin|>", g.json(_params(f)), "<|tool_call_end|>",
                               "<|tool_calls_section_end|>") for f in functions)


def _apertus(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    """``<|tools_prefix|>[{"NAME": {arguments}}]<|tools_suffix|>``."""
    objects = [{"type": "object", "properties": {f["name"]: _params(f)}, "required": [f["name"]],
                "additionalProperties": False} for f in functions]
    schema = {"type": "array", "items": _one_of(objects), "minItems": 1, "maxItems": 1}
    return g.seq("<|tools_prefix|>", g.json(schema), "<|tools_suffix|>")


_XTML_TYPES = {"string": "string", "integer": "number", "number": "number", "boolean": "boolean", "object": "object",
               "array": "array", "null": "null"}


def _kimi_k3(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    """The tools section (after any thinking and response sections): ``<|open|>call tool="NAME" index="1"<|sep|>``
    with an ``<|open|>argument key="KEY" type="T"<|sep|>VALUE<|close|>argument<|sep|>`` per required parameter,
    T as the template writes it for the value."""
    alts = []
    for f in functions:
        props, required = _required(_params(f))
        parts = [g.seq("<|open|>", "tools", "<|sep|>", "<|open|>", f'call tool="{f["name"]}" index="1"', "<|sep|>")]
        for key in required:
            prop = props.get(key)
            kind = prop.get("type", "string") if isinstance(prop, dict) else "string"
            value, _text = _value(g, prop, "<|close|>")
            parts.append(g.seq("<|open|>", f'argument key="{key}" type="{_XTML_TYPES.get(str(kind), "string")}"',
                               "<|sep|>", _Ref(value), "argument", "<|sep|>"))
        parts.append(g.seq("<|close|>", "call", "<|sep|>", "<|close|>", "tools", "<|sep|>"))
        alts.append(" ".join(parts))
    return _alternatives(alts)


def _muse(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    """`` to=NAME<|message|>`` (after the prompt's ``<|start|>assistant``, or a new message after thinking) and
    the ATEM call."""
    start = f"({g.seq('<|start|>', 'assistant')})?"
    build = _tagged_call(
        lambda name: (f" to={name}", "<|message|>", "<atem:function_calls>", f'\n<atem:invoke name="{name}">\n'),
        lambda key, _text: ((f'<atem:parameter name="{key}">',), ("\n",)),
        ("</atem:invoke>", "\n", "</atem:function_calls>"), "</atem:parameter>")
    return f"{start} ({build(g, functions, _src)})"


def _functionary_v3_2(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    # the prompt ends with ">>>": the reply is NAME\n{arguments}
    return _alternatives(g.seq(f["name"] + "\n", g.json(_params(f))) for f in functions)


def _gemma4(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    """``<|tool_call>call:NAME{key:<|"|>text<|"|>,key:12}<tool_call|>`` with the required parameters; a
    string is quoted with ``<|"|>``, other values are JSON scalars."""
    quote = '<|"|>'
    alts = []
    for f in functions:
        props, required = _required(_params(f))
        items = []
        for key in required:
            prop = props.get(key)
            if not isinstance(prop, dict) or prop.get("type", "string") == "string":
                items.append(g.seq(f"{key}:", quote, _Ref(_free_text(g, prop, quote))))
            else:
                items.append(g.seq(f"{key}:", g.json(prop)))
        alts.append(" ".join([g.seq("<|tool_call>", f"call:{f['name']}{{"), ' "," '.join(items),
                              g.seq("}", "<tool_call|>")]))
    return _alternatives(alts)


def _harmony(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    # the prompt ends with <|start|>assistant; the end marker (<|call|>) is an end-of-generation token
    return _alternatives(g.seq("<|channel|>", f"commentary to=functions.{f['name']} ", "<|constrain|>", "json",
                               "<|message|>", g.json(_params(f))) for f in functions)


_DS_CALLS, _DS_CALL, _DS_SEP = "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>"
_DS_END, _DS_ENDS = "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>"


def _deepseek(r1: bool) -> Builder:
    def build(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
        if r1:
            return _alternatives(g.seq(_DS_CALLS, _DS_CALL, "function", _DS_SEP, f"{f['name']}\n```json\n",
                                       g.json(_params(f)), "\n```", _DS_END, _DS_ENDS) for f in functions)
        return _alternatives(g.seq(_DS_CALLS, _DS_CALL, f["name"], _DS_SEP, g.json(_params(f)), _DS_END, _DS_ENDS)
                             for f in functions)

    return build


def _llama3(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    return g.seq(g.json(_one_of([_call_object(f, "name", "parameters") for f in functions])))


def _repeat(array: Mapping[str, Any]) -> str:
    """Lark's repetition of an array schema's items: its minItems and maxItems where it has them."""
    def bound(key: str) -> int | None:
        n = array.get(key)
        return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None
    low, high = bound("minItems") or 0, bound("maxItems")
    if high is not None:
        return f"{{{low},{max(low, high)}}}"
    return f"{{{low},}}" if low else "*"


def _minimax_m3(g: _Lark, functions: Sequence[Mapping[str, Any]], _src: str) -> str:
    """``<tool_call>\n<invoke name="NAME">`` and the arguments as the template's ``to_xml`` writes them, every tag
    after the namespace token: a member is ``<KEY>VALUE</KEY>``, an object's members nested in it, an array's
    elements as ``<item>``s, a string as text, anything else as JSON (llama.cpp's grammar for the format)."""

    def element(tag: str, schema: Any) -> str:
        close = g.seq(MINIMAX_NS, f"</{tag}>")
        body: str
        if _may_be_string(schema):
            body = _free_text(g, schema, MINIMAX_NS) + " " + g.lit(f"</{tag}>")
        elif isinstance(schema.get("anyOf") or schema.get("oneOf"), list):
            alts = schema.get("anyOf") or schema.get("oneOf")
            body = _alternatives(_value_then(alt, close) for alt in alts)
        else:
            body = _value_then(schema, close)
        return g.seq(MINIMAX_NS, f"<{tag}>", g.rule(body))

    def members(schema: Mapping[str, Any]) -> str:
        props, required = _required(schema)
        return " ".join(element(key, props.get(key)) for key in required)

    def _value_then(schema: Any, close: str) -> str:
        kind = schema.get("type") if isinstance(schema, dict) else None
        if kind in ("object", None) and isinstance(schema, dict) and schema.get("properties"):
            return f"{members(schema)} {close}"
        if kind in ("array", None) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
            return f"{g.rule(element('item', schema['items']))}{_repeat(schema)} {close}"
        return f"{g.json(schema)} {close}"

    return _alternatives(g.seq(MINIMAX_NS, "<tool_call>", "\n", MINIMAX_NS, f'<invoke name="{f["name"]}">',
                               _Ref(members(_params(f))), MINIMAX_NS, "</invoke>", "\n", MINIMAX_NS, "</tool_call>")
                         for f in functions)


FORCED_FAMILIES: dict[str, Builder] = {
    "hermes": _json_call("<tool_call>", "</tool_call>", between="\n"),
    # <tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n...</function>\n</tool_call>
    "qwen3-coder": _tagged_call(lambda name: ("<tool_call>", f"\n<function={name}>\n"),
                                lambda key, _text: ((f"<parameter={key}>\n",), ("\n",)),
                                ("</function>\n", "</tool_call>"), "\n</parameter>"),
    "llama3": _llama3,
    "llama3-builtin": _llama3,
    "functionary-v3.2": _functionary_v3_2,
    "functionary-v3.1": _named("<function=", ">", "</function>"),
    "mistral": _mistral,
    "deepseek-r1": _deepseek(r1=True),
    "deepseek-v3.1": _deepseek(r1=False),
    "command-r7b": _json_call("<|START_ACTION|>", "<|END_ACTION|>", "tool_name", "parameters", array=True,
                              extra={"tool_call_id": {"type": "string", "pattern": "^[0-9]{1,3}$"}}),
    "granite": _json_call("<|tool_call|>", array=True),
    "phi-4": _json_call("<|tool_call|>", "<|/tool_call|>"),
    "apriel": _json_call("<tool_calls>", "</tool_calls>", array=True),
    "apriel-1.6": _json_call("<tool_calls>", "</tool_calls>", array=True),
    "gpt-oss": _harmony,
    "gemma4": _gemma4,
    "glm-4.5": _glm,
    "firefunction-v2": _json_call(" functools", array=True),
    "ling3": _glm,
    "minimax-m2": _tagged_call(lambda name: ("<minimax:tool_call>", f'\n<invoke name="{name}">\n'),
                               lambda key, _text: ((f'<parameter name="{key}">',), ("\n",)),
                               ("</invoke>\n", "</minimax:tool_call>"), "</parameter>"),
    "deepseek-dsml": _dsml,
    "hunyuan3": _tagged_call(
        lambda name: ("<tool_calls:opensource>", "\n", "<tool_call:opensource>", name, "<tool_sep:opensource>", "\n"),
        lambda key, _text: (("<arg_key:opensource>", key, "</arg_key:opensource>", "\n", "<arg_value:opensource>"),
                            ("\n",)),
        ("</tool_call:opensource>", "\n", "</tool_calls:opensource>"), "</arg_value:opensource>"),
    "lfm2": _lfm2,
    "gigachat3": _gigachat("<|message_sep|>", "\n\nfunction call", "<|role_sep|>", "\n"),
    "gigachat3.1": _gigachat("<|function_call|>"),
    "minimax-m1": _json_call("<tool_calls>", "</tool_calls>", between="\n"),
    "nemotron-v2": _json_call("<TOOLCALL>", "</TOOLCALL>", array=True),
    "solar-open": _solar,
    "minicpm5": _tagged_call(lambda name: (f'<function name="{name}">',),
                             lambda key, _text: ((f'<param name="{key}">',), ()),
                             ("</function>",), "</param>"),
    "kimi-k2": _kimi_k2,
    "apertus": _apertus,
    "command-r-plus": _json_call("Action:\n```json\n", "```", "tool_name", "parameters", array=True),
    "kimi-k3": _kimi_k3,
    "minimax-m3": _minimax_m3,
    "muse-glimmer": _muse,
    "seed-oss": _tagged_call(lambda name: ("<seed:tool_call>", f"\n<function={name}>\n"),
                             lambda key, _text: ((f"<parameter={key}>",), ("\n",)),
                             ("</function>\n", "</seed:tool_call>"), "</parameter>"),
}


def forced_call_grammar(call: ForcedCall, specials: Mapping[str, int]) -> str:
    """A llguidance (Lark) grammar whose every sentence is exactly one call in ``call.family``'s syntax."""
    build = FORCED_FAMILIES[call.family]
    g = _Lark(specials)
    return g.text(build(g, [f for f in call.functions if isinstance(f.get("name"), str)], call.template_source))
