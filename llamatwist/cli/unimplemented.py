# -*- test-case-name: tests.test_cli -*-
"""The llama-server flags that llamatwist knows but does not implement yet.

Collected from llama.cpp's common/arg.cpp (server-applicable flags). The CLI
refuses each one by name (flag or LLAMA_ARG_* variable) instead of silently
ignoring it; a flag moves to its group's table (common_flags.py,
sampling_flags.py, server_flags.py) when it is implemented.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["BOOL", "SWITCH", "UNIMPLEMENTED", "VALUE", "Unimplemented"]

SWITCH: Final = "switch"  # takes no value; its variable acts only when truthy
BOOL: Final = "bool"  # on/off pair; LLAMA_ARG_NO_<name> also switches it off
VALUE: Final = "value"  # takes one value


class Unimplemented(NamedTuple):
    names: str  # space-separated spellings, negative ones included
    env: str | None
    kind: str
    reason: str | None = None  # refused for good (not "not implemented yet"): why


_U = Unimplemented

_NO_SPEECH = ("the server has no speech route (text to speech is llama-tts's, not llama-server's), so it loads "
              "no vocoder")

_REMOVED = "the argument has been removed."  # llama-server's arg_removed() message, its advice follows

UNIMPLEMENTED: Final[tuple[Unimplemented, ...]] = (
    # older llama-server's text-to-speech flags (no longer in the pinned source)
    _U("-mv --model-vocoder", None, VALUE, _NO_SPEECH),
    _U("-hfv -hfrv --hf-repo-v", "LLAMA_ARG_HF_REPO_V", VALUE, _NO_SPEECH),
    _U("-hffv --hf-file-v", "LLAMA_ARG_HF_FILE_V", VALUE, _NO_SPEECH),
    _U("--tts-use-guide-tokens", None, SWITCH, _NO_SPEECH),
    # removed from llama-server (arg_removed): refused with its message
    _U("--spec-ngram-size-n", None, VALUE, f"{_REMOVED} use the respective --spec-ngram-*-size-n"),
    _U("--spec-ngram-size-m", None, VALUE, f"{_REMOVED} use the respective --spec-ngram-*-size-m"),
    _U("--spec-ngram-min-hits", None, VALUE, f"{_REMOVED} use the respective --spec-ngram-*-min-hits"),
)
