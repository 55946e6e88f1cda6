"""llama-server's config files: ``/etc/llama.cpp/config.ini``, then ``${XDG_CONFIG_HOME:-~/.config}/llama.cpp/
config.ini``; their ``[*]`` and ``[default]`` options apply first, the environment and the command line win over
them, a key no flag knows is a warning, a value a flag refuses stops the start-up."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from llamatwist.cli import parse_config
from llamatwist.cli.ini import config_file_args, config_files
from tests.conftest import Server
from tests.test_cli import run


def _config(home: Path, text: str) -> Path:
    path = home / "llama.cpp" / "config.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_options_come_first_and_the_environment_and_command_line_win(tmp_path: Path) -> None:
    path = _config(tmp_path, "version = 1\nthreads = 3\n[*]\nctx-size = 768\nno-warmup = true\nLLAMA_ARG_N_PARALLEL = 2\n"
                             "[default]\ntemp = 0.5\n[some-model]\nctx-size = 99\n")
    assert config_files({"XDG_CONFIG_HOME": str(tmp_path)}) == [path]
    assert config_files({"HOME": str(tmp_path / "nobody")}) == []
    args, warnings = config_file_args([path])
    assert warnings == []
    config = parse_config([], {}, args)
    # keys before the first section are section default's; [some-model] is a router preset's, not for here
    assert (config.n_ctx, config.warmup, config.n_parallel, config.n_threads) == (768, False, 2, 3)
    assert config.sampling.temperature == 0.5
    over = parse_config(["-c", "512"], {"LLAMA_ARG_CTX_SIZE": "640", "LLAMA_ARG_N_PARALLEL": "3"}, args)
    assert (over.n_ctx, over.n_parallel, over.warmup) == (512, 3, False)  # the command line, the environment


def test_the_server_reads_them(tmp_path: Path, model_path: str, make_server: Callable[..., Server]) -> None:
    _config(tmp_path / "xdg", "[*]\nctx-size = 1024\nparallel = 2\nsome-other-programs-option = 1\n")
    command = ["env", f"XDG_CONFIG_HOME={tmp_path / 'xdg'}", sys.executable, "-m", "llamatwist"]
    srv = make_server("-m", model_path, "-t", "2", "--no-warmup", command=command)
    props = srv.get("/props").json()
    assert (props["total_slots"], props["default_generation_settings"]["n_ctx"]) == (2, 512)  # 1024 over 2 slots
    assert f"using config file: {tmp_path / 'xdg' / 'llama.cpp' / 'config.ini'}" in srv.log()
    assert "ignoring option 'some-other-programs-option'" in srv.log() and "not supported by this program" in srv.log()


def test_a_value_a_flag_refuses_stops_the_start_up(tmp_path: Path) -> None:
    _config(tmp_path, "[*]\nctx-size = many\n")
    proc = run("-m", "llamatwist", "-m", "/nonexistent.gguf", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert "config files: argument -c/--ctx-size" in proc.stderr
    _config(tmp_path, "[*]\nno-warmup = perhaps\n")
    proc = run("-m", "llamatwist", "-m", "/nonexistent.gguf", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert "option 'no-warmup' of preset '*' takes true or false, got 'perhaps'" in proc.stderr
    _config(tmp_path, "[*\nctx-size = 1\n")
    proc = run("-m", "llamatwist", "-m", "/nonexistent.gguf", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert proc.returncode == 1 and "config file" in proc.stderr
