"""Defaults and helpers shared by the engine reference and the load generator.

Both sides must run the same workload (prompt text, n_predict, threads,
context size, KV layout) for the comparison to mean anything, so the
defaults live here once.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CTX",
    "DEFAULT_N_PREDICT",
    "DEFAULT_PROMPT",
    "RESULTS_DIR",
    "CpuMeter",
    "default_threads",
    "machine_busy",
    "machine_info",
    "parse_clients",
    "percentile",
    "resolve_model",
    "wait_quiet",
    "write_json",
]

# ~60 tokens with SmolLM2's tokenizer: long enough to be a real prompt, short
# enough that prompt processing stays small next to 128 generated tokens.
DEFAULT_PROMPT = (
    "You are a helpful assistant. Write a detailed, friendly explanation of how a "
    "steam locomotive works, covering the firebox, the boiler, the cylinders and the "
    "valve gear, and explain why these machines were so important to the growth of "
    "cities in the nineteenth century."
)
DEFAULT_N_PREDICT = 128
# Shared (unified) KV cache for every sequence: 8 x (prompt + 128) fits easily.
DEFAULT_CTX = 4096

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def default_threads() -> int:
    return os.cpu_count() or 1


def resolve_model(path: str | None) -> str:
    """``--model`` if given, else the project's default model (fetched on first use)."""
    if path:
        return path
    from llamatwist.models import ensure_default_model

    return str(ensure_default_model())


def parse_clients(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]`` (positive, de-duplicated, sorted)."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--clients wants comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise ValueError(f"--clients wants positive integers, got {text!r}")
    return values


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100); NaN for no data."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def machine_info(threads: int) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(name: str, data: Any, out_dir: Path | None = None) -> Path:
    """Write ``data`` to ``<results>/<name>-<timestamp>.json``; returns the path."""
    out = out_dir or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def _proc_stat_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _pid_cpu(pid: int) -> int:
    """utime + stime jiffies of ``pid`` (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(rest[11]) + int(rest[12])  # fields 14 and 15 of proc(5)


class CpuMeter:
    """CPU used during a measurement, in cores: the whole machine, the
    benchmark's own processes, and everything else (other users' work
    competing for the same cores, which makes the figures noisy)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._t0 = 0.0
        self._machine0 = (0, 0)
        self._ours0 = 0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = _proc_stat_cpu()
        self._ours0 = sum(_pid_cpu(p) for p in self.pids)

    def stop(self) -> dict[str, float]:
        busy1, total1 = _proc_stat_cpu()
        ours1 = sum(_pid_cpu(p) for p in self.pids)
        busy = busy1 - self._machine0[0]
        total = max(total1 - self._machine0[1], 1)
        cores = os.cpu_count() or 1
        machine = cores * busy / total
        ours = cores * (ours1 - self._ours0) / total
        return {
            "machine_cores": round(machine, 3),
            "ours_cores": round(ours, 3),
            "other_cores": round(max(machine - ours, 0.0), 3),
            "seconds": round(time.monotonic() - self._t0, 3),
        }


def machine_busy(seconds: float = 1.0) -> float:
    """Cores busy (whole machine) over the next ``seconds``."""
    busy0, total0 = _proc_stat_cpu()
    time.sleep(seconds)
    busy1, total1 = _proc_stat_cpu()
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)


def wait_quiet(max_wait: float, threshold: float = 0.25, log: Any = None) -> float:
    """Wait (up to ``max_wait`` s) until other work uses < ``threshold`` cores;
    returns the last reading. A shared machine makes every figure noisy."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy()
    while busy >= threshold and time.monotonic() < deadline:
        if log is not None:
            print(f"  machine busy ({busy:.2f} cores in use), waiting...", file=log, flush=True)
        busy = machine_busy(2.0)
    return busy


def save_results(name: str, data: Any, out: Path | None = None) -> Path:
    """Write ``data`` to ``out`` if given, else to ``<results>/<name>-<timestamp>.json``; print the path."""
    if out is None:
        path = write_json(name, data)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        path = out
    print(f"wrote {path}")
    return path
