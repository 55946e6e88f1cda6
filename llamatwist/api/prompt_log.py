# -*- test-case-name: tests.test_prompt_log -*-
"""--log-prompts-dir: each generation request's prompt written to a file of its own, as llama-server does.

llama-server writes the prompt its completion handler receives, before tokenizing it: the request's
``prompt`` for /completion and /v1/completions, the rendered template for the chat routes (chat
completions, responses, Anthropic messages), the assembled token ids for /infill. A string is written as
it is, anything else as JSON indented by 2 (nlohmann's dump(2): keys sorted, UTF-8 kept). The file is
``<monotonic clock in ms, 12 digits>.txt`` (ggml_time_ms), so two requests in the same millisecond share
one file, the later one's. A file that cannot be written is an error in the log, never a failed request.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module at start-up: no Twisted there
    from llamatwist.api.http import ApiContext

__all__ = ["create_prompt_log_dir", "log_prompt", "prompt_text"]

log = logging.getLogger(__name__)


def create_prompt_log_dir(path: str) -> str | None:
    """Create the directory (and its parents); the warning to print when that fails, else None."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return f"warning: failed to create prompts-log-dir '{path}': {exc.strerror or exc}"
    return None


def prompt_text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, indent=2, sort_keys=True, ensure_ascii=False)


def _write(directory: str, prompt: Any) -> None:
    path = os.path.join(directory, f"{time.monotonic_ns() // 1_000_000:012d}.txt")
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(prompt_text(prompt))
    except OSError:
        log.error("failed to create %s", path)


async def log_prompt(ctx: ApiContext, prompt: Any) -> None:
    """Write ``prompt`` when --log-prompts-dir is set (in the thread pool: file I/O stays off the reactor)."""
    if ctx.config.prompts_log_dir:
        await ctx.engine.in_pool(_write, ctx.config.prompts_log_dir, prompt)
