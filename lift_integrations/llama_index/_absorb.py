"""Absorbing LlamaIndex documents: their conversion to the core's documents, the absorb arguments'
checks, and the instrumentation events that report absorption (see ``events.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.schema import BaseNode, MetadataMode

from lift_integrations.documents import normalize_documents
from lift_integrations.llama_index.events import (
    LIFTAbsorbEndEvent,
    LIFTAbsorbProgressEvent,
    LIFTAbsorbStartEvent,
)
from lift_integrations.validation import check_bool

if TYPE_CHECKING:
    from lift_integrations.absorb.trainer import AbsorbProgress
    from lift_integrations.memory import Memory

dispatcher = get_dispatcher(__name__)


def node_title(node: BaseNode) -> str:
    """The title a memory records for a LlamaIndex document: its ``title`` or ``file_name`` metadata."""
    for key in ("title", "file_name"):
        value = node.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def to_core_documents(documents: Any) -> list[Any]:
    """LlamaIndex documents/nodes as ``(title, text)`` pairs; strings and pairs pass through to the core,
    which validates them (empty text, bytes, wrong types) with messages that name the document."""
    if isinstance(documents, (str, BaseNode)):
        documents = [documents]
    return [
        (node_title(d), d.get_content(metadata_mode=MetadataMode.NONE)) if isinstance(d, BaseNode) else d
        for d in documents
    ]


def absorb_arguments(documents: Any, config: Any, show_progress: Any) -> list[Any]:
    """The core documents to absorb, every argument checked before any event or work."""
    from lift_integrations.config import LIFTConfig

    if config is not None:
        if not isinstance(config, LIFTConfig):
            raise TypeError(f"config must be a LIFTConfig or None, got {type(config).__name__}")
        config.validate()  # a setting may have changed since construction
    check_bool(show_progress, "show_progress", optional=True)
    return normalize_documents(to_core_documents(documents))


def start_event(model_name: str, docs: Sequence[Any], into: Memory | None) -> None:
    dispatcher.event(
        LIFTAbsorbStartEvent(
            model_name=model_name,
            num_documents=len(docs),
            titles=[d.title for d in docs],
            base_memory_id=into.id if into is not None else None,
        )
    )


def progress_event(progress: AbsorbProgress) -> None:
    dispatcher.event(LIFTAbsorbProgressEvent(**progress.to_dict()))


def end_event(memory: Memory, name: str | None) -> None:
    stats = memory.stats
    dispatcher.event(
        LIFTAbsorbEndEvent(
            memory_id=memory.id,
            memory_name=name,
            num_documents=len(memory.documents),
            steps=int(stats.get("steps", 0)),
            seconds=float(stats.get("seconds", 0.0)),
            final_loss=float(stats.get("final_loss", float("nan"))),
        )
    )
