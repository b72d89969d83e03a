"""A LangChain chat model answering from a bank of memories: one memory per document, routed per call."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lift_integrations.bank_router import BankRouting, bank_routing_for
from lift_integrations.langchain._messages import memory_info

if TYPE_CHECKING:
    from lift_integrations.absorb.trainer import AbsorbProgress
    from lift_integrations.bank import BankRouter, MemoryBank
    from lift_integrations.config import LIFTConfig
    from lift_integrations.memory import Memory

MEMORY_PER = (None, "document")


def check_memory_per(value: Any) -> None:
    if value not in MEMORY_PER:
        raise ValueError(
            f"memory_per must be None (one memory for every document) or 'document', got {value!r}"
        )


def check_bank_routing(memory_per: Any, bank_routing: Any) -> BankRouting | None:
    """:func:`~lift_integrations.bank_router.bank_routing_for`, pointing to the chat model's field."""
    return bank_routing_for(memory_per, bank_routing, "chat model")


def is_bank_folder(path: Any) -> bool:
    from lift_integrations.bank import BANK_FILE

    return (
        isinstance(path, (str, os.PathLike)) and (Path(os.fsdecode(path)).expanduser() / BANK_FILE).is_file()
    )


def bank_info(bank: MemoryBank) -> dict[str, Any]:
    """What ``load_memory`` reports of a bank."""
    return {"memory_bank_id": bank.id, "num_memories": len(bank), "names": bank.names}


def absorbed_documents(memory: Memory | None, bank: MemoryBank | None) -> list[tuple[str, str]]:
    """``(title, text)`` of every document ``bank`` (or else ``memory``) holds."""
    if bank is not None:
        return [(d.title, d.text) for name in bank.names for d in bank.documents(name)]
    return [(d.title, d.text) for d in memory.documents] if memory is not None else []


@dataclass(frozen=True)
class BankRoutes:
    """The router of one bank as it was (its id) with one set of embeddings and routing options."""

    bank: MemoryBank
    bank_id: str
    embeddings: Any
    routing: BankRouting
    router: BankRouter

    def memory_for(self, turns: Sequence[Mapping[str, str]]) -> Memory | None:
        """The memory the conversation is about (:func:`~lift_integrations.routing.conversation_query`:
        the last user turn, with the turns before it when it is a follow-up), or ``None`` (the base model)."""
        from lift_integrations.routing import conversation_query

        question = conversation_query(turns)
        name = self.router.route(question) if question.strip() else None
        return self.bank.get(name) if name is not None else None


def route_in_bank(
    bank: MemoryBank, embeddings: Any, previous: BankRoutes | None, routing: BankRouting | None = None
) -> BankRoutes:
    """``previous`` while the bank, the embeddings and the routing options (default: the bank's own) are
    the same, else a new router."""
    bank_id, routing = bank.id, bank.routing if routing is None else BankRouting.of(routing)
    if (
        previous is not None
        and previous.bank is bank
        and previous.bank_id == bank_id
        and previous.embeddings is embeddings
        and previous.routing == routing
    ):
        return previous
    from lift_integrations.routing import document_embedder

    embed = None if embeddings is None else document_embedder(embeddings)
    if previous is not None and previous.embeddings is embeddings and embed is None:
        embed = previous.router.embed  # the default embedder loads once
    router = bank.router(embed=embed, routing=routing)
    _ = router.thresholds  # calibrated here, under the caller's lock, rather than by concurrent first calls
    return BankRoutes(bank, bank_id, embeddings, routing, router)


def absorb_bank(
    chat: Any,
    documents: list[tuple[str, str]],
    config: LIFTConfig,
    extend: bool,
    show_progress: bool | None,
    generator: Any,
    on_progress: Callable[[AbsorbProgress], None],
    routing: BankRouting | None,
) -> dict[str, Any]:
    """One memory per document, added to ``chat``'s bank (``extend``) or in a new one; ``routing``, when
    given, becomes ``chat``'s ``bank_routing``."""
    from lift_integrations.bank import MemoryBank, bank_names

    started = time.perf_counter()
    previous = chat.memory_bank if extend else None
    taken = previous.names if previous is not None else []
    names = bank_names([*taken, *(title for title, _ in documents)])[len(taken) :]
    fresh = MemoryBank.from_documents(
        chat.lift,
        documents,
        names=names,
        config=config,
        generator=generator,
        show_progress=show_progress,
        callback=on_progress,
    )
    bank = previous if previous is not None else MemoryBank()
    for name in fresh.names:
        bank.add(name, fresh[name])
    if routing is not None:  # before the bank, so no call routes the new bank with the old options
        chat.bank_routing = routing
    chat.memory, chat.memory_bank = None, bank
    return {
        "memory_bank_id": bank.id,
        "memories": {name: memory_info(fresh[name]) for name in fresh.names},
        "num_memories": len(bank),
        "seconds": round(time.perf_counter() - started, 3),
        "new_documents": len(documents),
    }
