"""Output formats: one table entry per family, parsed on the shared ``Scanner``, detected from the template
source the way llama.cpp picks its handler.

Most families are "content, then tool calls opened by a marker": ``Tagged`` reads those from a list of
``Call`` openings (marker, body reader, closing markers). The bodies are small readers: a JSON call object or
array (``json_calls``), a name then JSON arguments (``named_args``), Qwen3-Coder's XML parameters
(``xml_call``), Gemma 4's bare-key dictionaries (``gemma_call``). Harmony (GPT-OSS) and Functionary v3.2
frame messages differently and have their own readers.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamatwist.constrain.schema import JSON_KINDS, json_kind, may_be_string, value_types

from ..workarounds import gemma4_model_turns, ministral3_blocks, reasoning_as_thinking
from .generic import parse_generic
from .jsonscan import JsonSyntaxError, scan_json
from .model import HandlerContinuation, ToolCallOut
from .scan import AUTO_PARSER, KEEP, Broken, Scanner, Spacing, Stop, Typing, args_json, arguments_text

__all__ = ["DSML", "FAMILIES", "MINIMAX_NS", "THINK", "Family", "detect_family"]

THINK = ("<think>", "</think>")
Body = Callable[[Scanner, str], None]  # reads one call after its opening marker (given)


# -- call bodies ---------------------------------------------------------------------------------------------


def json_calls(name: str = "name", args: str = "arguments", ident: str | None = None) -> Body:
    """A JSON call object, or an array of them."""

    def read(s: Scanner, _opened: str) -> None:
        node = s.json()
        if node.kind == "none":
            raise s.incomplete()
        s.calls_from_json(node, name, args, ident)

    return read


def _name_until(s: Scanner, ends: tuple[str, ...]) -> tuple[str, str]:
    """A function name running up to one of ``ends``; the parse waits while it may still grow."""
    name, end = s.until(ends)
    if end is None:
        raise s.incomplete()
    name = name.strip()
    if not name or any(c in name for c in "\n<>{}\"'"):
        raise Broken
    return name, end


def _json_args(s: Scanner, name: str, call_id: str = "") -> None:
    node = s.json()
    if node.kind == "none":
        s.add_call(name, "", call_id)
        raise s.incomplete()
    if node.kind != "object":
        raise Broken
    s.add_call(name, node.text, call_id)
    if not node.complete:
        raise s.incomplete()


def named_args(name_end: str) -> Body:
    """``NAME<name_end>{json arguments}``."""

    def read(s: Scanner, _opened: str) -> None:
        name, _ = _name_until(s, (name_end,))
        _json_args(s, name)

    return read


def mistral_call(s: Scanner, _opened: str) -> None:
    """``[TOOL_CALLS]`` then a JSON array (Nemo) or ``NAME[CALL_ID]id[ARGS]{...}`` (Small 3.2, Devstral)."""
    s.skip_ws()
    if s.startswith("[") or s.at_end():
        json_calls(ident="id")(s, _opened)
        return
    name, end = _name_until(s, ("[CALL_ID]", "[ARGS]"))
    call_id = ""
    if end == "[CALL_ID]":
        call_id, _ = _name_until(s, ("[ARGS]",))
    _json_args(s, name, call_id)


def _param_schema(s: Scanner, function: str, param: str) -> Any:
    """The schema of a tool's parameter (None: the tool says nothing of it); ``tool_parameters`` has its
    references resolved already."""
    params = s.syntax.tool_parameters.get(function)
    if not isinstance(params, dict) or not isinstance(props := params.get("properties"), dict):
        return None
    return props.get(param)


def _reads_text(schema: Any, typing: Typing) -> bool:
    """Whether llama.cpp's parser for the format takes a tagged value as the text written (a string) rather
    than as JSON: where the schema may be a string (its template analysis and most hand-written parsers),
    where it allows strings only (Qwen3-Coder's, Ling 3's), or where the property's own ``type`` is
    ``"string"`` or missing (Kimi K3's)."""
    if typing == "declared":
        kind = schema.get("type") if isinstance(schema, dict) else None
        return not isinstance(kind, str) or kind == "string"
    if typing in ("types", "json"):
        return value_types(schema) == {"string"}
    return may_be_string(schema)


def _typed_value(text: str, schema: Any, typing: Typing, text_value: bool) -> str:
    """A tagged format's value as JSON text: a string where the parser reads text (``text_value``), else the
    value read as JSON (text that is not JSON stays a string). Qwen3-Coder's parser (``types``) takes a string
    too where the schema allows one and the JSON is of no other kind it allows."""
    if text_value:
        return json.dumps(text)
    try:
        value = json.loads(text)
    except ValueError:
        return json.dumps(text)
    types = value_types(schema) or frozenset(name for _, name in JSON_KINDS)  # None: any
    if typing == "types" and "string" in types:
        numbers = {"integer", "number"} if types & {"integer", "number"} else set()
        if json_kind(value) not in (types | numbers) - {"string"}:
            return json.dumps(text)
    return args_json(value)


def _tagged_args(s: Scanner, name: str, *, key_open: str, key_end: str, value_end: str, call_end: str,
                 value_open: str = "", attrs_end: str = "") -> None:
    """Arguments written as tagged key/value pairs up to ``call_end`` (consumed): ``KEY_OPEN key KEY_END
    [attributes ATTRS_END] [VALUE_OPEN] value VALUE_END``, e.g. Qwen3-Coder's ``<parameter=KEY>value</parameter>``.

    String parameters stream as they grow; typed ones (numbers, objects...) appear once closed, read as JSON
    (or kept as text when they are not), as llama.cpp does. A ``string="true|false"`` attribute (DeepSeek's
    DSML) says which a value is where the schema does not.
    """
    parts: list[str] = []
    s.add_call(name, "{")
    done = False
    try:
        while True:
            if s.consume(call_end):
                done = True
                return
            if not s.consume(key_open):
                raise s.incomplete() if s.at_end() else Broken()
            key, _ = _name_until(s, (key_end,))
            schema = _param_schema(s, name, key)
            string = _reads_text(schema, s.typing)
            if attrs_end:
                attrs, end = s.until((attrs_end,))
                if end is None:
                    raise s.incomplete()
                if value_types(schema) is None and 'string="true"' in attrs:
                    string = True
            if value_open:
                s.expect(value_open)
            head = ("," if parts else "") + json.dumps(key) + ":"
            raw, end = s.until((value_end,))
            value = raw.strip()
            if end is None:  # still growing: only a string can show a prefix
                if string and s.partial:
                    parts.append(head + json.dumps(value)[:-1])
                else:
                    parts.append(head)
                raise s.incomplete()
            parts.append(head + _typed_value(value, schema, s.typing, string))
    finally:
        s.calls[-1] = ToolCallOut(name, "{" + "".join(parts) + ("}" if done else ""))


def xml_call(s: Scanner, opened: str) -> None:
    """Qwen3-Coder (and Seed-OSS): ``<function=NAME>`` then ``<parameter=KEY>value</parameter>``s, then
    ``</function>``."""
    if opened != "<function=":
        s.expect("<function=")
    name, _ = _name_until(s, (">",))
    _tagged_args(s, name, key_open="<parameter=", key_end=">", value_end="</parameter>", call_end="</function>")


def glm_call(s: Scanner, _opened: str) -> None:
    """GLM 4.5-4.7: ``NAME<arg_key>KEY</arg_key><arg_value>value</arg_value>...</tool_call>`` (newlines
    between the parts or not)."""
    name, end = _name_until(s, ("<arg_key>", "</tool_call>"))
    if end == "</tool_call>":
        s.add_call(name, "{}")
        return
    s.pos -= len("<arg_key>")
    _tagged_args(s, name, key_open="<arg_key>", key_end="</arg_key>", value_open="<arg_value>",
                 value_end="</arg_value>", call_end="</tool_call>")


def invoke_calls(prefix: str, close: str) -> Body:
    """MiniMax-M2 and DeepSeek's DSML: a block of ``<PREFIXinvoke name="NAME">`` calls, each with
    ``<PREFIXparameter name="KEY" ...>value</PREFIXparameter>``s, up to ``close``."""

    def read(s: Scanner, _opened: str) -> None:
        while not s.consume(close):
            if not s.consume(f'<{prefix}invoke name="'):
                raise s.incomplete() if s.at_end() else Broken()
            name, _ = _name_until(s, ('"',))
            s.expect(">")
            _tagged_args(s, name, key_open=f'<{prefix}parameter name="', key_end='"', attrs_end=">",
                         value_end=f"</{prefix}parameter>", call_end=f"</{prefix}invoke>")

    return read


_ATEM_CALLS = invoke_calls("atem:", "</atem:function_calls>")  # Muse Glimmer

def json_lines(close: str) -> Body:
    """JSON call objects one after another up to ``close`` (MiniMax-M1's ``<tool_calls>``)."""

    def read(s: Scanner, opened: str) -> None:
        while not s.consume(close):
            if s.at_end():
                raise s.incomplete()
            json_calls()(s, opened)

    return read


def param_call(s: Scanner, _opened: str) -> None:
    """MiniCPM 5: ``NAME">`` (after ``<function name="``) then ``<param name="KEY">value</param>``s, then
    ``</function>``."""
    name, _ = _name_until(s, ('"',))
    s.expect(">")
    _tagged_args(s, name, key_open='<param name="', key_end='"', attrs_end=">", value_end="</param>",
                 call_end="</function>")


def solar_calls(s: Scanner, _opened: str) -> None:
    """Solar Open: ``<|tool_call:begin|>ID<|tool_call:name|>NAME<|tool_call:args|>{...}<|tool_call:end|>``s,
    then ``<|calls|>`` (an end of generation the output may stop before)."""
    while s.consume("<|tool_call:begin|>"):
        ident, _ = _name_until(s, ("<|tool_call:name|>",))
        name, _ = _name_until(s, ("<|tool_call:args|>",))
        _json_args(s, name, ident)
        s.expect("<|tool_call:end|>")
    if not s.consume("<|calls|>") and not s.at_end():
        raise Broken


def hy3_calls(s: Scanner, _opened: str) -> None:
    """Hunyuan 3: ``<tool_call:opensource>NAME<tool_sep:opensource>`` then GLM-style ``<arg_key:opensource>``
    and ``<arg_value:opensource>`` pairs, up to ``</tool_calls:opensource>``."""
    while not s.consume("</tool_calls:opensource>"):
        s.expect("<tool_call:opensource>")
        name, _ = _name_until(s, ("<tool_sep:opensource>",))
        _tagged_args(s, name, key_open="<arg_key:opensource>", key_end="</arg_key:opensource>",
                     value_open="<arg_value:opensource>", value_end="</arg_value:opensource>",
                     call_end="</tool_call:opensource>")


_PY_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def _py_value(node: ast.expr) -> object:
    """A Python (or JSON) literal of a pythonic call's argument."""
    if isinstance(node, ast.Name) and node.id in _PY_NAMES:
        return _PY_NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_py_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {str(_py_value(k)) if k is not None else "": _py_value(v) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


def pythonic_calls(close: str) -> Body:
    """LFM2: ``[NAME(key=value, ...), ...]`` with Python literal values, up to ``close``; the calls appear once
    the list is closed."""

    def read(s: Scanner, _opened: str) -> None:
        code, end = s.until((close,))
        if end is None and s.partial:
            raise Stop
        try:
            node = ast.parse(code.strip(), mode="eval").body
            calls = node.elts if isinstance(node, ast.List) else [node]
            parsed = []
            for call in calls:
                if not isinstance(call, ast.Call) or call.args or any(kw.arg is None for kw in call.keywords):
                    raise Broken
                parsed.append((ast.unparse(call.func), {str(kw.arg): _py_value(kw.value) for kw in call.keywords}))
        except (SyntaxError, ValueError, TypeError):
            raise Broken from None
        for name, args in parsed:
            s.add_call(name, args_json(args))

    return read


def kimi_calls(s: Scanner, _opened: str) -> None:
    """Kimi K2: ``<|tool_call_begin|>functions.NAME:N<|tool_call_argument_begin|>{...}<|tool_call_end|>``s up
    to ``<|tool_calls_section_end|>``; the call's id is ``functions.NAME:N``, as the template writes it."""
    while not s.consume("<|tool_calls_section_end|>"):
        s.expect("<|tool_call_begin|>")
        ident, _ = _name_until(s, ("<|tool_call_argument_begin|>",))
        name = ident.removeprefix("functions.").rpartition(":")[0] or ident
        _json_args(s, name, ident)
        s.expect("<|tool_call_end|>")


def keyed_calls(s: Scanner, _opened: str) -> None:
    """Apertus: a JSON array of ``{"NAME": {arguments}}`` objects."""
    node = s.json()
    if node.kind != "array":
        raise s.incomplete() if node.kind == "none" else Broken()
    for item in node.items:
        if item.kind != "object" or len(item.members) > 1 or (item.complete and not item.members):
            raise s.incomplete() if item.kind == "none" else Broken()
        if not item.members:
            raise s.incomplete()
        ((name, args),) = item.members.items()
        s.add_call(name, arguments_text(args, item.complete))
        if not item.complete:
            raise s.incomplete()
    if not node.complete:
        raise s.incomplete()


def fenced_calls(name: str, args: str) -> Body:
    """Command R+: ``Action:`` then a fenced JSON array of call objects (```` ```json [...] ``` ````)."""

    def read(s: Scanner, opened: str) -> None:
        s.expect("```json")
        json_calls(name, args)(s, opened)
        s.expect("```")

    return read


def kimi3_calls(s: Scanner, _opened: str) -> None:
    """Kimi K3: ``<|open|>call tool="NAME" index="N"<|sep|>`` calls with ``<|open|>argument key="KEY"
    type="T"<|sep|>value<|close|>argument<|sep|>`` arguments, up to ``<|close|>tools<|sep|>``; the value's type
    comes from the tool's schema, as in llama.cpp."""
    while not s.consume("<|close|>tools<|sep|>"):
        s.expect('<|open|>call tool="')
        name, _ = _name_until(s, ('"',))
        _attrs, end = s.until(("<|sep|>",))
        if end is None:
            raise s.incomplete()
        _tagged_args(s, name, key_open='<|open|>argument key="', key_end='"', attrs_end="<|sep|>",
                     value_end="<|close|>argument<|sep|>", call_end="<|close|>call<|sep|>")


MINIMAX_NS = "]<]minimax[>["  # MiniMax-M3's namespace token, before each of its tool-call tags


def _mm3_value(s: Scanner, schema: object, close: str) -> object:
    """A MiniMax-M3 argument value up to ``close`` (consumed): nested ``<KEY>`` elements (an object),
    ``<item>`` elements (an array) or text, typed by the schema where it says."""
    props: dict[str, Any] = schema if isinstance(schema, dict) else {}
    kind = props.get("type")
    kinds: list[Any] = kind if isinstance(kind, list) else [kind]
    start = s.pos
    s.skip_ws()
    if s.startswith(MINIMAX_NS + "<item>"):
        items = []
        while s.consume(MINIMAX_NS + "<item>"):
            items.append(_mm3_value(s, props.get("items"), MINIMAX_NS + "</item>"))
        s.expect(close)
        return items
    if s.startswith(MINIMAX_NS + "<") and not s.startswith(close):
        found = props.get("properties")
        members: dict[str, Any] = found if isinstance(found, dict) else {}
        out: dict[str, object] = {}
        while not s.consume(close):
            s.expect(MINIMAX_NS + "<")
            key, _ = _name_until(s, (">",))
            out[key] = _mm3_value(s, members.get(key), f"{MINIMAX_NS}</{key}>")
        return out
    s.pos = start
    text, end = s.until((close,))
    if end is None:
        raise s.incomplete()
    if may_be_string(schema):
        return text
    if not text.strip():
        empty: dict[str, object] = {"object": {}, "array": []}
        return empty.get(str(kinds[0]), text)
    try:
        return json.loads(text)
    except ValueError:
        return text


def mm3_calls(s: Scanner, _opened: str) -> None:
    """MiniMax-M3: ``<invoke name="NAME">`` calls whose arguments are elements named by their key (objects and
    arrays nested as elements, llama.cpp's ``to_xml``), every tag after the ``]<]minimax[>[`` namespace token, up
    to the closing ``</tool_call>``; a call appears once its ``</invoke>`` is read."""
    while not s.consume(MINIMAX_NS + "</tool_call>"):
        s.expect(MINIMAX_NS + '<invoke name="')
        name, _ = _name_until(s, ('"',))
        s.expect(">")
        params = s.syntax.tool_parameters.get(name) or {"type": "object"}
        args = _mm3_value(s, params, MINIMAX_NS + "</invoke>")
        s.add_call(name, args_json(args if isinstance(args, dict) else {}))


_GEMMA_QUOTE = '<|"|>'
_GEMMA_SCALAR = re.compile(r"[^,}\]\s]+")


def _gemma_to_json(text: str, start: int) -> tuple[str, int | None]:
    """Rewrite a Gemma 4 value (bare keys, strings between ``<|"|>``) starting at ``text[start]`` as JSON text.

    Returns the JSON text of what is there and the index just past the value (``None`` while it is open).
    Character by character, so a longer input only extends the output.
    """
    out: list[str] = []
    stack: list[str] = []  # "{" expecting a key, ":" expecting a value in a dict, "[" in an array
    i = start
    n = len(text)
    while i < n:
        if text.startswith(_GEMMA_QUOTE, i):
            end = text.find(_GEMMA_QUOTE, i + len(_GEMMA_QUOTE))
            body = text[i + len(_GEMMA_QUOTE) : n if end < 0 else end]
            if end < 0:  # an open string: show what is there, minus a possibly cut closing quote
                cut = next((k for k in range(len(_GEMMA_QUOTE) - 1, 0, -1) if body.endswith(_GEMMA_QUOTE[:k])), 0)
                out.append(json.dumps(body[: len(body) - cut])[:-1])
                return "".join(out), None
            out.append(json.dumps(body))
            i = end + len(_GEMMA_QUOTE)
            if stack and stack[-1] == ":":
                stack[-1] = "{"
            continue
        if _GEMMA_QUOTE.startswith(text[i:]):
            return "".join(out), None  # a quote cut by the end of the text
        c = text[i]
        if stack and stack[-1] == "{" and c not in "},\n\t ":
            colon = text.find(":", i)
            if colon < 0:
                out.append(json.dumps(text[i:])[:-1])
                return "".join(out), None
            out.append(json.dumps(text[i:colon].strip()) + ":")
            stack[-1] = ":"
            i = colon + 1
            continue
        if c in "{[":
            stack.append(c)
            out.append(c)
        elif c in "}]":
            if not stack:
                raise Broken
            stack.pop()
            out.append(c)
            if stack and stack[-1] == ":":
                stack[-1] = "{"
        elif c == ",":
            out.append(c)
        elif not c.isspace():  # numbers, true/false/null: JSON spelling
            m = _GEMMA_SCALAR.match(text, i)
            assert m is not None
            out.append(m.group())
            i = m.end()
            if stack and stack[-1] == ":":
                stack[-1] = "{"
            continue
        i += 1
        if not stack:
            return "".join(out), i
    return "".join(out), None


def gemma_call(s: Scanner, _opened: str) -> None:
    """Gemma 4: ``call:NAME{key:value,...}``; arguments rewritten as JSON."""
    name, _ = _name_until(s, ("{",))
    s.pos -= 1
    text, end = _gemma_to_json(s.text, s.pos)
    try:
        node = scan_json(text, final=end is not None)
    except JsonSyntaxError:
        raise Broken from None
    s.add_call(name, node.text if node.kind == "object" else "")
    if end is None or not node.complete:
        s.pos = len(s.text)
        raise s.incomplete()
    s.pos = end


# -- the tagged-calls parser ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One way a tool call opens: the marker, the body after it, the markers that close it."""

    open: str
    body: Body
    close: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tagged:
    """Content with tool calls opened by markers, after the family's leading thinking block.

    ``block``: markers around all the calls (DeepSeek); ``drop``: wrapper markers that are not content
    (Granite's ``<response>``, Command-R's ``<|START_RESPONSE|>``); ``python_tag``: ``<|python_tag|>`` starts
    a ``python`` call whose code is the rest of the output (Functionary v3.1).
    """

    calls: tuple[Call, ...]
    block: tuple[tuple[str, ...], str] | None = None
    drop: tuple[str, ...] = ()
    python_tag: bool = False

    def __call__(self, s: Scanner) -> None:
        s.reasoning_block()
        if not s.syntax.parse_tool_calls:
            self.content(s, ())
            return
        if self.block and self.content(s, self.block[0]) is None:
            return
        bodies = {c.open: c for c in self.calls}
        starts = tuple(bodies) + (("<|python_tag|>",) if self.python_tag else ())
        while (opened := self.content(s, starts)) is not None:
            if opened == "<|python_tag|>":
                raw_python_call(s, s.rest(), closed=not s.partial)
                return
            call = bodies[opened]
            call.body(s, opened)
            for marker in call.close:
                if not s.consume(marker) and not (s.at_end() and not s.partial):
                    raise Broken  # lenient only about a closing marker missing at the very end
            if self.block and s.consume(self.block[1]):
                self.content(s, ())
                return
            s.skip_ws()

    def content(self, s: Scanner, starts: tuple[str, ...]) -> str | None:
        """Content up to the first of ``starts`` (returned), dropping wrapper markers; ``None`` at the end."""
        while (found := s.find(starts + self.drop)) in self.drop:
            pass
        if found is None:
            s.add_content(s.rest())
        return found


def raw_python_call(s: Scanner, code: str, closed: bool) -> None:
    """A ``python`` call whose code is written raw (no JSON): arguments ``{"code": ...}``, streamed."""
    s.add_call("python", args_json({"code": code})[: None if closed else -2])


_BUILTIN_KEY = re.compile(r"\s*(\w+)\s*=\s*")
_BUILTIN_COMMA = re.compile(r"\s*,")


def _builtin_args_to_json(text: str, start: int) -> tuple[str, int | None]:
    """Llama 3.1 built-in calls: ``key=<json>, ...)`` as a JSON object text (``None``: not closed yet)."""
    out = ["{"]
    i = start
    while True:
        m = _BUILTIN_KEY.match(text, i)
        if m is None or m.end() == len(text):
            rest = text[i:].lstrip()
            if rest.startswith(")"):
                return "".join(out) + "}", text.index(")", i) + 1
            return "".join(out), None
        out.append(("," if len(out) > 1 else "") + json.dumps(m.group(1)) + ":")
        node = scan_json(text, m.end())
        out.append(node.text)
        if not node.complete:
            return "".join(out), None
        i = node.end
        comma = _BUILTIN_COMMA.match(text, i)
        if comma:
            i = comma.end()


# -- Llama 3.x JSON calls, Functionary v3.2, GPT-OSS harmony --------------------------------------------------

_LLAMA_CALL_KEYS = {"type", "name", "parameters", "arguments"}


def _llama_json_call(s: Scanner) -> bool:
    """A reply that *is* ``{"name": ..., "parameters": {...}}``; ``False`` when it is not a call."""
    try:
        node = scan_json(s.text, s.pos, final=not s.partial)
    except JsonSyntaxError:
        return False
    keys = set(node.members)
    if keys - _LLAMA_CALL_KEYS:
        return False
    if "name" in keys and keys & {"parameters", "arguments"}:
        s.call_from_object(node, "name", "parameters" if "parameters" in keys else "arguments")
        s.pos = node.end
        s.skip_ws()
        s.add_content(s.rest())
        return True
    if node.complete:
        return False
    raise s.incomplete()


def _builtin_call(s: Scanner) -> None:
    """After ``<|python_tag|>``: ``name.call(key=value, ...)`` or a JSON call (Llama 3.2)."""
    s.skip_ws()
    if s.startswith("{") and _llama_json_call(s):
        return
    name, _ = _name_until(s, (".call(",))
    text, end = _builtin_args_to_json(s.text, s.pos)
    node = scan_json(text, final=end is not None)
    s.add_call(name, node.text)
    if end is None or not node.complete:
        raise s.incomplete()
    s.pos = end
    s.add_content(s.rest().strip())


def parse_llama3(s: Scanner, *, builtin: bool) -> None:
    """Llama 3.x: a JSON call object calls a tool (text before and after it is content, as llama.cpp's template
    analysis reads it); with built-in tools, ``<|python_tag|>`` starts a built-in call."""
    if not s.syntax.parse_tool_calls:
        s.add_content(s.rest())
        return
    start = s.pos
    s.skip_ws()
    if s.startswith("{") and _llama_json_call(s):
        return
    s.pos = start
    found = s.find(('{"name"', "<|python_tag|>") if builtin else ('{"name"',))
    if found == "<|python_tag|>":
        _builtin_call(s)
        return
    if found is not None:
        s.pos -= len(found)
        if _llama_json_call(s):
            return
    s.add_content(s.rest())


def parse_functionary_v3_2(s: Scanner) -> None:
    """Functionary v3.2 (the prompt ends with ``>>>``): ``all\\n<text>`` is content, ``NAME\\n{json}`` a call,
    ``python\\n<code>`` a raw python call; messages are joined by ``>>>``."""
    first = True
    while not s.at_end():
        if not first and not s.consume(">>>", ws=False):
            raise Broken
        first = False
        name, _ = _name_until(s, ("\n",))
        if name == "all" or not s.syntax.parse_tool_calls or (name == "python" and not s.startswith("{")):
            body, found = s.until((">>>",))
            if found:
                s.pos -= len(found)
            if name == "all":
                s.add_content(body)
            elif s.syntax.parse_tool_calls:
                raw_python_call(s, body, closed=found is not None or not s.partial)
            else:
                s.add_content(f"{name}\n{body}")
            continue
        _json_args(s, name)
        s.skip_ws()


_HARMONY_TO = re.compile(r"to=functions\.([^<\s]+)")
_HARMONY_END = ("<|end|>", "<|return|>", "<|call|>")


def parse_harmony(s: Scanner) -> None:
    """GPT-OSS: messages ``[<|start|>assistant]<|channel|>C[ to=functions.NAME][ <|constrain|>json]<|message|>
    body<|end|>``; ``analysis`` is reasoning, ``final`` and ``commentary`` content, ``to=functions.*`` a call."""
    while not s.at_end():
        s.consume("<|start|>assistant", ws=False)
        header, found = s.until(("<|message|>",))
        if found is None:
            raise s.incomplete()
        if (to := _HARMONY_TO.search(header)) and s.syntax.parse_tool_calls:
            _json_args(s, to.group(1))
            for marker in _HARMONY_END:
                s.consume(marker)
            s.skip_trailing_ws()
            continue
        body, end = s.until(_HARMONY_END)
        if "<|channel|>analysis" not in header:
            s.add_content(body)
        elif s.syntax.reasoning_format == "none":
            s.add_content(header + found + body + (end or ""))
        else:
            s.add_reasoning(body, "<|channel|>analysis<|message|>", "<|end|>", closed=end is not None)


_MUSE_END = ("<|eom|>", "<|eot|>")


def parse_muse(s: Scanner) -> None:
    """Muse Glimmer: messages ``[<|start|>assistant] to=RECIPIENT<|message|>body<|eom|>`` (``<|eot|>`` ends the
    turn); ``to=self`` is reasoning, ``to=user`` (or none) content, any other recipient a tool call whose
    body is ``<atem:function_calls>`` with ATEM ``<atem:invoke>`` elements."""
    while not s.at_end():
        s.consume("<|start|>assistant", ws=False)
        header, found = s.until(("<|message|>",))
        if found is None:
            raise s.incomplete()
        recipient = header.strip().removeprefix("to=")
        if recipient not in ("self", "user", "") and s.syntax.parse_tool_calls:
            s.expect("<atem:function_calls>")
            _ATEM_CALLS(s, found)
            for marker in _MUSE_END:
                s.consume(marker)
            s.skip_trailing_ws()
            continue
        body, end = s.until(_MUSE_END)
        if recipient != "self" or s.syntax.reasoning_format == "none":
            s.add_content(body)
        else:
            s.add_reasoning(body, " to=self<|message|>", "<|eom|>", closed=end is not None)


# -- the table -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A format: its parser, how to recognise its template, its thinking markers and special tokens."""

    name: str
    parse: Callable[[Scanner], None]
    detect: Callable[[str], bool] = lambda src: False
    think: tuple[str, str] | None = THINK
    think_stops: tuple[str, ...] = ()  # markers that also end a thinking block
    stops: tuple[str, ...] = ()  # llama.cpp's additional_stops
    preserved: tuple[str, ...] = ()  # llama.cpp's preserved_tokens
    # replies without tools are parsed for the family's thinking block too (llama-server at this pin does not
    # read Apriel's <thinking> in them)
    thinks_without_tools: bool = True
    think_probe: str = ""  # what shows the template uses the thinking markers (default: the opening one)
    # reasoning "none" after a prompt that opened the thinking block: llama.cpp's hand-written parser still
    # reads the block, as content without its end marker (Kimi K3, Ling 3); its template analysis instead
    # parses the prompt's block with the reply, so the content starts with the start marker
    none_unwraps: bool = False
    # the whitespace rules of llama.cpp's parser for the format: its template analysis's unless it has a
    # hand-written one (common/parsers/*.cpp)
    spacing: Spacing = AUTO_PARSER
    # how llama.cpp's parser for the format types a tagged argument's value (`_reads_text`)
    typing: Typing = "schema"
    # what llama.cpp's own handler writes around a continued assistant message's reasoning, before its content,
    # where the template does not show it (GPT-OSS: the analysis message, then the final one)
    continuation: HandlerContinuation | None = None
    continues_with: Callable[[str], bool] = lambda src: True  # which of the family's templates that handler takes
    # which of the family's templates llama.cpp reads with a hand-written parser (common/parsers/), whose spacing
    # holds with or without tools (its template analysis reads the others, and a plain reply as it is)
    handwritten: Callable[[str], bool] = lambda src: False
    # that parser reads the thinking block even where the template writes no markers (Ministral 3's, which
    # Devstral's template gets; Kimi K2's, Kimi K2 Instruct's)
    handler_thinks: bool = False
    # variables the format's template reads besides llama.cpp's (from the request's tools, OpenAI JSON)
    template_vars: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    # llama.cpp's rewrite of the messages before this format's template renders them (source, messages)
    adapt_messages: Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]] | None = None

    def continuation_in(self, src: str) -> HandlerContinuation | None:
        return self.continuation if self.continuation is not None and self.continues_with(src) else None

    def thinks_in(self, src: str) -> bool:
        """Whether this template writes the family's thinking markers (Qwen 2.5 is Hermes but never thinks)."""
        if self.think is None:
            return False
        return (self.handler_thinks and self.handwritten(src)) or (self.think_probe or self.think[0]) in src


def _has(*markers: str) -> Callable[[str], bool]:
    return lambda src: all(m in src for m in markers)


def parse_content_only(s: Scanner) -> None:
    s.reasoning_block()
    s.add_content(s.rest())


def _llama3(builtin: bool) -> Callable[[Scanner], None]:
    return lambda s: parse_llama3(s, builtin=builtin)


def _is_hermes(src: str) -> bool:
    # GLM, Ling and MiniMax also write <tool_call>, with their own insides (not supported: generic)
    return "<tool_call>" in src and "<arg_key>" not in src and "<invoke name=" not in src


def _is_qwen3_coder(src: str) -> bool:
    # llama.cpp leaves templates writing "<tool_call><function=" without newlines to other handlers
    return _has("<tool_call>", "<function=", "<parameter=")(src) and "'<tool_call><function=' ~" not in src


def is_lfm2(src: str) -> bool:
    """LFM2 (``<|tool_list_start|>`` around the tool list) and LFM2.5 (a plain ``List of tools: [``), as llama.cpp
    detects them; not every template of theirs shows the pythonic calls themselves."""
    return "<|tool_call_start|>" in src or _has("<|tool_list_start|>", "<|tool_list_end|>")(src) or \
        ("List of tools: [" in src and "<|tool_list_start|>" not in src)


def _is_ministral3(src: str) -> bool:
    # llama.cpp's test for its Ministral 3 handler: [SYSTEM_PROMPT] and [ARGS] calls without [CALL_ID]
    return _has("[SYSTEM_PROMPT]", "[TOOL_CALLS]", "[ARGS]")(src) and "[CALL_ID]" not in src


def _is_phi4(src: str) -> bool:
    return _has("<|tool_call|>", "<|/tool_call|>")(src) or _has("<|tool|>", "<|/tool|>")(src)


_DS_BLOCK = (
    ("<｜tool▁calls▁begin｜>", "<｜tool_calls_begin｜>", "<｜tool calls begin｜>", "<｜tool\\_calls\\_begin｜>"),
    "<｜tool▁calls▁end｜>",
)
_DS_TOKENS = (
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁calls▁end｜>",
)
_DS_R1_ARGS = named_args("\n```json\n")
_DS_R1_CLOSE = ("```", "<｜tool▁call▁end｜>")
_HERMES_CALLS = (
    Call("<tool_call>", json_calls(), ("</tool_call>",)),
    Call("<function=", named_args(">"), ("</function>",)),
    Call('<function name="', named_args('">'), ("</function>",)),
)
_CMD_R_TOKENS = ("<|START_ACTION|>", "<|END_ACTION|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>")
DSML = "｜DSML｜"  # DeepSeek V3.2/V4's marker inside each of its tool-call tags
_SOLAR_TOKENS = ("<|tool_calls|>", "<|tool_call:begin|>", "<|tool_call:name|>", "<|tool_call:args|>",
                 "<|tool_call:end|>", "<|calls|>")
_KIMI_TOKENS = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
                "<|tool_call_argument_begin|>", "<|tool_call_end|>")
_HARMONY_TOKENS = ("<|channel|>", "<|constrain|>", "<|message|>", "<|start|>", "<|end|>")

# Detection order is llama.cpp's: specialised handlers first (GPT-OSS, Functionary v3.2, Gemma 4, Qwen3-Coder),
# then the classic checks (DeepSeek, Command R7B, Granite, Hermes, Functionary v3.1, Llama 3.x, Mistral).
_ALL: list[Family] = [
    Family(
        "gpt-oss",
        parse_harmony,
        _has("<|channel|>"),
        think=("<|channel|>analysis<|message|>", "<|end|>"),
        preserved=_HARMONY_TOKENS,
        continuation=HandlerContinuation("<|channel|>analysis<|message|>",
                                         "<|end|><|start|>assistant<|channel|>final<|message|>"),
        spacing=KEEP,
    ),
    Family("functionary-v3.2", parse_functionary_v3_2, _has(">>>all"), think=None, preserved=("<|end_header_id|>",),
           spacing=KEEP, continuation=HandlerContinuation("all\n", "", keeps_reasoning=False)),
    Family(
        "gemma4",
        Tagged((Call("<|tool_call>call:", gemma_call, ("<tool_call|>",)),)),
        _has("'<|tool_call>call:'"),
        think=("<|channel>thought", "<channel|>"),
        preserved=("<|tool_call>", "<tool_call|>", '<|"|>'),
        continuation=HandlerContinuation("<|channel>thought\n", "<channel|>"),
        adapt_messages=gemma4_model_turns,
        spacing=Spacing(reasoning_lstrip=True, block_after_space=True),
    ),
    Family(
        "qwen3-coder",
        Tagged((Call("<tool_call>", xml_call, ("</tool_call>",)), Call("<function=", xml_call))),
        _is_qwen3_coder,
        think_stops=("<tool_call>",),
        preserved=("<tool_call>", "</tool_call>", *THINK),
        spacing=Spacing(reasoning_lstrip=True, content_lstrip=True),
        typing="types",
        handwritten=lambda src: True,
        # its handler's, where the template has <think> (Nemotron 3 Nano and StepFun 3.5 write "\n</think>\n")
        continuation=HandlerContinuation("<think>\n", "\n</think>\n\n"),
        continues_with=lambda src: "<think>" in src,
    ),
    Family(
        "deepseek-v3.1",
        Tagged((Call("<｜tool▁call▁begin｜>", named_args("<｜tool▁sep｜>"), ("<｜tool▁call▁end｜>",)),), _DS_BLOCK),
        _has("message['prefix'] is defined and message['prefix'] and thinking"),
        preserved=(*THINK, *_DS_TOKENS),
    ),
    Family(
        "deepseek-r1",
        Tagged(
            (
                Call("<｜tool▁call▁begin｜>function<｜tool▁sep｜>", _DS_R1_ARGS, _DS_R1_CLOSE),
                Call("function<｜tool▁sep｜>", _DS_R1_ARGS, _DS_R1_CLOSE),  # R1 distills forget the first marker
            ),
            _DS_BLOCK,
        ),
        _has("<｜tool▁calls▁begin｜>"),
        preserved=(*THINK, *_DS_TOKENS),
    ),
    Family(
        "command-r7b",
        Tagged(
            (Call("<|START_ACTION|>", json_calls("tool_name", "parameters", "tool_call_id"), ("<|END_ACTION|>",)),),
            drop=("<|START_RESPONSE|>", "<|END_RESPONSE|>"),
        ),
        _has("<|END_THINKING|>", "<|START_ACTION|>"),  # adjacent in R7B, apart in Cohere2 MoE
        think=("<|START_THINKING|>", "<|END_THINKING|>"),
        preserved=(*_CMD_R_TOKENS, "<|START_THINKING|>", "<|END_THINKING|>"),
    ),
    Family(
        "granite",
        Tagged((Call("<|tool_call|>", json_calls()),), drop=("<response>", "</response>")),
        _has("elif thinking", "<|tool_call|>"),
        preserved=(*THINK, "<response>", "</response>", "<|tool_call|>"),
    ),
    Family(
        "phi-4",
        Tagged((Call("<|tool_call|>", json_calls(), ("<|/tool_call|>",)),)),
        _is_phi4,
        think=None,
        preserved=("<|tool_call|>", "<|/tool_call|>", "<|tool_response|>", "<|tool|>", "<|/tool|>"),
    ),
    Family(
        "apriel-1.6",
        Tagged((Call("<tool_calls>", json_calls(), ("</tool_calls>",)),)),
        _has("[BEGIN FINAL RESPONSE]", "<|begin_assistant|>", "<tool_calls>["),
        # llama.cpp's analysis: the reasoning is all of the turn before the marker, the prompt's "Here are my
        # reasoning steps:" included
        think=("<|begin_assistant|>", "[BEGIN FINAL RESPONSE]"),
        preserved=("<tool_calls>", "</tool_calls>"),
    ),
    Family(
        "apriel",
        Tagged((Call("<tool_calls>", json_calls(), ("</tool_calls>",)),)),
        _has("<tool_calls>[", "]</tool_calls>"),
        think=("<thinking>", "</thinking>"),
        preserved=("<thinking>", "</thinking>", "<tool_calls>", "</tool_calls>"),
        thinks_without_tools=False,
    ),
    Family(
        "ling3",  # Ling 3.0 / Bailing V3: GLM's calls in <role> sections; a call may end the thinking block
        Tagged((Call("<tool_call>", glm_call),)),
        _has("<role>ASSISTANT</role>", "<arg_key>"),
        think_stops=("<tool_call>",),
        stops=("<|role_end|>",),
        preserved=(*THINK, "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>",
                   "<|role_end|>"),
        typing="json",
        handwritten=lambda src: True,
        none_unwraps=True,
    ),
    # llama.cpp reads these from the template (its autoparser); llamatwist knows their markers
    Family(
        "glm-4.5",
        Tagged((Call("<tool_call>", glm_call),)),
        _has("<tool_call>", "<arg_key>"),
        preserved=(*THINK, "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"),
    ),
    Family(
        "minimax-m2",
        Tagged((Call("<minimax:tool_call>", invoke_calls("", "</minimax:tool_call>")),)),
        _has("<minimax:tool_call>"),
        preserved=(*THINK, "<minimax:tool_call>", "</minimax:tool_call>"),
    ),
    Family(
        "deepseek-dsml",
        # llama.cpp's parser ends the content before the "\n\n" that separates it from the calls
        Tagged(tuple(Call(f"{sep}<{DSML}{block}>", invoke_calls(DSML, f"</{DSML}{block}>"))
                     for block in ("function_calls", "tool_calls") for sep in ("\n\n", ""))),
        _has(DSML, "invoke name="),
        preserved=THINK,
        spacing=KEEP,
        # V4's handler (V3.2's writes the markers as its template does)
        continuation=HandlerContinuation(*THINK, bare_end=True),
        continues_with=lambda src: "function_calls" not in src,
    ),
    Family(
        "kimi-k2",
        Tagged((Call("<|tool_calls_section_begin|>", kimi_calls),)),
        _has("<|tool_calls_section_begin|>"),
        preserved=(*THINK, *_KIMI_TOKENS),
        continuation=HandlerContinuation(*THINK),
        spacing=KEEP,
        handwritten=lambda src: True,
        handler_thinks=True,
    ),
    Family(
        "seed-oss",
        Tagged((Call("<seed:tool_call>", xml_call, ("</seed:tool_call>",)),)),
        _has("<seed:tool_call>"),
        think=("<seed:think>", "</seed:think>"),
        preserved=("<seed:think>", "</seed:think>", "<seed:tool_call>", "</seed:tool_call>"),
    ),
    Family(
        "minimax-m1",
        Tagged((Call("<tool_calls>", json_lines("</tool_calls>")),)),
        _has("<tool_calls>", "</tool_calls>"),
        preserved=(*THINK, "<tool_calls>", "</tool_calls>"),
    ),
    Family(
        "nemotron-v2",
        Tagged((Call("<TOOLCALL>", json_calls(), ("</TOOLCALL>",)),)),
        _has("<TOOLCALL>"),
        preserved=(*THINK, "<TOOLCALL>", "</TOOLCALL>"),
    ),
    Family(
        "solar-open",
        Tagged((Call("<|tool_calls|>", solar_calls),)),
        _has("<|tool_call:begin|>"),
        preserved=(*THINK, *_SOLAR_TOKENS),
    ),
    Family(
        "minicpm5",
        Tagged((Call('<function name="', param_call),)),
        _has('<function name="', '<param name="'),
        preserved=THINK,
        spacing=Spacing(reasoning_lstrip=True, content_lstrip=True),
        handwritten=lambda src: True,
    ),
    Family(
        "hunyuan3",
        Tagged((Call("<tool_calls:opensource>", hy3_calls),)),
        _has(":opensource'", "<arg_key{}>"),
        think=("<think:opensource>", "</think:opensource>"),
        think_probe="<think{}>",
        preserved=("<think:opensource>", "</think:opensource>", "<tool_calls:opensource>",
                   "</tool_calls:opensource>", "<tool_call:opensource>", "</tool_call:opensource>",
                   "<tool_sep:opensource>", "<arg_key:opensource>", "</arg_key:opensource>",
                   "<arg_value:opensource>", "</arg_value:opensource>"),
    ),
    Family(
        "lfm2",
        Tagged((Call("<|tool_call_start|>", pythonic_calls("<|tool_call_end|>")),)),
        is_lfm2,
        preserved=(*THINK, "<|tool_call_start|>", "<|tool_call_end|>"),
        continuation=HandlerContinuation(*THINK),
        adapt_messages=reasoning_as_thinking,
        spacing=KEEP,
    ),
    Family(
        "gigachat3.1",  # one call after <|function_call|>; llama.cpp's parser skips the space before a reply
        Tagged((Call("<|function_call|>", json_calls()),)),
        _has("<|role_sep|>", "<|message_sep|>", "<|function_call|>"),
        think=None,
        preserved=("<|message_sep|>", "<|role_sep|>", "<|function_call|>"),
        spacing=Spacing(content_lstrip=True),  # with tools (a reply without is not parsed)
    ),
    Family(
        "gigachat3",  # a "function call" message
        Tagged((Call("<|message_sep|>\n\nfunction call<|role_sep|>\n", json_calls()),)),
        _has("<|role_sep|>", "<|message_sep|>"),
        think=None,
        preserved=("<|message_sep|>", "<|role_sep|>", "<|function_call|>"),
        spacing=KEEP,
    ),
    Family(
        "apertus",
        Tagged((Call("<|tools_prefix|>", keyed_calls, ("<|tools_suffix|>",)),)),
        _has("<|tools_prefix|>", "<|tools_suffix|>"),
        think=None,  # its <|inner_prefix|> thoughts come only as content blocks: llama.cpp finds no markers
        preserved=("<|tools_prefix|>", "<|tools_suffix|>"),
    ),
    Family(
        "command-r-plus",
        Tagged((Call("Action:", fenced_calls("tool_name", "parameters")),)),
        _has("<|START_OF_TURN_TOKEN|>", "Action:\\n```json"),
        think=None,
    ),
    Family(
        "kimi-k3",
        Tagged((Call("<|open|>tools<|sep|>", kimi3_calls),),
               drop=("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|close|>message<|sep|>",
                     "<|end_of_msg|>")),
        _has("<|open|>", "<|close|>", "<|sep|>"),
        think=("<|open|>think<|sep|>", "<|close|>think<|sep|>"),
        think_stops=("<|open|>response<|sep|>",),
        think_probe="open_tag('think'",
        preserved=("<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"),
        spacing=KEEP,
        typing="declared",
        handwritten=lambda src: True,
        none_unwraps=True,
    ),
    Family(
        "minimax-m3",
        Tagged((Call(MINIMAX_NS + "<tool_call>", mm3_calls),)),
        _has(MINIMAX_NS),
        think=("<mm:think>", "</mm:think>"),
        think_probe="think_end_token",
        preserved=(MINIMAX_NS, "<tool_call>", "</tool_call>", "<mm:think>", "</mm:think>"),
        spacing=Spacing(reasoning_lstrip=True, bare_end=True),
    ),
    Family(
        "muse-glimmer",
        parse_muse,
        _has("<atem:function_calls>"),
        think=(" to=self<|message|>", "<|eom|>"),
        think_probe="to=self<|message|>",
        preserved=("<|start|>", "<|message|>", "<|eom|>", "<|eot|>", "<atem:function_calls>", "<atem:invoke",
                   "<atem:parameter", "</atem:parameter>", "</atem:invoke>", "</atem:function_calls>"),
        spacing=KEEP,
    ),
    Family(
        "hermes",
        Tagged(_HERMES_CALLS),
        _is_hermes,
        think_stops=("<tool_call>",),
        preserved=(*THINK, "<tool_call>", "</tool_call>", "<function"),
    ),
    Family(
        "functionary-v3.1",
        Tagged((Call("<function=", named_args(">"), ("</function>",)),), python_tag=True),
        _has("<|start_header_id|>", "<function="),
        think=None,
        preserved=("<|python_tag|>",),
    ),
    Family(
        "firefunction-v2",  # " functools[" and a JSON array of calls; the tools reach its template as `functions`
        Tagged((Call("functools", json_calls()),)),
        _has(" functools["),
        think=None,
        # llama.cpp's handler for it before the pinned version (which renders no tools for this template)
        template_vars=lambda tools: {"functions": json.dumps(tools, indent=2, ensure_ascii=False) if tools else ""},
    ),
    Family(
        "llama3-builtin",
        _llama3(True),
        _has("<|start_header_id|>ipython<|end_header_id|>", "<|python_tag|>"),
        think=None,
        stops=("<|eom_id|>",),
        preserved=("<|python_tag|>",),
    ),
    Family(
        "llama3",
        _llama3(False),
        _has("<|start_header_id|>ipython<|end_header_id|>"),
        think=None,
        stops=("<|eom_id|>",),
    ),
    Family(
        "mistral",
        Tagged((Call("[TOOL_CALLS]", mistral_call),)),
        _has("[TOOL_CALLS]"),
        think=("[THINK]", "[/THINK]"),
        preserved=("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]"),
        # what llama.cpp's Ministral 3 handler (also Devstral's) writes and hands its template
        continuation=HandlerContinuation("[THINK]", "[/THINK]"),
        continues_with=_is_ministral3,
        handwritten=_is_ministral3,
        handler_thinks=True,
        adapt_messages=lambda src, messages: ministral3_blocks(messages) if _is_ministral3(src) else messages,
        # the Ministral 3 handler's; the other Mistral templates think not, and their template-analysis parser
        # skips the same whitespace before a reply with tools
        spacing=Spacing(content_lstrip=True),
    ),
    Family("generic", parse_generic),  # a thinking template's block may precede the JSON
    Family("content-only", parse_content_only),
]
FAMILIES = {f.name: f for f in _ALL}


@functools.lru_cache(maxsize=64)  # asked on every render of a request; a server has one or a few templates
def detect_family(src: str) -> Family | None:
    """The native family of a template (first match in llama.cpp's order), else ``None``: generic with tools,
    content-only (with ``<think>`` parsing) without."""
    return next((f for f in _ALL if f.detect(src)), None)
