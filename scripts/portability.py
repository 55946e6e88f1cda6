#!/usr/bin/env python3
"""Run the model-dependent tests on this host's native build and on an AVX2-only build.

A quantized model's greedy text can move with the CPU's SIMD path (AVX-512 and
AVX2 kernels round differently), so the tests must hold on both.  On one
machine this script::

    python scripts/portability.py            # model-dependent tests, both builds
    python scripts/portability.py --all      # the whole suite, both builds
    python scripts/portability.py -- -x -k completion   # extra pytest arguments

1. builds (or finds in the per-user cache) the AVX2 variant with
   ``build_native.py --cpu-variant avx2`` -- AVX/AVX2/FMA/F16C/BMI2, no
   AVX-512/AVX-VNNI/AMX -- and checks that its headers are the native build's
   (same llama.cpp source, so the installed cffi extension fits both);
2. proves the variant uses no AVX-512: its CMake cache has the options off,
   libllama's system info (loaded through the variant) says ``AVX512 = 0``,
   and, when ``objdump`` is there, its libraries hold no zmm instruction;
3. runs pytest twice -- the installed build as is, then with
   ``LLAMATWIST_NATIVE_LIB_DIR`` naming the variant's ``lib/`` (honoured by
   ``llamatwist/native/binding.py``, in the test process and every server it
   starts) -- and prints the time and counts of each run.

The normal build and install are left untouched.  Needs the package installed
(``pip install -e '.[test]'``).  Exit status 0 only when both runs pass.

"Model-dependent" is decided when pytest collects: a test that uses the
``model_path`` / ``server`` / ``make_server`` fixtures (directly or through
another fixture), or sits in a module that imports ``llamatwist.engine``,
``llamatwist.native`` or ``tests.models``.  This module is that pytest plugin
(``python -m pytest -p scripts.portability`` selects the same tests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUILD_NATIVE = REPO / "build_native.py"
LIB_DIR_ENV = "LLAMATWIST_NATIVE_LIB_DIR"  # read by llamatwist/native/binding.py
HEADERS = ("llama.h", "ggml.h", "gguf.h", "mtmd.h", "mtmd-helper.h")
# Options that must be OFF in the AVX2 variant's CMake cache, and ON.
MUST_BE_OFF = ("GGML_NATIVE", "GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16",
               "GGML_AVX_VNNI", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
MUST_BE_ON = ("GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2")

# --------------------------------------------------------------------------- pytest plugin

MODEL_FIXTURES = frozenset({"model_path", "server", "make_server"})
_NATIVE_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?:llamatwist\.(?:engine|native)|tests\.models)\b",
                            re.MULTILINE)
_module_cache: dict[str, bool] = {}


def _module_is_native(path: str) -> bool:
    if path not in _module_cache:
        try:
            _module_cache[path] = bool(_NATIVE_IMPORT.search(Path(path).read_text(errors="replace")))
        except OSError:
            _module_cache[path] = False
    return _module_cache[path]


def is_model_dependent(item: Any) -> bool:
    """A test that starts a server or loads a model (see the module docstring)."""
    if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    return _module_is_native(str(item.path))


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    keep = [item for item in items if is_model_dependent(item)]
    dropped = [item for item in items if not is_model_dependent(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# --------------------------------------------------------------------------- the script


def _say(msg: str) -> None:
    print(f"[portability] {msg}", flush=True)


def _build(args: Sequence[str]) -> tuple[Path, float]:
    """Run build_native.py (its progress goes to stderr); return (prefix, seconds)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(BUILD_NATIVE), *args], stdout=subprocess.PIPE, text=True,
                          check=False, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"portability: build_native.py {' '.join(args)} failed (exit {proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1]), time.monotonic() - start


def _check_same_source(native: Path, variant: Path) -> None:
    for name in HEADERS:
        if (native / "include" / name).read_bytes() != (variant / "include" / name).read_bytes():
            raise SystemExit(f"portability: {name} differs between {native} and {variant}: "
                             "not builds of the same llama.cpp source")


def _cmake_cache(variant: Path) -> dict[str, str]:
    cache = variant.parent / "build" / variant.name / "CMakeCache.txt"
    values: dict[str, str] = {}
    for line in cache.read_text(errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep and ":" in name and not line.startswith(("//", "#")):
            values[name.partition(":")[0]] = value.strip()
    return values


_PROBE = r"""
import json, os, re
from llamatwist.native import binding
binding.backend_init()
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
libs = sorted({m for m in re.findall(r"(/\S*/lib(?:llama|ggml|mtmd)[^/\s]*)$", maps, re.M)})
print(json.dumps({"system_info": binding.ffi.string(binding.lib.llama_print_system_info()).decode(),
                  "libraries": libs}))
"""


def _probe(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=REPO, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _zmm_count(lib_dir: Path) -> int | None:
    objdump = shutil.which("objdump")
    if not objdump:
        return None
    total = 0
    for path in sorted({p.resolve() for p in lib_dir.glob("lib*.so*")}):
        dis = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(path)], check=True,
                             stdout=subprocess.PIPE, text=True, errors="replace").stdout
        total += len(re.findall(r"%zmm\d", dis))
    return total


def _feature(info: str, name: str) -> str | None:
    m = re.search(rf"(?<![A-Z0-9_]){re.escape(name)} = (\d)", info)
    return m.group(1) if m else None


def verify_variant(variant: Path, env: dict[str, str]) -> None:
    """Fail unless the AVX2 variant is what it claims and is the one loaded."""
    cache = _cmake_cache(variant)
    bad = [f"{k}={cache.get(k)}" for k in MUST_BE_OFF if cache.get(k, "OFF") != "OFF"]
    bad += [f"{k}={cache.get(k)}" for k in MUST_BE_ON if cache.get(k) != "ON"]
    if bad:
        raise SystemExit(f"portability: the AVX2 variant's CMake cache has {', '.join(bad)}")
    _say("CMake cache: GGML_NATIVE=OFF, AVX/AVX2/FMA/F16C/BMI2=ON, AVX512*/AVX_VNNI/AMX*=OFF")
    probe = _probe(env)
    lib_dir = variant / "lib"
    strays = [p for p in probe["libraries"] if Path(p).resolve().parent != lib_dir.resolve()]
    if strays or not probe["libraries"]:
        raise SystemExit(f"portability: with {LIB_DIR_ENV} set, libraries came from elsewhere: {strays}")
    info = probe["system_info"]
    if re.search(r"\b(?:AVX512\w*|AVX_VNNI|AMX\w*) = 1", info) or _feature(info, "AVX2") != "1":
        raise SystemExit(f"portability: the AVX2 variant's system info is unexpected: {info}")
    _say(f"loaded from {lib_dir}: {', '.join(Path(p).name for p in probe['libraries'])}")
    _say(f"system info (AVX2 variant): {info.strip()}")
    zmm = _zmm_count(lib_dir)
    if zmm is None:
        _say("objdump not found: instruction scan skipped")
    elif zmm:
        raise SystemExit(f"portability: the AVX2 variant's libraries use zmm registers {zmm} times")
    else:
        _say("objdump: no zmm (AVX-512) register in any of the variant's libraries")


@dataclass
class Run:
    name: str
    seconds: float
    returncode: int
    counts: dict[str, int]


def _counts(junit: Path) -> dict[str, int]:
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return total


def run_tests(name: str, env: dict[str, str], everything: bool, extra: Sequence[str], tmp: Path) -> Run:
    junit = tmp / f"{name}.xml"
    cmd = [sys.executable, "-m", "pytest", *([] if everything else ["-p", "scripts.portability"]),
           f"--junitxml={junit}", *extra]
    _say(f"{name}: {' '.join(cmd[1:])}")
    start = time.monotonic()
    rc = subprocess.run(cmd, env=env, cwd=REPO, check=False).returncode
    run = Run(name, time.monotonic() - start, rc, _counts(junit))
    _say(f"{name}: exit {rc} in {run.seconds:.0f} s")
    return run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/portability.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--all", action="store_true", help="run the whole suite, not only the model-dependent tests")
    p.add_argument("--jobs", "-j", type=int, help="compile jobs for the AVX2 build (default: all cores)")
    p.add_argument("--only", choices=("native", "avx2"), help="run the tests on one build only")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    ns = p.parse_args(argv)

    base_env = {k: v for k, v in os.environ.items() if k != LIB_DIR_ENV}
    native, _ = _build([])
    _say(f"native build: {native}")
    variant, seconds = _build(["--cpu-variant", "avx2", *(["--jobs", str(ns.jobs)] if ns.jobs else [])])
    built = json.loads((variant / "build-info.json").read_text())
    _say(f"AVX2 build: {variant} ({seconds:.0f} s here; compiled in {built.get('build_seconds')} s "
         f"on {built.get('built_at')})")
    _check_same_source(native, variant)
    avx2_env = {**base_env, LIB_DIR_ENV: str(variant / "lib")}
    verify_variant(variant, avx2_env)
    _say(f"system info (installed build): {_probe(base_env)['system_info'].strip()}")
    if (zmm := _zmm_count(native / "lib")) is not None:
        _say(f"objdump: {zmm} zmm register operands in the native build's libraries, for comparison")

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="llamatwist-portability-") as tmp:
        for name, env in (("native", base_env), ("avx2", avx2_env)):
            if ns.only in (None, name):
                runs.append(run_tests(name, env, ns.all, ns.pytest_args, Path(tmp)))

    what = "whole suite" if ns.all else "model-dependent tests"
    print(f"\n{what}:")
    for r in runs:
        c = r.counts
        counts = (f"{c['passed']} passed, {c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped"
                  if c else "no report")
        print(f"  {r.name:<7} {r.seconds:7.1f} s  {counts}  (exit {r.returncode})")
    return 0 if runs and all(r.returncode == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
