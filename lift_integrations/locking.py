"""The model's lock, which knows whether anyone is waiting for it."""

from __future__ import annotations

import threading
from types import TracebackType


class ModelLock:
    """A reentrant lock that counts the threads waiting for it.

    An absorption takes the model's lock for each optimizer step and, between steps, pauses so that a
    waiting request gets the model first (a released lock is not handed to a waiter: the releasing thread
    could take it straight back). The count lets it pause only when a request is waiting, so an absorption
    with nothing else running pays no pause per step.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._count_lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """How many threads are blocked waiting for the lock."""
        return self._waiting

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        with self._count_lock:
            self._waiting += 1
        try:
            return self._lock.acquire(timeout=timeout)
        finally:
            with self._count_lock:
                self._waiting -= 1

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
