#!/usr/bin/env python3
"""Fetch the pinned llama.cpp source and build its shared libraries.

Used as a module (``setup.py`` calls :func:`ensure_native`) and as a script::

    python build_native.py [--backend cpu|cuda|vulkan|metal] [--jobs N]
                           [--cmake-arg ARG]... [--llama-src DIR] [--amx]
                           [--cpu-variant native|avx2] [--reference]

The source is the llama.cpp tree vendored in the llama-cpp-python sdist named
by ``llama_pin.json``: downloaded once with pip, verified by sha256, cached per
user and unpacked to ``third_party/llama.cpp``.  Libraries and headers are
installed into a per-user cache directory keyed by everything that affects the
binaries, so an unchanged configuration is a sub-second cache hit.

``--cpu-variant avx2`` builds for an older ISA level instead of this host's
CPU: AVX/AVX2/FMA/F16C/BMI2 and nothing newer (no AVX-512, AVX-VNNI or AMX),
i.e. what any x86-64-v3 CPU runs.  It is cached under its own key
(``cpu-avx2-...``); point ``LLAMATWIST_NATIVE_LIB_DIR`` at its ``lib/`` to run
an installed llamatwist on it (see ``llamatwist/native/binding.py``).

Only the standard library is needed (plus the optional ``cmake``/``ninja``
PyPI packages for their binaries): this runs inside pip's isolated build
environment, before the ``llamatwist`` package is importable.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "BACKENDS",
    "CPU_VARIANTS",
    "NativeBuild",
    "NativeBuildError",
    "Pin",
    "cache_dir",
    "cache_key",
    "ensure_native",
    "ensure_reference",
    "ggml_cpu_options",
    "host_cpu",
    "load_pin",
    "main",
    "parse_cpu_flags",
    "place_source",
]

HERE = Path(__file__).resolve().parent
PIN_FILE = HERE / "llama_pin.json"
THIRD_PARTY_SRC = HERE / "third_party" / "llama.cpp"
SRC_MARKER = ".llamatwist-pin"  # holds the sdist sha256 the tree was extracted from
DONE_MARKER = "done"  # written last: a prefix without it is an unfinished build
BACKENDS = ("cpu", "cuda", "vulkan", "metal")
# "native": the ISA extensions this host has; "avx2": an AVX2-only CPU (x86-64-v3).
CPU_VARIANTS = ("native", "avx2")
# Bump whenever the recipe below changes so that stale cached builds are not reused.
RECIPE_VERSION = 2  # 2: the RPC backend, and llama-ext.h installed (memory breakdown for --fit)

BASE_CMAKE_ARGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    # Some distros default to lib64/; the wheel layout expects lib/.
    "-DCMAKE_INSTALL_LIBDIR=lib",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_MTMD=ON",
    # --rpc: model layers on other machines' rpc-server (llamatwist-rpc-server); a small library.
    "-DGGML_RPC=ON",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    # Libraries find each other in whatever directory they are copied to.
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DCMAKE_INSTALL_RPATH=" + ("@loader_path" if sys.platform == "darwin" else "$ORIGIN"),
)

# GGML option -> /proc/cpuinfo flags that must all be present to enable it.
X86_FEATURES: dict[str, tuple[str, ...]] = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    # ggml compiles GGML_AVX512 with -mavx512{f,cd,vl,dq,bw}.
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
# Opt-in only: ggml's AMX matmul path has crashed (SIGSEGV in
# ggml_backend_amx_mul_mat) on hosts that advertise these flags.
AMX_FEATURES: dict[str, tuple[str, ...]] = {
    "GGML_AMX_TILE": ("amx_tile",),
    "GGML_AMX_INT8": ("amx_int8",),
    "GGML_AMX_BF16": ("amx_bf16",),
}

# The GGML options an AVX2-only CPU (Haswell, Zen 1-3) runs; every other option
# in X86_FEATURES / AMX_FEATURES (AVX-512*, AVX-VNNI, AMX) is forced off.
AVX2_VARIANT_OPTIONS: frozenset[str] = frozenset(
    {"GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"})

_SHLIB_RE = re.compile(r"lib[^/]+\.(so(\.\d+)*|(\d+\.)*dylib)")
_DEV_LINK_RE = re.compile(r"lib[^/]+?\.(so|dylib)")
_PROGRESS_RE = re.compile(r"\[\d+/\d+\] ")
_TRUE = {"1", "true", "yes", "on"}


class NativeBuildError(RuntimeError):
    """A build step failed or a toolchain piece is missing (one-line message)."""


@dataclass(frozen=True)
class Pin:
    """The llama.cpp source pin (``llama_pin.json``)."""

    package: str
    version: str
    sha256: str
    upstream: str
    commit: str
    subdir: str

    @property
    def dist_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}"

    @property
    def sdist_name(self) -> str:
        return f"{self.dist_name}.tar.gz"

    @property
    def member_prefix(self) -> str:
        return f"{self.dist_name}/{self.subdir.strip('/')}/"


@dataclass(frozen=True)
class NativeBuild:
    """An installed native build: ``lib/`` and ``include/`` under ``prefix``.

    ``src_dir`` is the tree it was built from; on a cache hit the pinned tree
    is not re-extracted, so it may be absent (:func:`place_source` restores it).
    """

    prefix: Path
    include_dir: Path
    lib_dir: Path
    src_dir: Path
    key: str

    def runtime_libraries(self) -> dict[str, Path]:
        """Map each shared library's soname to its real file.

        Shipping one real file per soname is all the dynamic loader needs, and
        wheels cannot hold symlinks.  CMake's layout is ``libX.so -> libX.so.N
        -> libX.so.N.M.P`` where the development link points at the soname.
        """
        names: dict[Path, str] = {}
        for path in sorted(self.lib_dir.iterdir()):
            if not _SHLIB_RE.fullmatch(path.name):
                continue
            real = path.resolve()
            if path.is_symlink():
                if _DEV_LINK_RE.fullmatch(path.name):
                    names[real] = Path(os.readlink(path)).name
            else:
                names.setdefault(real, path.name)
        return {name: real for real, name in sorted(names.items(), key=lambda kv: kv[1])}


# --------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """Per-user cache root (same rule as ``llamatwist.models.cache_dir``)."""
    if explicit := os.environ.get("LLAMATWIST_CACHE_DIR"):
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "llamatwist"


def load_pin(path: Path = PIN_FILE) -> Pin:
    data = json.loads(path.read_text())
    return Pin(**{k: str(data[k]) for k in Pin.__dataclass_fields__})


def _log(msg: str) -> None:
    print(f"[build_native] {msg}", file=sys.stderr, flush=True)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- source


def _pip_env() -> dict[str, str]:
    # pip's isolated build environment hides site-packages (and with it pip)
    # through PYTHONPATH/PYTHONNOUSERSITE; the nested pip needs the real ones.
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONNOUSERSITE", None)
    return env


def fetch_sdist(pin: Pin) -> Path:
    """Return the verified sdist from the per-user cache, downloading it once."""
    dest = cache_dir() / "downloads" / pin.sdist_name
    if dest.is_file():
        if _sha256_file(dest) == pin.sha256:
            return dest
        _log(f"cached {dest.name} has the wrong sha256; downloading it again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{pin.package}=={pin.version}"
    _log(f"downloading the {spec} sdist with pip (once per user, ~1 min)")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        # --no-binary names only the pinned package: with ":all:", pip would also build the
        # sdist's own build requirements from source (cmake, when the nested isolated
        # environment cannot use ours) before it can read the metadata.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", pin.package,
               "--disable-pip-version-check", "-q", "-d", tmp, spec]
        proc = subprocess.run(cmd, check=False, env=_pip_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
        got = Path(tmp) / pin.sdist_name
        if proc.returncode != 0 or not got.is_file():
            lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
            why = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise NativeBuildError(f"could not download {spec} with pip: {why}")
        digest = _sha256_file(got)
        if digest != pin.sha256:
            raise NativeBuildError(f"{got.name}: sha256 {digest} does not match the pin {pin.sha256}")
        os.replace(got, dest)
    return dest


def _extract_subtree(archive: Path, prefix: str, dest: Path) -> None:
    """Extract the members of ``archive`` under ``prefix`` into ``dest`` (prefix stripped)."""
    with tarfile.open(archive, "r:gz") as tf:
        members = []
        for member in tf.getmembers():
            if not member.name.startswith(prefix) or member.name == prefix:
                continue
            rel = member.name[len(prefix):]
            if rel.startswith("/") or ".." in PurePosixPath(rel).parts:
                raise NativeBuildError(f"{archive.name}: unsafe member path {member.name!r}")
            # The pinned tree holds only files and directories; links, devices
            # and the like are never needed, so they are not extracted.
            if not (member.isfile() or member.isdir()):
                continue
            member.name = rel
            members.append(member)
        if not members:
            raise NativeBuildError(f"{archive.name} has no members under {prefix}")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # Python < 3.10.12: the checks above are the safety net
            tf.extractall(dest, members=members)


def place_source(pin: Pin | None = None, dest: Path = THIRD_PARTY_SRC) -> Path:
    """Make ``dest`` hold the pinned llama.cpp tree (a no-op when it already does)."""
    pin = pin or load_pin()
    marker = dest / SRC_MARKER
    if marker.is_file() and marker.read_text().strip() == pin.sha256:
        return dest
    sdist = fetch_sdist(pin)
    _log(f"extracting {pin.member_prefix} from {sdist.name} to {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Extract next to dest and rename, so an interrupted extraction never
    # leaves a half-populated tree behind the marker.
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        _extract_subtree(sdist, pin.member_prefix, tmp)
        (tmp / SRC_MARKER).write_text(pin.sha256 + "\n")
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)  # a managed directory holding another (or partial) tree
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# --------------------------------------------------------------------------- cpu


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def ggml_cpu_options(flags: Iterable[str], amx: bool = False) -> dict[str, bool]:
    """GGML_* x86 ISA options matching a set of cpuinfo flags (AMX only when asked)."""
    have = set(flags)
    options = {opt: all(f in have for f in need) for opt, need in X86_FEATURES.items()}
    for opt, need in AMX_FEATURES.items():
        options[opt] = amx and all(f in have for f in need)
    return options


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _is_x86_64_linux() -> bool:
    return sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")


def variant_cpu_options(variant: str) -> dict[str, bool]:
    """The fixed GGML x86 ISA options of a non-native CPU variant."""
    if variant == "avx2":
        return {opt: opt in AVX2_VARIANT_OPTIONS for opt in (*X86_FEATURES, *AMX_FEATURES)}
    raise NativeBuildError(f"unknown cpu variant {variant!r} (choose from {', '.join(CPU_VARIANTS)})")


def host_cpu(amx: bool, variant: str = "native") -> tuple[dict[str, bool] | None, dict[str, Any]]:
    """(explicit GGML ISA options or None, identity of the CPU for the cache key).

    On x86_64 Linux the ISA options replace ``-march=native`` (which can turn
    on AMX); elsewhere ggml's defaults (GGML_NATIVE) apply, so the key uses
    the raw host description instead.  A non-native ``variant`` names a fixed
    set of options whatever the host is (x86-64 only), so its key is the same
    on every machine.
    """
    if variant != "native":
        options = variant_cpu_options(variant)
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise NativeBuildError(f"cpu variant {variant!r} is for x86-64 CPUs; this is {platform.machine()}")
        if amx:
            raise NativeBuildError(f"--amx needs the native cpu variant, not {variant!r}")
        return options, {"variant": variant, "ggml": sorted(k for k, v in options.items() if v)}
    if _is_x86_64_linux():
        options = ggml_cpu_options(parse_cpu_flags(_read_cpuinfo()), amx)
        return options, {"ggml": sorted(k for k, v in options.items() if v)}
    flags = sorted(parse_cpu_flags(_read_cpuinfo()))
    return None, {"machine": platform.machine(), "processor": platform.processor(), "flags": flags}


# --------------------------------------------------------------------------- toolchain


@dataclass(frozen=True)
class Toolchain:
    cmake: str
    ninja: str
    cmake_args: tuple[str, ...]  # toolchain-derived arguments (e.g. the nvcc found)


def _executable(path: str | Path) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _find_tool(name: str, module: str, attr: str) -> str | None:
    # Prefer the PyPI package's binary (a build requirement), then PATH.
    exe = name + (".exe" if os.name == "nt" else "")
    with contextlib.suppress(Exception):
        candidate = Path(getattr(importlib.import_module(module), attr)) / exe
        if _executable(candidate):
            return str(candidate)
    return shutil.which(name)


def _find_compiler(env_var: str, names: Sequence[str]) -> str | None:
    if value := os.environ.get(env_var):
        first = shlex.split(value)[0] if value.strip() else ""
        return shutil.which(first) or (first if _executable(first) else None)
    return next((p for n in names if (p := shutil.which(n))), None)


def find_nvcc() -> tuple[str, list[str]] | None:
    """nvcc from $CUDACXX, PATH, or $CUDA_HOME/$CUDA_PATH, with the CMake
    arguments needed for CMake to find that same toolkit."""
    if explicit := os.environ.get("CUDACXX"):
        return (explicit, []) if _executable(explicit) else None  # CMake reads CUDACXX too
    if found := shutil.which("nvcc"):
        return found, []  # CMake searches PATH the same way
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if (root := os.environ.get(var)) and _executable(nvcc := Path(root) / "bin" / "nvcc"):
            return str(nvcc), [f"-DCUDAToolkit_ROOT={root}", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    return None


# Where the Vulkan pieces are looked for besides $VULKAN_SDK and $CMAKE_PREFIX_PATH.
SYSTEM_PREFIXES: tuple[Path, ...] = (Path("/usr"), Path("/usr/local"), Path("/opt/homebrew"))


def _vulkan_prefixes() -> list[Path]:
    prefixes = [Path(os.environ["VULKAN_SDK"])] if os.environ.get("VULKAN_SDK") else []
    prefixes += [Path(p) for p in os.environ.get("CMAKE_PREFIX_PATH", "").split(os.pathsep) if p]
    return prefixes + list(SYSTEM_PREFIXES)


def _find_glslc() -> str | None:
    if found := shutil.which("glslc"):
        return found
    sdk = os.environ.get("VULKAN_SDK")
    return str(p) if sdk and _executable(p := Path(sdk) / "bin" / "glslc") else None


def _vulkan_missing() -> list[str]:
    """The pieces ggml-vulkan's CMake needs that are not installed (each with its Debian package).

    ggml-vulkan's CMakeLists.txt finds Vulkan (headers, loader, glslc) and the
    SPIRV-Headers CMake package; checking them here turns CMake's first-error-only
    output into one message naming everything to install.
    """
    prefixes = _vulkan_prefixes()
    missing = []
    if not _find_glslc():
        missing.append("the glslc shader compiler (glslc)")
    if not any((p / "include" / "vulkan" / "vulkan.h").is_file() for p in prefixes):
        missing.append("the Vulkan headers (libvulkan-dev)")
    # The development link (libvulkan.so, not only the runtime's libvulkan.so.1) is what links.
    if not any(lib.exists() for p in prefixes for name in ("libvulkan.so", "libvulkan.dylib")
               for lib in (*p.glob(f"lib*/{name}"), *p.glob(f"lib*/*/{name}"))):
        missing.append("the Vulkan loader library (libvulkan-dev)")
    if not any(cfg.is_file() for p in prefixes for cfg in (
            *p.glob("share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake"),
            *p.glob("lib*/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake"),
            *p.glob("lib*/*/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake"))):
        missing.append("the SPIRV-Headers CMake package (spirv-headers)")
    return missing


# ggml-vulkan always chains a VkLayerSettingsCreateInfoEXT into instance creation (the validation layer
# reads it; nothing else does), and VK_EXT_layer_settings is newer than some distributions' Vulkan-Headers
# (Debian 12: 1.3.239).  For those, a vulkan/vulkan.hpp placed first on the include path includes the real
# one and declares the three missing names with the C layout of the extension's structures; the loader
# and drivers skip the unknown pNext entry.  Only translation units including vulkan.hpp see it.
VULKAN_LAYER_SETTINGS_SHIM = """\
// Written by llamatwist's build_native.py: these Vulkan-Headers predate VK_EXT_layer_settings.
#pragma once
#pragma GCC system_header  // no -Wpedantic note for #include_next (GCC and Clang)
#include_next <vulkan/vulkan.hpp>
#ifndef VK_EXT_layer_settings
namespace vk {
enum class LayerSettingTypeEXT : int32_t { eBool32, eInt32, eInt64, eUint32, eUint64, eFloat32, eFloat64, eString };
struct LayerSettingEXT {  // VkLayerSettingEXT
    const char * pLayerName;
    const char * pSettingName;
    LayerSettingTypeEXT type;
    uint32_t valueCount;
    const void * pValues;
};
struct LayerSettingsCreateInfoEXT {  // VkLayerSettingsCreateInfoEXT
    int32_t sType = 1000496000;  // VK_STRUCTURE_TYPE_LAYER_SETTINGS_CREATE_INFO_EXT
    const void * pNext = nullptr;
    uint32_t settingCount;
    const LayerSettingEXT * pSettings;
    LayerSettingsCreateInfoEXT(const std::vector<LayerSettingEXT> & settings)
        : settingCount(static_cast<uint32_t>(settings.size())), pSettings(settings.data()) {}
};
}  // namespace vk
#endif
"""


def _vulkan_core_header() -> Path | None:
    return next((h for p in _vulkan_prefixes() if (h := p / "include" / "vulkan" / "vulkan_core.h").is_file()), None)


def vulkan_compat_args(build_dir: Path) -> list[str]:
    """CMake arguments that let ggml-vulkan compile against Vulkan-Headers without VK_EXT_layer_settings
    (none for newer headers)."""
    header = _vulkan_core_header()
    if header is None or "VK_EXT_layer_settings" in header.read_text(errors="replace"):
        return []
    shim = build_dir / "vulkan-compat"
    (shim / "vulkan").mkdir(parents=True, exist_ok=True)
    (shim / "vulkan" / "vulkan.hpp").write_text(VULKAN_LAYER_SETTINGS_SHIM)
    _log(f"{header} predates VK_EXT_layer_settings: compiling with the declarations in {shim}")
    return [f"-DCMAKE_CXX_FLAGS=-I{shim}"]


def _backend_missing(backend: str) -> tuple[list[str], list[str]]:
    """(missing pieces of the backend's own toolchain, the CMake arguments it implies)."""
    if backend == "cuda":
        nvcc = find_nvcc()
        if not nvcc:
            return ["the CUDA toolkit: nvcc was not found (put it on PATH, or set CUDACXX or CUDA_HOME)"], []
        return [], nvcc[1]
    if backend == "vulkan":
        return _vulkan_missing(), []
    return [], []


def find_toolchain(backend: str) -> Toolchain:
    """Locate the build tools for ``backend`` or raise one NativeBuildError naming every missing piece."""
    if backend == "metal" and sys.platform != "darwin":
        raise NativeBuildError("backend 'metal' is only available on macOS")
    missing, extra = _backend_missing(backend)
    cmake = _find_tool("cmake", "cmake", "CMAKE_BIN_DIR")
    if not cmake:
        missing.append("cmake (`pip install cmake` or your OS package manager)")
    ninja = _find_tool("ninja", "ninja", "BIN_DIR")
    if not ninja:
        missing.append("ninja (`pip install ninja` or your OS package manager)")
    if not _find_compiler("CXX", ("c++", "g++", "clang++")) or not _find_compiler("CC", ("cc", "gcc", "clang")):
        missing.append("a C/C++ compiler (e.g. `apt install build-essential` or the Xcode command line "
                       "tools; or set CC/CXX)")
    if missing:
        hint = ""
        if backend == "vulkan" and any("(glslc)" in m or "(libvulkan-dev)" in m or "(spirv-headers)" in m
                                       for m in missing):
            hint = ("; on Debian/Ubuntu `apt install glslc libvulkan-dev spirv-headers`, elsewhere the "
                    "LunarG Vulkan SDK with VULKAN_SDK set")
        raise NativeBuildError(f"the {backend} build needs {len(missing)} missing piece(s): "
                               + "; ".join(missing) + hint)
    assert cmake and ninja
    return Toolchain(cmake=cmake, ninja=ninja, cmake_args=tuple(extra))


# --------------------------------------------------------------------------- options


def _env_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """Build options from LLAMATWIST_* variables (lets `pip install .` be steered)."""
    opts: dict[str, Any] = {}
    if value := environ.get("LLAMATWIST_BACKEND", "").strip():
        opts["backend"] = value
    if value := environ.get("LLAMATWIST_JOBS", "").strip():
        try:
            opts["jobs"] = int(value)
        except ValueError:
            raise NativeBuildError(f"LLAMATWIST_JOBS must be an integer, got {value!r}") from None
    if value := environ.get("LLAMATWIST_CMAKE_ARGS", "").strip():
        opts["cmake_args"] = tuple(shlex.split(value))
    if value := environ.get("LLAMATWIST_LLAMA_SRC", "").strip():
        opts["llama_src"] = value
    if value := environ.get("LLAMATWIST_AMX", "").strip():
        opts["amx"] = value.lower() in _TRUE
    if value := environ.get("LLAMATWIST_CPU_VARIANT", "").strip():
        opts["cpu_variant"] = value.lower()
    return opts


def _git_rev(src: Path) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"],
                              check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def cache_key(source_id: str, backend: str, cmake_args: Sequence[str],
              cpu: Mapping[str, Any], amx: bool, cpu_variant: str = "native") -> str:
    """Name of the cache entry for one build configuration.

    A non-native CPU variant is named in the key (``cpu-avx2-<digest>``); the
    native variant's keys are those of builds made before variants existed.
    """
    material: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "source": source_id,
        "backend": backend,
        # Sorted: the key identifies the set of options, not their spelling order.
        "cmake_args": sorted(cmake_args),
        "cpu": dict(cpu),
        "amx": bool(amx),
        "platform": [sys.platform, platform.machine()],
    }
    name = backend
    if cpu_variant != "native":
        material["cpu_variant"] = cpu_variant
        name = f"{backend}-{cpu_variant}"
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:16]}"


# --------------------------------------------------------------------------- build


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise builds across processes (pip and a test run, say)."""
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock
        yield
        return
    with lock_path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another native build to finish ({lock_path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_logged(cmd: Sequence[str | Path], log_path: Path, what: str) -> None:
    with log_path.open("w") as logf:
        proc = subprocess.run([str(c) for c in cmd], check=False, stdout=logf, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()
        # CMake keeps going after the first error; that one is the useful part.
        first = next((i for i, ln in enumerate(lines) if ln.startswith("CMake Error")), None)
        excerpt = lines[first:first + 25] if first is not None else lines[-40:]
        sys.stderr.write("\n".join(excerpt) + "\n")
        raise NativeBuildError(f"{what} failed (exit status {proc.returncode}); full log: {log_path}")


def _run_build(cmd: Sequence[str | Path], log_path: Path) -> None:
    """Run the build, streaming ninja's [n/N] progress (one updating line on a tty)."""
    tty = sys.stderr.isatty()
    width = shutil.get_terminal_size().columns - 1 if tty else 0
    pending = False  # a progress line is on screen without a newline
    with log_path.open("w") as logf, subprocess.Popen(
        [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            logf.write(raw)
            line = raw.rstrip("\n")
            if tty and _PROGRESS_RE.match(line):
                sys.stderr.write("\r\033[K" + line[:width])
                pending = True
            else:
                sys.stderr.write(("\n" if pending else "") + line + "\n")
                pending = False
            sys.stderr.flush()
    if pending:
        sys.stderr.write("\n")
    if proc.returncode != 0:
        raise NativeBuildError(f"native build failed (exit status {proc.returncode}); full log: {log_path}")


def _cmake_home(build_dir: Path) -> str | None:
    cache = build_dir / "CMakeCache.txt"
    if cache.is_file():
        for line in cache.read_text(errors="replace").splitlines():
            if line.startswith("CMAKE_HOME_DIRECTORY:"):
                return line.partition("=")[2].strip()
    return None


def _complete_headers(include_dir: Path, src: Path) -> None:
    # mtmd's install rule is easy to lose across llama.cpp versions; the cffi
    # module includes these headers, so copy them from the tree if needed.
    # llama-ext.h (libllama's exported C++ staging API: the memory breakdown --fit measures with) is
    # not installed at all.
    for rel in ("tools/mtmd/mtmd.h", "tools/mtmd/mtmd-helper.h", "src/llama-ext.h"):
        name = Path(rel).name
        if not (include_dir / name).is_file() and (src / rel).is_file():
            shutil.copy2(src / rel, include_dir / name)
    missing = [h for h in ("llama.h", "ggml.h", "gguf.h", "mtmd.h", "mtmd-helper.h", "llama-ext.h", "ggml-rpc.h")
               if not (include_dir / h).is_file()]
    if missing:
        raise NativeBuildError(f"install is missing headers: {', '.join(missing)}")


def _build(*, src: Path, build_dir: Path, prefix: Path, toolchain: Toolchain, backend: str,
           cmake_args: Sequence[str], cpu_options: Mapping[str, bool] | None, jobs: int,
           info: dict[str, Any]) -> None:
    started = time.monotonic()
    # A build dir configured for another source path (another checkout, an sdist
    # unpacked elsewhere) cannot be reused: CMake refuses it.
    home = _cmake_home(build_dir)
    if home is not None and Path(home).resolve() != src.resolve():
        _log(f"build dir was configured for {home}; starting it afresh")
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)

    args = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={toolchain.ninja}", *BASE_CMAKE_ARGS]
    args += [f"-DGGML_{name.upper()}={'ON' if backend == name else 'OFF'}"
             for name in ("cuda", "vulkan", "metal")]
    if cpu_options is not None:
        args += ["-DGGML_NATIVE=OFF", *(f"-D{k}={'ON' if v else 'OFF'}" for k, v in cpu_options.items())]
    if backend == "vulkan":
        args += vulkan_compat_args(build_dir)
    args += [*toolchain.cmake_args, *cmake_args]  # the caller's arguments win
    enabled = [k.removeprefix("GGML_") for k, v in (cpu_options or {}).items() if v]
    _log(f"configuring {backend} build {prefix.name} (cpu: {' '.join(enabled) or 'ggml native detection'})")
    _run_logged([toolchain.cmake, "-S", src, "-B", build_dir, *args], build_dir / "configure.log", "cmake configure")

    _log(f"compiling with {jobs} job(s); log: {build_dir / 'build.log'}")
    _run_build([toolchain.cmake, "--build", build_dir, "--parallel", str(jobs)], build_dir / "build.log")

    staging = prefix.with_name(f".{prefix.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    _run_logged([toolchain.cmake, "--install", build_dir, "--prefix", staging],
                build_dir / "install.log", "cmake install")
    _complete_headers(staging / "include", src)
    if not any((staging / "lib").glob("libllama.*")):
        raise NativeBuildError(f"install produced no libllama in {staging / 'lib'}")
    info = {**info, "cmake_args": args, "build_seconds": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (staging / "build-info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    if prefix.exists():
        shutil.rmtree(prefix)
    os.replace(staging, prefix)
    (prefix / DONE_MARKER).write_text(info["built_at"] + "\n")
    _log(f"installed into {prefix} in {info['build_seconds']} s")


def _usable_cpus() -> int:
    # Containers often pin the process to fewer CPUs than os.cpu_count() reports.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def ensure_native(backend: str | None = None, jobs: int | None = None,
                  cmake_args: Sequence[str] | None = None,
                  llama_src: str | os.PathLike[str] | None = None,
                  amx: bool | None = None, cpu_variant: str | None = None,
                  build: bool = True) -> NativeBuild:
    """Return the native build for this configuration, building it if needed
    (``build=False``: a NativeBuildError instead, when it is not built yet).

    Arguments left as None come from LLAMATWIST_BACKEND / LLAMATWIST_JOBS /
    LLAMATWIST_CMAKE_ARGS / LLAMATWIST_LLAMA_SRC / LLAMATWIST_AMX /
    LLAMATWIST_CPU_VARIANT, else the defaults: cpu, all cores, no extra CMake
    arguments, the pinned source, no AMX, the native CPU variant.  A finished
    build of the pinned source is returned without touching the toolchain or
    the source tree; a ``llama_src`` build always runs the (incremental) build
    so local edits are picked up.
    """
    env = _env_options(os.environ)
    backend = backend if backend is not None else env.get("backend", "cpu")
    if backend not in BACKENDS:
        raise NativeBuildError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    jobs = jobs if jobs is not None else env.get("jobs") or _usable_cpus()
    if jobs < 1:
        raise NativeBuildError(f"jobs must be at least 1, got {jobs}")
    args = tuple(cmake_args) if cmake_args is not None else env.get("cmake_args", ())
    amx = bool(amx if amx is not None else env.get("amx", False))
    cpu_variant = cpu_variant if cpu_variant is not None else env.get("cpu_variant", "native")
    if cpu_variant not in CPU_VARIANTS:
        raise NativeBuildError(f"unknown cpu variant {cpu_variant!r} (choose from {', '.join(CPU_VARIANTS)})")
    src_arg = llama_src if llama_src is not None else env.get("llama_src")

    pin: Pin | None = None
    if src_arg is not None:
        src = Path(src_arg).expanduser().resolve()
        if not (src / "CMakeLists.txt").is_file() or not (src / "include" / "llama.h").is_file():
            raise NativeBuildError(f"{src} does not look like a llama.cpp checkout (no include/llama.h)")
        source_id = f"src:{src}@{_git_rev(src)}"
    else:
        pin = load_pin()
        src = THIRD_PARTY_SRC
        source_id = f"sdist:{pin.sha256}"

    cpu_options, cpu_identity = host_cpu(amx, cpu_variant)
    key = cache_key(source_id, backend, args, cpu_identity, amx, cpu_variant)
    root = cache_dir() / "native"
    prefix = root / key
    result = NativeBuild(prefix=prefix, include_dir=prefix / "include", lib_dir=prefix / "lib",
                         src_dir=src, key=key)
    if (pin is not None or not build) and (prefix / DONE_MARKER).is_file():
        return result
    if not build:
        raise NativeBuildError(f"the {backend} build is not in the cache ({prefix}): "
                               f"run `python build_native.py --backend {backend}`")

    toolchain = find_toolchain(backend)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / ".lock"):
        if pin is not None:
            if (prefix / DONE_MARKER).is_file():  # built by whoever held the lock
                return result
            place_source(pin, src)
        info = {"key": key, "source": source_id, "backend": backend, "amx": amx,
                "cpu_variant": cpu_variant, "cpu": cpu_identity, "recipe": RECIPE_VERSION, "src_dir": str(src)}
        _build(src=src, build_dir=root / "build" / key, prefix=prefix, toolchain=toolchain,
               backend=backend, cmake_args=args, cpu_options=cpu_options, jobs=jobs, info=info)
    return result


# llama.cpp's own programs, built beside the libraries for side-by-side benchmarks (bench/vs_llama_server.py):
# the common library, the tools and the server, without the web UI's npm build or its download.
REFERENCE_CMAKE_ARGS: tuple[str, ...] = (
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)
REFERENCE_TARGETS: tuple[str, ...] = ("llama-server", "llama-quantize", "llama-fit-params")


def ensure_reference(native: NativeBuild, jobs: int | None = None,
                     targets: Sequence[str] = REFERENCE_TARGETS) -> dict[str, Path]:
    """Build llama.cpp's programs (llama-server, llama-quantize) from the same source, backend and
    configuration as ``native``, in its build directory; map each target to its executable.

    Only the programs' own sources compile: ggml and libllama are the objects already built there
    (or, where that directory is gone, built afresh with the recorded arguments).
    """
    info = json.loads((native.prefix / "build-info.json").read_text())
    src = Path(info["src_dir"])
    if info["source"].startswith("sdist:"):
        src = place_source(load_pin(), src)
    build_dir = cache_dir() / "native" / "build" / native.key
    toolchain = find_toolchain(info["backend"])
    with _exclusive(cache_dir() / "native" / ".lock"):
        build_dir.mkdir(parents=True, exist_ok=True)
        _log(f"building {', '.join(targets)} in {build_dir}")
        # The recorded make program may have lived in pip's (deleted) isolated build environment.
        args = [a for a in info["cmake_args"] if not a.startswith("-DCMAKE_MAKE_PROGRAM=")]
        args += [f"-DCMAKE_MAKE_PROGRAM={toolchain.ninja}", *REFERENCE_CMAKE_ARGS]
        _run_logged([toolchain.cmake, "-S", src, "-B", build_dir, *args],
                    build_dir / "configure-reference.log", "cmake configure (reference programs)")
        _run_build([toolchain.cmake, "--build", build_dir, "--parallel", str(jobs or _usable_cpus()),
                    "--target", *targets], build_dir / "build-reference.log")
    found = {t: build_dir / "bin" / t for t in targets}
    missing = [t for t, path in found.items() if not _executable(path)]
    if missing:
        raise NativeBuildError(f"the build made no {', '.join(missing)} in {build_dir / 'bin'}")
    return found


# --------------------------------------------------------------------------- cli


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build_native.py",
        description="Build llama.cpp's shared libraries into the llamatwist cache and print the prefix.",
        epilog="Unset options fall back to LLAMATWIST_BACKEND, LLAMATWIST_JOBS, LLAMATWIST_CMAKE_ARGS, "
               "LLAMATWIST_LLAMA_SRC, LLAMATWIST_AMX and LLAMATWIST_CPU_VARIANT.")
    p.add_argument("--backend", choices=BACKENDS, help="GPU backend to enable (default: cpu)")
    p.add_argument("--jobs", "-j", type=int, help="parallel compile jobs (default: all usable cores)")
    p.add_argument("--cmake-arg", action="append", metavar="ARG",
                   help="extra CMake argument, e.g. --cmake-arg -DCMAKE_CUDA_ARCHITECTURES=native (repeatable)")
    p.add_argument("--llama-src", metavar="DIR", help="build a local llama.cpp checkout instead of the pin")
    p.add_argument("--amx", action="store_true", default=None,
                   help="enable Intel AMX kernels when the CPU has them (off by default)")
    p.add_argument("--cpu-variant", choices=CPU_VARIANTS,
                   help="ISA level to build for: this host's CPU features (native, the default) or an "
                        "AVX2-only CPU (avx2: no AVX-512/AVX-VNNI/AMX; cached under its own key)")
    p.add_argument("--reference", action="store_true",
                   help="also build llama.cpp's llama-server and llama-quantize from the same source and "
                        "configuration (for bench/vs_llama_server.py) and print their paths")
    return p


def _glue_cmake_args(argv: Sequence[str]) -> list[str]:
    # argparse rejects `--cmake-arg -DFOO=1` (the value looks like an option).
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--cmake-arg":
            value = next(it, None)
            out.append(arg if value is None else f"--cmake-arg={value}")
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ns = _parser().parse_args(_glue_cmake_args(sys.argv[1:] if argv is None else argv))
    try:
        build = ensure_native(backend=ns.backend, jobs=ns.jobs, cmake_args=ns.cmake_arg,
                              llama_src=ns.llama_src, amx=ns.amx, cpu_variant=ns.cpu_variant)
        programs = ensure_reference(build, jobs=ns.jobs) if ns.reference else {}
    except NativeBuildError as exc:
        print(f"build_native: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build_native: interrupted", file=sys.stderr)
        return 130
    print(build.prefix)
    for path in programs.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
