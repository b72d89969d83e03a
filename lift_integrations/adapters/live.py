"""The adapter modules built for memories on one model: at most one per memory that is still alive."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from lift_integrations.adapters.base import AdapterBackend


class LiveAdapters:
    """Maps each memory used on one backend to the adapter module built from its tensors.

    An entry lasts as long as its memory object, so the modules held stay bounded by the memories alive,
    however often memories are loaded, replaced or shared between models. When a memory is
    garbage-collected its module is queued, and :meth:`collect` releases it (``backend.release`` deletes
    a LoRA adapter from the model). A finaliser may run in any thread, even in the middle of another
    thread's forward pass, so it only queues; the owner calls every other method under its model lock.
    """

    def __init__(self, backend: AdapterBackend) -> None:
        self._backend = backend
        self._modules: weakref.WeakKeyDictionary[object, nn.Module] = weakref.WeakKeyDictionary()
        self._finalizers: dict[int, weakref.finalize] = {}
        self._orphans: list[nn.Module] = []

    def __len__(self) -> int:
        return len(self._modules)

    def get(self, memory: object) -> nn.Module | None:
        return self._modules.get(memory)

    def add(self, memory: object, module: nn.Module) -> None:
        self.release(memory)
        self._modules[memory] = module
        self._finalizers[id(module)] = weakref.finalize(memory, self._orphans.append, module)

    def release(self, memory: object) -> None:
        """Release ``memory``'s module now (a later use rebuilds it from the memory's tensors)."""
        module = self._modules.pop(memory, None)
        if module is not None:
            self._finalizers.pop(id(module)).detach()
            self._backend.release(module)

    def collect(self) -> None:
        """Release the modules of memories that were garbage-collected since the last call."""
        while self._orphans:
            module = self._orphans.pop()
            self._finalizers.pop(id(module), None)
            self._backend.release(module)
