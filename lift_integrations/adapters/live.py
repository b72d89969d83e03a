"""The adapter modules built for memories on one model: at most one per memory that is still alive."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from lift_integrations.errors import MemoryMismatchError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lift_integrations.adapters.base import AdapterBackend
    from lift_integrations.memory import Memory


class LiveAdapters:
    """Builds the adapter module of each memory used on one model, from its tensors, and keeps it as long
    as the memory object lives.

    The modules held stay bounded by the memories alive, however often memories are loaded, replaced or
    shared between models. When a memory is garbage-collected its module is queued, and :meth:`collect`
    releases it (``backend.release`` deletes a LoRA adapter from the model). A finaliser may run in any
    thread, even in the middle of another thread's forward pass, so it only queues; the owner calls every
    other method under its model lock (creating an adapter may change the model's modules: not while it
    serves).

    ``model_name`` and ``fingerprint`` identify the base model, whose memories alone fit.
    """

    def __init__(self, backend: AdapterBackend, *, model_name: str, fingerprint: str) -> None:
        self.backend = backend
        self.model_name = model_name
        self.fingerprint = fingerprint
        self._modules: weakref.WeakKeyDictionary[object, nn.Module] = weakref.WeakKeyDictionary()
        self._finalizers: dict[int, weakref.finalize] = {}
        self._orphans: list[nn.Module] = []
        # Each memory's finaliser holds its module; once the model is gone, memories that outlive it must
        # not keep its modules (a Gated Memory's is a copy of the tensors on the model's device).
        weakref.finalize(self, _detach_all, self._finalizers, self._orphans)

    def __len__(self) -> int:
        return len(self._modules)

    def weights_for(self, memory: Memory) -> nn.Module:
        """``memory``'s module (frozen), built on first use."""
        self.collect()
        weights = self._modules.get(memory)
        if weights is None:
            weights = self.build(memory)
            for param in weights.parameters():
                param.requires_grad_(False)
            self.add(memory, weights)
        return weights

    def build(self, memory: Memory, generator: torch.Generator | None = None) -> nn.Module:
        """A new adapter module holding ``memory``'s tensors, made with the memory's own adapter
        configuration; :class:`MemoryMismatchError` if they do not fit this model."""
        config = self.config_of(memory)
        try:
            weights = self.backend.create(generator=generator, config=config)
        except ValueError as error:  # e.g. LoRA target modules this model does not have
            raise MemoryMismatchError(f"the memory's adapter does not fit this model: {error}") from None
        expected = {name: tuple(t.shape) for name, t in weights.state_dict().items()}
        given = {name: tuple(t.shape) for name, t in memory.tensors.items()}
        if expected != given:
            self.backend.release(weights)
            raise MemoryMismatchError(
                "the memory's tensors do not fit this model's adapter "
                f"(first differences: {sorted(set(expected.items()) ^ set(given.items()))[:3]})"
            )
        device = next(self.backend.model.parameters()).device
        weights.load_state_dict({k: v.to(device) for k, v in memory.tensors.items()})
        return weights

    def config_of(self, memory: Memory) -> Any:
        """The adapter configuration ``memory`` runs with here; :class:`MemoryMismatchError` if it was
        made for another base model or adapter kind, or its configuration cannot fit this model."""
        if memory.adapter_kind != self.backend.kind:
            raise MemoryMismatchError(
                f"this memory uses the {memory.adapter_kind!r} adapter, but the model was "
                f"loaded with adapter={self.backend.kind!r}"
            )
        if memory.base_fingerprint != self.fingerprint:
            raise MemoryMismatchError(
                f"this memory was made for base model {memory.base_model_name!r} (fingerprint "
                f"{memory.base_fingerprint}), not for {self.model_name!r} (fingerprint {self.fingerprint})"
            )
        try:
            shapes = {name: tuple(t.shape) for name, t in memory.tensors.items()}
            return self.backend.memory_config(memory.adapter_config, shapes)
        except (TypeError, ValueError) as error:
            if isinstance(error, MemoryMismatchError):
                raise
            raise MemoryMismatchError(
                f"the memory's adapter configuration is invalid here: {error}"
            ) from None

    def add(self, memory: object, module: nn.Module) -> None:
        """Keep ``module`` as ``memory``'s (replacing any it had)."""
        self.release(memory)
        self._modules[memory] = module
        self._finalizers[id(module)] = weakref.finalize(memory, self._orphans.append, module)

    def release(self, memory: object) -> None:
        """Release ``memory``'s module now (a later use rebuilds it from the memory's tensors)."""
        module = self._modules.pop(memory, None)
        if module is not None:
            self._finalizers.pop(id(module)).detach()
            self.backend.release(module)

    def collect(self) -> None:
        """Release the modules of memories that were garbage-collected since the last call."""
        while self._orphans:
            module = self._orphans.pop()
            self._finalizers.pop(id(module), None)
            self.backend.release(module)


def _detach_all(finalizers: dict[int, weakref.finalize], orphans: list[nn.Module]) -> None:
    for finalizer in finalizers.values():
        finalizer.detach()
    finalizers.clear()
    orphans.clear()
