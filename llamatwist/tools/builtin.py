"""llama-server's seven built-in server tools (--tools): read_file, file_glob_search, grep_search,
exec_shell_command, write_file, edit_file and get_info.

Each call runs where its "runtime" says (io.py). Their limits, result fields and the text the model reads are
llama-server's. The client's parameters are read as llama-server reads them: a missing or mistyped required one
raises ``ToolParamError`` (llama-server throws), an optional one of the wrong type falls back to its default
(llama-server's ``json_value``).
"""

from __future__ import annotations

import base64
import logging
import math
import os
import posixpath
import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar

from llamatwist.tools.base import ServerTool, ToolParamError, ToolStream, function_definition
from llamatwist.tools.io import ListEntry, ListKind, ToolsIO, make_io, path_glob_match

__all__ = [
    "BUILTIN_TOOL_NAMES",
    "EditFileTool",
    "ExecShellCommandTool",
    "FileGlobSearchTool",
    "GetInfoTool",
    "GrepSearchTool",
    "ReadFileTool",
    "WriteFileTool",
    "build_tools",
]

log = logging.getLogger("llamatwist.tools")
_T = TypeVar("_T")

READ_FILE_MAX_SIZE = 16 * 1024
READ_FILE_MAX_SIZE_BASE64 = 32 * 1024 * 1024
FILE_SEARCH_MAX_RESULTS = 100
GREP_SEARCH_MAX_RESULTS = 100
EXEC_SHELL_COMMAND_MAX_OUTPUT_SIZE = 16 * 1024
EXEC_SHELL_COMMAND_MAX_TIMEOUT = 60  # seconds
EXEC_SHELL_COMMAND_DEFAULT_TIMEOUT = 10  # seconds
GET_INFO_MAX_OUTPUT = 4096
GET_INFO_TIMEOUT = 5  # seconds

_TRUNCATED = "[output truncated]"
_GREP_SPECIALS = frozenset("\\^$.|?*+()[]{}")
_C_SPACE = " \t\n\r\f\v"  # what C's isspace strips, not Unicode's wider set


# -- parameters --------------------------------------------------------------

def _required_str(params: dict[str, Any], key: str) -> str:
    if key not in params:
        raise ToolParamError(f"missing required parameter '{key}'")
    value = params[key]
    if not isinstance(value, str):
        raise ToolParamError(f"parameter '{key}' must be a string")
    return value


def _wrong_type(key: str, default: _T) -> _T:
    log.warning("Wrong type supplied for parameter '%s', using default value: %r", key, default)
    return default


def _opt_str(params: dict[str, Any], key: str, default: str) -> str:
    value = params.get(key)
    if value is None:
        return default
    return value if isinstance(value, str) else _wrong_type(key, default)


def _opt_bool(params: dict[str, Any], key: str, default: bool) -> bool:
    value = params.get(key)
    if value is None:
        return default
    return value if isinstance(value, bool) else _wrong_type(key, default)


def _opt_int(params: dict[str, Any], key: str, default: int) -> int:
    # a JSON integer reads as an integer from a boolean (0/1) or a number (truncated), not from a string
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, (bool, int)):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return _wrong_type(key, default)


def _check_params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise ToolParamError("params must be an object")
    return params


def _open_io(params: dict[str, Any]) -> ToolsIO:
    """The io of the call's "cwd" and "runtime"; a runtime that names no usable isolate is the client's error."""
    try:
        return make_io(_opt_str(params, "cwd", ""), _opt_str(params, "runtime", ""))
    except ValueError as exc:
        raise ToolParamError(str(exc)) from None


# -- helpers -----------------------------------------------------------------

def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")  # a lone surrogate from the JSON cannot be written as UTF-8


def _getlines(data: bytes) -> list[bytes]:
    """Lines as std::getline reads them: split on '\\n', no empty last line after a final '\\n'."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _c_strip(text: str) -> str:
    return text.strip(_C_SPACE)


def _glob_filter(entries: list[ListEntry], include: str, exclude: str) -> list[ListEntry]:
    return [e for e in entries
            if path_glob_match(include, e.rel) and not (exclude and path_glob_match(exclude, e.rel))]


def _exit_tail(exit_code: int, timed_out: bool) -> str:
    return f"\n[exit code: {exit_code}]" + (" [exit due to timed out]" if timed_out else "")


def _object_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


def _prop(kind: str, description: str) -> dict[str, Any]:
    return {"type": kind, "description": description}


# -- read_file ---------------------------------------------------------------

class ReadFileTool(ServerTool):
    name = "read_file"
    display_name = "Read file"
    uses_cwd = True

    def definition(self) -> dict[str, Any]:
        return function_definition(
            self.name,
            "Read the contents of a file. Optionally specify a 1-based line range. "
            "If append_loc is true, each line is prefixed with its line number (e.g. \"1\u2192...\").",
            _object_schema({
                "path": _prop("string", "Path to the file"),
                "start_line": _prop("integer", "First line to read, 1-based (default: 1)"),
                "end_line": _prop("integer", "Last line to read, 1-based inclusive (default: end of file)"),
                "append_loc": _prop("boolean", "Prefix each line with its line number"),
            }, ["path"]))

    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        params = _check_params(params)
        path = _required_str(params, "path")
        start_line = _opt_int(params, "start_line", 1)
        end_line = _opt_int(params, "end_line", -1)  # -1: to the end
        append_loc = _opt_bool(params, "append_loc", False)
        # from the x-resp-type header: the model cannot ask for it
        as_base64 = _opt_str(params, "resp_type", "") == "base64"

        io = _open_io(params)
        size = io.file_size(path)
        if size is None:
            return {"error": f"cannot stat file: {path}"}

        if as_base64:
            if size > READ_FILE_MAX_SIZE_BASE64:
                return {"error": f"file too large ({size} bytes, max {READ_FILE_MAX_SIZE_BASE64})"}
            content = io.read_file(path)
            if content is None:
                return {"error": f"failed to open file: {path}"}
            return {"base64": base64.b64encode(content).decode("ascii"), "size_bytes": len(content)}

        if size > READ_FILE_MAX_SIZE and end_line == -1:
            return {"error": f"file too large ({size} bytes, max {READ_FILE_MAX_SIZE}). "
                             "Use start_line/end_line to read a portion."}

        content = io.read_file(path)
        if content is None:
            return {"error": f"failed to open file: {path}"}

        # the cap counts bytes, as llama-server's does: work in bytes, decode once at the end
        result = bytearray()
        for lineno, line in enumerate(_getlines(content), 1):
            if lineno < start_line:
                continue
            if end_line != -1 and lineno > end_line:
                break
            out_line = (f"{lineno}\u2192".encode() if append_loc else b"") + line + b"\n"
            if len(result) + len(out_line) > READ_FILE_MAX_SIZE:
                result += _TRUNCATED.encode()
                break
            result += out_line
        return {"plain_text_response": result.decode("utf-8", "replace")}


# -- file_glob_search --------------------------------------------------------

_LIST_KINDS = {"file": ListKind.FILES, "dir": ListKind.DIRS, "all": ListKind.ALL}


class FileGlobSearchTool(ServerTool):
    name = "file_glob_search"
    display_name = "File search"
    uses_cwd = True

    def definition(self) -> dict[str, Any]:
        limit_doc = (f"Maximum number of results to return, capped at {FILE_SEARCH_MAX_RESULTS} "
                     f"(default {FILE_SEARCH_MAX_RESULTS})")
        return function_definition(
            self.name,
            "Recursively search for files matching a glob pattern under a directory. "
            "Automatically skips files ignored by .gitignore (when the directory is inside a git repo) "
            "and common junk directories (.git, node_modules, build, dist, etc.) otherwise. "
            "A pattern with no '/' (e.g. \"*.cpp\") matches the file's basename at any depth. "
            "A pattern containing '/' matches the full relative path; unless already anchored with "
            "\"**/\" or a leading '/', it is automatically prefixed with \"**/\". "
            "Use type=\"dir\" or \"all\" to also list directories; directory entries are suffixed with '/' in "
            "the output. "
            "Note: directory listings do not apply .gitignore filtering.",
            _object_schema({
                "path": _prop("string", "Base directory to search in"),
                "include": _prop("string", "Glob pattern for files to include (e.g. \"*.cpp\" or "
                                           "\"src/**/*.cpp\"). Default: **"),
                "exclude": _prop("string", "Glob pattern for files to exclude"),
                "type": _prop("string", "Entry type to return: \"file\" (default), \"dir\" or \"all\""),
                "max_depth": _prop("integer", "Maximum depth to descend into subdirectories (default: 0 = "
                                              "unlimited; 1 = direct children only)"),
                "limit": _prop("integer", limit_doc),
            }, ["path"]))

    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        params = _check_params(params)
        io = _open_io(params)
        path = _required_str(params, "path")

        base = io.resolve(path)
        include = _opt_str(params, "include", "**")
        exclude = _opt_str(params, "exclude", "")
        entry_type = _opt_str(params, "type", "file")
        max_depth = max(0, _opt_int(params, "max_depth", 0))
        limit_req = _opt_int(params, "limit", FILE_SEARCH_MAX_RESULTS)
        if limit_req < 1:
            return {"error": f"invalid limit: {limit_req} (expected 1 or more)"}
        limit = min(limit_req, FILE_SEARCH_MAX_RESULTS)

        kind = _LIST_KINDS.get(entry_type)
        if kind is None:
            return {"error": f"invalid type: {entry_type} (expected \"file\", \"dir\" or \"all\")"}

        listing = io.list_entries(base, max_depth, kind)
        if listing.err:
            return {"error": f"{listing.err}: {path}"}

        matches = _glob_filter(listing.entries, include, exclude)
        shown = matches[:limit]
        text = "".join(e.rel + ("/" if e.is_dir else "") + "\n" for e in shown)
        text += f"\n---\nTotal matches: {len(matches)}\n"
        if len(matches) > len(shown):
            text += (f"[{len(shown)} results limit reached ({len(matches)} total matches). "
                     "Refine the glob pattern to narrow the search.]\n")
        if listing.truncated:
            text += "[results truncated: time budget or unreadable directory]\n"

        # `base` is absolute, so a client (the web UI's picker) can join the entries to it; `entries` is the
        # same data as `plain_text_response`, for a UI that should not parse the model's text
        return {
            "plain_text_response": text,
            "entries": [{"path": e.rel, "type": "dir" if e.is_dir else "file"} for e in shown],
            "base": base,
        }


# -- grep_search -------------------------------------------------------------

class GrepSearchTool(ServerTool):
    name = "grep_search"
    display_name = "Grep search"
    uses_cwd = True

    def definition(self) -> dict[str, Any]:
        return function_definition(
            self.name,
            "Search for a pattern in files under a path. Returns matching lines with file paths "
            "(and, unless searching a single file, paths relative to the given directory). "
            "Automatically skips files ignored by .gitignore (when the directory is inside a git repo) "
            "and common junk directories (.git, node_modules, build, dist, etc.) otherwise. "
            "include/exclude: a pattern with no '/' matches the basename at any depth; a pattern "
            "containing '/' matches the full relative path (auto-anchored with \"**/\" unless already anchored).",
            _object_schema({
                "path": _prop("string", "File or directory to search in"),
                "pattern": _prop("string", "Pattern to search for (regular expression unless literal is true)"),
                "include": _prop("string", "Glob pattern to filter files (default: **)"),
                "exclude": _prop("string", "Glob pattern to exclude files"),
                "return_line_numbers": _prop("boolean", "If true, include line numbers in results"),
                "literal": _prop("boolean", "Treat pattern as a literal string instead of a regular expression "
                                            "(default: false)"),
                "ignore_case": _prop("boolean", "Case-insensitive search (default: false)"),
                "context_lines": _prop("integer", "Number of lines of context to show before and after each match "
                                                  "(default: 0)"),
            }, ["path", "pattern"]))

    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        params = _check_params(params)
        path = _required_str(params, "path")
        pattern_str = _required_str(params, "pattern")
        include = _opt_str(params, "include", "**")
        exclude = _opt_str(params, "exclude", "")
        show_lineno = _opt_bool(params, "return_line_numbers", False)
        literal = _opt_bool(params, "literal", False)
        ignore_case = _opt_bool(params, "ignore_case", False)
        ctx_lines = max(0, _opt_int(params, "context_lines", 0))

        if literal:
            pattern_str = "".join("\\" + c if c in _GREP_SPECIALS else c for c in pattern_str)
        try:
            regex = re.compile(pattern_str, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            return {"error": f"invalid regex: {exc}"}

        io = _open_io(params)

        # (path to read, path to show)
        files: list[tuple[str, str]] = []
        abs_path = io.resolve(path)
        if io.is_regular_file(abs_path):
            files.append((abs_path, path))
        elif io.is_directory(abs_path):
            listing = io.list_entries(abs_path, 0, ListKind.FILES)
            if listing.err:
                return {"error": f"{listing.err}: {path}"}
            # posixpath: the host is POSIX here, and an isolate always is
            files += [(posixpath.join(abs_path, e.rel), e.rel) for e in _glob_filter(listing.entries, include, exclude)]
        else:
            return {"error": f"path does not exist: {path}"}

        out: list[str] = []
        total = 0
        limit_reached = False
        show_num = show_lineno or ctx_lines > 0
        for file_path, display in files:
            if limit_reached:
                break
            content = io.read_file(file_path)
            if content is None:
                continue
            lines = [line.decode("utf-8", "replace") for line in _getlines(content)]
            for i, line in enumerate(lines):
                if total >= GREP_SEARCH_MAX_RESULTS:
                    limit_reached = True
                    break
                if not regex.search(line):
                    continue
                for j in range(max(0, i - ctx_lines), min(len(lines) - 1, i + ctx_lines) + 1):
                    sep = ":" if j == i else "-"
                    out.append(f"{display}{sep}{f'{j + 1}{sep}' if show_num else ''}{lines[j]}\n")
                if ctx_lines > 0:
                    out.append("--\n")
                total += 1

        out.append(f"\n---\nTotal matches: {total}\n")
        if limit_reached:
            out.append(f"[{GREP_SEARCH_MAX_RESULTS} matches limit reached. "
                       "Narrow the path/pattern/include to see more.]\n")
        return {"plain_text_response": "".join(out)}


# -- exec_shell_command ------------------------------------------------------

class ExecShellCommandTool(ServerTool):
    name = "exec_shell_command"
    display_name = "Execute shell command"
    uses_cwd = True
    permission_write = True
    support_stream = True

    def definition(self) -> dict[str, Any]:
        return function_definition(
            self.name,
            "Execute a shell command and return its output (stdout and stderr combined).",
            _object_schema({
                "command": _prop("string", "Shell command to execute"),
                "timeout": _prop("integer", f"Timeout in seconds (default {EXEC_SHELL_COMMAND_DEFAULT_TIMEOUT}, "
                                            f"max {EXEC_SHELL_COMMAND_MAX_TIMEOUT})"),
                "max_output_size": _prop("integer", "Maximum output size in bytes "
                                                    f"(default {EXEC_SHELL_COMMAND_MAX_OUTPUT_SIZE})"),
            }, ["command"]))

    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        params = _check_params(params)
        command = _required_str(params, "command")
        timeout = min(_opt_int(params, "timeout", EXEC_SHELL_COMMAND_DEFAULT_TIMEOUT), EXEC_SHELL_COMMAND_MAX_TIMEOUT)
        max_output = _opt_int(params, "max_output_size", EXEC_SHELL_COMMAND_MAX_OUTPUT_SIZE)
        if max_output < 0:
            max_output = EXEC_SHELL_COMMAND_MAX_OUTPUT_SIZE  # llama-server reads it as unsigned: huge, then capped
        max_output = min(max_output, EXEC_SHELL_COMMAND_MAX_OUTPUT_SIZE)

        args = ["sh", "-c", command]
        io = _open_io(params)

        if stream is not None:
            live = stream

            def on_chunk(chunk: str) -> bool:
                live.push(chunk)
                return live.alive()

            # alive is also polled while the command is silent: a gone client stops it within 100 ms
            res = io.run(args, max_output, timeout, on_chunk, alive=live.alive)
            if live.alive():
                live.push(_exit_tail(res.exit_code, res.timed_out))
            return {}

        res = io.run(args, max_output, timeout)
        return {"plain_text_response": res.text + _exit_tail(res.exit_code, res.timed_out)}


# -- write_file --------------------------------------------------------------

class WriteFileTool(ServerTool):
    name = "write_file"
    display_name = "Write file"
    uses_cwd = True
    permission_write = True

    def definition(self) -> dict[str, Any]:
        return function_definition(
            self.name,
            "Write content to a file, creating it (including parent directories) if it does not exist. "
            "May use with edit_file for more complex edits.",
            _object_schema({
                "path": _prop("string", "Path of the file to write"),
                "content": _prop("string", "Content to write"),
            }, ["path", "content"]))

    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        params = _check_params(params)
        path = _required_str(params, "path")
        content = _utf8(_required_str(params, "content"))

        io = _open_io(params)
        if not io.write_file(path, content):
            return {"error": f"failed to write file: {path}"}
        return {"result": "file written successfully", "path": path, "bytes": len(content)}


# -- edit_file ---------------------------------------------------------------

def _fuzzy_table() -> tuple[tuple[bytes, bytes], ...]:
    table: list[tuple[bytes, bytes]] = []
    table += [(b"\xe2\x80" + bytes([b]), b"'") for b in (0x98, 0x99, 0x9A, 0x9B)]  # smart single quotes
    table += [(b"\xe2\x80" + bytes([b]), b'"') for b in (0x9C, 0x9D, 0x9E, 0x9F)]  # smart double quotes
    table += [(b"\xe2\x80" + bytes([b]), b"-") for b in range(0x90, 0x96)]  # dashes
    table.append((b"\xe2\x88\x92", b"-"))  # minus sign
    table.append((b"\xc2\xa0", b" "))  # no-break space
    table += [(b"\xe2\x80" + bytes([b]), b" ") for b in range(0x82, 0x8B)]  # en/em/thin/... spaces
    table.append((b"\xe2\x80\xaf", b" "))  # narrow no-break space
    table.append((b"\xe2\x81\x9f", b" "))  # medium mathematical space
    table.append((b"\xe3\x80\x80", b" "))  # ideographic space
    return tuple(table)


_FUZZY_TABLE = _fuzzy_table()


def _normalize_line(line: bytes) -> bytes:
    # trailing whitespace first, then the typographic characters a model tends to write as ASCII
    s = line.rstrip(b" \t\r")
    for src, dst in _FUZZY_TABLE:
        s = s.replace(src, dst)
    return s


def _normalize(content: bytes) -> bytes:
    """Per line, so line count and positions survive."""
    return b"\n".join(_normalize_line(line) for line in content.split(b"\n"))


def _lines_with_endings(content: bytes) -> list[bytes]:
    lines: list[bytes] = []
    start = 0
    while start < len(content):
        nl = content.find(b"\n", start)
        if nl < 0:
            lines.append(content[start:])
            break
        lines.append(content[start:nl + 1])
        start = nl + 1
    return lines


def _line_spans(content: bytes) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    offset = 0
    for line in _lines_with_endings(content):
        spans.append((offset, offset + len(line)))
        offset += len(line)
    return spans


def _count_occurrences(content: bytes, needle: bytes) -> int:
    return content.count(needle) if needle else 0  # non-overlapping; an empty needle counts nothing


@dataclass
class _Match:
    edit_index: int
    index: int  # offset in the base content (the original, or its fuzzy normalisation)
    length: int
    new_text: bytes


def _apply(content: bytes, matches: list[_Match], offset: int) -> bytes:
    """``matches`` ascending and disjoint; ``offset`` is where ``content`` starts in the base content."""
    for m in reversed(matches):
        at = m.index - offset
        content = content[:at] + m.new_text + content[at + m.length:]
    return content


def _line_range(spans: list[tuple[int, int]], index: int, length: int) -> tuple[int, int] | None:
    """The lines [start, end) a replacement touches."""
    end_offset = index + length
    start = next((i for i, (s, e) in enumerate(spans) if s <= index < e), None)
    if start is None:
        return None
    end = start
    while end < len(spans) and spans[end][1] < end_offset:
        end += 1
    if end >= len(spans):
        return None
    return start, end + 1


def _apply_preserving_unchanged_lines(original: bytes, base: bytes, matches: list[_Match]) -> bytes:
    """Like ``_apply`` on the normalised ``base``, but the lines no edit touches come from ``original``, so the
    fuzzy normalisation does not leak into the rest of the file."""
    spans = _line_spans(base)
    if not spans:
        return _apply(base, matches, 0)  # an empty file: no lines to preserve
    original_lines = _lines_with_endings(original)

    groups: list[tuple[int, int, list[_Match]]] = []
    for m in matches:
        start, end = _line_range(spans, m.index, m.length) or (0, 1)
        if groups and start < groups[-1][1]:
            g_start, g_end, reps = groups[-1]
            groups[-1] = (g_start, max(g_end, end), [*reps, m])
        else:
            groups.append((start, end, [m]))

    out = bytearray()
    line = 0
    for g_start, g_end, reps in groups:
        out += b"".join(original_lines[line:g_start])
        begin, finish = spans[g_start][0], spans[g_end - 1][1]
        out += _apply(base[begin:finish], reps, begin)
        line = g_end
    out += b"".join(original_lines[line:])
    return bytes(out)


class EditFileTool(ServerTool):
    name = "edit_file"
    display_name = "Edit file"
    uses_cwd = True
    permission_write = True

    def definition(self) -> dict[str, Any]:
        edit_item = _object_schema({
            "old_text": _prop("string", "Exact text to find; must be unique in the file and must not overlap with "
                                        "other edits"),
            "new_text": _prop("string", "Text to replace old_text with"),
        }, ["old_text", "new_text"])
        return function_definition(
            self.name,
            "Edit a file using exact text replacement. Each edits[].old_text must be unique in the file "
            "and is matched against the original content, not incrementally. Merge nearby changes into "
            "one edit instead of overlapping edits. Use write_file to replace the whole file.",
            _object_schema({
                "path": _prop("string", "Path to the file to edit"),
                "edits": {"type": "array", "description": "One or more exact text replacements to apply",
                          "items": edit_item},
            }, ["path", "edits"]))

    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        params = _check_params(params)
        path = _required_str(params, "path")
        if "edits" not in params:
            raise ToolParamError("missing required parameter 'edits'")
        edits_json = params["edits"]
        if not isinstance(edits_json, list) or not edits_json:
            return {"error": '"edits" must be a non-empty array'}

        edits: list[tuple[bytes, bytes]] = []
        for i, e in enumerate(edits_json):
            if not isinstance(e, dict):
                raise ToolParamError(f"edits[{i}] must be an object with old_text and new_text")
            old_text = _utf8(_required_str(e, "old_text"))
            new_text = _utf8(_required_str(e, "new_text"))
            if not old_text:
                return {"error": f"edits[{i}].old_text must not be empty"}
            edits.append((old_text, new_text))

        io = _open_io(params)
        original = io.read_file(path)
        if original is None:
            return {"error": f"failed to open file: {path}"}

        # an old_text found only once whitespace and typography are normalised switches every edit to the
        # normalised content
        normalized = _normalize(original)
        any_fuzzy = False
        for i, (old_text, _) in enumerate(edits):
            if old_text in original:
                continue
            if _normalize(old_text) not in normalized:
                return {"error": f"could not find edits[{i}].old_text in {path}, "
                                 "it must match the file's current content exactly"}
            any_fuzzy = True
        base = normalized if any_fuzzy else original

        matches: list[_Match] = []
        for i, (old_text, new_text) in enumerate(edits):
            # uniqueness is judged on normalised text, so a duplicate differing only in whitespace still counts
            occurrences = _count_occurrences(normalized, _normalize(old_text))
            if occurrences > 1:
                return {"error": f"found {occurrences} occurrences of edits[{i}].old_text in {path}, "
                                 "it must be unique"}
            needle = _normalize(old_text) if any_fuzzy else old_text
            matches.append(_Match(i, base.find(needle), len(needle), new_text))

        matches.sort(key=lambda m: m.index)
        for prev, cur in pairwise(matches):
            if prev.index + prev.length > cur.index:
                return {"error": f"edits[{prev.edit_index}] and edits[{cur.edit_index}] overlap in {path}; "
                                 "merge them into one edit or target disjoint regions"}

        new_content = (_apply_preserving_unchanged_lines(original, base, matches) if any_fuzzy
                       else _apply(base, matches, 0))
        if new_content == original:
            return {"error": "no changes made: the replacement(s) produced identical content"}
        if not io.write_file(path, new_content):
            return {"error": f"failed to write file: {path}"}
        return {"result": "file edited successfully", "path": path, "edits_applied": len(matches)}


# -- get_info ----------------------------------------------------------------

class GetInfoTool(ServerTool):
    name = "get_info"
    display_name = "Get Runtime Info"
    uses_cwd = True

    def definition(self) -> dict[str, Any]:
        return function_definition(
            self.name,
            "Returns runtime info: the OS name/version and the current working directory",
            {"type": "object", "properties": {}})

    def invoke(self, params: dict[str, Any], stream: ToolStream | None = None) -> dict[str, Any]:
        params = _check_params(params)
        io = _open_io(params)

        res = io.run(["uname", "-a"], GET_INFO_MAX_OUTPUT, GET_INFO_TIMEOUT)
        # a failed spawn or a timeout leaves a diagnostic in the output, which is no OS name
        os_info = _c_strip(res.text) if res.exit_code == 0 and not res.timed_out else "unknown"

        cwd = _opt_str(params, "cwd", "")
        if not cwd:
            if not _opt_str(params, "runtime", ""):
                try:
                    cwd = os.getcwd()
                except OSError:
                    cwd = ""
            else:
                pwd = io.run(["pwd"], GET_INFO_MAX_OUTPUT, GET_INFO_TIMEOUT)
                cwd = _c_strip(pwd.text) if pwd.exit_code == 0 and not pwd.timed_out else "unknown"
        return {"os": os_info, "cwd": cwd}


# -- the set -----------------------------------------------------------------

# llama-server keeps this set minimal on purpose: file i/o and a shell, nothing higher level
_TOOL_CLASSES: tuple[type[ServerTool], ...] = (
    ReadFileTool, FileGlobSearchTool, GrepSearchTool, ExecShellCommandTool, WriteFileTool, EditFileTool, GetInfoTool,
)

BUILTIN_TOOL_NAMES: tuple[str, ...] = tuple(cls.name for cls in _TOOL_CLASSES)


def build_tools() -> list[ServerTool]:
    """New instances of the built-in tools, in llama-server's order."""
    return [cls() for cls in _TOOL_CLASSES]
