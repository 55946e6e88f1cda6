#!/usr/bin/env python3
"""Print the Homebrew formula's resource blocks for packaging/requirements.txt.

    python scripts/homebrew_resources.py > /tmp/resources.rb

Each pinned dependency's sdist URL and sha256 come from PyPI's simple index
(JSON form, PEP 691), the index pip itself reads: what `brew
update-python-resources` would write.  Paste the output between the formula's
markers; tests/test_packaging_homebrew.py checks the two agree.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "packaging" / "requirements.txt"


def pins(path: Path = REQUIREMENTS) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        if m := re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip()):
            out.append((m.group(1), m.group(2)))
    return out


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sdist(name: str, version: str) -> tuple[str, str]:
    req = urllib.request.Request(f"https://pypi.org/simple/{normalize(name)}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    stem = re.compile("[-_.]".join(map(re.escape, normalize(name).split("-"))) + rf"-{re.escape(version)}\.tar\.gz",
                      re.IGNORECASE)
    wheel = re.compile(stem.pattern.replace(r"\.tar\.gz", r"-py3-none-any\.whl"), re.IGNORECASE)
    for pattern in (stem, wheel):  # a pure-Python wheel where PyPI has no sdist
        for f in files:
            if pattern.fullmatch(f["filename"]):
                return f["url"], f["hashes"]["sha256"]
    raise SystemExit(f"no sdist or pure wheel for {name}=={version}")


def main() -> int:
    for name, version in pins():
        url, sha = sdist(name, version)
        print(f'  resource "{normalize(name)}" do\n    url "{url}"\n    sha256 "{sha}"\n  end\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
