"""Generation batches whose rows run different memories: ``LIFTModel.generate_batch(memories=[...])``.

Gated Memory runs a batch's memories side by side in one decode: their weights are rows of one
:class:`~lift_integrations.adapters.gated_memory.stacked.GatedMemoryStack` (built once for a call's
memories and kept for later calls with the same ones), each batch row gathers its memory's weights
(``row_memory``), and a row without a memory has its gate set to 0 (``row_gate``), which gives the base
model exactly. Memories of different Gated Memory settings (gate_scale, gate_shift, hidden_multiplier,
bias) cannot share a stack: each setting gets batches of its own, rows without a memory joining the first.

LoRA (PEFT) keeps one adapter active for the whole model, so its batches are split by memory: one
sub-batch per memory (and one for the rows without), each decoded as ``generate_batch(memory=m)`` does.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lift_integrations.memory import Memory

if TYPE_CHECKING:
    from torch import nn

    from lift_integrations.adapters.base import AdapterBackend, MemoryStack
    from lift_integrations.adapters.live import LiveAdapters
    from lift_integrations.locking import ModelLock

MAX_CACHED_STACKS = 2
"""Stacks kept for later calls (each holds a copy of its memories' weights)."""

Guard = AbstractContextManager[Any]


def check_memories(
    memories: Any, count: int, resolve: Callable[[Any], Memory | None] | None = None
) -> list[Memory | None]:
    """``memories=`` of ``generate_batch``: a list of ``count`` entries, each a Memory or ``None`` (or,
    with ``resolve``, whatever it turns into one: a folder path, a hub id)."""
    if isinstance(memories, (str, bytes, bytearray, Mapping, Memory)) or not isinstance(memories, Iterable):
        raise TypeError(
            f"memories must be a list with a Memory or None for each prompt, got {type(memories).__name__}"
        )
    rows = list(memories)
    if len(rows) != count:
        raise ValueError(f"got {len(rows)} memories for {count} prompts (memories= needs one per prompt)")
    for index, row in enumerate(rows):
        if resolve is not None and isinstance(row, (str, os.PathLike)):
            rows[index] = row = resolve(row)
        if row is not None and not isinstance(row, Memory):
            kinds = "a Memory, a folder path, a hub id or None" if resolve is not None else "a Memory or None"
            raise TypeError(f"memories[{index}] must be {kinds}, got {type(row).__name__}")
    return rows


@dataclass
class _Cached:
    stack: MemoryStack
    weights: tuple[weakref.ref[nn.Module], ...]
    versions: tuple[int, ...]


def _versions(weights: Sequence[nn.Module]) -> tuple[int, ...]:
    """The version counters of every tensor: any in-place change of a memory's weights moves one."""
    return tuple(t._version for w in weights for t in w.state_dict().values())


class MixedBatches:
    """Splits ``generate_batch``'s rows into batches and gives each batch the context (``guard``) that
    holds the model lock with each row's memory active. Used under its model's lock only."""

    def __init__(
        self,
        backend: AdapterBackend,
        live: LiveAdapters,
        lock: ModelLock,
        using: Callable[[Memory | None], Guard],
    ) -> None:
        self._backend = backend
        self._live = live
        self._lock = lock
        self._using = using
        self._stacks: OrderedDict[tuple[int, ...], _Cached] = OrderedDict()

    @property
    def side_by_side(self) -> bool:
        """Whether one batch can hold rows of several memories (Gated Memory), or is split by memory."""
        return self._backend.trains_side_by_side

    def pools(self, rows: Sequence[Memory | None]) -> list[list[int]]:
        """The rows that may share a batch, each pool in row order. Builds every memory's adapter first
        (under the lock), so a memory that does not fit this model fails before any decoding."""
        distinct = list({id(m): m for m in rows if m is not None}.values())
        if self.side_by_side and len(distinct) <= 1:
            return [list(range(len(rows)))]
        if not self.side_by_side:
            keys: dict[int, Hashable] = {id(m): id(m) for m in distinct}
        else:
            with self._lock:
                keys = {id(m): self._backend.stack_group(self._live.weights_for(m)) for m in distinct}
        pools: dict[Hashable, list[int]] = {}
        for index, row in enumerate(rows):
            if row is not None:
                pools.setdefault(keys[id(row)], []).append(index)
        empty = [index for index, row in enumerate(rows) if row is None]
        if empty:
            if self.side_by_side:  # rows without a memory ride along with the first setting's batches
                first = next(iter(pools))
                pools[first] = sorted(pools[first] + empty)
            else:
                pools[None] = empty
        return list(pools.values())

    def batches(
        self,
        rows: Sequence[Memory | None],
        pools: Sequence[Sequence[int]],
        length: Callable[[int], int],
        batch_size: int,
    ) -> Iterator[tuple[list[int], Guard]]:
        """Each pool's rows, shortest prompt first, in batches of ``batch_size``, with their guard."""
        for pool in pools:
            ordered = sorted(pool, key=length)
            members: list[Memory] = list({id(m): m for i in pool if (m := rows[i]) is not None}.values())
            for start in range(0, len(ordered), batch_size):
                batch = ordered[start : start + batch_size]
                used = {id(rows[i]) for i in batch}
                if len(used) == 1:  # one memory (or none) for every row: the plain path
                    yield batch, self._using(rows[batch[0]])
                else:
                    yield batch, self._stacked(members, [rows[i] for i in batch])

    @contextlib.contextmanager
    def _stacked(self, members: list[Memory], batch: list[Memory | None]) -> Iterator[None]:
        """The lock held, with a stack of ``members`` active and each batch row pointed at its memory."""
        with self._lock:
            stack = self._stack_for(members)
            index = {id(m): i for i, m in enumerate(members)}
            device = stack.flat.device
            stack.row_memory = torch.tensor(
                [0 if m is None else index[id(m)] for m in batch], dtype=torch.long, device=device
            )
            stack.row_gate = (
                None
                if all(m is not None for m in batch)
                else torch.tensor([float(m is not None) for m in batch], device=device)
            )
            self._backend.activate(stack)
            try:
                yield
            finally:
                self._backend.activate(None)
                stack.row_memory = stack.row_memory[:0]
                stack.row_gate = None

    def _stack_for(self, members: list[Memory]) -> MemoryStack:
        """A stack holding ``members``' weights in this order: the cached one while those weights are the
        same modules, unchanged since; else rebuilt."""
        weights = [self._live.weights_for(m) for m in members]
        key = tuple(id(w) for w in weights)
        for stale in [k for k, c in self._stacks.items() if any(r() is None for r in c.weights)]:
            del self._stacks[stale]
        cached = self._stacks.get(key)
        versions = _versions(weights)
        if cached is not None and all(r() is w for r, w in zip(cached.weights, weights, strict=True)):
            if cached.versions != versions:
                self._load(cached.stack, weights)
                cached.versions = versions
            self._stacks.move_to_end(key)
            return cached.stack
        stack = self._backend.create_stack(weights[0], len(weights))
        stack.flat.requires_grad_(False)
        self._load(stack, weights)
        self._stacks[key] = _Cached(stack, tuple(weakref.ref(w) for w in weights), versions)
        while len(self._stacks) > MAX_CACHED_STACKS:
            self._stacks.popitem(last=False)
        return stack

    def _load(self, stack: MemoryStack, weights: Sequence[nn.Module]) -> None:
        for row, module in enumerate(weights):
            stack.load_row(row, module)
        dtype = next(self._backend.model.parameters()).dtype
        stack.cast_for(dtype)  # once, not per layer and decoding step

    def clear(self) -> None:
        """Forget the cached stacks (their copies of the memories' weights)."""
        self._stacks.clear()
