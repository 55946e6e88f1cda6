# -*- test-case-name: tests.test_engine -*-
"""Loads the compiled libllama extension and routes native logs.

``ffi`` and ``lib`` come from the compiled extension ``_llama`` (built by
``setup.py``'s build_ext against the vendored headers).  Everything above
``llamatwist.engine`` sees plain Python types only.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["NativeUnavailable", "add_log_listener", "backend_init", "ffi", "lib", "remove_log_listener"]


class NativeUnavailable(ImportError):
    """The compiled extension is missing: the package was not built."""


try:
    from llamatwist.native._llama import ffi, lib  # type: ignore[import-not-found,import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the install
    raise NativeUnavailable(
        "llamatwist's native extension is not built; run `pip install .` "
        f"(or `pip install -e .`) in the source tree ({exc})"
    ) from exc

_log = logging.getLogger("llamatwist.native")
_init_lock = threading.Lock()
_initialised = False

# ggml log levels -> Python logging levels; CONT continues the previous line.
_LEVELS = {
    lib.GGML_LOG_LEVEL_DEBUG: logging.DEBUG,
    lib.GGML_LOG_LEVEL_INFO: logging.DEBUG,  # libllama's INFO is chatty: keep it at DEBUG
    lib.GGML_LOG_LEVEL_WARN: logging.WARNING,
    lib.GGML_LOG_LEVEL_ERROR: logging.ERROR,
}
_last_level = logging.DEBUG
_line_parts: list[str] = []
_listeners: list[Any] = []


@ffi.def_extern()  # type: ignore[misc]
def _llamatwist_log_cb(level: int, text: Any, _user_data: Any) -> None:
    global _last_level
    msg = ffi.string(text).decode("utf-8", "replace")
    if level != lib.GGML_LOG_LEVEL_CONT:
        _last_level = _LEVELS.get(level, logging.DEBUG)
    # libllama emits partial lines; join them so each record is one line.
    _line_parts.append(msg)
    if not msg.endswith("\n"):
        return
    line = "".join(_line_parts).rstrip("\n")
    _line_parts.clear()
    for listener in _listeners:
        listener(_last_level, line)
    _log.log(_last_level, "%s", line)


def add_log_listener(listener: Any) -> None:
    """Call ``listener(level, line)`` for every native log line (used to
    capture the cause of a failed model load)."""
    _listeners.append(listener)


def remove_log_listener(listener: Any) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def backend_init() -> None:
    """Initialise ggml backends and route native logs into ``logging`` (once)."""
    global _initialised
    with _init_lock:
        if _initialised:
            return
        lib.llama_log_set(lib._llamatwist_log_cb, ffi.NULL)
        lib.mtmd_log_set(lib._llamatwist_log_cb, ffi.NULL)
        lib.llama_backend_init()
        _initialised = True
