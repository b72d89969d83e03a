"""Instrumentation events for absorption, the one LIFT step that takes minutes.

LlamaIndex's legacy ``CBEventType`` is a closed enum, so progress travels on the instrumentation
dispatcher instead: register a ``BaseEventHandler`` on ``get_dispatcher()`` and these events arrive with
the span id of the ``LIFTLLM.absorb_memory`` call that emitted them.
"""

from __future__ import annotations

from llama_index.core.instrumentation.events import BaseEvent


class LIFTAbsorbStartEvent(BaseEvent):
    """Absorption of ``num_documents`` documents begins (``base_memory_id``: the memory it extends)."""

    model_name: str
    num_documents: int
    titles: list[str]
    base_memory_id: str | None = None

    @classmethod
    def class_name(cls) -> str:
        return "LIFTAbsorbStartEvent"


class LIFTAbsorbProgressEvent(BaseEvent):
    """One optimizer step done; the fields mirror the core's ``AbsorbProgress``."""

    step: int
    total_steps: int
    stage: int
    epoch: int
    loss: float
    tokens_seen: int
    num_documents: int
    elapsed_s: float
    memory: int = 0
    """Which memory the step trained: its position among the documents of a memory bank (0 otherwise)."""

    @classmethod
    def class_name(cls) -> str:
        return "LIFTAbsorbProgressEvent"


class LIFTAbsorbEndEvent(BaseEvent):
    """Absorption finished; ``num_documents`` counts every document the new memory holds. A memory bank
    sends one per memory, ``memory_name`` naming it in the bank (``None`` for a single memory)."""

    memory_id: str
    memory_name: str | None = None
    num_documents: int
    steps: int
    seconds: float
    final_loss: float

    @classmethod
    def class_name(cls) -> str:
        return "LIFTAbsorbEndEvent"
