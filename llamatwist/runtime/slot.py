# -*- test-case-name: tests.test_server -*-
"""One slot: a KV-cache sequence and the task (if any) generating into it.

Owned by the decode thread; the reactor only ever sees :class:`SlotInfo`
snapshots.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llamatwist.constrain import Constraint
from llamatwist.runtime.task import CompletionTask, GenerationParams, TokenProbs
from llamatwist.runtime.text import TextStream

if TYPE_CHECKING:
    from llamatwist.engine.sampling import Sampler  # SlotInfo (public) imports without the native library
    from llamatwist.runtime.prefix_cache import PrefixCache

__all__ = ["ROOM_HEADROOM", "Slot", "SlotInfo", "SlotState", "free_cells", "room_for", "untracked_cells"]

log = logging.getLogger(__name__)

# A task waiting for room in a shared KV pool goes on when its cells fit with 1/this of the pool to spare.
ROOM_HEADROOM = 8


class SlotState(enum.Enum):
    IDLE = "idle"
    PROMPT = "prompt"  # prompt tokens still being fed
    GENERATING = "generating"


@dataclass(frozen=True)
class SlotInfo:
    """Read-only view of a slot for /slots and /metrics: its current task, else the last one it ran."""

    id: int
    n_ctx: int
    is_processing: bool
    id_task: int  # -1: the slot never ran a task
    n_prompt_tokens: int  # the cells the slot's sequence holds (llama-server's slot.prompt.n_tokens())
    # the running task's prompt: tokens reused from the prefix cache vs. evaluated (0 once idle)
    n_prompt_tokens_cache: int
    n_prompt_tokens_processed: int
    n_decoded: int
    params: GenerationParams | None = None
    seed: int = 0
    prompt: Sequence[int] = ()
    generated: str = ""
    has_next_token: bool = False
    n_remain: int = -1


@dataclass
class Slot:
    id: int
    n_ctx: int
    state: SlotState = SlotState.IDLE
    task: CompletionTask | None = None
    # tokens whose KV entries are in this slot's sequence, in order
    cache: list[int] = field(default_factory=list)
    last_used: float = 0.0
    # per-task state (reset by start())
    sampler: Sampler | None = None
    constraint: Constraint | None = None
    n_fed: int = 0  # prompt tokens in KV
    n_cached: int = 0  # prompt tokens reused from an earlier task
    i_batch: int = -1  # index of this slot's logits in the current batch
    pending_token: int = -1  # sampled, not yet decoded
    generated: list[int] = field(default_factory=list)
    text: TextStream = field(default_factory=TextStream)
    probs: list[TokenProbs] = field(default_factory=list)
    t_start: float = 0.0
    t_prompt_done: float = 0.0
    t_last: float = 0.0
    truncated: bool = False  # the context ran out (or was shifted)
    adapter_set: tuple[float, ...] = ()  # the LoRA scales (by adapter id) this slot's task runs with
    draft: list[int] = field(default_factory=list)  # draft tokens in the current batch, after pending_token
    n_draft: int = 0  # speculative decoding: draft tokens proposed / accepted for this task
    n_draft_accepted: int = 0
    n_draft_steps: int = 0  # its verifications: the mean acceptance length is 1 + accepted / steps
    spec_budget: int = 0  # the next draft's length, adapted to how the last ones fared
    # memory that cannot be cut part-way (recurrent state): (n_tokens, state) of the sequence before the batch
    # its draft is in, restored when a draft token is rejected; the accepted tokens are then decoded again
    spec_state: tuple[int, bytes] | None = None
    replay: list[int] = field(default_factory=list)  # accepted, rolled back: fed before pending_token
    synth_rng: random.Random | None = None  # --spec-synth-*: draws which draft tokens are taken
    # a generation stopped for room in a shared KV pool: the tokens its sequence held, decoded again as a prompt
    # (no output) before its pending token once it fits; suspended until then, holding no cells
    resume: list[int] | None = None
    resume_n_fed: int = 0  # its prompt's n_fed, back once the resume is decoded
    suspended: bool = False
    last_task: CompletionTask | None = None  # shown by /slots once the task ended, as llama-server
    last_seed: int = 0

    @property
    def busy(self) -> bool:
        return self.state is not SlotState.IDLE

    @property
    def n_cells(self) -> int:
        """KV cells its sequence holds, and will once its replay is decoded."""
        return self.cells(len(self.cache)) + len(self.replay)

    @property
    def source(self) -> Sequence[int]:
        """The tokens a slot in the PROMPT state decodes: its task's prompt, or a suspended generation's tokens."""
        if self.resume is not None:
            return self.resume
        assert self.task is not None
        return self.task.prompt

    def cells_when_fed(self) -> int:
        """The KV cells a busy slot holds once its prompt (or resume) is in: what it will hold the next steps."""
        if self.state is SlotState.PROMPT:
            return self.cells(len(self.source)) + (self.resume is not None)
        return self.n_cells

    def suspend(self) -> None:
        """Stop a generation (or its resume) whose sequence was emptied to give other slots room; it goes on, from
        the same pending token, once its tokens are decoded again."""
        if self.resume is None:
            self.resume = [*self.cache, *self.replay]
            self.resume_n_fed = self.n_fed
        self.state = SlotState.PROMPT
        self.suspended = True
        self.cache = []
        self.replay = []
        self.draft = []
        self.spec_state = None
        self.n_fed = 0
        self.i_batch = -1

    def resumed(self) -> None:
        """The resume is decoded: generating again."""
        self.state = SlotState.GENERATING
        self.resume = None
        self.n_fed = self.resume_n_fed

    def cells(self, n: int) -> int:
        """The KV cells (and tokens, as llama-server counts them) of the task's first ``n`` prompt positions:
        an M-RoPE image holds more cells than positions."""
        task = self.task or self.last_task
        return n + (task.extra_cells(n) if task is not None else 0)

    def start(self, task: CompletionTask, sampler: Sampler | None, n_reuse: int) -> None:
        self.task = task
        self.sampler = sampler
        factory = task.params.constraint
        self.constraint = factory.new() if factory is not None else None
        self.state = SlotState.PROMPT
        self.cache[:] = task.prompt[:n_reuse]  # the reused prefix may come from another sequence
        self.n_fed = n_reuse
        self.n_cached = n_reuse
        self.i_batch = -1
        self.pending_token = -1
        self.generated = []
        self.text = TextStream(stops=task.params.stop)
        self.probs = []
        self.t_start = time.perf_counter()
        self.t_prompt_done = 0.0
        self.truncated = False
        self.n_draft = self.n_draft_accepted = self.n_draft_steps = 0
        self.spec_state = None
        self.replay = []
        self.resume = None
        self.suspended = False
        spec = task.params.speculative
        self.spec_budget = spec.limit if spec is not None else 0
        # seeded with the request's seed (libllama's draw when it gave none), as llama-server's
        self.synth_rng = (random.Random(sampler.seed) if spec is not None and spec.synth_probs and sampler is not None
                          else None)

    def release(self) -> None:
        self.state = SlotState.IDLE
        self.draft = []
        self.replay = []
        self.resume = None
        self.suspended = False
        self.last_task = self.task
        self.last_seed = self.sampler.seed if self.sampler is not None else 0
        self.task = None
        self.sampler = None
        self.constraint = None
        self.i_batch = -1
        self.pending_token = -1
        self.last_used = time.monotonic()

    def info(self) -> SlotInfo:
        task = self.task or self.last_task
        if task is None:
            return SlotInfo(self.id, self.n_ctx, False, -1, 0, 0, 0, 0)
        n_predict = task.params.n_predict
        busy = self.busy  # an idle slot's counts start again, as llama-server's reset does; its cells stay
        return SlotInfo(
            id=self.id,
            n_ctx=self.n_ctx,
            is_processing=busy,
            id_task=task.id,
            n_prompt_tokens=self.cells(len(self.cache)),
            n_prompt_tokens_cache=self.cells(self.n_cached) if busy else 0,
            n_prompt_tokens_processed=self.cells(self.n_fed) - self.cells(self.n_cached) if busy else 0,
            n_decoded=len(self.generated) if busy else 0,
            params=task.params,
            seed=self.sampler.seed if self.sampler is not None else self.last_seed,
            prompt=task.prompt,
            generated=self.text.text,
            has_next_token=busy,
            n_remain=-1 if n_predict < 0 or not busy else max(n_predict - len(self.generated), 0),
        )


def untracked_cells(slots: Iterable[Slot], tracked: Callable[[int], int]) -> int:
    """KV cells the slots' sequences hold beyond the ``tracked(slot id)`` tokens the prefix cache accounts for:
    tokens not registered yet, draft tokens in the batch, and the extra cells of M-RoPE images."""
    return sum(s.cells(len(s.cache)) - tracked(s.id) + len(s.draft) for s in slots)


def room_for(slots: Iterable[Slot], n_cells: int, pool: int) -> bool:
    """Whether a task that found no room in a KV ``pool`` shared by every slot may try again with its ``n_cells``:
    when they fit beside what the busy slots that are not suspended hold and their prompts will (idle slots and
    parked prefixes give theirs back when asked), with 1/`ROOM_HEADROOM` of the pool to spare for the tokens the
    generations add meanwhile (else it finds no room again at once); always when nothing is held."""
    held = sum(s.cells_when_fed() for s in slots if s.busy and not s.suspended)
    return held == 0 or held + n_cells + pool // ROOM_HEADROOM < pool


def free_cells(cache: PrefixCache, slots: Iterable[Slot], unified: bool) -> tuple[bool, int]:
    """Give back KV cells for a decode (or a restore) that found no room: the parked prefixes, else, in a pool
    shared by every slot (``unified``), the sequence of the idle slot used longest ago, one per call, as
    llama-server purges idle slots. (Whether anything was given back, the id of the slot purged or -1.)"""
    if cache.n_entries:
        cache.clear_entries()
        return True, -1
    idle = [s for s in slots if not s.busy and s.cache] if unified else []
    if not idle:
        return False, -1
    slot = min(idle, key=lambda s: s.last_used)
    log.warning("purging slot %d with %d tokens", slot.id, len(slot.cache))
    cache.drop(slot.id)
    slot.cache.clear()
    return True, slot.id
