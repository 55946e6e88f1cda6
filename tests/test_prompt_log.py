"""--log-prompts-dir on a real server: one file per generation request, named and filled as llama-server's."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamatwist.api.prompt_log import prompt_text
from tests.conftest import Server

SMALL = ("-c", "1024", "-np", "1", "-t", "2", "--no-warmup")


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prompts") / "not" / "yet"  # made at start-up, parents and all


@pytest.fixture(scope="module")
def logging_server(model_path: str, log_dir: Path) -> Iterator[Server]:
    srv = Server(["-m", model_path, *SMALL, "--log-prompts-dir", str(log_dir)])
    yield srv
    srv.stop()


def logged(log_dir: Path, send: Callable[[], object]) -> list[str]:
    """The files ``send`` made in ``log_dir``, as texts."""
    before = set(log_dir.iterdir())
    send()
    new = sorted(set(log_dir.iterdir()) - before)
    for path in new:
        # ggml_time_ms: the monotonic clock in ms, 12 digits (the clock this process reads too)
        assert re.fullmatch(r"\d{12}\.txt", path.name), path.name
        assert abs(int(path.stem) - time.monotonic() * 1000) < 120_000
    return [p.read_text(encoding="utf-8") for p in new]


def test_completion_prompts_as_given(logging_server: Server, log_dir: Path) -> None:
    assert log_dir.is_dir()

    def complete(prompt: object, path: str = "/completion") -> Callable[[], object]:
        return lambda: logging_server.post(path, {"prompt": prompt, "n_predict": 2, "temperature": 0}).raise_for_status()

    assert logged(log_dir, complete("Héllo there")) == ["Héllo there"]
    assert logged(log_dir, complete("Once upon", "/v1/completions")) == ["Once upon"]
    # not a string: JSON indented by 2, as nlohmann's dump(2)
    tokens = logging_server.post("/tokenize", {"content": "Hello"}).json()["tokens"]
    assert logged(log_dir, complete(tokens)) == [json.dumps(tokens, indent=2)]
    assert logged(log_dir, complete(["a", "b"])) == ['[\n  "a",\n  "b"\n]']  # one file for both prompts


def test_chat_prompt_is_the_rendered_template(logging_server: Server, log_dir: Path) -> None:
    body = {"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 2, "temperature": 0}
    rendered = logging_server.post("/apply-template", body).json()["prompt"]
    assert logged(log_dir, lambda: logging_server.post("/v1/chat/completions", body).raise_for_status()) == [rendered]
    anthropic = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi!"}]}
    texts = logged(log_dir, lambda: logging_server.post("/v1/messages", anthropic).raise_for_status())
    assert len(texts) == 1 and "Hi!" in texts[0]


def test_other_routes_log_nothing(logging_server: Server, log_dir: Path) -> None:
    body = {"messages": [{"role": "user", "content": "Hi!"}]}
    for path, payload in (("/tokenize", {"content": "x"}), ("/apply-template", body),
                          ("/v1/chat/completions/input_tokens", body)):
        assert logged(log_dir, lambda p=path, b=payload: logging_server.post(p, b).raise_for_status()) == []


def test_prompt_text_sorts_keys_and_keeps_utf8() -> None:
    assert prompt_text({"b": 1, "a": "é"}) == '{\n  "a": "é",\n  "b": 1\n}'


def test_unusable_directory_is_a_warning(make_server: Callable[..., Server], model_path: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    srv = make_server("-m", model_path, *SMALL, "--log-prompts-dir", str(blocker / "prompts"))
    assert f"warning: failed to create prompts-log-dir '{blocker / 'prompts'}': " in srv.log()
    # the request is served; the file that could not be written is an error in the log
    r = srv.post("/completion", {"prompt": "Hello", "n_predict": 1})
    assert r.status_code == 200
    assert re.search(r"failed to create .*/a-file/prompts/\d{12}\.txt", srv.log())


def test_infill_logs_its_token_ids(make_server: Callable[..., Server], model_path: str, tmp_path: Path) -> None:
    from tests.models import smollm2_fim_gguf

    srv = make_server("-m", str(smollm2_fim_gguf(Path(model_path))), *SMALL, "--log-prompts-dir", str(tmp_path))
    body = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n", "n_predict": 2, "temperature": 0}
    (text,) = logged(tmp_path, lambda: srv.post("/infill", body).raise_for_status())
    # llama-server logs the assembled FIM prompt: token ids, prefix and suffix marked by the FIM tokens
    tokens = json.loads(text)
    assert text == json.dumps(tokens, indent=2) and all(isinstance(t, int) for t in tokens)
    assert "def add(a, b):" in srv.post("/detokenize", {"tokens": tokens}).json()["content"]
