# -*- test-case-name: tests.test_flags_cli -*-
"""``--completion-bash``: a bash completion script for llamatwist's flags, as llama-server prints its own."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["completion_script"]

# value flags completed with file names of one extension (llama-server's list)
_FILE_FLAGS = (("--model|-m", "*.gguf"), ("--grammar-file", "*.gbnf"), ("--chat-template-file", "*.jinja"))


def completion_script(names: Iterable[str], command: str = "llamatwist") -> str:
    """The script: the flag names offered for a word, file names after -m and the like."""
    lines = [
        "_llamatwist_completions() {",
        "    local cur prev opts",
        "    COMPREPLY=()",
        '    cur="${COMP_WORDS[COMP_CWORD]}"',
        '    prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "",
        f'    opts="{" ".join(names)}"',
        "",
        '    case "$prev" in',
    ]
    for flags, pattern in _FILE_FLAGS:
        lines += [
            f"        {flags})",
            f"            COMPREPLY=( $(compgen -f -X '!{pattern}' -- \"$cur\") $(compgen -d -- \"$cur\") )",
            "            return 0",
            "            ;;",
        ]
    lines += [
        "        *)",
        '            COMPREPLY=( $(compgen -W "${opts}" -- "$cur") )',
        "            return 0",
        "            ;;",
        "    esac",
        "}",
        "",
        f"complete -F _llamatwist_completions {command}",
        "",
    ]
    return "\n".join(lines)
