"""The prefix index and the cache policy, against brute-force models of both.

The KV side is a recording stand-in that keeps, per sequence, the cells it
holds; the real engine is exercised by tests/test_shared_cache.py."""

from __future__ import annotations

import random

import pytest

from llamatwist.runtime.prefix_cache import MIN_PARK_TOKENS, PrefixCache, PrefixTree, common_prefix, reuse_chunks


def test_common_prefix() -> None:
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix([1, 2, 3], [1, 2]) == 2
    long = list(range(1000))
    assert common_prefix(long, [*long[:700], -1]) == 700
    assert common_prefix(long, long[:256]) == 256


def test_reuse_chunks_plan() -> None:
    old = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    # prefix 1 2, then 3 4 dropped, 5..8 kept, 9 10 dropped; as llama-server, only
    # the cache side skips ahead, so a token inserted into the prompt ends the reuse
    assert reuse_chunks(old, [1, 2, 5, 6, 7, 8, 11], 2, 3) == [(4, 2, 4)]
    assert reuse_chunks(old, [1, 2, 5, 6, 7, 8, 11], 2, 5) == []
    assert reuse_chunks(old, [1, 2, 0, 5, 6, 7, 8], 2, 1) == []
    assert reuse_chunks(old, [1, 2, 5, 6, 9, 10], 2, 2) == [(4, 2, 2), (8, 4, 2)]
    assert reuse_chunks(old, old, 10, 1) == []


def _distinct_prefixes(seqs: dict[int, list[int]]) -> int:
    return len({tuple(t[:i]) for t in seqs.values() for i in range(1, len(t) + 1)})


def _brute_match(seqs: dict[int, list[int]], tokens: list[int], exclude: int) -> tuple[int, set[int]]:
    best = max((common_prefix(t, tokens) for s, t in seqs.items() if s != exclude), default=0)
    if best == 0:
        return 0, set()
    return best, {s for s, t in seqs.items() if s != exclude and common_prefix(t, tokens) >= best}


def test_tree_basics() -> None:
    tree = PrefixTree()
    tree.put(0, [1, 2, 3, 4])
    tree.put(1, [1, 2, 5])
    assert tree.n_tokens == 5  # 1 2 shared, then 3 4 and 5
    assert tree.match([1, 2, 3, 9]) == (3, {0})
    assert tree.match([1, 2, 7]) == (2, {0, 1})
    assert tree.match([1, 2, 3], exclude=0) == (2, {1})
    assert tree.match([9]) == (0, set())
    assert tree.exclusive(0) == 2 and tree.exclusive(1) == 1
    tree.remove(0)
    assert tree.n_tokens == 3 and 0 not in tree
    assert tree.match([1, 2, 5, 6]) == (3, {1})
    tree.put(1, [])
    assert tree.n_tokens == 0 and tree.match([1]) == (0, set())


def test_tree_against_brute_force() -> None:
    rng = random.Random(7)
    tree = PrefixTree()
    seqs: dict[int, list[int]] = {}
    base = [rng.randrange(5) for _ in range(40)]
    for step in range(3000):
        seq = rng.randrange(8)
        op = rng.random()
        if op < 0.5:
            cut = rng.randrange(len(base) + 1)
            tokens = base[:cut] + [rng.randrange(5) for _ in range(rng.randrange(12))]
            tree.put(seq, tokens)
            if tokens:
                seqs[seq] = tokens
            else:
                seqs.pop(seq, None)
        elif op < 0.65:
            tree.remove(seq)
            seqs.pop(seq, None)
        probe = base[: rng.randrange(len(base) + 1)] + [rng.randrange(5) for _ in range(rng.randrange(6))]
        exclude = rng.choice([-1, seq])
        assert tree.match(probe, exclude) == _brute_match(seqs, probe, exclude), step
        assert tree.n_tokens == _distinct_prefixes(seqs), step
        for s, t in seqs.items():
            others = {k: v for k, v in seqs.items() if k != s}
            shared = max((common_prefix(t, v) for v in others.values()), default=0)
            assert tree.exclusive(s) == len(t) - shared, step
            assert tree.length(s) == len(t)


class FakeKV:
    """Cells as (cell id, position) pairs, shared by seq_cp like libllama's unified cache."""

    def __init__(self) -> None:
        self.cells: dict[int, list[tuple[int, int]]] = {}
        self.copies = 0
        self._next_cell = 0

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        cells = self.cells.get(seq_id, [])
        p0 = max(p0, 0)
        p1 = len(cells) if p1 < 0 else p1
        self.cells[seq_id] = cells[:p0] + cells[p1:]
        return True

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        src_cells = self.cells.get(src, [])
        p0 = max(p0, 0)
        p1 = len(src_cells) if p1 < 0 else p1
        assert not self.cells.get(dst), "copy into an emptied sequence only"
        self.cells[dst] = list(src_cells[p0:p1])
        self.copies += 1

    def decode(self, seq: int, n: int) -> None:
        start = len(self.cells.setdefault(seq, []))
        self.cells[seq].extend((self._next_cell + i, start + i) for i in range(n))
        self._next_cell += n

    def n_used(self) -> int:
        return len({c for cells in self.cells.values() for c in cells})


def make_cache(kv: FakeKV, budget: int = -1, n_cells: int = 10_000, shared: bool = True) -> PrefixCache:
    return PrefixCache(kv, n_slots=2, n_seq_max=6, n_cells=n_cells, shared=shared, budget_cells=budget)


def run_prompt(cache: PrefixCache, kv: FakeKV, slot: int, old: list[int], prompt: list[int]) -> int:
    """What the scheduler does for one request: attach, decode the rest, register."""
    got = cache.attach(slot, old, prompt)
    assert len(kv.cells.get(slot, [])) == got.n_reused
    kv.decode(slot, len(prompt) - got.n_reused)
    cache.update(slot, prompt)
    return got.n_reused


def test_a_prefix_computed_by_one_slot_is_shared_with_another() -> None:
    kv = FakeKV()
    cache = make_cache(kv)
    system = list(range(100))
    assert run_prompt(cache, kv, 0, [], [*system, 1000]) == 0
    assert run_prompt(cache, kv, 1, [], [*system, 2000]) == 100
    assert kv.cells[1][:100] == kv.cells[0][:100]  # the same cells, no recomputation
    assert kv.n_used() == 102 == cache.tree.n_tokens


def test_a_slot_keeps_its_own_content_when_that_is_best() -> None:
    kv = FakeKV()
    cache = make_cache(kv)
    conv = list(range(60))
    run_prompt(cache, kv, 0, [], conv)
    assert run_prompt(cache, kv, 0, conv, [*conv, 7, 8]) == 60
    assert kv.copies == 0


def test_old_content_is_parked_and_found_again() -> None:
    kv = FakeKV()
    cache = make_cache(kv)
    conv_a = [1] * 80
    conv_b = [2] * 80
    run_prompt(cache, kv, 0, [], conv_a)
    run_prompt(cache, kv, 0, conv_a, conv_b)  # slot 0 now serves B; A is parked
    assert cache.n_entries == 1
    assert run_prompt(cache, kv, 1, [], [*conv_a, 5]) == 80  # A's next turn, on the other slot


def test_parking_skips_content_held_elsewhere_and_short_tails() -> None:
    kv = FakeKV()
    cache = make_cache(kv)
    conv = list(range(80))
    run_prompt(cache, kv, 0, [], conv)
    run_prompt(cache, kv, 1, [], [*conv, 1])
    run_prompt(cache, kv, 0, conv, [9] * 50)  # all of slot 0's old tokens are in slot 1
    assert cache.n_entries == 0
    short = [3] * (MIN_PARK_TOKENS - 1)
    run_prompt(cache, kv, 0, [9] * 50, short)
    assert cache.n_entries == 1  # the 50 nines were parked
    run_prompt(cache, kv, 0, short, [4] * 10)
    assert cache.n_entries == 1  # too short to be worth a sequence


def test_budget_evicts_least_recently_used_entries() -> None:
    kv = FakeKV()
    cache = make_cache(kv, budget=100)
    old: list[int] = []
    for k in range(5):
        prompt = [10 + k] * 60
        run_prompt(cache, kv, 0, old, prompt)
        old = prompt
    # each parked conversation holds 60 cells alone: only one fits 100
    assert cache.n_entries == 1
    assert cache.n_evicted == 3
    assert cache.tree.match([13] * 60)[0] == 60  # the most recent parked one survived
    assert cache.tree.match([10] * 60)[0] == 0


@pytest.mark.parametrize("budget", [0, -1])
def test_budget_zero_parks_nothing_and_minus_one_is_unbounded(budget: int) -> None:
    kv = FakeKV()
    cache = make_cache(kv, budget=budget)
    old: list[int] = []
    for k in range(4):
        prompt = [10 + k] * 60
        run_prompt(cache, kv, 0, old, prompt)
        old = prompt
    assert cache.n_entries == (0 if budget == 0 else 3)  # 4 sequence ids are spare (6 - 2 slots)


def test_make_room_evicts_until_the_batch_fits() -> None:
    kv = FakeKV()
    cache = make_cache(kv, n_cells=200)
    run_prompt(cache, kv, 0, [], [1] * 80)
    run_prompt(cache, kv, 0, [1] * 80, [2] * 80)
    assert cache.n_entries == 1 and cache.tree.n_tokens == 160
    assert cache.make_room(30, 0)  # 190 fits
    assert cache.n_entries == 1
    assert cache.make_room(50, 0)  # 210 does not: the parked entry goes
    assert cache.n_entries == 0 and cache.tree.n_tokens == 80
    assert not cache.make_room(130, 0)  # nothing left to evict
    assert kv.n_used() == cache.tree.n_tokens


def test_not_shared_keeps_per_slot_reuse() -> None:
    kv = FakeKV()
    cache = make_cache(kv, shared=False)
    system = list(range(100))
    run_prompt(cache, kv, 0, [], [*system, 1])
    assert run_prompt(cache, kv, 1, [], [*system, 2]) == 0
    assert run_prompt(cache, kv, 0, [*system, 1], [*system, 3]) == 100
    assert kv.copies == 0 and cache.n_entries == 0


def test_at_least_one_prompt_token_is_left_to_decode() -> None:
    kv = FakeKV()
    cache = make_cache(kv)
    run_prompt(cache, kv, 0, [], [5] * 40)
    assert run_prompt(cache, kv, 1, [], [5] * 40) == 39
    assert run_prompt(cache, kv, 0, [5] * 40, [5] * 40) == 39


def test_random_workload_keeps_kv_and_tree_in_step() -> None:
    rng = random.Random(3)
    kv = FakeKV()
    cache = make_cache(kv, budget=150, n_cells=400)
    prefixes = [[p] * 50 for p in range(3)]
    held: dict[int, list[int]] = {0: [], 1: []}
    for _ in range(300):
        slot = rng.randrange(2)
        prompt = rng.choice(prefixes) + [rng.randrange(20) for _ in range(rng.randrange(1, 30))]
        cache.make_room(len(prompt), 0)
        n = run_prompt(cache, kv, slot, held[slot], prompt)
        held[slot] = prompt
        assert n <= len(prompt) - 1
        for seq, cells in kv.cells.items():
            assert [p for _, p in cells] == list(range(cache.tree.length(seq)))
        # The tree counts distinct token prefixes; the KV cache may hold a few
        # more cells (a prompt's last token is always decoded afresh), never fewer.
        assert 0 <= kv.n_used() - cache.tree.n_tokens <= 10
    assert cache.n_evicted > 0
