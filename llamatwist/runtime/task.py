# -*- test-case-name: tests.test_params -*-
"""Tasks sent to the decode thread and the results it sends back (pure data)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llamatwist.constrain import ConstraintFactory
from llamatwist.runtime.errors import TaskError
from llamatwist.runtime.speculative import SpecParams
from llamatwist.sampling_defaults import SamplerSettings

if TYPE_CHECKING:
    from llamatwist.engine.mtmd import MediaSpan

__all__ = [
    "CompletionTask",
    "EmbeddingResult",
    "ErrorResult",
    "FinalResult",
    "GenerationParams",
    "PartialResult",
    "PromptProgress",
    "PromptTokens",
    "Result",
    "SlotAction",
    "SlotActionResult",
    "Timings",
    "TokenProbs",
    "TopProb",
    "next_task_id",
]

_ids = itertools.count()


def next_task_id() -> int:
    return next(_ids)


@dataclass(frozen=True)
class GenerationParams:
    n_predict: int = -1
    n_keep: int = 0  # context shift keeps this many prompt tokens (-1 = all)
    n_discard: int = 0  # tokens a context shift drops (0 = half of what is not kept)
    n_cache_reuse: int = 0  # min chunk of the slot's old content reused by KV shifting (0 = off)
    stop: tuple[str, ...] = ()
    n_probs: int = 0
    cache_prompt: bool = True
    id_slot: int = -1
    stream: bool = False
    return_tokens: bool = False
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    # a compiled grammar/JSON-schema constraint (llamatwist.constrain.ConstraintFactory); one instance per slot
    constraint: ConstraintFactory | None = None
    grammar_text: str = ""  # the constraint's grammar, echoed in generation_settings
    # per-request LoRA scales as (adapter id, scale); ids not listed run at 0; None = the server-wide scales
    lora: tuple[tuple[int, float], ...] | None = None
    timings_per_token: bool = False  # every streamed partial carries timings, not only the last
    return_progress: bool = False  # stream prompt-processing progress events before the first token
    t_max_predict_ms: int = -1  # > 0: stop at a newline once generation took longer (llama-server's FIM use)
    t_max_prompt_ms: int = -1  # > 0: stop (no tokens) when prompt processing takes longer
    n_indent: int = 0  # > 0: stop before a line indented less than this (code completion)
    speculative: SpecParams | None = None  # None or type "none": no speculation
    sse_ping_interval: int = 30  # seconds of stream silence before an SSE ping (-1: none); the API layer's
    # control tokens written as their text in the output (llama-server's preserved_tokens)
    preserved_tokens: frozenset[int] = frozenset()
    # echoed in generation_settings: the constraint applies from a trigger (already in ``constraint``)
    grammar_lazy: bool = False
    grammar_triggers: tuple[tuple[int, str, int], ...] = ()  # (type, value, token id or -1)
    # echoed in generation_settings and /slots: the API layer's output-parser settings (chat_format, ...)
    parser_settings: tuple[tuple[str, str | bool], ...] = ()


@dataclass(frozen=True)
class TopProb:
    id: int
    token: str
    bytes: list[int]
    prob: float


@dataclass(frozen=True)
class TokenProbs:
    """One generated token with the top-n distribution it was drawn from."""

    id: int
    token: str
    bytes: list[int]
    prob: float
    top: list[TopProb]


@dataclass(frozen=True)
class Timings:
    cache_n: int
    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    draft_n: int = 0  # speculative decoding: shown when the task drafted (as llama-server)
    draft_n_accepted: int = 0

    def to_json(self) -> dict[str, float | int]:
        gen_steps = max(self.predicted_n - 1, 0)  # the first token comes with the prompt
        drafts = {"draft_n": self.draft_n, "draft_n_accepted": self.draft_n_accepted} if self.draft_n else {}
        return {
            "cache_n": self.cache_n,
            "prompt_n": self.prompt_n,
            "prompt_ms": self.prompt_ms,
            "prompt_per_token_ms": self.prompt_ms / self.prompt_n if self.prompt_n else 0.0,
            "prompt_per_second": 1e3 * self.prompt_n / self.prompt_ms if self.prompt_ms > 0 else 0.0,
            "predicted_n": self.predicted_n,
            "predicted_ms": self.predicted_ms,
            "predicted_per_token_ms": self.predicted_ms / gen_steps if gen_steps else 0.0,
            "predicted_per_second": 1e3 * gen_steps / self.predicted_ms if self.predicted_ms > 0 else 0.0,
            **drafts,
        }


@dataclass(frozen=True)
class PromptProgress:
    """How far a slot is through its prompt (llama-server's ``prompt_progress``)."""

    total: int
    cache: int
    processed: int
    time_ms: int

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "cache": self.cache, "processed": self.processed, "time_ms": self.time_ms}


@dataclass(frozen=True)
class PartialResult:
    task_id: int
    id_slot: int
    content: str
    tokens: list[int]
    n_decoded: int
    n_prompt_tokens: int
    probs: list[TokenProbs]
    timings: Timings | None = None  # with timings_per_token
    progress: PromptProgress | None = None  # a prompt-progress event (no content) with return_progress


@dataclass(frozen=True)
class FinalResult:
    task_id: int
    id_slot: int
    content: str  # whole text when not streaming, the unsent tail when streaming
    tokens: list[int]
    n_decoded: int
    n_prompt_tokens: int
    n_cached: int
    stop_type: str  # "eos" | "word" | "limit" | "none"
    stopping_word: str
    truncated: bool
    timings: Timings
    seed: int
    probs: list[TokenProbs]


@dataclass(frozen=True)
class ErrorResult:
    """The task (or slot action: ``task_id`` -1) failed; the API maps ``error`` to its answer."""

    task_id: int
    error: TaskError


@dataclass(frozen=True)
class EmbeddingResult:
    """Raw (unnormalized) vectors: one pooled vector, or one per token when
    the context's pooling is none.  For rank pooling, ``vectors[0]`` holds the
    classifier scores."""

    task_id: int
    vectors: list[list[float]]
    n_tokens: int


@dataclass(frozen=True)
class SlotActionResult:
    """The JSON body of a finished slot save/restore/erase."""

    body: dict[str, object]


Result = PartialResult | FinalResult | ErrorResult | EmbeddingResult | SlotActionResult


@dataclass(frozen=True)
class SlotAction:
    """Save, restore or erase one slot's KV cache (``path`` for save/restore)."""

    id_slot: int
    action: str  # "save" | "restore" | "erase"
    path: Path | None
    sink: Callable[[Result], None]


class PromptTokens(list[int]):
    """A tokenized prompt with media (libmtmd): each media position holds a placeholder id (negative, from the
    media's content hash), and ``media`` says where each chunk starts. Everything that handles token lists
    handles it; the decode thread evaluates the chunks."""

    def __init__(self, tokens: Iterable[int], media: tuple[MediaSpan, ...]) -> None:
        super().__init__(tokens)
        self.media = media


@dataclass
class CompletionTask:
    """A tokenized request.  ``sink`` is called on the reactor thread with each
    result; the last one is a FinalResult or an ErrorResult."""

    prompt: list[int]
    params: GenerationParams
    sink: Callable[[Result], None]
    id: int = field(default_factory=next_task_id)
    embed: bool = False  # compute embeddings (or rank scores) of the prompt instead of generating
    n_requeued: int = 0  # times its prompt found no room in a shared KV pool and went back to the queue

    @property
    def media(self) -> tuple[MediaSpan, ...]:
        """The prompt's media chunks, in order (none for a text prompt)."""
        return getattr(self.prompt, "media", ())

    def media_boundary(self, n: int) -> int:
        """``n`` moved back to the start of a media chunk it would end inside (a reusable prefix ends there)."""
        for span in self.media:
            if span.start < n < span.end:
                return span.start
        return n

    def extra_cells(self, n: int | None = None) -> int:
        """KV cells the prompt's first ``n`` positions (default: all) hold beyond one each: M-RoPE images."""
        return sum(s.chunk.extra_cells for s in self.media if n is None or s.end <= n)
