"""The container recipe, exercised without an image build (none is possible
here): packaging/docker/build.sh, the Dockerfile's build step, runs on this
machine from a copy of the build context, and the result is started with the
compose example's LLAMA_ARG_* environment and serves a completion."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from tests.conftest import REPO, free_port
from tests.test_packaging_deb import wait_healthy

DOCKER = REPO / "packaging" / "docker"


def context_files() -> list[str]:
    """The build context: what git tracks or would add, minus Dockerfile.dockerignore's top-level entries."""
    ignored = {line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith(("#", "*"))}
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()
            and not any(f == i or f.startswith(i + "/") for i in ignored)]


def test_dockerfile_runs_the_tested_script_and_compose_is_valid() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "RUN packaging/docker/build.sh /opt/llamatwist" in dockerfile
    assert re.search(r"^ARG BACKEND=cpu$", dockerfile, re.MULTILINE)
    assert "FROM build-${BACKEND} AS build" in dockerfile and "FROM run-${BACKEND}" in dockerfile
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    service = compose["services"]["llamatwist"]
    assert service["build"]["dockerfile"] == "packaging/docker/Dockerfile"
    helptext = " ".join(subprocess.run([sys.executable, "-m", "llamatwist", "--help"], cwd=REPO, check=True,
                                       capture_output=True, text=True).stdout.split())
    for name in service["environment"]:
        assert f"(env: {name})" in helptext, name


def test_build_script_installs_a_working_server(tmp_path: Path, model_path: str) -> None:
    src = tmp_path / "src"
    for name in context_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((REPO / name).read_bytes())
    pinned = REPO / "third_party" / "llama.cpp"
    if pinned.is_dir():  # else build_native.py extracts it from its cached sdist, as in the image
        (src / "third_party").mkdir()
        (src / "third_party" / "llama.cpp").symlink_to(pinned)
    (src / "packaging/docker/build.sh").chmod(0o755)
    prefix = tmp_path / "opt" / "llamatwist"
    # The image's interpreter: the distribution's python3, not a virtualenv's.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYENV_VERSION")}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    build = subprocess.run(["packaging/docker/build.sh", str(prefix)], cwd=src, env=env, capture_output=True,
                           text=True, timeout=1500, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "llama.cpp commit" in build.stdout

    service = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["llamatwist"]
    port = free_port()
    run_env = {"PATH": f"{prefix}/bin:/usr/bin:/bin", "HOME": str(tmp_path),
               "LLAMATWIST_CACHE_DIR": str(tmp_path / "cache"),
               **{k: str(v) for k, v in service["environment"].items()},
               "LLAMA_ARG_MODEL": model_path, "LLAMA_ARG_CTX_SIZE": "512", "LLAMA_ARG_N_PARALLEL": "2",
               "LLAMA_ARG_THREADS": "1", "LLAMA_ARG_HOST": "127.0.0.1", "LLAMA_ARG_PORT": str(port)}
    proc = subprocess.Popen(["llamatwist"], env=run_env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        r = requests.post(url + "/completion", json={"prompt": "Hello", "n_predict": 4}, timeout=60)
        assert r.status_code == 200 and r.json()["tokens_predicted"] == 4
        assert requests.get(url + "/metrics", timeout=10).status_code == 200  # the compose file's metrics on
        assert requests.post(url + "/completion", json={"n_predict": 4}, timeout=10).status_code == 400
    finally:
        proc.send_signal(signal.SIGTERM)  # the container's STOPSIGNAL
        proc.wait(60)
    assert proc.returncode == 0

