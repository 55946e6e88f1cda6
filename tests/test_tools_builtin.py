"""The built-in server tools (tools/builtin.py), where they run (tools/io.py) and --tools-runtime
(tools/runtime.py), against a real temporary filesystem, real processes (sh, git, timeout) and real timeouts.

Docker, podman and ssh are not driven for real here: their spec parsing, the exact argv built for them and the
error when the engine is missing are. The shell commands an isolate runs are exercised on the host through an
identity transport (``LocalIsolate``).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llamatwist.tools import io as tools_io
from llamatwist.tools.base import ToolParamError
from llamatwist.tools.builtin import (
    BUILTIN_TOOL_NAMES,
    EditFileTool,
    ExecShellCommandTool,
    FileGlobSearchTool,
    GetInfoTool,
    GrepSearchTool,
    ReadFileTool,
    WriteFileTool,
    build_tools,
)
from llamatwist.tools.io import (
    ContainerIO,
    ContainerRuntimeSpec,
    HostIO,
    IsolateIO,
    ListKind,
    SshIO,
    container_exec_argv,
    expand_home,
    glob_match,
    is_valid_ssh_target,
    make_io,
    path_glob_match,
    run_subprocess,
    shell_quote_join,
    ssh_exec_argv,
)
from llamatwist.tools.runtime import (
    ContainerToolsRuntime,
    StaticToolsRuntime,
    container_run_argv,
    make_tools_runtime,
)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
no_podman = pytest.mark.skipif(shutil.which("podman") is not None, reason="podman is installed here")


class LocalIsolate(IsolateIO):
    """An isolate whose transport runs the command as is, on the host: the isolate's shell commands, for real."""

    def build_argv(self, inner: Sequence[str], needs_stdin: bool) -> list[str]:
        return list(inner)


class Stream:
    """A client of a streaming call: collects the chunks, and goes away on demand."""

    def __init__(self, alive_for: float | None = None) -> None:
        self.chunks: list[str] = []
        self._until = None if alive_for is None else time.monotonic() + alive_for

    def push(self, chunk: str) -> None:
        self.chunks.append(chunk)

    def alive(self) -> bool:
        return self._until is None or time.monotonic() < self._until


def not_in_git(path: Path) -> Path:
    # the walker tests mean the walker: a temporary directory inside a work tree would take the git path
    if shutil.which("git") is None:
        return path
    proc = subprocess.run(["git", "-C", str(path), "rev-parse"], check=False, capture_output=True)
    assert proc.returncode != 0, f"{path} is inside a git work tree"
    return path


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def text_of(result: dict[str, Any]) -> str:
    assert "error" not in result, result
    text = result["plain_text_response"]
    assert isinstance(text, str)
    return text


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """src/{a.cpp,b.h,sub/c.cpp}, docs/readme.md, top.txt, build/out.o (junk), node_modules/m/x.js (junk)."""
    root = not_in_git(tmp_path / "tree")
    for rel, content in {
        "src/a.cpp": "int a;\n",
        "src/b.h": "int b;\n",
        "src/sub/c.cpp": "int c;\n",
        "docs/readme.md": "hello\n",
        "top.txt": "top\n",
        "build/out.o": "bin\n",
        "node_modules/m/x.js": "x\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    return root


# -- glob --------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "text", "expected"), [
    ("*.cpp", "a.cpp", True),
    ("*.cpp", "src/a.cpp", False),  # '*' stops at '/'
    ("**", "src/sub/a.cpp", True),
    ("**.cpp", "src/sub/a.cpp", True),
    ("src/**", "src/sub/a.cpp", True),
    ("**/a.cpp", "a.cpp", False),  # "**/" needs the '/'
    ("?.c", "a.c", True),
    ("?.c", "/.c", False),  # '?' is not '/'
    ("?.c", "ab.c", False),
    ("[abc].c", "b.c", True),
    ("[a-c].c", "d.c", False),
    ("[!a-c].c", "d.c", True),
    ("[!a-c].c", "a.c", False),
    ("[]x].c", "].c", True),  # ']' first is a literal
    ("[-x].c", "-.c", True),
    ("[!]", "q", True),  # llama.cpp reads "[!]" as "any character"
    ("a[b", "a[b", True),  # no closing ']': '[' is literal
    ("a[b", "axb", False),
    ("", "", True),
    ("", "a", False),
    ("a", "", False),
])
def test_glob_match(pattern: str, text: str, expected: bool) -> None:
    assert glob_match(pattern, text) is expected


def test_glob_match_many_stars_is_fast() -> None:
    start = time.monotonic()
    assert not glob_match("*a*a*a*a*a*a*a*a*b", "a" * 200)
    assert not glob_match("**a**a**a**a**a**b", "a/" * 100)
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize(("pattern", "rel", "expected"), [
    ("*.cpp", "src/sub/c.cpp", True),  # no '/': the basename at any depth
    ("c.cpp", "src/sub/c.cpp", True),
    ("sub/*.cpp", "src/sub/c.cpp", True),  # with '/': anchored with "**/"
    ("sub/*.cpp", "sub/c.cpp", False),  # ...so, as in llama-server, not at the top level
    ("**/sub/*.cpp", "src/sub/c.cpp", True),
    ("src/**", "src/sub/c.cpp", False),  # "**/src/**" needs a directory above src
    ("**", "anything/at/all", True),
    ("/src/*.cpp", "src/a.cpp", False),  # a leading '/' is not anchored, and relative paths have none
])
def test_path_glob_match(pattern: str, rel: str, expected: bool) -> None:
    assert path_glob_match(pattern, rel) is expected


# -- paths -------------------------------------------------------------------

def test_expand_home() -> None:
    assert expand_home("~", "/home/u") == "/home/u"
    assert expand_home("~/x/y", "/home/u") == "/home/u/x/y"
    assert expand_home("~other/x", "/home/u") == "~other/x"
    assert expand_home("a/~/b", "/home/u") == "a/~/b"
    assert expand_home("~/x", "") == "~/x"  # no home: left alone
    assert expand_home("~/x") == os.environ.get("HOME", "~") + "/x"


def test_host_resolve(tmp_path: Path) -> None:
    io = HostIO(str(tmp_path))
    assert io.resolve("a/b") == f"{tmp_path}/a/b"
    assert io.resolve("./a/../b/") == f"{tmp_path}/b"
    assert io.resolve("a/..") == str(tmp_path)
    assert io.resolve("/etc/../usr") == "/usr"
    assert io.resolve("//x//y") == "/x/y"
    assert io.resolve("") == str(tmp_path)
    assert io.resolve("~/f") == os.path.normpath(os.environ["HOME"] + "/f")
    assert HostIO().resolve("rel") == os.path.join(os.getcwd(), "rel")


def test_isolate_resolve() -> None:
    assert LocalIsolate("/w").resolve("a/b") == "/w/a/b"
    assert LocalIsolate("/w").resolve("/abs") == "/abs"
    assert LocalIsolate("").resolve("rel") == "rel"
    assert LocalIsolate("/w").resolve("~/x") == "/w/~/x"  # no home expansion in an isolate


# -- run_subprocess ----------------------------------------------------------

def test_run_subprocess_output_and_exit_code() -> None:
    res = run_subprocess(["sh", "-c", "echo out; echo err >&2; exit 3"], 1000, 10)
    assert (res.text, res.exit_code, res.timed_out) == ("out\nerr\n", 3, False)


def test_run_subprocess_stdout_only() -> None:
    res = run_subprocess(["sh", "-c", "echo out; echo err >&2"], 1000, 10, combine_stderr=False)
    assert res.text == "out\n"


def test_run_subprocess_truncates_but_drains() -> None:
    # 1 MB through a 64 KB pipe: the child finishes only if the rest is read and dropped
    res = run_subprocess(["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x"], 10, 10)
    assert res.output == b"x" * 10 + b"\n[output truncated]"
    assert (res.exit_code, res.timed_out) == (0, False)


def test_run_subprocess_stdin_cwd_and_environment(tmp_path: Path) -> None:
    res = run_subprocess(["sh", "-c", "cat; pwd; echo $HOME"], 1000, 10, cwd=str(tmp_path), stdin_data=b"in\n")
    assert res.text == f"in\n{tmp_path}\n{os.environ['HOME']}\n"
    res = run_subprocess(["cat"], 1000, 10)  # no stdin data: EOF at once, never a hang
    assert (res.output, res.exit_code) == (b"", 0)


def test_run_subprocess_timeout_kills_the_process_group() -> None:
    start = time.monotonic()
    # the backgrounded sleep holds the pipe after sh is killed: only a group kill ends the read
    res = run_subprocess(["sh", "-c", "echo started; sleep 30 & sleep 30"], 1000, 1)
    elapsed = time.monotonic() - start
    assert res.timed_out
    assert res.exit_code == 1  # killed by a signal: what llama-server's subprocess layer reports
    assert res.text == "started\n"
    assert 0.9 < elapsed < 5


@pytest.mark.parametrize("args", [["no-such-binary-for-tools-test"], ["sh", "-c", "a\0b"]])
def test_run_subprocess_spawn_failure(args: list[str]) -> None:
    res = run_subprocess(args, 1000, 10)
    assert res.exit_code == -1 and not res.timed_out
    assert res.text.startswith("failed to spawn process")


def test_run_subprocess_missing_cwd() -> None:
    res = run_subprocess(["true"], 1000, 10, cwd="/no/such/dir/for/tools")
    assert res.exit_code == -1
    assert "/no/such/dir/for/tools" in res.text


def test_run_subprocess_chunks_are_whole_utf8() -> None:
    chunks: list[str] = []

    def on_chunk(chunk: str) -> bool:
        chunks.append(chunk)
        return True

    # "é" split across two writes
    res = run_subprocess(["sh", "-c", "printf 'caf\\303'; sleep 0.2; printf '\\251!'"], 1000, 10, on_chunk)
    assert res.text == "café!"
    assert "".join(chunks) == "café!"
    assert len(chunks) == 2


def test_run_subprocess_on_chunk_false_stops() -> None:
    start = time.monotonic()
    res = run_subprocess(["sh", "-c", "echo one; sleep 0.3; echo two; sleep 30"], 1000, 20, lambda c: False)
    assert time.monotonic() - start < 5
    assert res.text == "one\n"
    assert not res.timed_out


def test_run_subprocess_alive_stops_a_silent_command() -> None:
    gone = threading.Event()
    threading.Timer(0.3, gone.set).start()
    start = time.monotonic()
    res = run_subprocess(["sleep", "30"], 1000, 20, alive=lambda: not gone.is_set())
    assert time.monotonic() - start < 5
    assert not res.timed_out and res.exit_code == 1


# -- listing -----------------------------------------------------------------

def rels(entries: list[Any], is_dir: bool | None = None) -> set[str]:
    return {e.rel for e in entries if is_dir is None or e.is_dir is is_dir}


def test_host_list_walker(tree: Path) -> None:
    (tree / "src" / "loop").symlink_to(tree)  # a link back to an ancestor: listed, never walked
    io = HostIO()
    files = io.list_entries(str(tree), 0, ListKind.FILES)
    assert not files.err and not files.truncated
    assert rels(files.entries) == {"src/a.cpp", "src/b.h", "src/sub/c.cpp", "docs/readme.md", "top.txt"}

    dirs = io.list_entries(str(tree), 0, ListKind.DIRS)
    # junk directories are listed (selectable) but nothing inside them is
    assert rels(dirs.entries) == {"src", "src/sub", "src/loop", "docs", "build", "node_modules"}
    assert all(e.is_dir for e in dirs.entries)

    everything = io.list_entries(str(tree), 1, ListKind.ALL)
    assert rels(everything.entries, True) == {"src", "docs", "build", "node_modules"}
    assert rels(everything.entries, False) == {"top.txt"}
    assert rels(io.list_entries(str(tree), 2, ListKind.FILES).entries) == {
        "src/a.cpp", "src/b.h", "docs/readme.md", "top.txt"}


def test_host_list_not_a_directory(tree: Path) -> None:
    assert HostIO().list_entries(str(tree / "top.txt"), 0, ListKind.ALL).err == \
        "path does not exist or is not a directory"
    assert HostIO().list_entries(str(tree / "nope"), 0, ListKind.FILES).err


def test_host_list_time_budget(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools_io, "LIST_ENTRIES_TIMEOUT", 0)
    listing = HostIO().list_entries(str(tree), 0, ListKind.ALL)
    assert listing.truncated and listing.entries == []


@needs_git
def test_host_list_git(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text("ignored.txt\nbuild/\n")
    (repo / "ignored.txt").write_text("x")
    (repo / "kept.txt").write_text("x")
    (repo / "deep" / "er").mkdir(parents=True)
    (repo / "deep" / "er" / "f.txt").write_text("x")
    (repo / "build").mkdir()
    (repo / "build" / "wanted.txt").write_text("x")  # ignored by .gitignore, not by the junk list
    (repo / "gone.txt").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "gone.txt"], check=True)
    (repo / "gone.txt").unlink()  # tracked, deleted: git lists it, the host listing drops it

    listing = HostIO().list_entries(str(repo), 0, ListKind.FILES)
    assert rels(listing.entries) == {".gitignore", "kept.txt", "deep/er/f.txt"}
    assert rels(HostIO().list_entries(str(repo), 2, ListKind.FILES).entries) == {".gitignore", "kept.txt"}
    # directories come from the walker, which knows nothing of .gitignore
    assert "build" in rels(HostIO().list_entries(str(repo), 0, ListKind.DIRS).entries)


# -- isolates ----------------------------------------------------------------

def test_isolate_file_operations(tmp_path: Path) -> None:
    io = LocalIsolate(str(tmp_path))
    assert io.write_file("new/dir/f.bin", b"\x00\xffdata\n")
    assert (tmp_path / "new" / "dir" / "f.bin").read_bytes() == b"\x00\xffdata\n"
    assert io.file_size("new/dir/f.bin") == 7
    assert io.read_file("new/dir/f.bin") == b"\x00\xffdata\n"
    assert io.is_regular_file("new/dir/f.bin") and not io.is_directory("new/dir/f.bin")
    assert io.is_directory("new") and not io.is_regular_file("new")
    assert io.file_size("missing") is None
    assert io.read_file("missing") is None
    assert not io.write_file("new/dir/f.bin/under-a-file", b"x")
    big = bytes(range(256)) * 8192  # 2 MB through the isolate's stdin: far more than a pipe holds
    assert io.write_file("big.bin", big)
    assert io.read_file("big.bin") == big
    weird = "it's a \"file\" $(x) `y`"  # passed as an argument, never parsed by a shell
    assert io.write_file(weird, b"ok")
    assert io.read_file(weird) == b"ok"


def test_isolate_list_find(tree: Path) -> None:
    io = LocalIsolate()
    listing = io.list_entries(str(tree), 0, ListKind.ALL)
    assert not listing.err
    assert rels(listing.entries, True) == {"src", "src/sub", "docs", "build", "node_modules"}
    assert rels(listing.entries, False) == {"src/a.cpp", "src/b.h", "src/sub/c.cpp", "docs/readme.md", "top.txt"}
    assert rels(io.list_entries(str(tree), 1, ListKind.FILES).entries) == {"top.txt"}
    assert io.list_entries(str(tree / "nope"), 0, ListKind.ALL).err == "path does not exist or is not a directory"


@needs_git
def test_isolate_list_git(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "a.log").write_text("x")
    (repo / "d").mkdir()
    (repo / "d" / "b.txt").write_text("x")
    assert rels(LocalIsolate(str(tmp_path)).list_entries("repo", 0, ListKind.FILES).entries) == {
        ".gitignore", "d/b.txt"}


def test_isolate_run_in_cwd_with_timeout(tmp_path: Path) -> None:
    io = LocalIsolate(str(tmp_path))
    res = io.run(["sh", "-c", "pwd"], 1000, 10)
    assert (res.text, res.exit_code) == (f"{tmp_path}\n", 0)
    start = time.monotonic()
    res = io.run(["sleep", "30"], 1000, 1)  # the in-isolate `timeout` ends it (status 124), before the host's
    assert time.monotonic() - start < 4
    assert (res.exit_code, res.timed_out) == (124, False)
    res = LocalIsolate(str(tmp_path / "missing")).run(["true"], 1000, 10)
    assert res.exit_code == 127


def test_container_argv() -> None:
    assert container_exec_argv("docker", "abc", ["cat", "--", "/f"], False) == \
        ["docker", "exec", "abc", "cat", "--", "/f"]
    assert container_exec_argv("podman", "abc", ["sh"], True) == ["podman", "exec", "-i", "abc", "sh"]
    assert ContainerIO("docker", "c1", "/work").run_argv(["sh", "-c", "ls"], 7) == [
        "docker", "exec", "-i", "c1",
        "sh", "-c", 'cd "$1" || exit 127; shift; exec "$@"', "_", "/work",
        "timeout", "7s", "sh", "-c", "ls",
    ]
    assert ContainerIO("podman", "c1").run_argv(["uname", "-a"], 5) == \
        ["podman", "exec", "-i", "c1", "timeout", "5s", "uname", "-a"]


def test_ssh_argv() -> None:
    options = ["-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
               "-o", "StrictHostKeyChecking=yes"]
    assert ssh_exec_argv("me@host", ["cat", "--", "/it's"], False) == \
        ["ssh", *options, "-n", "me@host", "'cat' '--' '/it'\\''s'"]
    assert ssh_exec_argv("host", ["sh"], True) == ["ssh", *options, "host", "'sh'"]
    assert SshIO("h", "/w").run_argv(["pwd"], 3)[-1] == \
        "'sh' '-c' 'cd \"$1\" || exit 127; shift; exec \"$@\"' '_' '/w' 'timeout' '3s' 'pwd'"


@pytest.mark.parametrize("argv", [
    ["plain"], ["it's"], ["a b", "", "$HOME", "`x`", "\\", "'", "''", "\"q\"", "new\nline", "*"],
])
def test_shell_quote_join_round_trips(argv: list[str]) -> None:
    res = run_subprocess(["sh", "-c", "printf '<%s>' " + shell_quote_join(argv)], 1000, 10)
    assert res.text == "".join(f"<{a}>" for a in argv)


@pytest.mark.parametrize(("spec", "expected"), [
    ("docker:busybox", ContainerRuntimeSpec("docker", "busybox", False)),
    ("podman:alpine:3", ContainerRuntimeSpec("podman", "alpine:3", False)),
    ("docker-container:abc", ContainerRuntimeSpec("docker", "abc", True)),
    ("podman-container:", ContainerRuntimeSpec("podman", "", True)),
    ("dockerx:busybox", None),
    ("ssh:host", None),
    ("", None),
])
def test_container_spec_parse(spec: str, expected: ContainerRuntimeSpec | None) -> None:
    assert ContainerRuntimeSpec.parse(spec) == expected


def test_ids_and_targets() -> None:
    for good in ("abc", "0f3c2", "my_box.1-2"):
        assert ContainerRuntimeSpec.is_valid_id(good)
    for bad in ("", "--privileged", "-x", ".x", "_x", "a b", "a;b", "a/b", "é"):
        assert not ContainerRuntimeSpec.is_valid_id(bad)
    for good in ("host", "me@host.example", "h-1_2", "_x"):
        assert is_valid_ssh_target(good)
    for bad in ("", "-oProxyCommand=x", "a b", "h:22", "a;b", "hôte"):
        assert not is_valid_ssh_target(bad)


def test_make_io() -> None:
    assert type(make_io("/w", "")) is HostIO and make_io("/w", "").cwd == "/w"
    io = make_io("/w", "podman-container:c1")
    assert isinstance(io, ContainerIO) and (io.bin, io.container_id, io.cwd) == ("podman", "c1", "/w")
    io = make_io("", "ssh:me@h")
    assert isinstance(io, SshIO) and io.target == "me@h"
    for runtime, message in [
        ("docker:busybox", "tool runtime must name a running container: docker:busybox"),
        ("docker-container:--privileged", "invalid container id: --privileged"),
        ("ssh:-oProxyCommand=touch /tmp/pwned", "invalid ssh target: -oProxyCommand=touch /tmp/pwned"),
        ("fake:does-not-exist", "unknown tool runtime: fake:does-not-exist"),
    ]:
        with pytest.raises(ValueError) as exc:
            make_io("", runtime)
        assert str(exc.value) == message


@no_podman
def test_missing_engine_is_a_clear_failure(tmp_path: Path) -> None:
    io = ContainerIO("podman", "c1")
    res = io.run(["true"], 1000, 5)
    assert res.exit_code == -1
    assert res.text == "failed to spawn process: No such file or directory: podman"
    assert io.file_size("/etc/hostname") is None
    assert not io.write_file("/tmp/x", b"x")


# -- runtime -----------------------------------------------------------------

def test_runtime_static_specs() -> None:
    for spec in ("docker-container:abc", "podman-container:abc", "ssh:me@host"):
        runtime = make_tools_runtime(spec)
        assert isinstance(runtime, StaticToolsRuntime)
        assert runtime.spec() == spec
        runtime.close()


@pytest.mark.parametrize(("spec", "message"), [
    ("fake:x", "unknown tool runtime: fake:x"),
    ("ssh:-oX", "invalid ssh target: -oX"),
    ("docker-container:--privileged", "invalid container id: --privileged"),
    ("docker:", "--tools-runtime docker:<image> requires an image name"),
    ("podman:", "--tools-runtime podman:<image> requires an image name"),
])
def test_runtime_bad_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        make_tools_runtime(spec)
    assert str(exc.value) == message


def test_container_runtime_rejects_other_specs() -> None:
    with pytest.raises(ValueError, match="^unknown --tools-runtime option: ssh:host$"):
        ContainerToolsRuntime("ssh:host")


def test_container_run_argv() -> None:
    assert container_run_argv("docker", "/tmp/cid", "busybox") == \
        ["docker", "run", "--rm", "-i", "--cidfile", "/tmp/cid", "busybox", "sh"]


@no_podman
def test_container_runtime_missing_engine() -> None:
    with pytest.raises(RuntimeError, match=r"^failed to spawn podman container for tools runtime \(image: busybox\)"):
        make_tools_runtime("podman:busybox")


# -- the tool set ------------------------------------------------------------

def test_builtin_names_and_flags() -> None:
    assert BUILTIN_TOOL_NAMES == ("read_file", "file_glob_search", "grep_search", "exec_shell_command",
                                  "write_file", "edit_file", "get_info")
    tools = build_tools()
    assert [t.name for t in tools] == list(BUILTIN_TOOL_NAMES)
    assert all(a is not b for a, b in zip(tools, build_tools()))
    by_name = {t.name: t.to_json() for t in tools}
    assert {n for n, j in by_name.items() if j["permissions"]["write"]} == {
        "exec_shell_command", "write_file", "edit_file"}
    assert [t.name for t in tools if t.support_stream] == ["exec_shell_command"]
    assert all(j["uses_cwd"] and j["type"] == "server" for j in by_name.values())
    assert by_name["get_info"]["display_name"] == "Get Runtime Info"
    for name, j in by_name.items():
        fn = j["definition"]["function"]
        assert j["definition"]["type"] == "function" and fn["name"] == name
        assert fn["parameters"]["type"] == "object"
        assert set(fn["parameters"].get("required", [])) <= set(fn["parameters"]["properties"])
    assert by_name["edit_file"]["definition"]["function"]["parameters"]["required"] == ["path", "edits"]
    assert "1\u2192" in by_name["read_file"]["definition"]["function"]["description"]


# -- read_file ---------------------------------------------------------------

def read(params: dict[str, Any]) -> dict[str, Any]:
    return ReadFileTool().invoke(params)


def test_read_file(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"one\r\ntwo\nthree")  # CR kept, a last line without newline still read
    assert text_of(read({"path": str(f)})) == "one\r\ntwo\nthree\n"
    assert text_of(read({"path": "f.txt", "cwd": str(tmp_path), "append_loc": True})) == \
        "1\u2192one\r\n2\u2192two\n3\u2192three\n"
    assert text_of(read({"path": str(f), "start_line": 2, "end_line": 2, "append_loc": True})) == "2\u2192two\n"
    assert text_of(read({"path": str(f), "start_line": 3})) == "three\n"
    assert text_of(read({"path": str(f), "start_line": 9})) == ""
    (tmp_path / "empty").write_bytes(b"")
    assert text_of(read({"path": str(tmp_path / "empty")})) == ""


def test_read_file_limits(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("".join(f"line {i:05d}\n" for i in range(3000)))  # 33000 bytes
    assert read({"path": str(big)}) == {
        "error": "file too large (33000 bytes, max 16384). Use start_line/end_line to read a portion."}
    text = text_of(read({"path": str(big), "end_line": 3000}))
    assert text.endswith("\n[output truncated]")
    assert len(text.encode()) <= 16384 + len("[output truncated]")
    assert text.count("\n") == 16384 // 11  # whole lines only
    assert text_of(read({"path": str(big), "start_line": 2999, "end_line": 5000})) == "line 02998\nline 02999\n"


def test_read_file_base64(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100  # binary, over the 16 KB text cap
    (tmp_path / "b.bin").write_bytes(data)
    res = read({"path": "b.bin", "cwd": str(tmp_path), "resp_type": "base64"})
    assert res == {"base64": base64.b64encode(data).decode(), "size_bytes": len(data)}
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate(32 * 1024 * 1024 + 1)  # sparse: no 32 MB written
    assert read({"path": str(huge), "resp_type": "base64"}) == {
        "error": f"file too large ({32 * 1024 * 1024 + 1} bytes, max {32 * 1024 * 1024})"}


def test_read_file_errors(tmp_path: Path) -> None:
    assert read({"path": str(tmp_path / "nope")}) == {"error": f"cannot stat file: {tmp_path / 'nope'}"}
    assert read({"path": str(tmp_path)}) == {"error": f"cannot stat file: {tmp_path}"}  # a directory
    with pytest.raises(ToolParamError, match="path"):
        read({})
    with pytest.raises(ToolParamError, match="path"):
        read({"path": 3})
    with pytest.raises(ToolParamError, match="path"):
        read({"path": None})
    with pytest.raises(ToolParamError, match="^unknown tool runtime: nope$"):
        read({"path": "x", "runtime": "nope"})
    with pytest.raises(ToolParamError):
        ReadFileTool().invoke(["not", "an", "object"])  # type: ignore[arg-type]


def test_read_file_optional_params_of_the_wrong_type(tmp_path: Path) -> None:
    # llama-server's json_value: a mistyped optional parameter takes its default, it is no error
    (tmp_path / "f").write_text("a\nb\n")
    assert text_of(read({"path": str(tmp_path / "f"), "start_line": "2", "append_loc": 1})) == "a\nb\n"
    assert text_of(read({"path": str(tmp_path / "f"), "start_line": 2.9, "end_line": None})) == "b\n"


# -- file_glob_search --------------------------------------------------------

def glob(params: dict[str, Any]) -> dict[str, Any]:
    return FileGlobSearchTool().invoke(params)


def test_file_glob_search(tree: Path) -> None:
    res = glob({"path": str(tree), "include": "*.cpp"})
    assert res["base"] == str(tree)
    assert sorted(e["path"] for e in res["entries"]) == ["src/a.cpp", "src/sub/c.cpp"]
    assert all(e["type"] == "file" for e in res["entries"])
    text = text_of(res)
    assert sorted(text.split("\n---\n")[0].split()) == ["src/a.cpp", "src/sub/c.cpp"]
    assert text.endswith("\n---\nTotal matches: 2\n")

    res = glob({"path": ".", "cwd": str(tree / "src"), "exclude": "*.h"})
    assert res["base"] == str(tree / "src")
    assert sorted(e["path"] for e in res["entries"]) == ["a.cpp", "sub/c.cpp"]
    assert [e["path"] for e in glob({"path": str(tree), "include": "sub/*.cpp"})["entries"]] == ["src/sub/c.cpp"]


def test_file_glob_search_dirs(tree: Path) -> None:
    res = glob({"path": str(tree), "type": "dir"})
    assert {e["path"] for e in res["entries"]} == {"src", "src/sub", "docs", "build", "node_modules"}
    assert "src/sub/\n" in text_of(res)
    res = glob({"path": str(tree), "type": "all", "include": "s*", "max_depth": 1})
    assert res["entries"] == [{"path": "src", "type": "dir"}]


def test_file_glob_search_limit(tree: Path) -> None:
    res = glob({"path": str(tree), "limit": 2})
    assert len(res["entries"]) == 2
    assert text_of(res).endswith(
        "\n---\nTotal matches: 5\n"
        "[2 results limit reached (5 total matches). Refine the glob pattern to narrow the search.]\n")
    for name in range(120):
        (tree / f"many{name:03d}.txt").write_text("")
    res = glob({"path": str(tree), "include": "many*", "limit": 1000})
    assert len(res["entries"]) == 100
    assert "[100 results limit reached (120 total matches)." in text_of(res)


def test_file_glob_search_errors(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert glob({"path": str(tree), "limit": 0}) == {"error": "invalid limit: 0 (expected 1 or more)"}
    assert glob({"path": str(tree), "type": "bogus"}) == {
        "error": 'invalid type: bogus (expected "file", "dir" or "all")'}
    assert glob({"path": "nope", "cwd": str(tree)}) == {"error": "path does not exist or is not a directory: nope"}
    assert glob({"path": "top.txt", "cwd": str(tree)}) == {
        "error": "path does not exist or is not a directory: top.txt"}
    with pytest.raises(ToolParamError, match="path"):
        glob({"include": "*"})
    monkeypatch.setattr(tools_io, "LIST_ENTRIES_TIMEOUT", 0)
    assert text_of(glob({"path": str(tree)})) == \
        "\n---\nTotal matches: 0\n[results truncated: time budget or unreadable directory]\n"


@needs_git
def test_file_glob_search_gitignore(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text("*.tmp\n")
    (repo / "a.tmp").write_text("")
    (repo / "a.py").write_text("")
    assert [e["path"] for e in glob({"path": str(repo), "include": "a.*"})["entries"]] == ["a.py"]


# -- grep_search -------------------------------------------------------------

def grep(params: dict[str, Any]) -> dict[str, Any]:
    return GrepSearchTool().invoke(params)


@pytest.fixture
def code(tmp_path: Path) -> Path:
    root = not_in_git(tmp_path / "code")
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "m.py").write_text("import os\n\ndef Foo():\n    return 1\n\nx = foo(1)\n")
    (root / "notes.txt").write_text("foo bar\nnothing\n")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "dep.py").write_text("foo\n")
    return root


def test_grep_search_single_file(code: Path) -> None:
    assert text_of(grep({"path": "pkg/m.py", "cwd": str(code), "pattern": "foo", "return_line_numbers": True})) == \
        "pkg/m.py:6:x = foo(1)\n\n---\nTotal matches: 1\n"
    assert text_of(grep({"path": str(code / "notes.txt"), "pattern": "^no"})) == \
        f"{code / 'notes.txt'}:nothing\n\n---\nTotal matches: 1\n"


def test_grep_search_directory(code: Path) -> None:
    text = text_of(grep({"path": str(code), "pattern": "foo", "ignore_case": True}))
    lines = sorted(text.split("\n---\n")[0].split("\n")[:-1])
    assert lines == ["notes.txt:foo bar", "pkg/m.py:def Foo():", "pkg/m.py:x = foo(1)"]  # junk dirs skipped
    assert text.endswith("\n---\nTotal matches: 3\n")
    assert text_of(grep({"path": str(code), "pattern": "foo", "include": "*.py"})).endswith("Total matches: 1\n")
    assert text_of(grep({"path": str(code), "pattern": "foo", "exclude": "pkg/*"})).startswith("notes.txt:foo bar\n")


def test_grep_search_context(code: Path) -> None:
    assert text_of(grep({"path": str(code / "pkg"), "pattern": "return", "context_lines": 1})) == \
        "m.py-3-def Foo():\nm.py:4:    return 1\nm.py-5-\n--\n\n---\nTotal matches: 1\n"
    assert text_of(grep({"path": str(code / "pkg"), "pattern": "import", "context_lines": 5})).startswith(
        "m.py:1:import os\nm.py-2-\nm.py-3-def Foo():\nm.py-4-    return 1\nm.py-5-\nm.py-6-x = foo(1)\n--\n")


def test_grep_search_literal_and_regex_errors(code: Path) -> None:
    assert text_of(grep({"path": str(code), "pattern": "foo(1)", "literal": True})) == \
        "pkg/m.py:x = foo(1)\n\n---\nTotal matches: 1\n"
    res = grep({"path": str(code), "pattern": "foo(1"})
    assert res["error"].startswith("invalid regex: ")
    assert text_of(grep({"path": str(code), "pattern": "[a-", "literal": True})).endswith("Total matches: 0\n")


def test_grep_search_limit(tmp_path: Path) -> None:
    (tmp_path / "many.txt").write_text("hit\n" * 150)
    text = text_of(grep({"path": str(tmp_path / "many.txt"), "pattern": "hit"}))
    assert text.count(":hit\n") == 100
    assert text.endswith("\n---\nTotal matches: 100\n"
                         "[100 matches limit reached. Narrow the path/pattern/include to see more.]\n")


def test_grep_search_errors(code: Path) -> None:
    assert grep({"path": "nope", "cwd": str(code), "pattern": "x"}) == {"error": "path does not exist: nope"}
    with pytest.raises(ToolParamError, match="pattern"):
        grep({"path": str(code)})
    with pytest.raises(ToolParamError, match="pattern"):
        grep({"path": str(code), "pattern": ["x"]})
    with pytest.raises(ToolParamError, match="invalid ssh target: -x"):
        grep({"path": str(code), "pattern": "x", "runtime": "ssh:-x"})


# -- exec_shell_command ------------------------------------------------------

def shell(params: dict[str, Any]) -> dict[str, Any]:
    return ExecShellCommandTool().invoke(params)


def test_exec_shell_command(tmp_path: Path) -> None:
    assert text_of(shell({"command": "echo hi; echo err >&2; exit 4"})) == "hi\nerr\n\n[exit code: 4]"
    assert text_of(shell({"command": "pwd > here.txt", "cwd": str(tmp_path)})) == "\n[exit code: 0]"
    assert (tmp_path / "here.txt").read_text() == f"{tmp_path}\n"


def test_exec_shell_command_timeout() -> None:
    start = time.monotonic()
    assert text_of(shell({"command": "echo a; sleep 30", "timeout": 1})) == \
        "a\n\n[exit code: 1] [exit due to timed out]"
    assert time.monotonic() - start < 5


def test_exec_shell_command_output_cap() -> None:
    assert text_of(shell({"command": "printf 0123456789", "max_output_size": 4})) == \
        "0123\n[output truncated]\n[exit code: 0]"
    text = text_of(shell({"command": "head -c 20000 /dev/zero | tr '\\0' x", "max_output_size": 100000}))
    assert text == "x" * 16384 + "\n[output truncated]\n[exit code: 0]"  # capped at 16 KB whatever was asked
    text = text_of(shell({"command": "head -c 20000 /dev/zero | tr '\\0' x", "max_output_size": -1}))
    assert text.startswith("x" * 16384 + "\n[output truncated]")


def test_exec_shell_command_errors() -> None:
    with pytest.raises(ToolParamError, match="command"):
        shell({})
    with pytest.raises(ToolParamError, match="command"):
        shell({"command": ["ls"]})
    with pytest.raises(ToolParamError, match="^tool runtime must name a running container: podman:busybox$"):
        shell({"command": "true", "runtime": "podman:busybox"})


@no_podman
def test_exec_shell_command_missing_engine() -> None:
    assert text_of(shell({"command": "true", "runtime": "podman-container:abc"})) == \
        "failed to spawn process: No such file or directory: podman\n[exit code: -1]"


def test_exec_shell_command_stream() -> None:
    stream = Stream()
    assert ExecShellCommandTool().invoke({"command": "echo one; sleep 0.2; echo two; exit 2"}, stream) == {}
    assert stream.chunks == ["one\n", "two\n", "\n[exit code: 2]"]


def test_exec_shell_command_stream_client_gone() -> None:
    stream = Stream(alive_for=0.3)
    start = time.monotonic()
    assert ExecShellCommandTool().invoke({"command": "echo one; sleep 30", "timeout": 20}, stream) == {}
    assert time.monotonic() - start < 5
    assert stream.chunks == ["one\n"]  # no exit line for a client that is gone


# -- write_file --------------------------------------------------------------

def test_write_file(tmp_path: Path) -> None:
    res = WriteFileTool().invoke({"path": "a/b/c.txt", "content": "héllo\n", "cwd": str(tmp_path)})
    assert res == {"result": "file written successfully", "path": "a/b/c.txt", "bytes": 7}
    assert (tmp_path / "a" / "b" / "c.txt").read_bytes() == "héllo\n".encode()
    WriteFileTool().invoke({"path": str(tmp_path / "a/b/c.txt"), "content": ""})
    assert (tmp_path / "a" / "b" / "c.txt").read_bytes() == b""


def test_write_file_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert WriteFileTool().invoke({"path": str(tmp_path), "content": "x"}) == {
        "error": f"failed to write file: {tmp_path}"}  # a directory
    assert WriteFileTool().invoke({"path": str(tmp_path / "file" / "under"), "content": "x"}) == {
        "error": f"failed to write file: {tmp_path / 'file' / 'under'}"}
    with pytest.raises(ToolParamError, match="content"):
        WriteFileTool().invoke({"path": str(tmp_path / "x")})
    with pytest.raises(ToolParamError, match="content"):
        WriteFileTool().invoke({"path": str(tmp_path / "x"), "content": 5})
    assert not (tmp_path / "x").exists()


# -- edit_file ---------------------------------------------------------------

def edit(path: Path, edits: Any) -> dict[str, Any]:
    return EditFileTool().invoke({"path": str(path), "edits": edits})


def test_edit_file(tmp_path: Path) -> None:
    f = tmp_path / "t.log"
    f.write_text("line1\nline2\nline3\n")
    res = edit(f, [{"old_text": "line2", "new_text": "line2-edited"},
                   {"old_text": "line3\n", "new_text": "line3\nline4\n"}])
    assert res == {"result": "file edited successfully", "path": str(f), "edits_applied": 2}
    assert f.read_text() == "line1\nline2-edited\nline3\nline4\n"
    # matched against the original, not incrementally: "line1" is found though the first edit removes it
    res = edit(f, [{"old_text": "line1\n", "new_text": ""}, {"old_text": "line4", "new_text": "end"}])
    assert res["edits_applied"] == 2
    assert f.read_text() == "line2-edited\nline3\nend\n"


def test_edit_file_fuzzy_keeps_untouched_lines(tmp_path: Path) -> None:
    f = tmp_path / "q.py"
    original = "a = \u201cquoted\u201d   \nb = 1\u00a0+\u00a02\t\nc = 3\n"
    f.write_text(original)
    # the model wrote ASCII quotes and dropped trailing blanks: found once normalised
    res = edit(f, [{"old_text": 'a = "quoted"\nb', "new_text": "a = 'q'\nb"}])
    assert res["edits_applied"] == 1
    # the lines the edit touched are normalised, the rest is byte for byte the original
    assert f.read_text() == "a = 'q'\nb = 1 + 2\nc = 3\n"
    f.write_text(original)
    edit(f, [{"old_text": "c = 3", "new_text": "c = 4"}, {"old_text": "a = \"quoted\"", "new_text": "a = 0"}])
    assert f.read_text() == "a = 0\nb = 1\u00a0+\u00a02\t\nc = 4\n"


def test_edit_file_whitespace_into_an_empty_file(tmp_path: Path) -> None:
    # " " normalises to "", found in the (normalised) empty file: llama-server crashes here, we insert
    f = tmp_path / "blank"
    f.write_text("\r")
    assert edit(f, [{"old_text": " ", "new_text": "x"}])["edits_applied"] == 1
    assert f.read_text() == "x"


def test_edit_file_rejections(tmp_path: Path) -> None:
    f = tmp_path / "t.log"
    f.write_text("dup\ndup\nline1\nline2\n")
    p = str(f)
    assert edit(f, [{"old_text": "dup", "new_text": "x"}]) == {
        "error": f"found 2 occurrences of edits[0].old_text in {p}, it must be unique"}
    assert edit(f, [{"old_text": "line1", "new_text": "x"}, {"old_text": "nope", "new_text": "x"}]) == {
        "error": f"could not find edits[1].old_text in {p}, it must match the file's current content exactly"}
    assert edit(f, [{"old_text": "line1\nline2", "new_text": "a"}, {"old_text": "line2", "new_text": "b"}]) == {
        "error": f"edits[0] and edits[1] overlap in {p}; merge them into one edit or target disjoint regions"}
    assert edit(f, [{"old_text": "line1", "new_text": "x"}, {"old_text": "", "new_text": "x"}]) == {
        "error": "edits[1].old_text must not be empty"}
    assert edit(f, [{"old_text": "line1", "new_text": "line1"}]) == {
        "error": "no changes made: the replacement(s) produced identical content"}
    assert edit(f, []) == {"error": '"edits" must be a non-empty array'}
    assert edit(f, {"old_text": "line1", "new_text": "x"}) == {"error": '"edits" must be a non-empty array'}
    assert edit(tmp_path / "nope", [{"old_text": "a", "new_text": "b"}]) == {
        "error": f"failed to open file: {tmp_path / 'nope'}"}
    f2 = tmp_path / "ws.txt"
    f2.write_text("x = 1  \nx = 1\n")  # the same line but for trailing blanks: still not unique
    assert "found 2 occurrences" in edit(f2, [{"old_text": "x = 1\n", "new_text": "y"}])["error"]
    assert f.read_text() == "dup\ndup\nline1\nline2\n"  # nothing was written


def test_edit_file_bad_params(tmp_path: Path) -> None:
    f = tmp_path / "t"
    f.write_text("a\n")
    with pytest.raises(ToolParamError, match="edits"):
        EditFileTool().invoke({"path": str(f)})
    with pytest.raises(ToolParamError, match="edits"):
        edit(f, ["a"])
    with pytest.raises(ToolParamError, match="new_text"):
        edit(f, [{"old_text": "a"}])
    with pytest.raises(ToolParamError, match="old_text"):
        edit(f, [{"old_text": 1, "new_text": "b"}])
    assert f.read_text() == "a\n"


# -- get_info ----------------------------------------------------------------

def test_get_info(tmp_path: Path) -> None:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True).stdout.strip()
    assert GetInfoTool().invoke({}) == {"os": uname, "cwd": os.getcwd()}
    assert GetInfoTool().invoke({"cwd": str(tmp_path)}) == {"os": uname, "cwd": str(tmp_path)}
    with pytest.raises(ToolParamError, match="unknown tool runtime"):
        GetInfoTool().invoke({"runtime": "vm:x"})


@no_podman
def test_get_info_unreachable_isolate() -> None:
    assert GetInfoTool().invoke({"runtime": "podman-container:abc"}) == {"os": "unknown", "cwd": "unknown"}

