"""The Debian package, for real: build (or reuse the cached build of this tree),
lintian, dpkg -i, the unit's own command line run as the package's user with
its environment file, a completion, then dpkg -r and --purge leaving nothing.

Needs root and debhelper/lintian (CI installs them from apt, see .ci/run);
systemd is not PID 1 here, so the unit is started by hand exactly as written.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import REPO, free_port

UNIT = REPO / "packaging" / "systemd" / "llamatwist.service"
SCANNED = ("/etc", "/usr", "/lib/systemd", "/var/lib")
# Bookkeeping that any dpkg run changes, and adduser's backups of /etc/passwd & co.
NOT_SCANNED = ("/var/lib/dpkg", "/var/lib/apt", "/var/lib/ucf", "/usr/share/info/dir")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("dpkg-buildpackage", "dh", "lintian")),
    reason="needs root, dpkg-buildpackage, debhelper and lintian (bash .ci/run installs them)")


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def tree() -> set[str]:
    """Every path under the scanned roots (minus package-manager bookkeeping)."""
    out = run("find", *SCANNED, "-xdev", check=False).stdout.splitlines()
    return {p for p in out if not p.startswith(NOT_SCANNED) and not p.endswith("-") and not p.startswith("find:")}


def unit_service() -> dict[str, list[str]]:
    """The [Service] keys of the unit (a key may repeat)."""
    section, keys = "", {}  # type: ignore[var-annotated]
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def environment_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile reading for plain NAME=value lines."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 120.0) -> None:
    """Until GET /health is 200 at `url`; fails at once if `proc` (a server not started by Server) exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{url} did not become ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def deb() -> Path:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "build_deb.py")], cwd=REPO, text=True,
                          capture_output=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-5000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.name.startswith("llamatwist_0.1.0_") and path.is_file()
    return path


@pytest.fixture(scope="module")
def clean_system() -> Iterator[set[str]]:
    if run("dpkg-query", "-W", "llamatwist", check=False).returncode == 0:
        run("dpkg", "--purge", "llamatwist")
    before = tree()
    yield before
    if run("dpkg-query", "-W", "llamatwist", check=False).returncode == 0:
        run("dpkg", "--purge", "llamatwist", check=False)


def test_lintian_reports_no_errors(deb: Path) -> None:
    report = (deb.parent / "lintian.txt").read_text()
    errors = [line for line in report.splitlines() if line.startswith("E:")]
    assert errors == [], report


def test_package_metadata(deb: Path) -> None:
    info = run("dpkg-deb", "-f", str(deb), "Depends", "Architecture").stdout
    assert "python3 (>= 3." in info and "adduser" in info
    files = run("dpkg-deb", "-c", str(deb)).stdout
    for path in ("./usr/bin/llamatwist", "./usr/bin/llamatwist-rpc-server", "./usr/bin/llamatwist-fit-params",
                 "./etc/default/llamatwist", "./lib/systemd/system/llamatwist.service",
                 "/site-packages/llamatwist/native/lib/libllama.so", "./usr/lib/llamatwist/bin/twistd"):
        assert path in files, path
    # Bytecode is compiled by postinst, never shipped; nothing names the build tree.
    assert "__pycache__" not in files
    assert (deb.parent / "lintian.txt").exists()


def test_install_serve_remove_purge(deb: Path, clean_system: set[str], model_path: str) -> None:
    before = clean_system
    out = run("dpkg", "-i", str(deb)).stdout
    assert "Setting up llamatwist" in out, out

    user = pwd.getpwnam("llamatwist")
    assert user.pw_uid < 1000 and user.pw_dir == "/var/lib/llamatwist"
    state = Path("/var/lib/llamatwist")
    assert state.stat().st_uid == user.pw_uid
    assert "/etc/default/llamatwist" in run("dpkg-query", "-W", "-f=${Conffiles}", "llamatwist").stdout
    assert run("systemd-analyze", "verify", "/lib/systemd/system/llamatwist.service").returncode == 0
    assert Path("/lib/systemd/system/llamatwist.service").read_text() == UNIT.read_text()
    # the installed package knows its llama.cpp pin (the repository root is not installed)
    pin = json.loads((REPO / "llama_pin.json").read_text())["commit"]
    assert run("/usr/bin/llamatwist", "--version").stdout.splitlines()[1] == f"llama.cpp commit {pin}"

    # The operator's part: a model the service user can read, configured in the conffile.
    models = state / "models"
    models.mkdir()
    shutil.copy(model_path, models / "model.gguf")
    shutil.chown(models, "llamatwist", "llamatwist")
    shutil.chown(models / "model.gguf", "llamatwist", "llamatwist")
    port = free_port()
    conf = Path("/etc/default/llamatwist")
    conf.write_text(conf.read_text().replace("LLAMA_ARG_PORT=8080", f"LLAMA_ARG_PORT={port}")
                    + f"LLAMA_ARG_MODEL={models / 'model.gguf'}\nLLAMA_ARG_CTX_SIZE=512\n"
                    "LLAMA_ARG_N_PARALLEL=2\nLLAMA_ARG_THREADS=1\nLLAMA_ARG_ENDPOINT_METRICS=1\n")

    # Start it as systemd would: the unit's user, working directory, Environment=,
    # EnvironmentFile= and ExecStart=, in an otherwise empty environment.
    svc = unit_service()
    assert svc["User"] == ["llamatwist"]
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                   "ReadWritePaths=/var/lib/llamatwist"):
        key, value = option.split("=", 1)
        assert svc[key] == [value], option
    env = dict(pair.split("=", 1) for line in svc["Environment"] for pair in shlex.split(line))
    env_file = svc["EnvironmentFile"][0].lstrip("-")
    env.update(environment_file(Path(env_file)))
    command = shlex.split(svc["ExecStart"][0])
    proc = subprocess.Popen(["runuser", "-u", "llamatwist", "--", "env", "-i",
                             *(f"{k}={v}" for k, v in env.items()), *command],
                            cwd=svc["WorkingDirectory"][0], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        server_pid = int(run("pgrep", "-u", "llamatwist", "-f", "/usr/lib/llamatwist/bin/python").stdout.split()[0])
        maps = Path(f"/proc/{server_pid}/maps").read_text()
        assert "/usr/lib/llamatwist/lib/python3" in maps and "libllama.so" in maps  # the package's own libllama

        r = requests.post(url + "/completion", json={"prompt": "The capital of France is", "n_predict": 8},
                          timeout=60)
        assert r.status_code == 200 and r.json()["tokens_predicted"] > 0 and r.json()["content"]
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        chat = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=6)
        assert chat.choices[0].message.content
        bad = requests.post(url + "/completion", data="{not json", timeout=10)
        assert 400 <= bad.status_code < 500
        assert requests.get(url + "/metrics", timeout=10).status_code == 200
        assert requests.get(url + "/health", timeout=10).status_code == 200
    finally:
        # SIGTERM to the server itself (runuser waits for it), as systemd's stop would.
        if proc.poll() is None:
            pid = run("pgrep", "-u", "llamatwist", "-o", "-f", "/usr/lib/llamatwist/bin/python", check=False).stdout
            os.kill(int(pid.split()[0]) if pid.strip() else proc.pid, signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0

    # remove: the program goes, the (edited) conffile and the state stay.
    run("dpkg", "-r", "llamatwist")
    for gone in ("/usr/lib/llamatwist", "/usr/bin/llamatwist", "/lib/systemd/system/llamatwist.service"):
        assert not os.path.lexists(gone), gone
    assert conf.exists()
    assert run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "llamatwist").stdout.strip() == "rc"

    # purge: nothing left at all, the user included.
    run("dpkg", "--purge", "llamatwist")
    assert run("dpkg-query", "-W", "llamatwist", check=False).returncode != 0
    assert run("getent", "passwd", "llamatwist", check=False).returncode != 0
    assert run("getent", "group", "llamatwist", check=False).returncode != 0
    left = sorted(tree() - before)
    assert left == [], left
