"""Where the built-in tools touch files and run commands: the host, an already running docker/podman
container, or an ssh host, as llama-server's ``tools_io`` does it.

Every operation goes through a ``ToolsIO``. ``HostIO`` uses the server's own filesystem and processes; an
``IsolateIO`` runs each operation as a POSIX command (sh, cat, wc, mkdir, dirname, find, timeout) on the far
side of a transport: ``<engine> exec`` for ``ContainerIO``, ``ssh`` for ``SshIO``. ``make_io`` picks one from a
call's "cwd" and "runtime". Only the POSIX behaviour of llama-server is implemented.
"""

from __future__ import annotations

import codecs
import enum
import os
import re
import signal
import stat
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import ClassVar

__all__ = [
    "GIT_LS_FILES_MAX_OUTPUT",
    "ISOLATE_EXEC_TIMEOUT",
    "ISOLATE_READ_FILE_MAX_SIZE",
    "JUNK_DIR_NAMES",
    "LIST_ENTRIES_TIMEOUT",
    "ContainerIO",
    "ContainerRuntimeSpec",
    "ExecResult",
    "HostIO",
    "IsolateIO",
    "ListEntry",
    "ListKind",
    "ListResult",
    "SshIO",
    "ToolsIO",
    "container_exec_argv",
    "expand_home",
    "glob_match",
    "home_dir",
    "is_valid_ssh_target",
    "make_io",
    "path_glob_match",
    "run_subprocess",
    "shell_quote_join",
    "split_text_lines",
    "ssh_exec_argv",
]

GIT_LS_FILES_MAX_OUTPUT = 8 * 1024 * 1024
LIST_ENTRIES_TIMEOUT = 15  # seconds for one listing, shared by the git and walker paths
ISOLATE_EXEC_TIMEOUT = 15  # seconds for an isolate's helper commands (stat, cat, mkdir, find)
ISOLATE_READ_FILE_MAX_SIZE = 64 * 1024 * 1024

# reported by a listing but never descended into: they can be enormous
JUNK_DIR_NAMES: tuple[str, ...] = (
    ".git", ".svn", ".hg", "node_modules", "__pycache__",
    ".venv", "venv", "dist", "build", "target", ".cache", ".idea", ".vscode",
)
_JUNK = frozenset(JUNK_DIR_NAMES)

_READ_CHUNK = 4096
_WATCHDOG_POLL = 0.1  # seconds between two looks at a streaming client
_EXIT_FAILURE = 1  # what llama-server's subprocess layer reports for a child killed by a signal

_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_SSH_TARGET_CHARS = _ASCII_ALNUM | frozenset(".-_@")
_CONTAINER_ID_CHARS = _ASCII_ALNUM | frozenset(".-_")


# -- paths and globs ---------------------------------------------------------

@cache
def home_dir() -> str:
    """$HOME, read once (as llama-server does), or "" when unset."""
    return os.environ.get("HOME", "")


def expand_home(path: str, home: str | None = None) -> str:
    """``~`` and ``~/...`` become the home directory; ``~user`` is left alone. ``home`` defaults to $HOME."""
    if not path.startswith("~"):
        return path
    if len(path) > 1 and path[1] not in "/\\":
        return path
    home = home_dir() if home is None else home
    if not home:
        return path
    return home + path[1:]


def glob_match(pattern: str, text: str) -> bool:
    """llama.cpp's glob: ``*`` and ``?`` stop at '/', ``**`` crosses it, ``[...]`` is a class (``!`` negates)."""
    n_pat, n_txt = len(pattern), len(text)

    def class_match(c: str, start: int, end: int) -> bool:
        i, negated = start, False
        if pattern[i] == "!":
            negated, i = True, i + 1
        # a ']' or '-' right after the opening (or '!') is a literal
        if pattern[i] in "]-":
            if i < end and pattern[i] == c:
                return not negated
            i += 1
        matched = False
        while i < end:
            if i + 2 < end and pattern[i + 1] == "-" and pattern[i + 2] != "]":
                if pattern[i] <= c <= pattern[i + 2]:
                    matched = True
                    break
                i += 3
            else:
                if pattern[i] == c:
                    matched = True
                    break
                i += 1
        return not matched if negated else matched

    # memoized: without it a pattern with many stars is exponential in the path's length
    @cache
    def match(p: int, s: int) -> bool:
        while True:
            if p == n_pat:
                return s == n_txt
            ch = pattern[p]
            if ch == "*" and p + 1 < n_pat and pattern[p + 1] == "*":
                return any(match(p + 2, k) for k in range(s, n_txt + 1))
            if ch == "*":
                while s < n_txt and text[s] != "/":
                    if match(p + 1, s):
                        return True
                    s += 1
                p += 1
                continue
            if ch == "?" and s < n_txt and text[s] != "/":
                p, s = p + 1, s + 1
                continue
            if ch == "[":
                end = p + 1
                if end < n_pat and pattern[end] in "]-":
                    end += 1
                while end < n_pat and pattern[end] != "]":
                    end += 1
                if end < n_pat:
                    if s == n_txt or not class_match(text[s], p + 1, end):
                        return False
                    p, s = end + 1, s + 1
                    continue
                # no closing ']': the '[' is a literal
                if s < n_txt and text[s] == "[":
                    p, s = p + 1, s + 1
                    continue
                return False
            if s < n_txt and ch == text[s]:
                p, s = p + 1, s + 1
                continue
            return False

    return match(0, 0)


def path_glob_match(pattern: str, rel_path: str) -> bool:
    """No '/' in ``pattern``: it matches the basename at any depth; else the whole relative path, anchored
    with ``**/`` unless it starts with ``**`` or '/'."""
    if "/" not in pattern:
        return glob_match(pattern, rel_path.rsplit("/", 1)[-1])
    if pattern == "**" or pattern.startswith(("**/", "/")):
        return glob_match(pattern, rel_path)
    return glob_match("**/" + pattern, rel_path)


def _entry_depth(rel: str) -> int:
    return 1 + rel.count("/")


def split_text_lines(text: str, strip_dot_slash: bool = False) -> list[str]:
    """Non-empty lines of a command's output, '\\r' and (optionally) a leading "./" dropped, '/'-separated."""
    out: list[str] = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line:
            continue
        if strip_dot_slash and line.startswith("./"):
            line = line[2:]
        out.append(line.replace("\\", "/"))
    return out


# -- processes ---------------------------------------------------------------

@dataclass
class ExecResult:
    output: bytes = b""  # stdout (and stderr when combined), capped, with "\n[output truncated]" past the cap
    exit_code: int = -1  # -1: never ran
    timed_out: bool = False

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


def _spawn_error(exc: OSError | ValueError) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename is not None else exc.strerror
    return str(exc)  # e.g. "embedded null byte"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # the whole process group: a grandchild holding the pipe would otherwise keep the read loop waiting
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Watchdog:
    """Kills the child's process group past the deadline (setting ``timed_out``) or once ``alive`` says the
    client is gone, until stopped."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout_secs: float, alive: Callable[[], bool] | None) -> None:
        self.timed_out = threading.Event()
        self._done = threading.Event()
        self._proc = proc
        self._deadline = time.monotonic() + timeout_secs
        self._alive = alive
        self._thread = threading.Thread(target=self._watch, name="tools-subprocess-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self.timed_out.set()
                _kill_group(self._proc)
                return
            if self._done.wait(min(remaining, _WATCHDOG_POLL) if self._alive is not None else remaining):
                return
            if self._alive is not None and not self._alive():
                _kill_group(self._proc)
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _feed(proc: subprocess.Popen[bytes], data: bytes | None) -> threading.Thread | None:
    """Writes ``data`` to the child's stdin on a thread of its own (a child that answers before it has read
    everything would otherwise deadlock us), then closes it."""
    if proc.stdin is None:
        return None
    stdin = proc.stdin

    def feed() -> None:
        # a short write is not an error by itself: the exit status decides
        try:
            view = memoryview(data or b"")
            while view:  # an unbuffered write may take only part of it
                view = view[stdin.write(view) or 0:]
        except OSError:
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    feeder = threading.Thread(target=feed, name="tools-subprocess-stdin", daemon=True)
    feeder.start()
    return feeder


def _collect(proc: subprocess.Popen[bytes], max_output: int,
             on_chunk: Callable[[str], bool] | None) -> tuple[bytes, bool]:
    """The child's output up to ``max_output`` bytes, and whether more came (read to the end and dropped, so
    the child never blocks on a full pipe); ``on_chunk`` sees it as it comes, and stops the child by
    returning False."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    output = bytearray()
    truncated = stopped = False
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while True:
        buf = os.read(fd, _READ_CHUNK)
        if not buf:
            break
        if truncated:
            continue
        if len(output) + len(buf) <= max_output:
            output += buf
            if on_chunk is not None:
                piece = decoder.decode(buf)
                if piece and not on_chunk(piece):
                    _kill_group(proc)
                    stopped = True
                    break
        else:
            remaining = max(0, max_output - len(output))
            output += buf[:remaining]
            if on_chunk is not None and remaining > 0:
                piece = decoder.decode(buf[:remaining], final=True)
                if piece:
                    on_chunk(piece)
            truncated = True
    if on_chunk is not None and not truncated and not stopped:
        tail = decoder.decode(b"", final=True)
        if tail:
            on_chunk(tail)
    proc.stdout.close()
    return bytes(output), truncated


def run_subprocess(
        args: Sequence[str],
        max_output: int,
        timeout_secs: float,
        on_chunk: Callable[[str], bool] | None = None,
        *,
        combine_stderr: bool = True,
        cwd: str = "",
        stdin_data: bytes | None = None,
        alive: Callable[[], bool] | None = None) -> ExecResult:
    """Runs ``args`` (PATH searched, environment inherited) and collects at most ``max_output`` bytes of its
    output, draining the rest so the child never blocks on a full pipe.

    ``on_chunk`` sees each piece of output as it is read (decoded incrementally as UTF-8); returning False
    kills the process. ``alive``, when given, is polled while the process runs, so a gone client stops a
    command that prints nothing. Past ``timeout_secs`` the process group is killed and ``timed_out`` is set.
    ``combine_stderr=False`` discards stderr, for when stdout is raw file content.
    """
    res = ExecResult()
    try:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.PIPE if stdin_data else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if combine_stderr else subprocess.DEVNULL,
            cwd=cwd or None,
            start_new_session=True,
            bufsize=0,
        )
    except (OSError, ValueError) as exc:
        # llama-server says only "failed to spawn process"; the reason is what makes a missing docker clear
        res.output = f"failed to spawn process: {_spawn_error(exc)}".encode()
        return res

    watchdog = _Watchdog(proc, timeout_secs, alive)
    feeder = _feed(proc, stdin_data)
    output, truncated = _collect(proc, max_output, on_chunk)
    # the watchdog stays armed until the child is reaped: one that closes stdout and lingers still times out
    returncode = proc.wait()
    watchdog.stop()
    if feeder is not None:
        feeder.join()

    res.exit_code = returncode if returncode >= 0 else _EXIT_FAILURE
    res.timed_out = watchdog.timed_out.is_set()
    res.output = output + (b"\n[output truncated]" if truncated else b"")
    return res


# -- the io layer ------------------------------------------------------------

class ListKind(enum.Enum):
    FILES = "file"
    DIRS = "dir"
    ALL = "all"


@dataclass
class ListEntry:
    rel: str  # '/'-separated, relative to the listed base
    is_dir: bool = False


@dataclass
class ListResult:
    entries: list[ListEntry] = field(default_factory=list)
    err: str = ""  # set when the base is not a directory
    truncated: bool = False  # the walk could not see everything (time budget, unreadable subtree)


class ToolsIO(ABC):
    """One call's view of where the tools run; ``cwd`` resolves relative paths and is where commands run."""

    def __init__(self, cwd: str = "") -> None:
        self.cwd = cwd

    @abstractmethod
    def resolve(self, path: str) -> str:
        """``path`` against the working directory; an absolute path comes back unchanged."""

    @abstractmethod
    def is_directory(self, path: str) -> bool: ...

    @abstractmethod
    def is_regular_file(self, path: str) -> bool: ...

    @abstractmethod
    def file_size(self, path: str) -> int | None:
        """The size of a regular file, or None."""

    @abstractmethod
    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it cannot be read."""

    @abstractmethod
    def write_file(self, path: str, content: bytes) -> bool:
        """Creates or replaces the file, and its missing parent directories."""

    @abstractmethod
    def list_entries(self, base: str, max_depth: int, kind: ListKind) -> ListResult:
        """Entries under ``base`` (already resolved). ``max_depth`` 0 is unlimited, 1 the direct children. Files
        come from ``git ls-files`` (so .gitignore applies) when ``base`` is in a git work tree."""

    @abstractmethod
    def run(self, args: Sequence[str], max_output: int, timeout_secs: int,
            on_chunk: Callable[[str], bool] | None = None,
            alive: Callable[[], bool] | None = None) -> ExecResult:
        """Runs a command in the working directory (see ``run_subprocess``)."""


class HostIO(ToolsIO):
    """The server's own filesystem and processes (llama-server's ``tools_io_basic``)."""

    def resolve(self, path: str) -> str:
        # "~" expanded, made absolute against cwd (or the server's), "." and ".." dropped lexically
        p = expand_home(path)
        if not os.path.isabs(p):
            if self.cwd:
                p = os.path.join(self.cwd, p)
            else:
                try:
                    p = os.path.join(os.getcwd(), p)
                except OSError:
                    return p
        full = os.path.normpath(p)
        # POSIX keeps a leading "//"; llama-server's lexical normalisation does not
        return "/" + full.lstrip("/") if full.startswith("//") else full

    def is_directory(self, path: str) -> bool:
        return os.path.isdir(self.resolve(path))

    def is_regular_file(self, path: str) -> bool:
        return os.path.isfile(self.resolve(path))

    def file_size(self, path: str) -> int | None:
        try:
            st = os.stat(self.resolve(path))
        except (OSError, ValueError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def read_file(self, path: str) -> bytes | None:
        try:
            with open(self.resolve(path), "rb") as f:
                return f.read()
        except (OSError, ValueError):
            return None

    def write_file(self, path: str, content: bytes) -> bool:
        full = self.resolve(path)
        try:
            parent = os.path.dirname(full)
            if parent:
                os.makedirs(parent, exist_ok=True)
            with open(full, "wb") as f:
                f.write(content)
        except (OSError, ValueError):
            return False
        return True

    def list_entries(self, base: str, max_depth: int, kind: ListKind) -> ListResult:
        out = ListResult()
        if not os.path.isdir(base):
            out.err = "path does not exist or is not a directory"
            return out

        budget = LIST_ENTRIES_TIMEOUT  # read at call time, so a test can shorten it
        deadline = time.monotonic() + budget

        # git ls-files cannot list directories: the walker does those
        if kind is ListKind.FILES:
            res = self.run(["git", "-C", base, "ls-files", "--cached", "--others", "--exclude-standard"],
                           GIT_LS_FILES_MAX_OUTPUT, budget)
            if res.exit_code == 0 and not res.timed_out:
                for rel in split_text_lines(res.text):
                    if max_depth > 0 and _entry_depth(rel) > max_depth:
                        continue
                    # git lists deleted-but-tracked files too
                    if os.path.isfile(os.path.join(base, rel)):
                        out.entries.append(ListEntry(rel, False))
                return out

        out.entries = self._walk(base, max_depth, kind, deadline, out)
        return out

    def run(self, args: Sequence[str], max_output: int, timeout_secs: int,
            on_chunk: Callable[[str], bool] | None = None,
            alive: Callable[[], bool] | None = None) -> ExecResult:
        return run_subprocess(args, max_output, timeout_secs, on_chunk, combine_stderr=True, cwd=self.cwd,
                              alive=alive)

    @staticmethod
    def _walk(base: str, max_depth: int, kind: ListKind, deadline: float, out: ListResult) -> list[ListEntry]:
        want_dirs = kind in (ListKind.DIRS, ListKind.ALL)
        want_files = kind in (ListKind.FILES, ListKind.ALL)
        result: list[ListEntry] = []
        stack: list[tuple[str, str, int]] = [(base, "", 0)]
        while stack:
            if time.monotonic() >= deadline:
                out.truncated = True
                return result
            directory, rel_dir, depth = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except PermissionError:
                continue  # llama-server skips what it may not read, silently
            except OSError:
                out.truncated = True  # gone or broken: a subtree the caller never sees
                continue
            for entry in entries:
                if time.monotonic() >= deadline:
                    out.truncated = True
                    return result
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if is_dir:
                    if want_dirs:
                        result.append(ListEntry(rel, True))
                    # junk directories stay selectable but are never walked
                    if entry.name in _JUNK:
                        continue
                    # a link can point back at an ancestor: never followed
                    if not entry.is_symlink() and (max_depth == 0 or depth + 1 < max_depth):
                        stack.append((entry.path, rel, depth + 1))
                elif want_files:
                    try:
                        if entry.is_file():
                            result.append(ListEntry(rel, False))
                    except OSError:
                        continue
        return result


def shell_quote_join(argv: Sequence[str]) -> str:
    """``argv`` as one string a POSIX shell parses back into exactly ``argv`` (each word single-quoted)."""
    return " ".join("'" + arg.replace("'", "'\\''") + "'" for arg in argv)


def _find_command(max_depth: int, dirs: bool) -> str:
    # -mindepth/-maxdepth keep busybox find working as well as GNU find
    prune = " -o ".join(f"-name {name}" for name in JUNK_DIR_NAMES)
    cmd = 'cd "$1" && find . -mindepth 1'
    if max_depth > 0:
        cmd += f" -maxdepth {max_depth}"
    cmd += f" \\( {prune} \\) -prune"
    cmd += " -print -o -type d -print" if dirs else " -o -type f -print"
    return cmd


class IsolateIO(ToolsIO):
    """Runs every operation as a POSIX command inside an isolate that someone else created (a container, a
    remote host). Paths there are always POSIX; no "~" expansion."""

    @abstractmethod
    def build_argv(self, inner: Sequence[str], needs_stdin: bool) -> list[str]:
        """The host-side argv that runs ``inner`` (a complete POSIX argv) in the isolate."""

    def resolve(self, path: str) -> str:
        if not self.cwd or path.startswith("/"):
            return path
        return self.cwd + "/" + path

    def is_directory(self, path: str) -> bool:
        return self._test("-d", self.resolve(path))

    def is_regular_file(self, path: str) -> bool:
        return self._test("-f", self.resolve(path))

    def file_size(self, path: str) -> int | None:
        res = self._exec(["sh", "-c", 'wc -c < "$1"', "_", self.resolve(path)], 64, True)
        if res.exit_code != 0 or res.timed_out:
            return None
        m = re.match(r"\s*\+?(\d+)", res.text)  # busybox pads the number with spaces
        return int(m.group(1)) if m else None

    def read_file(self, path: str) -> bytes | None:
        # stderr must not be spliced into the file's bytes
        res = self._exec(["cat", "--", self.resolve(path)], ISOLATE_READ_FILE_MAX_SIZE, False)
        if res.exit_code != 0 or res.timed_out:
            return None
        return res.output

    def write_file(self, path: str, content: bytes) -> bool:
        # the content goes on stdin: no argv for the far side to re-parse, no temporary file on the host
        argv = self.build_argv(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "_", self.resolve(path)],
                               needs_stdin=True)
        res = run_subprocess(argv, 4096, ISOLATE_EXEC_TIMEOUT, combine_stderr=True, stdin_data=content)
        return res.exit_code == 0 and not res.timed_out

    def list_entries(self, base: str, max_depth: int, kind: ListKind) -> ListResult:
        out = ListResult()
        abs_base = self.resolve(base)
        if not self.is_directory(base):
            out.err = "path does not exist or is not a directory"
            return out

        if kind is ListKind.FILES:
            res = self._exec(["sh", "-c", 'cd "$1" && git ls-files --cached --others --exclude-standard', "_",
                              abs_base], GIT_LS_FILES_MAX_OUTPUT, True)
            if res.exit_code == 0 and not res.timed_out:
                out.entries = [ListEntry(rel, False) for rel in split_text_lines(res.text)
                               if max_depth <= 0 or _entry_depth(rel) <= max_depth]
                return out

        if kind in (ListKind.DIRS, ListKind.ALL):
            out.entries += [ListEntry(rel, True) for rel in self._find(abs_base, max_depth, True, out)]
        if kind in (ListKind.FILES, ListKind.ALL):
            out.entries += [ListEntry(rel, False) for rel in self._find(abs_base, max_depth, False, out)]
        return out

    def run(self, args: Sequence[str], max_output: int, timeout_secs: int,
            on_chunk: Callable[[str], bool] | None = None,
            alive: Callable[[], bool] | None = None) -> ExecResult:
        # 5 s over the in-isolate `timeout`, so it can end the command cleanly before the client is killed
        return run_subprocess(self.run_argv(args, timeout_secs), max_output, timeout_secs + 5, on_chunk,
                              combine_stderr=True, alive=alive)

    def run_argv(self, args: Sequence[str], timeout_secs: int) -> list[str]:
        """The host-side argv of ``run``: an in-isolate ``timeout``, since killing the host-side client does not
        kill what it started in the isolate, and a ``cd`` to the working directory."""
        inner = ["timeout", f"{timeout_secs}s", *args]
        if self.cwd:
            # not every transport has a -w; 127 is what a shell reports for a command it could not run
            inner = ["sh", "-c", 'cd "$1" || exit 127; shift; exec "$@"', "_", self.cwd, *inner]
        return self.build_argv(inner, needs_stdin=True)

    def _exec(self, inner: Sequence[str], max_output: int, combine_stderr: bool) -> ExecResult:
        return run_subprocess(self.build_argv(inner, needs_stdin=False), max_output, ISOLATE_EXEC_TIMEOUT,
                              combine_stderr=combine_stderr)

    def _test(self, flag: str, path: str) -> bool:
        res = self._exec(["sh", "-c", f'[ {flag} "$1" ]', "_", path], 4096, True)
        return res.exit_code == 0 and not res.timed_out

    def _find(self, abs_base: str, max_depth: int, dirs: bool, out: ListResult) -> list[str]:
        res = self._exec(["sh", "-c", _find_command(max_depth, dirs), "_", abs_base], GIT_LS_FILES_MAX_OUTPUT, True)
        out.truncated = out.truncated or res.timed_out
        return split_text_lines(res.text, strip_dot_slash=True)


def container_exec_argv(bin: str, container_id: str, inner: Sequence[str], needs_stdin: bool) -> list[str]:
    """``<engine> exec [-i] <id> <inner...>``: docker and podman take the same verbs in the same order."""
    return [bin, "exec", *(["-i"] if needs_stdin else []), container_id, *inner]


_SSH_OPTIONS = (
    # no console here, so a prompt would hang the call: key-based auth only, host key trusted beforehand
    "-o", "BatchMode=yes",
    "-o", "PasswordAuthentication=no",
    "-o", "KbdInteractiveAuthentication=no",
    "-o", "StrictHostKeyChecking=yes",
)


def ssh_exec_argv(target: str, inner: Sequence[str], needs_stdin: bool) -> list[str]:
    """``ssh <options> [-n] <target> '<inner, quoted>'``: the remote shell re-parses the command line, so
    ``inner`` travels as one quoted word; -n keeps ssh off our stdin when the command reads none."""
    return ["ssh", *_SSH_OPTIONS, *([] if needs_stdin else ["-n"]), target, shell_quote_join(inner)]


def is_valid_ssh_target(target: str) -> bool:
    """[user@]host of ASCII letters, digits and ``.-_@``, not starting with '-': the target can come from a
    client header, and ``-oProxyCommand=...`` would run anything on the host."""
    return bool(target) and not target.startswith("-") and all(c in _SSH_TARGET_CHARS for c in target)


class ContainerIO(IsolateIO):
    """An already running docker or podman container (llama-server's ``tools_io_container``)."""

    def __init__(self, bin: str, container_id: str, cwd: str = "") -> None:
        super().__init__(cwd)
        self.bin = bin
        self.container_id = container_id

    def build_argv(self, inner: Sequence[str], needs_stdin: bool) -> list[str]:
        return container_exec_argv(self.bin, self.container_id, inner, needs_stdin)


class SshIO(IsolateIO):
    """A remote host over ssh. This is remoting, not isolation: the tools can do what the account can."""

    def __init__(self, target: str, cwd: str = "") -> None:
        super().__init__(cwd)
        self.target = target

    def build_argv(self, inner: Sequence[str], needs_stdin: bool) -> list[str]:
        return ssh_exec_argv(self.target, inner, needs_stdin)


@dataclass(frozen=True)
class ContainerRuntimeSpec:
    """``<engine>:<image>`` spawns a container (the tools runtime owns it); ``<engine>-container:<id>``
    attaches to a running one. The engine is docker or podman."""

    bin: str
    arg: str  # the image when spawning, the container id when attaching
    attach: bool

    ENGINES: ClassVar[tuple[str, ...]] = ("docker", "podman")

    @classmethod
    def parse(cls, spec: str) -> ContainerRuntimeSpec | None:
        for engine in cls.ENGINES:
            if spec.startswith(f"{engine}-container:"):
                return cls(engine, spec[len(engine) + len("-container:"):], True)
            if spec.startswith(f"{engine}:"):
                return cls(engine, spec[len(engine) + 1:], False)
        return None

    @staticmethod
    def is_valid_id(container_id: str) -> bool:
        """Starts with an ASCII letter or digit, then those and ``.-_``: an id starting with '-' would become
        an engine option (``--privileged``)."""
        return (bool(container_id) and container_id[0] in _ASCII_ALNUM
                and all(c in _CONTAINER_ID_CHARS for c in container_id))


def make_io(cwd: str, runtime: str) -> ToolsIO:
    """Where one call runs: the host for an empty ``runtime``, else the isolate it names
    (``docker-container:<id>``, ``podman-container:<id>``, ``ssh:<target>``). ValueError, with llama-server's
    message, for anything else: an unknown runtime never falls back to the host."""
    if not runtime:
        return HostIO(cwd)
    container = ContainerRuntimeSpec.parse(runtime)
    if container is not None:
        # spawning belongs to the runtime that owns the container; a call only attaches
        if not container.attach:
            raise ValueError(f"tool runtime must name a running container: {runtime}")
        if not ContainerRuntimeSpec.is_valid_id(container.arg):
            raise ValueError(f"invalid container id: {container.arg}")
        return ContainerIO(container.bin, container.arg, cwd)
    if runtime.startswith("ssh:"):
        target = runtime[len("ssh:"):]
        if not is_valid_ssh_target(target):
            raise ValueError(f"invalid ssh target: {target}")
        return SshIO(target, cwd)
    raise ValueError(f"unknown tool runtime: {runtime}")

