"""The Jinja dialect chat templates are rendered in: llama.cpp's globals and filters (``raise_exception``,
``tojson`` with its options, ``{% generation %}``), a lenient undefined, and a sandbox that caps repetition —
the pieces ``common/jinja/`` provides for llama-server. Imports nothing from the server."""

from __future__ import annotations

import copy
import json
import operator
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.filters
import jinja2.nodes
import jinja2.parser
import jinja2.runtime
import markupsafe
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

__all__ = ["ENV", "describe_render_error", "traced"]

_MAX_REPEAT = 1 << 24  # cap on string/list repetition inside templates (the sandbox has none)



class _RaisedException(Exception):
    """raise_exception() from inside a template."""


def _raise_exception(message: Any) -> NoReturn:
    raise _RaisedException(str(message))


def _json_default(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return list(value)  # e.g. the generator jinja2's map/select filters return (llama.cpp: an array)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _tojson(
    value: Any, ensure_ascii: Any = False, indent: Any = None, separators: Any = None, sort_keys: Any = False
) -> str:
    """HF/llama.cpp ``tojson``: Python ``json.dumps`` semantics (``", "``/``": "`` separators, ``","`` between
    items once indented), non-ASCII kept unless ``ensure_ascii``; unlike Jinja's own ``tojson`` nothing is
    HTML-escaped. Argument order matches llama.cpp (``ensure_ascii, indent, separators, sort_keys``)."""
    if isinstance(indent, (jinja2.Undefined, bool)):
        indent = None
    seps: tuple[str, str] | None = None
    if isinstance(separators, (list, tuple)) and separators:
        item_sep = str(separators[0])
        key_sep = str(separators[1]) if len(separators) > 1 else ": "
        seps = (item_sep, key_sep)
    return json.dumps(
        value,
        ensure_ascii=bool(ensure_ascii),
        indent=indent,
        separators=seps,
        sort_keys=bool(sort_keys),
        default=_json_default,
    )


class _Undefined(jinja2.ChainableUndefined):
    """llama.cpp's undefined: attribute/item access on it yields undefined, and it concatenates with a string
    as the empty string (``undefined + 'x'`` is ``'x'``); everything else still fails like Jinja's."""

    __slots__ = ()

    def __add__(self, other: Any) -> Any:
        if isinstance(other, str):
            return other
        return self._fail_with_undefined_error()

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, str):
            return other
        return self._fail_with_undefined_error()


class _GenerationExtension(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (HF assistant-mask markers): renders the body unchanged."""

    tags = {"generation"}  # noqa: RUF012  # jinja2 declares it as a plain set attribute

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _finalize(value: Any) -> Any:
    # llama.cpp prints none as nothing (jinja2 would print "None").
    return "" if value is None else value


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox templates run in.

    Immutable like transformers' (templates cannot mutate their inputs), except ``list.append``/``list.pop``,
    which llama.cpp's engine provides and some templates use on lists they build. Unsafe attribute access
    (``__class__``, ``__globals__``, ...) raises instead of yielding a silent undefined.
    """

    intercepted_binops = frozenset({"*", "**"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, list) and attr in ("append", "pop"):
            return SandboxedEnvironment.is_safe_attribute(self, obj, attr, value)
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > _MAX_REPEAT:
                    raise SecurityError("the result of the repetition is too large")
            return operator.mul(left, right)
        if isinstance(right, int) and isinstance(left, int) and abs(right) > 4096:
            raise SecurityError("the exponent is too large")
        return operator.pow(left, right)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, markupsafe.Markup) else value


def _escaped(value: Any) -> str:
    return str(markupsafe.escape(value))


def traced(value: str | list[Any], ops: set[str]) -> Any:
    """``value`` as one whose uses a caps probe counts, as llama.cpp's engine counts operations on a value
    (``stats.ops``): indexing and ``for`` loops (``array_access``), ``is string`` (``test_is_string``) and
    ``selectattr``. Copies (the renderer deep-copies its inputs) count into the same ``ops``."""
    base: Any = str if isinstance(value, str) else list

    def getitem(self: Any, key: Any) -> Any:
        ops.add("array_access")
        return base.__getitem__(self, key)

    def iterate(self: Any) -> Any:
        # a template's for loop (directly, or through jinja2's loop object), not a filter such as tojson
        if sys._getframe(1).f_code.co_filename in ("<template>", jinja2.runtime.__file__):
            ops.add("array_access")
        return base.__iter__(self)

    def deepcopy(self: Any, memo: dict[int, Any]) -> Any:
        return type(self)(self if base is str else copy.deepcopy(list(base.__iter__(self)), memo))

    namespace = {"__getitem__": getitem, "__iter__": iterate, "__deepcopy__": deepcopy, "_traced_ops": ops}
    return type("Traced" + base.__name__, (base,), namespace)(value)


def _count(value: Any, op: str) -> None:
    ops = getattr(type(value), "_traced_ops", None)
    if ops is not None:
        ops.add(op)


def _test_string(value: Any) -> bool:
    _count(value, "test_is_string")
    return isinstance(value, str)


@jinja2.pass_context
def _selectattr(context: jinja2.runtime.Context, value: Any, *args: Any, **kwargs: Any) -> Any:
    _count(value, "selectattr")
    return jinja2.filters.do_selectattr(context, value, *args, **kwargs)


def _make_environment() -> _Environment:
    env = _Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
        undefined=_Undefined,
        finalize=_finalize,
        extensions=[jinja2.ext.loopcontrols, _GenerationExtension],
    )
    env.filters["tojson"] = _tojson
    # llama.cpp's engine has no markup strings: |safe changes nothing and |escape gives plain text. jinja2's
    # Markup would escape every string added to it ("Use '"|safe + name + ... | tojson: Functionary v3.1)
    env.filters["safe"] = _plain
    env.filters["e"] = env.filters["escape"] = _escaped
    env.filters["selectattr"] = _selectattr
    env.tests["string"] = _test_string
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))
    return env


ENV = _make_environment()


def _template_line(tb: TracebackType | None) -> int | None:
    # jinja2 rewrites tracebacks so that template frames carry the template's file name and line numbers.
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def describe_render_error(exc: BaseException) -> str:
    if isinstance(exc, _RaisedException):
        # llama.cpp's raise_exception message prefix, which clients and logs look for
        return f"Jinja Exception: {exc}"
    line = _template_line(exc.__traceback__)
    where = f" (template line {line})" if line is not None else ""
    return f"Error rendering chat template: {type(exc).__name__}: {exc}{where}"
