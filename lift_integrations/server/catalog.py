"""Which model id names which memory: the base model, named memories, and a memory bank's memories."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lift_integrations.bank import MemoryBank
    from lift_integrations.memory import Memory


class ServedModels:
    """The model ids a server answers to.

    ``base_id`` answers with the base model alone; each key of ``memories`` with its memory; each name
    of ``bank`` with the bank's memory of that name, read from disk when first asked for (and dropped
    again past the bank's byte budget). Ids must not repeat.
    """

    def __init__(
        self, base_id: str, memories: Mapping[str, Memory] | None = None, bank: MemoryBank | None = None
    ) -> None:
        if not isinstance(base_id, str) or not base_id:
            raise ValueError(f"the base model's id must be a non-empty string, got {base_id!r}")
        self.base_id = base_id
        self.memories = dict(memories or {})
        self.bank = bank
        self.created = int(time.time())
        ids = [base_id, *self.memories, *(bank.names if bank is not None else [])]
        repeated = sorted({model_id for model_id in ids if ids.count(model_id) > 1})
        if repeated:
            raise ValueError(f"model ids must be unique; repeated: {repeated}")
        for model_id in self.memories:
            if not model_id:
                raise ValueError("a memory's model id must be a non-empty string")

    def ids(self) -> list[str]:
        """The base model first, then the named memories, then the bank's (its order)."""
        return [self.base_id, *self.memories, *(self.bank.names if self.bank is not None else [])]

    def __contains__(self, model_id: object) -> bool:
        return (
            model_id == self.base_id
            or model_id in self.memories
            or (self.bank is not None and model_id in self.bank)
        )

    def memory(self, model_id: str) -> Memory | None:
        """The memory ``model_id`` answers with (``None``: the base model); ``KeyError`` for an id not
        served. A bank memory may be read from disk here: call it off the event loop."""
        if model_id == self.base_id:
            return None
        if model_id in self.memories:
            return self.memories[model_id]
        if self.bank is not None and model_id in self.bank:
            return self.bank.get(model_id)
        raise KeyError(model_id)
