#!/usr/bin/env python3
"""Build llamatwist's Debian package from this checkout, reusing a cached one.

    python scripts/build_deb.py [--force] [--no-lintian]

Copies the checkout's files (tracked and untracked, not ignored; no tests, web
sources or benchmarks) into a scratch tree, puts ``packaging/debian`` there as
``debian/`` and runs ``dpkg-buildpackage -us -uc -b``, then ``lintian`` on the
result.  The .deb and lintian's report are kept under
``$LLAMATWIST_CACHE_DIR/deb/<hash>/``, the hash covering every copied file and
the build's environment (LLAMATWIST_* variables, the interpreter), so an
unchanged tree reuses them.  Prints the .deb's path last.

The pinned llama.cpp tree (``third_party/llama.cpp``, ignored by git) is
linked in, and libllama itself comes from build_native.py's cache, so a warm
cache builds the package in a few minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Not needed to build the package.
SKIP_TOP = ("tests", "web", "bench", ".ci")


def cache_root() -> Path:
    if explicit := os.environ.get("LLAMATWIST_CACHE_DIR"):
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "llamatwist"


def source_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         stdout=subprocess.PIPE).stdout.decode()
    files = sorted({f for f in out.split("\0") if f and (REPO / f).is_file()})
    return [f for f in files if f.split("/", 1)[0] not in SKIP_TOP]


def source_hash(files: list[str]) -> str:
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0" + (REPO / name).read_bytes() + b"\0")
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("LLAMATWIST_") and k != "LLAMATWIST_CACHE_DIR")
    h.update(repr(env).encode())
    h.update(subprocess.run(["/usr/bin/python3", "--version"], check=True, stdout=subprocess.PIPE).stdout)
    return h.hexdigest()[:16]


def build(files: list[str], dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="llamatwist-deb-") as tmp:
        src = Path(tmp) / "llamatwist"
        for name in files:
            target = src / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
        shutil.copytree(REPO / "packaging" / "debian", src / "debian")
        pinned = REPO / "third_party" / "llama.cpp"
        if pinned.is_dir():  # else build_native.py extracts it from its cached sdist
            (src / "third_party").mkdir()
            (src / "third_party" / "llama.cpp").symlink_to(pinned)
        env = dict(os.environ, LLAMATWIST_CACHE_DIR=str(cache_root()))
        # The package's interpreter is Debian's python3, never a virtualenv's or pyenv's.
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYENV_VERSION"):
            env.pop(var, None)
        subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env, check=True)
        debs = sorted(Path(tmp).glob("llamatwist_*.deb"))
        if len(debs) != 1:
            raise SystemExit(f"expected one .deb, got {debs}")
        dest.mkdir(parents=True, exist_ok=True)
        shutil.move(str(debs[0]), dest / debs[0].name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when a cached .deb matches")
    ap.add_argument("--no-lintian", action="store_true", help="skip lintian")
    ns = ap.parse_args(argv)
    files = source_files()
    dest = cache_root() / "deb" / source_hash(files)
    debs = sorted(dest.glob("llamatwist_*.deb"))
    if ns.force or not debs:
        if dest.exists():
            shutil.rmtree(dest)
        build(files, dest)
        debs = sorted(dest.glob("llamatwist_*.deb"))
    deb = debs[0]
    report = dest / "lintian.txt"
    if not ns.no_lintian and not report.exists():
        proc = subprocess.run(["lintian", "--no-tag-display-limit", str(deb)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, check=False)
        report.write_text(proc.stdout)
    if report.exists():
        sys.stderr.write(report.read_text())
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
