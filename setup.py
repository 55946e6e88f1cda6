"""Build glue for llamatwist (metadata lives in pyproject.toml).

``build_ext`` builds (or reuses from the per-user cache) llama.cpp's shared
libraries through ``build_native.py``, compiles the cffi extension
``llamatwist.native._llama`` against them, and copies the libraries into
``llamatwist/native/lib/`` beside it: the extension's rpath is ``$ORIGIN/lib``
and the libraries' own rpath is ``$ORIGIN``, so the package is relocatable.
Works for wheels (``pip install .``) and in place (``pip install -e .``).

The native build is steered with LLAMATWIST_BACKEND, LLAMATWIST_CMAKE_ARGS,
LLAMATWIST_JOBS, LLAMATWIST_LLAMA_SRC and LLAMATWIST_AMX (see build_native.py).
"""

from __future__ import annotations

import importlib
import shutil
import sys
import types
from pathlib import Path
from typing import Any

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # build_native.py sits beside this file

import build_native

EXT_NAME = "llamatwist.native._llama"
# Copied from cffi's generated Extension onto ours (which setuptools already
# registered, so its bookkeeping keeps working).
_EXT_ATTRS = ("sources", "include_dirs", "define_macros", "undef_macros", "library_dirs",
              "libraries", "runtime_library_dirs", "extra_objects", "extra_compile_args",
              "extra_link_args", "export_symbols", "depends", "language")


def _load_ffi_build() -> Any:
    """Import llamatwist.native.ffi_build without running the package __init__
    modules, which may import runtime dependencies absent at build time."""
    for name in ("llamatwist", "llamatwist.native"):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(HERE.joinpath(*name.split(".")))]
            sys.modules[name] = pkg
    return importlib.import_module("llamatwist.native.ffi_build")


def _copy_libraries(native: build_native.NativeBuild, dest: Path) -> None:
    """Ship one real file per soname (wheels cannot hold symlinks), and the llama.cpp pin."""
    if dest.exists():
        shutil.rmtree(dest)  # drop libraries of a previous backend/configuration
    dest.mkdir(parents=True)
    for soname, real in native.runtime_libraries().items():
        shutil.copy2(real, dest / soname)
    # the pin the libraries were built from, for --version (the repository root is not installed)
    shutil.copy2(build_native.PIN_FILE, dest / build_native.PIN_FILE.name)


class BuildExt(build_ext):
    """build_ext that builds the native libraries and the cffi module."""

    _native: build_native.NativeBuild | None = None

    def _ensure_native(self) -> build_native.NativeBuild:
        if self._native is None:
            try:
                self._native = build_native.ensure_native()
            except build_native.NativeBuildError as exc:
                raise SystemExit(f"error: {exc}") from None
        return self._native

    def build_extension(self, ext: Extension) -> None:
        if ext.name != EXT_NAME:
            super().build_extension(ext)
            return
        native = self._ensure_native()
        ffi = _load_ffi_build().make_ffibuilder(
            include_dirs=[native.include_dir], library_dirs=[native.lib_dir])
        generated = ffi.distutils_extension(str(Path(self.build_temp) / "cffi"), verbose=False)
        for attr in _EXT_ATTRS:
            setattr(ext, attr, getattr(generated, attr))
        # The generated C only changes with the cdef; "done" is rewritten by
        # every native (re)build, so a new native build also relinks us.
        ext.depends = [*ext.depends, str(native.prefix / build_native.DONE_MARKER)]
        super().build_extension(ext)
        _copy_libraries(native, Path(self.get_ext_fullpath(ext.name)).parent / "lib")

    def copy_extensions_to_source(self) -> None:
        # --inplace / editable installs: the libraries must sit beside the
        # in-tree extension too.
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        package_dir = Path(build_py.get_package_dir(EXT_NAME.rpartition(".")[0]))
        _copy_libraries(self._ensure_native(), package_dir / "lib")


setup(
    # twisted/plugins/ has no __init__.py: the file joins Twisted's own
    # twisted.plugins package in site-packages, where twistd looks for plugins.
    packages=[*find_packages(include=["llamatwist", "llamatwist.*"]), "twisted.plugins"],
    # An explicit root makes editable installs use a plain .pth path entry
    # instead of an import hook; twistd only finds plugins on sys.path.
    package_dir={"": "."},
    # the built web UI and the pdf.js (with its data files), MCP client and Mermaid it loads (committed), and the
    # /completion.js helper, served from memory
    package_data={"llamatwist.webui": ["index.html.gz", "pdf.min.mjs.gz", "pdf.worker.min.mjs.gz", "mcp.min.mjs.gz",
                                        "mermaid.min.js.gz", "completion.js", "pdfjs/cmaps/*.gz", "pdfjs/wasm/*.gz",
                                        "pdfjs/iccs/*.gz"]},
    # Placeholder sources: BuildExt fills them in.  Its presence also makes the
    # wheel platform-specific.
    ext_modules=[Extension(EXT_NAME, sources=[])],
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
