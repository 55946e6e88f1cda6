"""cffi (API, out-of-line mode) builder for the libllama bindings.

The C compiler sees the real vendored headers, so every struct layout and
signature below is checked against llama.h / mtmd.h at build time; partial
structs (``...;``) let the compiler fill in offsets.  ``setup.py`` calls
:func:`make_ffibuilder` from its build_ext step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cffi  # type: ignore[import-untyped,unused-ignore]

from llamatwist.native.cdef import CDEF

__all__ = ["MODULE_NAME", "make_ffibuilder"]

MODULE_NAME = "llamatwist.native._llama"
HERE = Path(__file__).resolve().parent

SOURCE = r"""
#include <stdlib.h>
#include "llama.h"
#include "mtmd.h"
#include "mtmd-helper.h"
#include "llama_ext.h"
"""

LIBRARIES = ["llama", "ggml", "ggml-base", "mtmd"]


def make_ffibuilder(include_dirs: Sequence[Path], library_dirs: Sequence[Path]) -> cffi.FFI:
    """Return an FFI ready to ``compile()``; the extension finds its shared
    libraries in ``lib/`` beside itself (rpath ``$ORIGIN/lib``)."""
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        MODULE_NAME,
        SOURCE,
        # llama_ext.cpp: C++ (so the extension links as C++), beside this file, as is its header; setuptools
        # wants sources relative to setup.py.
        sources=["llamatwist/native/llama_ext.cpp"],
        include_dirs=[str(HERE), *(str(p) for p in include_dirs)],
        library_dirs=[str(p) for p in library_dirs],
        libraries=LIBRARIES,
        extra_link_args=["-Wl,-rpath,$ORIGIN/lib"],
    )
    return ffi
