"""``LIFTMemoryRetriever``: the retriever slot of a RAG chain, backed by a LIFT memory.

In a LIFT pipeline the knowledge lives in the chat model's memory, so a chain written for RAG keeps its
shape and only swaps components:

* ``mode="parametric"``: :meth:`invoke` returns ``[]``; the model answers from its memory alone.
* ``mode="hybrid"``: :meth:`invoke` also returns the ``k`` passages of the absorbed documents closest to
  the query, which the chain places in the prompt as usual.

Documents given to the retriever are absorbed into ``llm``'s memory (which needs an ``llm``) and, in
hybrid mode, chunked and indexed in an ``InMemoryVectorStore``. Without an ``llm`` the retriever is a
plain hybrid-mode index: that is how the standard retriever tests build it from constructor
parameters alone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
    Callbacks,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from lift_integrations.bank_router import BankRouting
from lift_integrations.documents import document_sha256
from lift_integrations.langchain._bank import check_bank_routing, check_memory_per
from lift_integrations.langchain._documents import chunk_documents, title_of, to_langchain_documents
from lift_integrations.langchain.chat_models import LIFTChatModel
from lift_integrations.validation import check_int


class LIFTMemoryRetriever(BaseRetriever):
    """Retriever over what a :class:`LIFTChatModel` has absorbed.

    Build it with :meth:`from_documents` (absorbs the documents into ``llm`` and indexes them), or from
    an ``llm`` whose memory already holds documents (for example after :meth:`LIFTChatModel.load_memory`):
    the memory stores its documents' text, and the index follows the memory, whoever changed it.

    ``k`` (an integer >= 0) is a field and an :meth:`invoke` keyword, checked before any search.
    ``embeddings`` default to the embedded all-MiniLM-L6-v2
    (:class:`~lift_integrations.langchain.SentenceTransformerEmbeddings`), loaded only when hybrid
    retrieval first needs it. ``base_retriever``, when given, replaces the built-in index for
    the in-context part of hybrid mode (keep your own chunking and store); absorption is unchanged.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: LIFTChatModel | None = None
    """The chat model whose memory absorbs the documents. ``None``: index only (hybrid mode)."""
    mode: Literal["hybrid", "parametric"] = "hybrid"
    k: int = 4
    embeddings: Embeddings | None = None
    documents: list[Any] | None = Field(default=None, exclude=True, repr=False)
    """Documents to absorb (with an ``llm``) and index at construction."""
    base_retriever: BaseRetriever | None = None
    chunk_size: int = 800
    chunk_overlap: int = 100
    absorb_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to :meth:`LIFTChatModel.absorb` (``lift_config``, LIFTConfig field overrides, ...)."""

    _store: InMemoryVectorStore | None = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.RLock)
    _indexed: dict[str, list[str]] = PrivateAttr(default_factory=dict)  # document key -> chunk ids
    _pending: dict[str, Document] = PrivateAttr(default_factory=dict)  # documents not yet embedded
    _metadata: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)  # document key -> metadata
    _synced_memory: str | None = PrivateAttr(default=None)

    @field_validator("k", "chunk_overlap", mode="before")
    @classmethod
    def _check_count(cls, value: Any, info: Any) -> int:
        return check_int(value, info.field_name, minimum=0)

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _check_chunk_size(cls, value: Any) -> int:
        return check_int(value, "chunk_size", minimum=1)

    @model_validator(mode="after")
    def _check(self) -> LIFTMemoryRetriever:
        if self.mode == "parametric" and self.llm is None:
            raise ValueError(
                "parametric mode keeps documents only in a model's memory: pass llm=LIFTChatModel(...)"
            )
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be less than chunk_size ({self.chunk_size})"
            )
        return self

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        if self.documents:
            self.add_documents(self.documents)

    @classmethod
    def from_documents(
        cls,
        documents: Any,
        *,
        llm: LIFTChatModel | None = None,
        mode: Literal["hybrid", "parametric"] = "hybrid",
        embeddings: Embeddings | None = None,
        k: int = 4,
        memory_per: Literal["document"] | None = None,
        bank_routing: BankRouting | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> LIFTMemoryRetriever:
        """Absorb ``documents`` into ``llm``'s memory (and index them for hybrid mode).

        ``memory_per="document"``: one memory per document, absorbed side by side into ``llm``'s memory
        bank, and each question answered with the memory of the document it is about (or the base
        model); in hybrid mode the retrieved chunks come from every document, as usual. Persist it with
        ``llm.save_memory(folder)`` and reload it with ``llm.load_memory(folder)``. ``bank_routing``
        (with ``memory_per="document"``): how the bank routes, set as ``llm.bank_routing``
        (:class:`~lift_integrations.BankRouting`, or a dict such as ``{"margin": 0.1}``).

        ``kwargs``: other fields (``base_retriever``, ``chunk_size``, ``absorb_kwargs``…). Absorption
        needs an ``llm``; with ``llm=None`` (hybrid only) the documents are just indexed. ``llm.mode`` is
        set to ``mode``, so its answers report the pipeline they belong to (``lift_mode``).
        """
        if memory_per is not None:
            check_memory_per(memory_per)
        routing = check_bank_routing(memory_per, bank_routing)
        if memory_per is not None:
            absorb_kwargs = {**kwargs.get("absorb_kwargs", {}), "memory_per": memory_per}
            kwargs["absorb_kwargs"] = absorb_kwargs | ({"bank_routing": routing} if routing else {})
        retriever = cls(
            documents=list(to_langchain_documents(documents)),
            llm=llm,
            mode=mode,
            embeddings=embeddings,
            k=k,
            **kwargs,
        )
        if llm is not None:
            llm.mode = mode
        return retriever

    # Indexing ------------------------------------------------------------------------------------

    def _embeddings(self) -> Embeddings:
        if self.embeddings is None:
            from lift_integrations.langchain.embeddings import SentenceTransformerEmbeddings

            self.embeddings = SentenceTransformerEmbeddings()
        return self.embeddings

    def _queue(self, documents: list[Document]) -> list[str]:
        """Chunk ``documents`` and queue them for embedding; returns their chunk ids."""
        ids: list[str] = []
        with self._lock:
            for doc in documents:
                key = document_sha256(title_of(doc), doc.page_content)
                self._metadata.setdefault(key, dict(doc.metadata))
                chunks = chunk_documents([doc], self.chunk_size, self.chunk_overlap)
                ids += [chunk.id for chunk in chunks if chunk.id]
                if key not in self._indexed and key not in self._pending:
                    self._pending[key] = doc
        return ids

    def _sync_with_memory(self) -> None:
        """Make the index hold exactly the documents of ``llm``'s current memory (or memory bank)."""
        if self.llm is None:
            return
        memory_id = self.llm.memory_id
        if memory_id == self._synced_memory:
            return
        with self._lock:
            wanted: dict[str, Document] = {}
            for title, text in self.llm.absorbed_documents():
                key = document_sha256(title, text)
                metadata = self._metadata.get(key)
                if metadata is None:
                    metadata = {"title": title} if title else {}
                wanted[key] = Document(page_content=text, metadata=metadata)
            stale = [key for key in self._indexed if key not in wanted]
            if stale and self._store is not None:
                self._store.delete([chunk_id for key in stale for chunk_id in self._indexed.pop(key)])
            for key in [key for key in self._pending if key not in wanted]:
                del self._pending[key]
            for key, doc in wanted.items():
                if key not in self._indexed and key not in self._pending:
                    self._pending[key] = doc
            self._synced_memory = memory_id

    def _embed_pending(self) -> InMemoryVectorStore:
        with self._lock:
            if self._store is None:
                self._store = InMemoryVectorStore(self._embeddings())
            if self._pending:
                pending = list(self._pending.items())
                chunks = chunk_documents([doc for _, doc in pending], self.chunk_size, self.chunk_overlap)
                if chunks:
                    ids: list[str] = []
                    for chunk in chunks:
                        assert chunk.id is not None, "chunk_documents gives every chunk an id"
                        ids.append(chunk.id)
                    self._store.add_documents(chunks, ids=ids)
                for key, _ in pending:
                    self._indexed[key] = [c.id for c in chunks if c.id and c.id.startswith(key[:16] + "-")]
                self._pending.clear()
            return self._store

    def _absorb_args(
        self, config: RunnableConfig | None, callbacks: Callbacks, absorb_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """The retriever's ``absorb_kwargs`` updated with this call's; adding extends the memory."""
        merged = {"extend": True, **self.absorb_kwargs, **absorb_kwargs}
        if config is not None:
            merged["config"] = config
        if callbacks is not None:
            merged["callbacks"] = callbacks
        return merged

    def add_documents(
        self,
        documents: Any,
        *,
        config: RunnableConfig | None = None,
        callbacks: Callbacks = None,
        **absorb_kwargs: Any,
    ) -> list[str]:
        """Absorb ``documents`` into ``llm``'s memory (extending it) and index them; returns the ids of the
        indexed chunks (hybrid) or of the absorbed documents (parametric).

        Without an ``llm`` (hybrid mode only) the documents are indexed and nothing is absorbed.
        ``absorb_kwargs`` go to :meth:`LIFTChatModel.absorb` (``lift_config=``, ``show_progress=``, config
        overrides); ``config``/``callbacks`` receive its ``lift_absorb_*`` custom events.
        """
        docs = to_langchain_documents(documents)
        if self.llm is not None:
            self.llm.absorb(docs, **self._absorb_args(config, callbacks, absorb_kwargs))
        return self._index(docs)

    async def aadd_documents(
        self,
        documents: Any,
        *,
        config: RunnableConfig | None = None,
        callbacks: Callbacks = None,
        **absorb_kwargs: Any,
    ) -> list[str]:
        """:meth:`add_documents` without blocking the event loop."""
        docs = to_langchain_documents(documents)
        if self.llm is not None:
            await self.llm.aabsorb(docs, **self._absorb_args(config, callbacks, absorb_kwargs))
        return await asyncio.to_thread(self._index, docs)

    def _index(self, docs: list[Document]) -> list[str]:
        if self.mode == "parametric":  # nothing to index: ids of the absorbed documents
            with self._lock:
                keys = [document_sha256(title_of(doc), doc.page_content) for doc in docs]
                for key, doc in zip(keys, docs, strict=True):
                    self._metadata.setdefault(key, dict(doc.metadata))
            return [key[:16] for key in keys]
        ids = self._queue(docs)
        if self.base_retriever is None:
            self._sync_with_memory()
            if self.embeddings is not None:  # embed now when cheap to know; a default embedder loads lazily
                self._embed_pending()
        return ids

    # Retrieval -----------------------------------------------------------------------------------

    def _search(self, query: str, k: int) -> list[Document]:
        if self.mode == "parametric" or k == 0:
            return []
        self._sync_with_memory()
        store = self._embed_pending()
        return store.similarity_search(query, k=k)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None, **kwargs: Any
    ) -> list[Document]:
        limit = self.k if k is None else check_int(k, "k", minimum=0)
        if self.mode == "parametric" or limit == 0:
            return []
        if self.base_retriever is not None:
            found = self.base_retriever.invoke(query, config={"callbacks": run_manager.get_child()}, **kwargs)
            return found[:limit]
        return self._search(query, limit)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        limit = self.k if k is None else check_int(k, "k", minimum=0)
        if self.mode == "parametric" or limit == 0:
            return []
        if self.base_retriever is not None:
            found = await self.base_retriever.ainvoke(
                query, config={"callbacks": run_manager.get_child()}, **kwargs
            )
            return found[:limit]
        return await asyncio.to_thread(self._search, query, limit)
