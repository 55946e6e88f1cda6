#!/usr/bin/env python3
"""Everything issue 20's CUDA check needs on a lent GPU machine, in one prepared kit and one command.

The GPU machine the ``device`` tool lends reaches no network and takes at most 64 MiB of working tree, and a
session has about 15 minutes of it, so nothing may be fetched or decided there. ``prepare`` (here, with
network) packs into ``.devkit/`` (git-ignored, carried): the pinned llama.cpp source less its docs, models
and tests (about 10 MB), the Python wheels the machine's image lacks (cp312: twisted, klein, treq, cffi,
llguidance, gguf and what they need) and SmolLM2's tokenizer (``make_llama_model.py --vocab-only``).
``run`` (there) then, each step timed and logged:

1. installs the wheels (``--target``, no index) and unpacks the source into ``third_party/llama.cpp``;
2. builds llamatwist for the backend (``setup.py build_ext --inplace``: libllama and ggml through
   build_native.py, for CUDA for this GPU's compute capability only) and llama.cpp's own llama-server
   and llama-quantize from the same build (``build_native.py --reference``);
3. makes the models: an F32 and a Q4_1 random-weight model of SmolLM2-135M's exact shape with its real
   tokenizer (the default model cannot come along: 98 MB);
4. runs ``scripts/gpu_check.py`` (CPU-vs-GPU greedy comparison and ``tests/test_gpu.py``: -ngl, -dev,
   -nkvo, -sm/-mg/-ts, -devd, -mmdev, --no-mmproj-offload on the device);
5. benchmarks llamatwist against that llama-server (``bench/vs_llama_server.py``, same model and flags,
   ``-ngl 99``, 1 and 8 clients), then ``bench/run_all`` (server against the engine ceiling);

and writes ``summary.json`` and the logs to ``--out`` (the device tool's $OUT). Steps already done on this
machine (its cache survives between calls while it stays warm) are not redone, so a run cut short by the
10-minute limit continues where it stopped when called again. Each step that no longer fits the time left
is skipped and named. From the device tool, in the repository root::

    python scripts/device_kit.py prepare                      # here; then carry .devkit
    run(command="python3 scripts/device_kit.py run --backend cuda --out $OUT", carry=[".devkit"],
        timeout_s=600)

``run --backend vulkan --no-wheels`` rehearses the same steps on lavapipe here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / ".devkit"
SOURCE_TAR = "llama.cpp.tar.gz"
VOCAB = "smollm2-vocab.gguf"
WHEELS = "wheels"
#: what the build reads of the llama.cpp tree (docs, models, tests and examples stay behind)
SOURCE_PARTS = ("CMakeLists.txt", "LICENSE", "cmake", "common", "ggml", "include", "licenses", "scripts", "src",
                "tools", "vendor", ".llamatwist-pin")
SOURCE_SKIP = ("tools/server/tests", "tools/server/webui", "tools/ui/node_modules")
#: llamatwist's runtime requirements (pyproject.toml) that the GPU image lacks; pip adds what they need
REQUIREMENTS = ("cffi>=1.17", "twisted[tls]>=24.3", "cryptography", "klein>=24.8", "treq", "llguidance>=1.9",
                "gguf>=0.19")
#: already in the image (and large)
IMAGE_HAS = ("numpy",)
WHEEL_PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + [
    "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64", "any"]
CARRY_LIMIT = 64 * 2**20
SITE = Path("/tmp/devkit-site")

sys.path.insert(0, str(REPO / "scripts"))
from gpu_check import GPUS, build_native_module

# --------------------------------------------------------------------------- prepare


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    rel = info.name.split("/", 1)[1] if "/" in info.name else ""
    return None if any(rel == s or rel.startswith(s + "/") for s in SOURCE_SKIP) else info


def pack_source(tar: Path) -> Path:
    """The pinned tree's buildable part (with its pin marker) as ``llama.cpp/...`` in ``tar``."""
    bn = build_native_module()
    src = bn.place_source(bn.load_pin())
    with tarfile.open(tar, "w:gz") as tf:
        for part in SOURCE_PARTS:
            if (src / part).exists():
                tf.add(src / part, arcname=f"llama.cpp/{part}", filter=_tar_filter)
    return tar


def unpack_source(tar: Path, dest: Path) -> bool:
    """Make ``dest`` (third_party/llama.cpp) the pinned tree from ``tar`` unless it already is."""
    bn = build_native_module()
    marker = dest / bn.SRC_MARKER
    if marker.is_file() and marker.read_text().strip() == bn.load_pin().sha256:
        return True
    shutil.rmtree(dest, ignore_errors=True)
    with tarfile.open(tar) as tf:
        tf.extractall(dest.parent, filter="data")
    return marker.is_file() and marker.read_text().strip() == bn.load_pin().sha256


def prepare(kit: Path, python_version: str) -> int:
    kit.mkdir(parents=True, exist_ok=True)
    pack_source(kit / SOURCE_TAR)

    from make_llama_model import base_or_default, make_vocab  # gguf: not on the GPU image before `run` installs it

    make_vocab(kit / VOCAB, base_or_default(None))

    wheels = kit / WHEELS
    shutil.rmtree(wheels, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", *(a for p in WHEEL_PLATFORMS for a in ("--platform", p)), "-d", str(wheels),
           *REQUIREMENTS]
    subprocess.run(cmd, check=True)
    for name in IMAGE_HAS:
        for whl in wheels.glob(f"{name}-*.whl"):
            whl.unlink()

    exclude = REPO / ".git" / "info" / "exclude"
    if exclude.parent.is_dir() and "/.devkit/" not in exclude.read_text():
        with exclude.open("a") as f:
            f.write("/.devkit/\n")
    kit_size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tree_size = sum((REPO / n).stat().st_size for n in tracked.decode().split("\0") if n and (REPO / n).is_file())
    print(f"kit {kit}: {kit_size / 2**20:.1f} MiB ({len(list(wheels.glob('*.whl')))} wheels); "
          f"with the tracked tree {(kit_size + tree_size) / 2**20:.1f} MiB of the device tool's 64 MiB")
    return 0 if kit_size + tree_size < CARRY_LIMIT else 1


# --------------------------------------------------------------------------- run


class Run:
    """The steps' shared state: the clock, the log, the summary."""

    def __init__(self, out: Path, budget: float) -> None:
        self.out = out
        self.deadline = time.monotonic() + budget
        out.mkdir(parents=True, exist_ok=True)
        self.log = (out / "device_kit.log").open("a")
        self.summary: dict[str, Any] = {"steps": {}}
        self.state_path = _work_dir() / "state.json"
        self.done: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sh(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Run ``cmd``, its output into the log (and stdout); its exit status (124: killed, out of time)."""
        self.say("$ " + " ".join(cmd))
        with subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace") as proc:
            assert proc.stdout is not None
            pipe = proc.stdout

            def copy() -> None:
                for line in pipe:
                    self.say(line.rstrip("\n"))

            pump = threading.Thread(target=copy, daemon=True)
            pump.start()
            try:
                code = proc.wait(timeout=max(1.0, self.left()))
            except subprocess.TimeoutExpired:
                proc.kill()
                self.say("(killed: out of time)")
                code = 124
            pump.join(10)
            return code

    def step(self, name: str, needs: float, fn: Any) -> bool:
        """Run ``fn`` unless done already on this machine or fewer than ``needs`` seconds are left."""
        if name in self.done:
            self.summary["steps"][name] = {**self.done[name], "from_earlier_call": True}
            self.say(f"== {name}: done in an earlier call")
            return bool(self.done[name].get("ok"))
        if self.left() < needs:
            self.summary["steps"][name] = {"ok": False, "skipped": f"{self.left():.0f} s left, needs ~{needs:.0f}"}
            self.say(f"== {name}: SKIPPED ({self.left():.0f} s left, needs about {needs:.0f} s)")
            return False
        self.say(f"== {name}")
        t0 = time.monotonic()
        result = fn()
        ok, extra = (result if isinstance(result, tuple) else (result, {}))
        record = {"ok": bool(ok), "seconds": round(time.monotonic() - t0, 1), **extra}
        self.summary["steps"][name] = record
        self.say(f"== {name}: {'ok' if ok else 'FAILED'} in {record['seconds']} s")
        if ok:
            self.done[name] = record
            self.state_path.write_text(json.dumps(self.done, indent=2))
        self.write_summary()  # after every step: a call killed later still brings this back
        return bool(ok)

    def write_summary(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str) + "\n")


def _work_dir() -> Path:
    """Models and step records, in the per-user cache: kept while the machine stays warm."""
    d = build_native_module().cache_dir() / "device-kit"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _facts(backend: str) -> dict[str, Any]:
    def out(cmd: Sequence[str]) -> str:
        try:
            return subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unavailable ({exc})"

    facts: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable, "machine": platform.machine(),
        "cpus": os.cpu_count(), "python_h": (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file(),
        "cc": shutil.which("cc") or shutil.which("gcc"),
    }
    if backend == "cuda":
        facts["gpus"] = out(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap",
                             "--format=csv,noheader"])
        facts["nvcc"] = out(["nvcc", "--version"]).splitlines()[-1:] if shutil.which("nvcc") else None
    return facts


def _cuda_env(env: dict[str, str], facts: dict[str, Any]) -> None:
    if not shutil.which("nvcc", path=env.get("PATH")):
        roots = [Path(r) for r in (env.get("CUDA_HOME"), env.get("CUDA_PATH"), "/usr/local/cuda") if r]
        roots += sorted(Path("/usr/local").glob("cuda-*"), reverse=True)
        for root in roots:
            if (root / "bin" / "nvcc").is_file():
                env["PATH"] = f"{root}/bin:{env.get('PATH', '')}"
                env.setdefault("CUDA_HOME", str(root))
                break
    facts["nvcc_used"] = shutil.which("nvcc", path=env.get("PATH"))
    if "LLAMATWIST_CMAKE_ARGS" not in env:
        cap = str(facts.get("gpus", "")).split(",")[-1].strip().replace(".", "")
        arch = cap if cap.isdigit() else "native"
        env["LLAMATWIST_CMAKE_ARGS"] = f"-DCMAKE_CUDA_ARCHITECTURES={arch}"


def run(args: argparse.Namespace) -> int:
    r = Run(args.out, args.budget)
    env = dict(os.environ, PYTHONUNBUFFERED="1", LLAMATWIST_BACKEND=args.backend)
    env.update({k: v for k, v in GPUS[args.backend].env if k not in env})  # lavapipe must be named
    facts = _facts(args.backend)
    if args.backend == "cuda":
        _cuda_env(env, facts)
        facts["cmake_args"] = env["LLAMATWIST_CMAKE_ARGS"]
    r.summary["facts"] = facts
    r.say(f"device kit: backend {args.backend}; {json.dumps(facts)}")
    if not facts["python_h"]:
        r.say("no Python.h for this interpreter: the cffi extension cannot be compiled here")
        r.write_summary()
        return 1
    kit = args.kit
    paths: dict[str, str] = {}

    def wheels() -> bool:
        if args.no_wheels:
            return True
        found = sorted(str(p) for p in (kit / WHEELS).glob("*.whl"))
        return r.sh([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                     "--upgrade", "--target", str(SITE), *found]) == 0

    if not args.no_wheels:
        env["PYTHONPATH"] = f"{SITE}:{REPO}"
    ok = r.step("wheels", 30, wheels)

    ok = ok and r.step("source", 20, lambda: unpack_source(kit / SOURCE_TAR, build_native_module().THIRD_PARTY_SRC))

    def build() -> bool:
        return r.sh([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], env=env) == 0

    ok = ok and r.step("build", 240, build)

    def reference() -> tuple[bool, dict[str, Any]]:
        proc = subprocess.run([sys.executable, "build_native.py", "--reference"], check=False, cwd=REPO, env=env,
                              capture_output=True, text=True)
        r.say(proc.stderr[-4000:])
        lines = proc.stdout.split()
        return proc.returncode == 0, {"prefix": lines[0] if lines else None,
                                      "programs": {Path(p).name: p for p in lines[1:]}}

    ok = ok and r.step("reference", 60, reference)
    if not ok:
        r.write_summary()
        return 1
    programs = r.summary["steps"]["reference"]["programs"]
    work = _work_dir()
    f32, f16, q4 = work / "random-f32.gguf", work / "random-f16.gguf", work / "random-q4_1.gguf"

    def models() -> bool:
        make = [sys.executable, "scripts/make_llama_model.py", "--base", str(kit / VOCAB)]
        return (r.sh([*make, "--type", "f32", "--out", str(f32)], env=env) == 0
                and r.sh([*make, "--type", "f16", "--out", str(f16)], env=env) == 0
                and r.sh([programs["llama-quantize"], str(f16), str(q4), "Q4_1"], env=env) == 0)

    ok = r.step("models", 60, models)
    paths.update(f32=str(f32), q4_1=str(q4))

    def gpu_tests() -> bool:
        test_env = dict(env, LLAMATWIST_GPU_TEST_MODEL=str(f32))
        return r.sh([sys.executable, "scripts/gpu_check.py", "--backend", args.backend, "--no-build",
                     "--junitxml", str(args.out / "test_gpu.xml")], env=test_env) == 0

    if ok and not args.skip_tests:
        r.step("gpu_tests", 120, gpu_tests)
    duration = str(args.duration)

    def vs_llama_server() -> tuple[bool, dict[str, Any]]:
        out = work / "vs_llama_server.json"
        code = r.sh([sys.executable, "-m", "bench.vs_llama_server", "--llama-server", programs["llama-server"],
                     "-m", str(q4), "--clients", "1,8", "--duration", duration, "--warmup", "3", "--rounds", "1",
                     "--server-args=-ngl 99", "--out", str(out)], env=env)
        summary = json.loads(out.read_text())["summary"] if out.is_file() else None
        return code == 0, {"summary": summary, "file": str(out)}

    if ok:
        r.step("vs_llama_server", 4 * (args.duration + 8) + 20, vs_llama_server)

    def run_all() -> tuple[bool, dict[str, Any]]:
        out = work / "run_all.json"
        code = r.sh([sys.executable, "-m", "bench.run_all", "-m", str(q4), "--clients", "1,8",
                     "--duration", duration, "--repeat", "1", "--no-engine-after", "--wait-quiet", "0",
                     "--out", str(out)], env=env)
        return code == 0, {"file": str(out)}

    if ok:
        r.step("run_all", 4 * (args.duration + 8) + 30, run_all)
    for name in ("vs_llama_server", "run_all"):
        if (work / f"{name}.json").is_file():
            shutil.copy2(work / f"{name}.json", args.out / f"{name}.json")
    r.write_summary()
    failed = [n for n, s in r.summary["steps"].items() if not s.get("ok")]
    r.say(f"device kit: {'all steps ok' if not failed else 'not ok: ' + ', '.join(failed)}; "
          f"{r.left():.0f} s of the budget left")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="pack .devkit here (needs the network)")
    pp.add_argument("--kit", type=Path, default=KIT)
    pp.add_argument("--python-version", default="3.12", help="the GPU image's Python (default 3.12)")
    pr = sub.add_parser("run", help="build, test and benchmark on the GPU machine")
    pr.add_argument("--backend", choices=("cuda", "vulkan"), default="cuda")
    pr.add_argument("--kit", type=Path, default=KIT)
    pr.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "bench" / "results" / "device"))
    pr.add_argument("--budget", type=float, default=570.0, help="seconds for all steps (default 570)")
    pr.add_argument("--duration", type=float, default=15.0, help="measured seconds per benchmark point")
    pr.add_argument("--no-wheels", action="store_true", help="use this interpreter's packages (a rehearsal)")
    pr.add_argument("--skip-tests", action="store_true", help="no scripts/gpu_check.py")
    args = p.parse_args(argv)
    if args.command == "prepare":
        return prepare(args.kit, args.python_version)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
