"""The Homebrew formula, as far as it can be checked here (no brew, no macOS):
Ruby parses it, and its resources are exactly the pinned runtime dependencies."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import metadata

import pytest

from tests.conftest import REPO

FORMULA = REPO / "packaging" / "homebrew" / "llamatwist.rb"
REQUIREMENTS = REPO / "packaging" / "requirements.txt"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    found = (re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip()) for line in REQUIREMENTS.read_text().splitlines())
    return {normalize(m.group(1)): m.group(2) for m in found if m}


@pytest.mark.skipif(shutil.which("ruby") is None, reason="needs ruby (bash .ci/run installs it)")
def test_formula_is_valid_ruby() -> None:
    proc = subprocess.run(["ruby", "-c", str(FORMULA)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Syntax OK" in proc.stdout, proc.stderr


def test_resources_are_the_pinned_dependencies() -> None:
    text = FORMULA.read_text()
    blocks = re.findall(r'resource "([^"]+)" do\n\s+url "([^"]+)"\n\s+sha256 "([0-9a-f]{64})"', text)
    resources = {name: url for name, url, _ in blocks}
    pinned = pins()
    llama = resources.pop("llama-cpp-python")
    pin = json.loads((REPO / "llama_pin.json").read_text())
    assert f"llama_cpp_python-{pin['version']}.tar.gz" in llama and pin["sha256"] in text
    assert set(resources) == set(pinned)
    for name, url in resources.items():
        assert f"-{pinned[name]}" in url.rsplit("/", 1)[1], (name, url, pinned[name])
    # Every direct runtime dependency of the project is pinned (the others come with them).
    deps = [d for d in metadata.requires("llamatwist") or [] if "extra ==" not in d]
    assert deps
    for dep in deps:
        name = normalize(re.split(r"[\[<>=! ]", dep, maxsplit=1)[0])
        assert name in pinned, dep


def test_formula_conventions() -> None:
    text = FORMULA.read_text()
    assert "include Language::Python::Virtualenv" in text
    assert 'ENV["LLAMATWIST_BACKEND"] = OS.mac? ? "metal" : "cpu"' in text
    assert re.search(r"^  service do\n", text, re.MULTILINE) and re.search(r"^  test do\n", text, re.MULTILINE)
    test_block = text[text.index("  test do"):]
    assert "http" not in test_block  # the test block needs no network
