"""Work split between the ranks of a process group: who builds which items, and the parts put back together.

Torch-free (the extractive QA generator uses it and needs only the standard library): the exchange
between ranks is a function handed in, ``torch.distributed.all_gather_object`` under ``torchrun`` (see
:func:`lift_integrations.distributed.work_share`), threads in the tests, or nothing for one process.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def balanced_partition(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Indices ``0 .. len(costs) - 1`` in ``parts`` groups of nearly equal total cost.

    Greedy longest-processing-time: items in decreasing cost (ties: lower index first), each to the group
    with the smallest load so far (ties: fewer items, then lower group). Deterministic, so every rank
    computes the same partition; the largest and smallest loads differ by at most the largest cost. Each
    group's indices are ascending; a group is empty when there are fewer items than groups.
    """
    if parts <= 0:
        raise ValueError(f"parts must be positive, got {parts}")
    groups: list[list[int]] = [[] for _ in range(parts)]
    heap = [(0.0, 0, part) for part in range(parts)]  # (load, items, part), smallest first
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, count, part = heapq.heappop(heap)
        groups[part].append(index)
        heapq.heappush(heap, (load + costs[index], count + 1, part))
    return [sorted(group) for group in groups]


class SharedWorkError(RuntimeError):
    """Another rank failed while building its share of some work (its own error says why)."""


@dataclass(frozen=True)
class WorkShare:
    """This rank's place in work split between ``world_size`` ranks, and how the ranks swap their parts.

    ``gather(value)`` is collective: every rank calls it, in the same order, and gets every rank's value
    in rank order. So code that builds through :meth:`build` must take the same path on every rank up to
    each call (it may branch only on what every rank has, never on its own part).
    """

    rank: int
    world_size: int
    gather: Callable[[Any], list[Any]]

    def __post_init__(self) -> None:
        if self.world_size <= 0 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is out of range for world size {self.world_size}")

    @property
    def is_split(self) -> bool:
        """Whether other ranks build part of the work."""
        return self.world_size > 1

    def build(self, costs: Sequence[float], build_part: Callable[[list[int]], Sequence[T]]) -> list[T]:
        """The value of every item ``0 .. len(costs) - 1``, in index order, on every rank.

        Each rank calls ``build_part`` on its own part only (a :func:`balanced_partition` of ``costs``, a
        rough measure of each item's work) and must return one value per index, in that order; the parts
        are then exchanged. Alone, ``build_part`` gets every index at once. A failure on one rank raises
        on every rank (:class:`SharedWorkError` on the others), so none waits for a part that never comes.
        """
        if not self.is_split:
            return _checked(list(build_part(list(range(len(costs))))), len(costs))
        parts = balanced_partition(costs, self.world_size)
        failure: Exception | None = None
        try:
            mine: tuple[bool, Any] = (
                True,
                _checked(list(build_part(parts[self.rank])), len(parts[self.rank])),
            )
        except Exception as error:
            failure = error
            mine = (False, f"{type(error).__name__}: {error}")
        gathered = self.gather(mine)
        if failure is not None:
            raise failure
        failed = [(rank, value) for rank, (ok, value) in enumerate(gathered) if not ok]
        if failed:
            rank, message = failed[0]
            raise SharedWorkError(f"rank {rank} failed while building its share of the work: {message}")
        merged: list[Any] = [None] * len(costs)
        for part, (_, values) in zip(parts, gathered, strict=True):
            for index, value in zip(part, values, strict=True):
                merged[index] = value
        return merged


def _checked(values: list[T], expected: int) -> list[T]:
    if len(values) != expected:
        raise ValueError(f"a share's builder returned {len(values)} values for {expected} items")
    return values


ALONE = WorkShare(rank=0, world_size=1, gather=lambda value: [value])
"""One process doing all the work itself: :meth:`WorkShare.build` builds everything in one call."""
