"""Start-up flags of issue 18 that need no model: --completion-bash, unknown LLAMA_ARG_* variables,
and the seed's flag table (none unknown, none refused but those of other open issues)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llamatwist.cli import FLAGS, ConfigError, parse_config
from llamatwist.cli.environ import unknown_env
from tests.test_cli import run

DATA = Path(__file__).resolve().parent / "data"


def test_completion_bash_is_a_working_script(tmp_path: Path) -> None:
    proc = run("-m", "llamatwist", "--completion-bash")
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "llamatwist.bash"
    script.write_text(proc.stdout)
    (tmp_path / "m.gguf").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    check = (
        f"source {script}; complete -p llamatwist; "
        "COMP_WORDS=(llamatwist --rope-freq); COMP_CWORD=1; _llamatwist_completions; echo \"${COMPREPLY[*]}\"; "
        f"cd {tmp_path}; COMP_WORDS=(llamatwist -m ''); COMP_CWORD=2; _llamatwist_completions; "
        "echo \"${COMPREPLY[*]}\""
    )
    out = subprocess.run(["bash", "-c", check], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "complete -F _llamatwist_completions llamatwist"
    assert out[1].split() == ["--rope-freq-base", "--rope-freq-scale"]
    assert out[2].split() == ["m.gguf"]  # -m completes GGUF files only


def test_completion_offers_every_implemented_flag() -> None:
    proc = run("-m", "llamatwist", "--completion-bash")
    words = set(proc.stdout.split('opts="', 1)[1].split('"', 1)[0].split())
    for flag in FLAGS:
        assert set(flag.names + flag.neg) <= words, flag.names


def test_unknown_llama_arg_variable_is_a_startup_warning() -> None:
    env = {"LLAMA_ARG_CTX_SZIE": "64", "LLAMA_ARG_CTX_SIZE": "64", "LLAMA_ARG_NO_CONT_BATCHING": "1",
           "LLAMA_ARG_MMPROJ_AUTO": "1", "LLAMA_ARG_NO_MMPROJ_AUTO": "1", "LLAMA_ARG_SHOW_TIMINGS": "1"}
    assert unknown_env(env, FLAGS) == ["LLAMA_ARG_CTX_SZIE"]
    proc = run("-m", "llamatwist", "-m", "/nonexistent/m.gguf",
               env={"LLAMA_ARG_CTX_SZIE": "64", "LLAMA_ARG_PORTT": "1", "LLAMA_ARG_CTX_SIZE": "64"})
    assert proc.returncode == 1  # the missing model, after the warnings
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: environment variable LLAMA_ARG_CTX_SZIE names no llama-server flag; ignored",
        "warning: environment variable LLAMA_ARG_PORTT names no llama-server flag; ignored",
    ]


# Refused because other open issues own them (multimodal, speculative drafts' own threads/devices,
# tools/MCP, model management, ...), or not done yet in issue 18 (see README "Flags").
OTHER_ISSUES = {name for line in (DATA / "seed_flags_refused.txt").read_text().splitlines()
                if not line.startswith("#") for name in line.split(", ") if name}


def test_seed_table_is_the_pinned_servers() -> None:
    assert len(_seed_flags()) > 200  # every row of llama-server's -h table, not a sample
    assert OTHER_ISSUES < {n for row in _seed_flags() for n in row.split(", ")}


@pytest.mark.parametrize("name", sorted(OTHER_ISSUES))
def test_refused_list_is_current(name: str) -> None:
    # a flag implemented since must leave seed_flags_refused.txt; one refused for good says why
    with pytest.raises(ConfigError, match="not implemented yet|is not supported: "):
        parse_config([name], {})


def _seed_flags() -> list[str]:
    return [line.strip() for line in (DATA / "seed_flags.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("row", _seed_flags())
def test_seed_flag_is_known_and_not_refused_unless_owned_elsewhere(row: str) -> None:
    names = row.split(", ")
    for name in names:
        try:
            parse_config([name], {})
        except ConfigError as err:
            if "not implemented yet" in err.message:
                assert name in OTHER_ISSUES, f"{name} is refused"
            else:
                assert "unrecognized" not in err.message, f"{name} is unknown: {err.message}"
        except SystemExit:
            pass  # -h, --version, --completion-bash, --list-devices print and exit


@pytest.mark.parametrize(("args", "mode"), [
    (["--mlock"], "mmap+mlock"), (["--no-mmap"], "none"), (["--mlock", "--no-mmap"], "mlock"),
    (["--no-mmap", "--mlock"], "mlock"), (["--mmap"], "mmap"), (["-lm", "dio"], "dio"), ([], "auto"),
])
def test_older_load_flags_are_load_modes(args: list[str], mode: str) -> None:
    assert parse_config(args, {}).load_mode == mode


def test_media_path_is_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "media")
    # resolved once, so file:// URLs are checked against the real directory
    assert parse_config(["--media-path", str(tmp_path / "link")], {}).media_path == str(tmp_path / "media")
    assert parse_config([], {}).media_path is None
    with pytest.raises(ConfigError, match="not a directory"):
        parse_config(["--media-path", str(tmp_path / "missing")], {})


@pytest.mark.parametrize("args, env", [
    (["-mv", "vocoder.gguf"], {}),
    (["--model-vocoder", "vocoder.gguf"], {}),
    (["--tts-use-guide-tokens"], {}),
    (["-hffv", "v.gguf"], {}),
    ([], {"LLAMA_ARG_HF_REPO_V": "user/vocoder"}),
])  # fmt: skip
def test_speech_flags_say_there_is_no_speech_route(args: list[str], env: dict[str, str]) -> None:
    proc = run("-m", "llamatwist", *args, env=env)
    assert proc.returncode == 1
    assert "no speech route" in proc.stderr and "not implemented yet" not in proc.stderr
