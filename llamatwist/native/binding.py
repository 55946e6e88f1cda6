# -*- test-case-name: tests.test_engine -*-
"""Loads the compiled libllama extension and routes native logs.

``ffi`` and ``lib`` come from the compiled extension ``_llama`` (built by
``setup.py``'s build_ext against the vendored headers).  Everything above
``llamatwist.engine`` sees plain Python types only.

The extension loads libllama/ggml from ``lib/`` beside itself (rpath
``$ORIGIN/lib``).  ``LLAMATWIST_NATIVE_LIB_DIR`` names another directory of
the same libraries -- another build of the *same* llama.cpp source, e.g. the
AVX2-only variant of ``build_native.py --cpu-variant avx2`` -- to run on
instead: they are loaded first, by path, and the dynamic loader then resolves
the extension's dependencies to them by soname.  Used by
``scripts/portability.py`` to run the tests on a second build.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LIB_DIR_ENV", "NativeUnavailable", "add_log_listener", "backend_init", "ffi", "lib",
           "native_errors", "native_lib_override", "remove_log_listener"]

LIB_DIR_ENV = "LLAMATWIST_NATIVE_LIB_DIR"
_SHLIB_RE = re.compile(r"lib[^/]+\.(so(\.\d+)*|(\d+\.)*dylib)")


class NativeUnavailable(ImportError):
    """The compiled extension is missing: the package was not built."""


def native_lib_override() -> Path | None:
    """The directory named by LLAMATWIST_NATIVE_LIB_DIR (a build prefix or its
    ``lib/``), or None when unset; NativeUnavailable if it holds no libllama."""
    value = os.environ.get(LIB_DIR_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    for candidate in (path, path / "lib"):
        if candidate.is_dir() and any(candidate.glob("libllama.*")):
            return candidate
    raise NativeUnavailable(f"{LIB_DIR_ENV}={value}: no libllama there (nor in its lib/)")


def _preload(lib_dir: Path) -> None:
    # One file per real library (a CMake install also has libX.so -> libX.so.0 links);
    # RTLD_GLOBAL + the libraries' own rpath $ORIGIN keep every dependency in lib_dir.
    files = {p.resolve() for p in lib_dir.iterdir() if _SHLIB_RE.fullmatch(p.name)}
    for path in sorted(files):
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise NativeUnavailable(f"{LIB_DIR_ENV}: cannot load {path}: {exc}") from exc


_override = native_lib_override()
if _override is not None:
    _preload(_override)

try:
    from llamatwist.native._llama import ffi, lib  # type: ignore[import-not-found,import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the install
    raise NativeUnavailable(
        "llamatwist's native extension is not built; run `pip install .` "
        f"(or `pip install -e .`) in the source tree ({exc})"
    ) from exc

_log = logging.getLogger("llamatwist.native")
if _override is not None:
    _log.info("native libraries from %s (%s)", _override, LIB_DIR_ENV)
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


_capture_lock = threading.Lock()  # one capture at a time: a line belongs to the call that logged it


@contextlib.contextmanager
def native_errors() -> Iterator[list[str]]:
    """The error lines libllama / libmtmd log while the block runs (a failed load's cause, for its message)."""
    errors: list[str] = []

    def capture(level: int, line: str) -> None:
        if level >= logging.ERROR and line.strip():
            errors.append(line.strip())

    with _capture_lock:
        add_log_listener(capture)
        try:
            yield errors
        finally:
            remove_log_listener(capture)


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
