"""Concurrent one-item calls gathered into calls of a many-item function, as
:class:`~lift_integrations.microbatch.MicroBatcher` gathers generations: the routers embed the questions of
concurrent requests together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from lift_integrations.validation import check_int

Item = TypeVar("Item")
Out = TypeVar("Out")


def check_window(seconds: object) -> float:
    """``seconds`` as a gathering window, or a ``ValueError`` naming the problem."""
    if isinstance(seconds, bool) or not (isinstance(seconds, (int, float)) and 0 <= seconds < 10):
        raise ValueError(f"window_s must be a number of seconds in [0, 10), got {seconds!r}")
    return float(seconds)


@dataclass
class _Pending(Generic[Item, Out]):
    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    result: Out | None = None
    error: BaseException | None = None


class GatheredCalls(Generic[Item, Out]):
    """One-item calls made concurrently, run as calls of a many-item function: while a call of ``many``
    runs, the calls that arrive wait, then run together in the next (at most ``max_items`` at once). The
    first caller waits ``window_s`` for others before the first call (default: none, a lone call runs at
    once). With ``key``, only items of equal keys share a call. An item whose call raises is retried
    alone, so one bad item fails only its own caller.

    A router's ``route`` called from many request threads would otherwise embed their questions one at a
    time, several times slower than together, and the requests would reach the
    :class:`~lift_integrations.microbatch.MicroBatcher` one by one instead of as a batch.
    """

    def __init__(
        self,
        many: Callable[[list[Item]], Sequence[Out]],
        *,
        max_items: int = 256,
        window_s: float = 0.0,
        key: Callable[[Item], Hashable] | None = None,
    ) -> None:
        check_int(max_items, "max_items", minimum=1)
        self.many = many
        self.max_items = max_items
        self.window_s = check_window(window_s)
        self.key = key
        self.calls_run = 0
        """Calls of ``many`` so far: how much was gathered."""
        self._lock = threading.Lock()
        self._queue: list[_Pending[Item, Out]] = []
        self._leading = False

    def __call__(self, item: Item) -> Out:
        """``many([item])[0]``, computed with the items of concurrent calls."""
        pending: _Pending[Item, Out] = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            lead = not self._leading
            self._leading = self._leading or lead
        if lead:
            self._lead()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]  # set with done, an Out (which may be None)

    def _lead(self) -> None:
        """Run calls until the queue is empty, then let the next caller lead."""
        if self.window_s:
            time.sleep(self.window_s)
        while True:
            with self._lock:
                if not self._queue:
                    self._leading = False
                    return
                group = self._queue
                if self.key is not None:
                    first = self.key(group[0].item)
                    group = [p for p in group if self.key(p.item) == first]
                group = group[: self.max_items]
                taken = {id(p) for p in group}  # by identity: equal items are still separate callers
                self._queue = [p for p in self._queue if id(p) not in taken]
            self._run(group)

    def _run(self, group: list[_Pending[Item, Out]]) -> None:
        try:
            results = list(self.many([p.item for p in group]))
            if len(results) != len(group):
                raise RuntimeError(f"{len(group)} items gave {len(results)} results")
        except Exception as error:
            if len(group) > 1:  # one item's problem must not fail the others: each on its own
                for pending in group:
                    self._run([pending])
                return
            group[0].error = error
            group[0].done.set()
            return
        except BaseException as error:  # KeyboardInterrupt and the like: every caller sees it
            for pending in group:
                pending.error = error
                pending.done.set()
            raise
        finally:
            self.calls_run += 1
        for pending, result in zip(group, results, strict=True):
            pending.result = result
            pending.done.set()
