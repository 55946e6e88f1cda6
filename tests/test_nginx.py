"""packaging/nginx/llamatwist.conf with real nginx (from apt) in front of two
llamatwist processes: token-by-token streaming, client aborts reaching the
slot, and conversation-key hashing keeping a conversation on one replica."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import REPO, Server, free_port, wait_port

CONF = REPO / "packaging" / "nginx" / "llamatwist.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="needs nginx (bash .ci/run installs it)")


class Proxy:
    def __init__(self, tmp: Path, replicas: list[Server]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = tmp / "access.log"
        site = CONF.read_text()
        # Only the addresses change: the listening port and the replicas' ports.
        site = site.replace("listen 8000;", f"listen 127.0.0.1:{self.port};")
        for default, replica in zip(("127.0.0.1:8080", "127.0.0.1:8081"), replicas, strict=True):
            assert default in site
            site = site.replace(default, f"127.0.0.1:{replica.port}")
        (tmp / "llamatwist.conf").write_text(site)
        (tmp / "nginx.conf").write_text(
            f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log {self.access_log};\n  client_body_temp_path {tmp};\n"
            f"  proxy_temp_path {tmp}/proxy;\n  include {tmp}/llamatwist.conf;\n}}\n")
        self.proc = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_port(self.proc, self.port, 10, lambda: self.proc.stdout.read().decode() if self.proc.stdout else "")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def replicas(model_path: str) -> Iterator[list[Server]]:
    servers = [Server(["-m", model_path, "-c", "2048", "-np", "2", "-t", "1", "--metrics"]) for _ in range(2)]
    yield servers
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="module")
def proxy(replicas: list[Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    p = Proxy(tmp_path_factory.mktemp("nginx"), replicas)
    yield p
    p.stop()


def prompt_tokens(srv: Server) -> float:
    text = srv.get("/metrics").text
    match = re.search(r"^llamacpp:prompt_tokens_total (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def busy(srv: Server) -> bool:
    return any(slot["is_processing"] for slot in srv.get("/slots").json())


def test_stream_arrives_token_by_token(proxy: Proxy) -> None:
    start = time.monotonic()
    arrivals: list[float] = []
    with requests.post(proxy.url + "/completion", stream=True, timeout=120,
                       json={"prompt": "Once upon a time", "n_predict": 48, "stream": True,
                             "ignore_eos": True}) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for chunk in r.iter_content(chunk_size=None):
            arrivals.extend(time.monotonic() - start for _ in range(chunk.count(b"data: ")))
    assert len(arrivals) >= 48
    total = arrivals[-1]
    # Unbuffered: the first token comes long before the last, and they trickle in.
    assert arrivals[0] < total / 3, (arrivals[0], total)
    assert len({round(t, 3) for t in arrivals}) > 20


def test_client_abort_frees_the_slot(proxy: Proxy, replicas: list[Server]) -> None:
    r = requests.post(proxy.url + "/completion", stream=True, timeout=120,
                      json={"prompt": "Count to one thousand:", "n_predict": 1500, "stream": True,
                            "ignore_eos": True})
    chunks = r.iter_content(chunk_size=None)
    for _ in range(3):
        next(chunks)
    assert any(busy(s) for s in replicas)
    r.close()
    left = time.monotonic()
    while any(busy(s) for s in replicas):
        assert time.monotonic() - left < 1.0, "a slot still generates after the client left"
        time.sleep(0.02)
    # Both replicas keep serving.
    for srv in replicas:
        assert srv.post("/completion", {"prompt": "Hi", "n_predict": 2}).status_code == 200


def test_conversation_key_sticks_to_one_replica(proxy: Proxy, replicas: list[Server]) -> None:
    client: Callable[[str], openai.OpenAI] = lambda conv: openai.OpenAI(
        base_url=proxy.url + "/v1", api_key="none", default_headers={"X-Conversation-Id": conv})
    system = "You are a helpful assistant who answers briefly. " * 8
    used = set()
    # the replicas' ports are random, so is their share of the hash ring: go on past 8 conversations until both
    # have served one (all of 32 on one replica: the hashing does not spread)
    for n in range(32):
        if n >= 8 and used == {0, 1}:
            break
        conv = f"conversation-{n}"
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"Say a number, {n}."}]
        served = []
        for turn in range(2):
            before = [prompt_tokens(s) for s in replicas]
            reply = client(conv).chat.completions.create(model="x", messages=messages,  # type: ignore[arg-type]
                                                         max_tokens=4, temperature=0)
            after = [prompt_tokens(s) for s in replicas]
            served.append([i for i in range(2) if after[i] > before[i]])
            messages += [{"role": "assistant", "content": reply.choices[0].message.content or ""},
                         {"role": "user", "content": "And another?"}]
            if turn == 1:
                # The second turn reused the first turn's prefix on that replica.
                assert reply.model_extra and reply.model_extra["timings"]["cache_n"] > 0, reply
        assert served[0] == served[1] and len(served[0]) == 1, served
        used.add(served[0][0])
    assert used == {0, 1}, "32 conversations all hashed to one replica"


def test_bad_request_through_the_proxy(proxy: Proxy) -> None:
    r = requests.post(proxy.url + "/v1/chat/completions", data="{nope", timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    assert requests.get(proxy.url + "/health", timeout=30).status_code == 200


def request_from(source: str, port: int, path: str, headers: dict[str, str]) -> int:
    """GET from a chosen loopback source address (the client nginx sees)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_access_log_names_the_client_behind_the_trusted_proxy(proxy: Proxy, replicas: list[Server]) -> None:
    # Through nginx (peer 127.0.0.1, trusted by default): the client's own address, even with a forged hop.
    assert request_from("127.0.0.7", proxy.port, "/health?via=nginx", {"X-Forwarded-For": "203.0.113.9"}) == 200
    # Straight to a replica from an untrusted peer: its forged header is ignored.
    assert request_from("127.0.0.8", replicas[0].port, "/health", {"X-Forwarded-For": "198.51.100.1"}) == 200
    time.sleep(0.3)
    logs = "".join(s.log() for s in replicas)
    assert re.search(r'"127\.0\.0\.7" - - \[[^]]+\] "GET /health HTTP/1\.1" 200', logs), logs[-2000:]
    assert '"203.0.113.9"' not in logs
    assert re.search(r'"127\.0\.0\.8" - - \[[^]]+\] "GET /health HTTP/1\.1" 200', logs)
    assert '"198.51.100.1"' not in logs
