"""Room in a KV pool shared by every slot (`room_for`), and a generation suspended for it (`Slot.suspend`):
plain data, no model."""

from __future__ import annotations

from llamatwist.runtime.slot import Slot, SlotState, room_for
from llamatwist.runtime.task import CompletionTask, GenerationParams


def _slot(sid: int, prompt: list[int], state: SlotState, cache: list[int]) -> Slot:
    slot = Slot(sid, 1024)
    slot.task = CompletionTask(prompt, GenerationParams(), lambda result: None)
    slot.state = state
    slot.cache = list(cache)
    slot.n_fed = len(cache) if state is SlotState.PROMPT else len(prompt)
    return slot


def test_room_counts_whole_prompts_and_generations_not_idle_or_suspended_slots() -> None:
    prompt = list(range(300))
    feeding = _slot(0, prompt, SlotState.PROMPT, prompt[:100])  # will hold its 300
    generating = _slot(1, prompt, SlotState.GENERATING, [*prompt, 7, 8])
    idle = Slot(2, 1024, cache=list(range(900)))  # gives its cells back when asked
    slots = [feeding, generating, idle]
    assert room_for(slots, 290, 1024)  # 300 + 302 + 290, with 1024 / 8 to spare
    assert not room_for(slots, 294, 1024)
    generating.suspend()
    assert generating.suspended and generating.cells_when_fed() == 303  # its tokens and the pending one
    assert room_for(slots, 590, 1024)  # a suspended slot holds nothing until it goes on
    assert room_for([Slot(0, 1024)], 5000, 1024)  # nothing held: a task may always try alone


def test_a_suspended_generation_decodes_its_tokens_again_then_goes_on() -> None:
    prompt = list(range(10))
    slot = _slot(0, prompt, SlotState.GENERATING, [*prompt, 50, 51])
    slot.n_cached = 4
    slot.replay = [52]  # accepted draft tokens rolled back: still its tokens
    slot.pending_token = 53
    slot.suspend()
    assert slot.state is SlotState.PROMPT and slot.cache == [] and slot.replay == [] and slot.n_fed == 0
    assert list(slot.source) == [*prompt, 50, 51, 52] and slot.pending_token == 53
    slot.suspend()  # again, before it went on: the same tokens
    assert list(slot.source) == [*prompt, 50, 51, 52]
    slot.suspended = False
    slot.cache = list(slot.source)
    slot.n_fed = len(slot.cache)
    slot.resumed()
    assert slot.state is SlotState.GENERATING and slot.n_fed == len(prompt) and slot.n_cells == 13
    assert list(slot.source) == prompt  # its prompt again
    slot.release()
    assert slot.resume is None and not slot.suspended
