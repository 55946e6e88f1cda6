# -*- test-case-name: tests.test_openai -*-
"""Running an OpenAI stream to its end (chat and legacy completions alike)."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.errors import REPORTED
from llamatwist.api.http import ApiContext
from llamatwist.api.openai.protocol import envelope, usage
from llamatwist.api.pipeline import run_tasks
from llamatwist.api.streaming import SSEStream
from llamatwist.runtime import FinalResult, GenerationParams, PartialResult

__all__ = ["stream_oai"]


async def stream_oai(
    ctx: ApiContext,
    request: Request,
    sse: SSEStream,
    prompts: list[list[int]],
    params: GenerationParams,
    on_partial: Callable[[int, PartialResult], None],
    on_final: Callable[[int, FinalResult], None],
    tail: tuple[str, str, str, int, bool],
) -> bytes:
    """Run the tasks, then end an OpenAI stream: the usage chunk when asked
    (``tail`` = object, id, model, n_cmpl, include_usage), with the timings as llama-server's last chunk has
    them, and ``data: [DONE]``."""
    object_, cid, model, n_cmpl, include_usage = tail
    try:
        results = await run_tasks(ctx, request, prompts, params, on_partial=on_partial, on_final=on_final)
    except CancelledError:
        return b""
    except REPORTED as err:
        sse.send_error(err)
        return b""
    if include_usage:
        last = envelope(object_, cid, model, [])
        last["usage"] = usage(results, n_cmpl, bool(params.speculative and params.speculative.prediction))
        last["timings"] = results[-1].timings.to_json()
        sse.send(last)
    sse.send_raw(b"data: [DONE]\n\n")
    return b""
