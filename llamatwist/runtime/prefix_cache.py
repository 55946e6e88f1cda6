# -*- test-case-name: tests.test_prefix_cache -*-
"""The prompt-prefix cache shared by all slots.

Every KV sequence (a slot's, or a parked cache entry's) is registered in a
radix tree over its token sequence. A new prompt looks up the longest prefix
held by *any* sequence; with a unified KV cache ``llama_memory_seq_cp`` then
adds the new slot's sequence id to those cells, so sharing copies no data.

When a slot is reused for a prompt that shares little with its old content,
that content is parked in a spare sequence id (again a cell-sharing copy) so a
later turn of the same conversation still finds it. Parked entries are evicted
least-recently-used first: when the KV cache is about to fill, and when their
cells exceed ``--cache-ram``.

Used from the decode thread only; KV operations go through :class:`KVOps`
(a :class:`~llamatwist.engine.context.Context` satisfies it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llamatwist.runtime.checkpoints import Checkpoints

__all__ = ["Attach", "KVOps", "PrefixCache", "PrefixTree", "common_prefix", "reuse_chunks"]

# A slot's old content is parked only when this many of its tokens are held by no other sequence.
MIN_PARK_TOKENS = 32


AdapterTag = tuple[float, ...]  # the LoRA scales a sequence's KV was computed under; () = none loaded


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix. Compares slices (C speed) before single tokens."""
    n = min(len(a), len(b))
    i = 0
    step = 256
    while i < n:
        j = min(i + step, n)
        if a[i:j] != b[i:j]:
            break
        i = j
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _Node:
    __slots__ = ("children", "holders", "parent", "tokens")

    def __init__(self, tokens: list[int], parent: _Node | None) -> None:
        self.tokens = tokens  # the edge label from the parent
        self.children: dict[int, _Node] = {}
        # sequences holding the whole path from the root through this edge
        self.holders: set[int] = set()
        self.parent = parent


class PrefixTree:
    """Radix tree over the token sequences of KV sequences. Each token on an
    edge stands for one KV cell (cells are shared by ``seq_cp``, never
    duplicated), so :attr:`n_tokens` counts the cells the tree accounts for."""

    def __init__(self) -> None:
        self._root = _Node([], None)
        self._ends: dict[int, _Node] = {}
        self._lengths: dict[int, int] = {}
        self.n_tokens = 0

    def __contains__(self, seq: int) -> bool:
        return seq in self._ends

    def length(self, seq: int) -> int:
        return self._lengths.get(seq, 0)

    def put(self, seq: int, tokens: Sequence[int]) -> None:
        """Register ``tokens`` as sequence ``seq``'s whole content."""
        self.remove(seq)
        if not tokens:
            return
        node, i, n = self._root, 0, len(tokens)
        while i < n:
            child = node.children.get(tokens[i])
            if child is None:
                child = _Node(list(tokens[i:]), node)
                node.children[tokens[i]] = child
                self.n_tokens += n - i
                k = n - i
            else:
                k = common_prefix(child.tokens, tokens[i : i + len(child.tokens)])
                if k < len(child.tokens):
                    child = self._split(child, k)
            child.holders.add(seq)
            node, i = child, i + k
        self._ends[seq] = node
        self._lengths[seq] = n

    def remove(self, seq: int) -> None:
        node = self._ends.pop(seq, None)
        self._lengths.pop(seq, None)
        while node is not None and node is not self._root:
            parent = node.parent
            assert parent is not None
            node.holders.discard(seq)
            if not node.holders:  # children hold subsets, so they are gone already
                del parent.children[node.tokens[0]]
                self.n_tokens -= len(node.tokens)
            elif len(node.children) == 1:
                self._merge(node)
            node = parent

    def match(self, tokens: Sequence[int], exclude: int = -1) -> tuple[int, set[int]]:
        """The longest prefix of ``tokens`` held by a sequence other than
        ``exclude``, and the sequences holding it."""
        node, i, n = self._root, 0, len(tokens)
        best: tuple[int, set[int]] = (0, set())
        while i < n:
            child = node.children.get(tokens[i])
            if child is None:
                break
            holders = child.holders - {exclude}
            if not holders:
                break
            k = common_prefix(child.tokens, tokens[i : i + len(child.tokens)])
            best = (i + k, holders)
            if k < len(child.tokens):
                break
            node, i = child, i + k
        return best

    def exclusive(self, seq: int) -> int:
        """Cells held by ``seq`` alone: what removing it frees."""
        node, n = self._ends.get(seq), 0
        while node is not None and node is not self._root and node.holders == {seq}:
            n += len(node.tokens)
            node = node.parent
        return n

    def _split(self, node: _Node, k: int) -> _Node:
        parent = node.parent
        assert parent is not None
        upper = _Node(node.tokens[:k], parent)
        upper.holders = set(node.holders)
        parent.children[upper.tokens[0]] = upper
        node.tokens = node.tokens[k:]
        node.parent = upper
        upper.children[node.tokens[0]] = node
        return upper

    def _merge(self, node: _Node) -> None:
        # A node whose only child has the same holders ends no sequence: fold the child in.
        (child,) = node.children.values()
        if child.holders != node.holders:
            return
        node.tokens = node.tokens + child.tokens
        node.children = child.children
        for grandchild in node.children.values():
            grandchild.parent = node
        for seq in child.holders:
            if self._ends.get(seq) is child:
                self._ends[seq] = node


class KVOps(Protocol):
    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool: ...

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None: ...

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None: ...


def reuse_chunks(old: Sequence[int], prompt: Sequence[int], n_past: int, n_min: int) -> list[tuple[int, int, int]]:
    """llama-server's --cache-reuse plan: after the common prefix ``n_past``, the
    chunks of at least ``n_min`` tokens of ``old`` that reappear, in order, in
    ``prompt``; as (position in old, position in prompt, length)."""
    chunks: list[tuple[int, int, int]] = []
    head_c = head_p = n_past
    while head_c < len(old) and head_p < len(prompt):
        n = common_prefix(old[head_c:], prompt[head_p:])
        if n >= n_min:
            chunks.append((head_c, head_p, n))
            head_c += n
            head_p += n
        else:
            head_c += 1
    return chunks


@dataclass(frozen=True)
class Attach:
    """How a slot's sequence was prepared for a prompt."""

    n_reused: int  # prompt tokens already in KV
    source: int  # the sequence they came from (the slot itself when its own content matched)


class PrefixCache:
    """Slot sequences are ``0..n_slots-1``; parked entries use the ids above.

    ``shared=False`` (a model whose memory cannot be shared, or a KV cache per
    sequence) keeps llama-server's per-slot reuse: a slot only ever reuses its
    own content. ``checkpoints``: for memory that cannot be cut part-way (sliding-window attention,
    recurrent state), what decides how much of a slot's own content it can keep (context checkpoints).
    """

    def __init__(self, kv: KVOps, *, n_slots: int, n_seq_max: int, n_cells: int,
                 shared: bool, budget_cells: int, can_shift: bool = True,
                 checkpoints: Checkpoints | None = None) -> None:
        self.kv = kv
        self.checkpoints = checkpoints
        self.can_shift = can_shift
        self.tree = PrefixTree()
        self.shared = shared
        self.n_slots = n_slots
        self.n_cells = n_cells  # KV cache size
        self.budget_cells = budget_cells  # cells parked entries may hold alone; -1 = no bound
        self._free_ids = list(range(n_seq_max - 1, n_slots - 1, -1)) if shared else []
        self._entries: dict[int, int] = {}  # entry seq id -> last use stamp
        # seq id -> what its KV was computed under (the LoRA adapter set): KV is reused only under the same
        self._tags: dict[int, AdapterTag] = {}
        self._clock = itertools.count(1)
        self.n_evicted = 0

    @property
    def n_entries(self) -> int:
        return len(self._entries)

    def attach(self, slot: int, old: Sequence[int], prompt: Sequence[int], n_cache_reuse: int = 0,
               tag: AdapterTag = (), boundary: Callable[[int], int] = lambda n: n) -> Attach:
        """Prepare sequence ``slot`` (holding ``old``) for ``prompt``: keep or
        copy in the longest cached prefix (at most ``len(prompt) - 1``, so one
        token is left to decode for logits) and drop the rest. With
        ``n_cache_reuse``, later chunks of the slot's own content move into
        place by KV shifting, as llama-server's --cache-reuse. ``tag``: what the
        prompt's KV will be computed under (the LoRA adapter set); only KV
        computed under the same tag is reused. ``boundary(n)``: the longest reusable length up to n (a prefix
        must not end inside a media chunk)."""
        limit = max(len(prompt) - 1, 0)
        same = self._tags.get(slot, ()) == tag
        if self.checkpoints is not None:
            n_cache_reuse = 0  # shifted chunks would not bring their sliding window along
        n_own = boundary(min(common_prefix(old, prompt), limit)) if same else 0
        n_best, holders = self.tree.match(prompt, exclude=slot) if self.shared else (0, set())
        holders = {h for h in holders if self._tags.get(h, ()) == tag}
        n_best = boundary(min(n_best, limit)) if holders else 0
        try:
            return self._attach(slot, old, prompt, n_cache_reuse if same else 0, n_own, n_best, holders)
        finally:
            self._tags[slot] = tag

    def _attach(self, slot: int, old: Sequence[int], prompt: Sequence[int], n_cache_reuse: int, n_own: int,
                n_best: int, holders: set[int]) -> Attach:
        if n_cache_reuse > 0 and n_own >= n_best:
            n_shifted = self._reuse_chunks(slot, old, prompt, n_own, n_cache_reuse)
            if n_shifted > n_own:
                self.tree.put(slot, prompt[:n_shifted])
                return Attach(n_shifted, slot)
        if n_own >= n_best or not holders:
            self._park(slot, old, keep=n_own)
            if self.checkpoints is not None:
                n_own = self.checkpoints.rewind(slot, n_own)
            if not self.kv.seq_rm(slot, n_own, -1):  # recurrent memory cannot be cut part-way
                self.kv.seq_rm(slot, -1, -1)
                n_own = 0
            self.tree.put(slot, prompt[:n_own])
            self._enforce_budget()
            return Attach(n_own, slot)
        # prefer a parked entry or an idle slot, whose cells are stable
        source = min(holders, key=lambda s: (s < self.n_slots, s))
        self._park(slot, old, keep=0)
        self.kv.seq_rm(slot, -1, -1)
        if n_best:
            self.kv.seq_cp(source, slot, 0, n_best)
        if source in self._entries:
            self._entries[source] = next(self._clock)
        self.tree.put(slot, prompt[:n_best])
        self._enforce_budget()
        return Attach(n_best, source)

    def _reuse_chunks(self, slot: int, old: Sequence[int], prompt: Sequence[int], n_own: int, n_min: int) -> int:
        """Shift the reusable chunks into place; the new count of prompt tokens in KV.
        Shifting moves cells for every sequence holding them, so only cells this
        slot holds alone may move: none when another sequence shares more than
        the common prefix."""
        chunks = reuse_chunks(old, prompt, n_own, n_min)
        if not chunks or not self.can_shift:
            return n_own
        if self.shared and self.tree.match(old, exclude=slot)[0] > n_own:
            return n_own  # (with a KV stream per slot, no other sequence can hold these cells)
        for head_c, head_p, n in chunks:
            self.kv.seq_rm(slot, head_p, head_c)
            self.kv.seq_add(slot, head_c, head_c + n, head_p - head_c)
        head_c, head_p, n = chunks[-1]
        n_past = min(head_p + n, max(len(prompt) - 1, 0))
        # the cells of the last chunk still sit at their old positions beyond n_past
        self.kv.seq_rm(slot, n_past, -1)
        return n_past

    def update(self, slot: int, tokens: Sequence[int], tag: AdapterTag | None = None) -> None:
        """The slot's KV now holds exactly ``tokens`` (computed under ``tag`` when given)."""
        self.tree.put(slot, tokens)
        if tag is not None:
            self._tags[slot] = tag

    def tag(self, seq: int) -> AdapterTag:
        """What ``seq``'s KV was computed under (the LoRA adapter set)."""
        return self._tags.get(seq, ())

    def drop(self, slot: int, old: Sequence[int] = ()) -> None:
        """Empty the slot's KV sequence; ``old`` (its content) is parked first when worth it."""
        self._park(slot, old, keep=0)
        self.kv.seq_rm(slot, -1, -1)
        self.tree.remove(slot)
        if self.checkpoints is not None:
            self.checkpoints.clear(slot)
        self._enforce_budget()

    def make_room(self, n_needed: int, n_untracked: int) -> bool:
        """Evict parked entries until ``n_needed`` more cells fit beside the tree's
        cells and ``n_untracked`` cells of slots not registered yet. False when
        nothing is left to evict and it still does not fit."""
        while self.tree.n_tokens + n_untracked + n_needed > self.n_cells:
            if not self.evict_one():
                return False
        return True

    def evict_one(self) -> bool:
        if not self._entries:
            return False
        self.evict(min(self._entries, key=self._entries.__getitem__))
        return True

    def is_entry(self, seq: int) -> bool:
        return seq in self._entries

    def evict(self, seq: int) -> None:
        del self._entries[seq]
        self._tags.pop(seq, None)
        self.kv.seq_rm(seq, -1, -1)
        self.tree.remove(seq)
        self._free_ids.append(seq)
        self.n_evicted += 1

    def clear_entries(self) -> None:
        while self.evict_one():
            pass

    def _park(self, slot: int, old: Sequence[int], keep: int) -> None:
        """Keep ``old`` (about to be cut to ``keep`` tokens) findable in an entry."""
        if not self.shared or self.budget_cells == 0 or len(old) - keep < MIN_PARK_TOKENS:
            return
        n_elsewhere, _ = self.tree.match(old, exclude=slot)
        if len(old) - max(n_elsewhere, keep) < MIN_PARK_TOKENS:
            return  # another sequence holds (nearly) all of it
        if not self._free_ids and not self.evict_one():
            return
        seq = self._free_ids.pop()
        self.kv.seq_cp(slot, seq, -1, -1)
        self.tree.put(seq, old)
        self._tags[seq] = self._tags.get(slot, ())
        self._entries[seq] = next(self._clock)

    def _enforce_budget(self) -> None:
        # run once the slot's own sequence is cut: until then it shares the parked cells
        if self.budget_cells < 0:
            return
        while self._entries and sum(self.tree.exclusive(s) for s in self._entries) > self.budget_cells:
            self.evict_one()
