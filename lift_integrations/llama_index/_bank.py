"""A memory bank behind a framework adapter: which memory answers each call, and the bank's arguments.

Nothing here depends on LlamaIndex: :class:`BankSlot` takes the core's ``{"role", "content"}`` messages,
so the LangChain binding can use the same logic (or this module, once it moves into the core).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from lift_integrations.bank import BankRouter, MemoryBank, bank_names
from lift_integrations.bank_router import BankRouting, bank_routing_for
from lift_integrations.routing import conversation_query

if TYPE_CHECKING:
    from lift_integrations.memory import Memory
    from lift_integrations.routing import Embedder

MemoryPer = Literal["index", "document"]
MEMORY_PER: tuple[str, ...] = ("index", "document")


def check_memory_per(memory_per: Any) -> MemoryPer:
    """``"index"`` (one memory for every document) or ``"document"`` (a bank: one memory per document)."""
    if not isinstance(memory_per, str) or memory_per not in MEMORY_PER:
        raise ValueError(
            f"memory_per must be 'index' (one memory for all documents) or 'document' (one memory per "
            f"document, routed per question), got {memory_per!r}"
        )
    return memory_per  # type: ignore[return-value]


def check_bank_routing(memory_per: Any, bank_routing: Any) -> BankRouting | None:
    """:func:`~lift_integrations.bank_router.bank_routing_for`, pointing to the LLM's field."""
    return bank_routing_for(memory_per, bank_routing, "LLM")


def embedding_embedder(embed_model: Any, argument: str) -> Embedder | None:
    """An :data:`~lift_integrations.routing.Embedder` from a LlamaIndex embedding (anything with
    ``get_text_embedding_batch``), so routers share the embeddings a RAG pipeline already uses; ``None``
    for ``None`` (the router's default, all-MiniLM-L6-v2)."""
    if embed_model is None:
        return None
    if not callable(getattr(embed_model, "get_text_embedding_batch", None)):
        raise TypeError(
            f"{argument} must be a LlamaIndex embedding (with get_text_embedding_batch), "
            f"got {type(embed_model).__name__}"
        )

    def embed(texts: Sequence[str]) -> Any:
        return embed_model.get_text_embedding_batch(list(texts))

    return embed


def new_name(bank: MemoryBank, title: str) -> str:
    """A name for one more memory of ``bank``: :func:`bank_names` of ``title``, unique in the bank."""
    base = bank_names([title])[0]
    if base == "document-1":
        base = f"document-{len(bank) + 1}"
    taken = {name.casefold() for name in bank.names}
    name, count = base, 1
    while name.casefold() in taken:
        count += 1
        name = f"{base}-{count}"
    return name


class BankSlot:
    """The :class:`BankRouter` of whichever bank an adapter holds, built (and calibrated) once under a
    lock and reused by every call, rebuilt when the adapter gets another bank, the bank's names change
    (a memory added or removed) or the routing options do. Replacing a memory under the same name keeps
    the old routes: hand the bank over again (a new slot, or :meth:`reset`) after
    ``bank.add(name, memory, replace=True)``."""

    def __init__(self, embed: Embedder | None = None) -> None:
        self.embed = embed
        self._bank: MemoryBank | None = None
        self._names: tuple[str, ...] = ()
        self._router: BankRouter | None = None
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._bank, self._names, self._router = None, (), None

    def router(self, bank: MemoryBank, routing: BankRouting | None = None) -> BankRouter:
        """``bank``'s router with ``routing`` (default: the bank's own), built on first use and whenever
        the bank, its names or the options changed."""
        names = tuple(bank.names)
        routing = bank.routing if routing is None else BankRouting.of(routing)
        with self._lock:
            current = self._router
            if (
                current is None
                or self._bank is not bank
                or self._names != names
                or current.routing != routing.resolved()
            ):
                current = BankRouter(bank, embed=self.embed, routing=routing)
                _ = current.thresholds  # calibrated here, once, rather than by concurrent first calls
                self.embed = current.embed  # the default embedder loads once, not once per bank
                self._bank, self._names, self._router = bank, names, current
            return current

    def route(
        self, bank: MemoryBank, question: str, routing: BankRouting | None = None
    ) -> tuple[str | None, Memory | None]:
        """The name and memory of ``bank`` that ``question`` is about, or ``(None, None)``: the base model
        (also for an empty question)."""
        if not question.strip():
            return None, None
        name = self.router(bank, routing).route(question)
        return (name, bank.get(name)) if name is not None else (None, None)

    def route_chat(
        self, bank: MemoryBank, messages: Sequence[Mapping[str, str]], routing: BankRouting | None = None
    ) -> tuple[str | None, Memory | None]:
        """:meth:`route` for a chat on its :func:`~lift_integrations.routing.conversation_query`: the last
        user turn, with the turns before it only when it is a follow-up ("What is its population?"), so
        an unrelated question that stands alone does not go to the memory the conversation began with."""
        return self.route(bank, conversation_query(messages), routing)
