#!/usr/bin/env python3
"""Check a GPU build (Vulkan or CUDA) against the CPU on this machine (issue 20).

Lavapipe (``mesa-vulkan-drivers``, a CPU Vulkan driver) makes a real Vulkan device on a machine without a
GPU, so the GPU code paths -- ``-ngl``, ``-dev``, ``-nkvo``, ``-sm``/``-mg``/``-ts`` -- run for real here;
on a lent GPU machine the same check runs on the CUDA build (``scripts/device_kit.py`` drives it there).
Lavapipe is slow: there this is a correctness check, not a benchmark. ::

    apt install glslc libvulkan-dev spirv-headers mesa-vulkan-drivers vulkan-tools
    python scripts/gpu_check.py                       # build (or find) the Vulkan build, run the checks
    python scripts/gpu_check.py --backend cuda --no-build
    python scripts/gpu_check.py --tokens 64 --prompts 6

1. finds the GPU build in the per-user cache (``build_native.py --backend B``; built when missing unless
   ``--no-build``) or the one named by ``LLAMATWIST_GPU_LIB_DIR``;
2. runs llamatwist on it through ``LLAMATWIST_NATIVE_LIB_DIR`` (``llamatwist/native/binding.py`` loads
   that build's libraries first; same llama.cpp source, so the installed cffi extension fits), for Vulkan
   with ``GGML_VK_VISIBLE_DEVICES=0`` (ggml-vulkan ignores CPU-type Vulkan devices such as lavapipe unless
   named): ``--list-devices`` and ``--version`` must show the device;
3. greedy-decodes the same prompts on the F32 test model (``tests/models.py``, or the model named by
   ``LLAMATWIST_GPU_TEST_MODEL``: outputs that do not depend on batch layout) with ``-dev none`` (the CPU's
   arithmetic) and with ``-ngl 99``, token by token; where they part, prints both runs' top two tokens with
   their probabilities -- a near tie there is floating-point summation order, anything else is a bug;
4. runs ``tests/test_gpu.py`` (the assertions: the comparison above, layers offloaded in ``/props`` and the
   start-up log, ``-ngl 0`` and ``-dev none`` on the CPU, an unknown device refused, ``-nkvo`` keeping the
   KV cache in host memory, ``-sm``/``-mg``/``-ts`` with one device, the projector's device) on that build.

Exit status 0 only when everything passes.  Not in CI: the first Vulkan build takes 5 to 20 minutes on a
small machine, each lavapipe server start takes seconds, and CI has no GPU; ``tests/test_gpu.py`` skips
(saying why) wherever no GPU build is there.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LIB_DIR_ENV = "LLAMATWIST_NATIVE_LIB_DIR"  # read by llamatwist/native/binding.py
GPU_LIB_ENV = "LLAMATWIST_GPU_LIB_DIR"  # a GPU build elsewhere than the cache
BACKEND_ENV = "LLAMATWIST_GPU_BACKEND"  # which GPU build the tests look for first
MODEL_ENV = "LLAMATWIST_GPU_TEST_MODEL"  # an F32 model instead of the F32 test model


@dataclass(frozen=True)
class Gpu:
    """A GPU backend as the checks see it."""

    backend: str  # build_native's name
    name: str  # ggml's: its devices are <name>0, <name>1, ...
    env: tuple[tuple[str, str], ...] = ()  # what the backend needs to see the device

    @property
    def device(self) -> str:
        return f"{self.name}0"


GPUS = {
    # ggml-vulkan skips CPU-type devices (lavapipe is one) unless they are named: device 0 is the only one here
    "vulkan": Gpu("vulkan", "Vulkan", (("GGML_VK_VISIBLE_DEVICES", os.environ.get("GGML_VK_VISIBLE_DEVICES", "0")),)),
    "cuda": Gpu("cuda", "CUDA"),
}
#: the F32 model's bit-exact settings (tests/test_speculative.py): F32 KV, no flash attention
EXACT = ("-fa", "off", "-ctk", "f32", "-ctv", "f32")
PROMPTS = (
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "Water boils at",
    "The three primary colours are",
    "Here is a list of fruits: apple, banana,",
)
#: a divergence counts as floating-point order when both runs' top two are within this much probability
NEAR_TIE = 0.02


def build_native_module() -> ModuleType:
    if "build_native" in sys.modules:
        return sys.modules["build_native"]
    spec = importlib.util.spec_from_file_location("build_native", REPO / "build_native.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_native"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def gpu_build(backend: str | None = None, build: bool = False, jobs: int | None = None) -> tuple[Gpu, Path]:
    """The GPU build to check and its lib/: LLAMATWIST_GPU_LIB_DIR, else the cache's build of ``backend``
    (or LLAMATWIST_GPU_BACKEND; unset: the first of CUDA, Vulkan there), built when ``build``.

    Raises build_native.NativeBuildError (with the command to run) when there is none.
    """
    error = build_native_module().NativeBuildError
    backend = backend or os.environ.get(BACKEND_ENV, "").strip() or None
    if value := os.environ.get(GPU_LIB_ENV, "").strip():
        path = Path(value).expanduser()
        lib = path / "lib" if (path / "lib").is_dir() else path
        found = [g for g in GPUS.values() if any(lib.glob(f"libggml-{g.backend}.*"))]
        if backend is not None:
            found = [g for g in found if g.backend == backend]
        if not found:
            raise error(f"{GPU_LIB_ENV}={value}: no libggml-{backend or 'cuda/vulkan'} there")
        return found[0], lib
    candidates = [backend] if backend else ["cuda", "vulkan"]
    last: Exception | None = None
    for name in candidates:
        if name not in GPUS:
            raise error(f"{name!r} is not a GPU backend these checks know ({', '.join(GPUS)})")
        try:
            return GPUS[name], Path(build_native_module().ensure_native(backend=name, jobs=jobs, build=build).lib_dir)
        except error as exc:
            last = exc
    assert last is not None
    raise last


def gpu_env(gpu: Gpu, lib_dir: Path) -> dict[str, str]:
    """The environment that runs llamatwist on the GPU build."""
    return {**os.environ, **dict(gpu.env), LIB_DIR_ENV: str(lib_dir)}


def run_cli(gpu: Gpu, lib_dir: Path | None, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``llamatwist ARGS`` on the GPU build (the installed build when lib_dir is None)."""
    env = gpu_env(gpu, lib_dir) if lib_dir is not None else {k: v for k, v in os.environ.items() if k != LIB_DIR_ENV}
    return subprocess.run([sys.executable, "-m", "llamatwist", *args], check=False, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Step:
    """One generated token and the run's two most probable candidates there."""

    id: int
    token: str
    top: tuple[tuple[int, str, float], ...]  # (id, text, probability), most probable first


def greedy(url: str, prompt: str, n_tokens: int) -> list[Step]:
    """Greedy-decode ``n_tokens`` (no early stop) through /completion with the top-2 probabilities."""
    import requests

    body: dict[str, Any] = {"prompt": prompt, "n_predict": n_tokens, "temperature": 0, "n_probs": 2,
                            "ignore_eos": True, "cache_prompt": False}
    resp = requests.post(url + "/completion", json=body, timeout=600)
    resp.raise_for_status()
    steps = []
    for p in resp.json()["completion_probabilities"]:
        top = tuple((t["id"], t["token"], math.exp(t["logprob"])) for t in p["top_logprobs"])
        steps.append(Step(id=p["id"], token=p["token"], top=top))
    return steps


@dataclass(frozen=True)
class Comparison:
    prompt: str
    cpu: list[Step]
    gpu: list[Step]
    gpu_name: str = "gpu"

    @property
    def first_divergence(self) -> int | None:
        return next((i for i, (a, b) in enumerate(zip(self.cpu, self.gpu)) if a.id != b.id), None)

    @property
    def agreed(self) -> int:
        """Tokens equal before the first divergence (the rest follow different text)."""
        i = self.first_divergence
        return len(self.cpu) if i is None else i

    def near_tie(self) -> bool:
        """At the first divergence: each run's choice is the other's runner-up, both nearly equal."""
        i = self.first_divergence
        if i is None:
            return True
        a, b = self.cpu[i], self.gpu[i]
        if len(a.top) < 2 or len(b.top) < 2:
            return False
        swapped = {a.top[0][0], a.top[1][0]} == {b.top[0][0], b.top[1][0]}
        return swapped and a.top[0][2] - a.top[1][2] <= NEAR_TIE and b.top[0][2] - b.top[1][2] <= NEAR_TIE

    def describe(self) -> str:
        i = self.first_divergence
        head = f"{self.prompt!r}: {self.agreed}/{len(self.cpu)} tokens agree"
        if i is None:
            return head + " (identical)"

        def fmt(step: Step) -> str:
            return ", ".join(f"{tok!r} (id {tid}) p={p:.5f}" for tid, tok, p in step.top)

        kind = "near tie: floating-point order" if self.near_tie() else "NOT a near tie"
        return (f"{head}; first divergence at token {i} ({kind})\n"
                f"    cpu: {fmt(self.cpu[i])}\n    {self.gpu_name}: {fmt(self.gpu[i])}")


def compare(cpu_url: str, gpu_url: str, prompts: Sequence[str], n_tokens: int,
            gpu_name: str = "gpu") -> list[Comparison]:
    return [Comparison(p, greedy(cpu_url, p, n_tokens), greedy(gpu_url, p, n_tokens), gpu_name) for p in prompts]


def prob_gap(a: list[Step], b: list[Step]) -> float:
    """The largest difference in the chosen token's probability over the agreeing prefix."""
    gaps = [abs(x.top[0][2] - y.top[0][2]) for x, y in zip(a, b) if x.id == y.id and x.top and y.top]
    return max(gaps, default=0.0)


# --------------------------------------------------------------------------- script


def gpu_test_model() -> str:
    """LLAMATWIST_GPU_TEST_MODEL, else the F32 test model (made from the default model)."""
    if value := os.environ.get(MODEL_ENV, "").strip():
        return value
    sys.path.insert(0, str(REPO))
    from llamatwist.models import ensure_default_model
    from tests.models import smollm2_f32_gguf

    return str(smollm2_f32_gguf(Path(ensure_default_model())))


def _report(gpu: Gpu, lib_dir: Path, prompts: Sequence[str], n_tokens: int) -> bool:
    sys.path.insert(0, str(REPO))
    from tests.conftest import Server

    for args in (("--list-devices",), ("--version",)):
        proc = run_cli(gpu, lib_dir, *args)
        print(f"$ llamatwist {' '.join(args)}  (exit {proc.returncode})\n{proc.stdout.rstrip()}")
    model = gpu_test_model()
    common = ["-m", model, "-c", "1024", "-np", "1", "-t", "2", *EXACT]
    started = time.monotonic()
    saved = dict(os.environ)
    os.environ.update(gpu_env(gpu, lib_dir))  # the servers inherit it
    try:
        cpu = Server([*common, "-dev", "none"])
        on_gpu = Server([*common, "-ngl", "99"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        print(f"servers up in {time.monotonic() - started:.1f} s; /props offload on {gpu.name}:",
              on_gpu.get("/props").json()["offload"]["layers_offloaded"], "layers")
        t0 = time.monotonic()
        results = compare(cpu.url, on_gpu.url, prompts, n_tokens, gpu.name)
        elapsed = time.monotonic() - t0
    finally:
        cpu.stop()
        on_gpu.stop()
    total = sum(len(r.cpu) for r in results)
    agreed = sum(r.agreed for r in results)
    for r in results:
        print(r.describe())
    gap = max(prob_gap(r.cpu, r.gpu) for r in results)
    print(f"token agreement: {agreed}/{total} before any divergence; {sum(r.first_divergence is None for r in results)}"
          f"/{len(results)} prompts identical; largest chosen-token probability difference {gap:.2e}; "
          f"{elapsed:.1f} s for both runs")
    return all(r.near_tie() for r in results)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--backend", choices=sorted(GPUS), default=os.environ.get(BACKEND_ENV) or "vulkan",
                   help="the GPU build to check (default: vulkan, or LLAMATWIST_GPU_BACKEND)")
    p.add_argument("--no-build", action="store_true", help="fail unless the GPU build is already cached")
    p.add_argument("--jobs", "-j", type=int, help="compile jobs for a build (default: all usable cores)")
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many prompts to compare")
    p.add_argument("--tokens", type=int, default=32, help="tokens per prompt")
    p.add_argument("--skip-tests", action="store_true", help="only the comparison, not tests/test_gpu.py")
    p.add_argument("--junitxml", type=Path, help="tests/test_gpu.py's results as JUnit XML here")
    ns = p.parse_args(argv)
    try:
        gpu, lib_dir = gpu_build(ns.backend, build=not ns.no_build, jobs=ns.jobs)
    except build_native_module().NativeBuildError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 1
    print(f"{gpu.name} build: {lib_dir}")
    ok = _report(gpu, lib_dir, PROMPTS[:ns.prompts], ns.tokens)
    if not ns.skip_tests:
        env = {**os.environ, GPU_LIB_ENV: str(lib_dir), BACKEND_ENV: gpu.backend}
        cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_gpu.py"]
        if ns.junitxml:
            cmd.append(f"--junitxml={ns.junitxml}")
        ok = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode == 0 and ok
    print("gpu_check:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
