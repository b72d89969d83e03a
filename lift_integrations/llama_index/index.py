"""``LIFTIndex``: documents absorbed into a memory, plus (in hybrid mode) a vector index of their chunks.

It offers the index surface LlamaIndex users reach for: ``from_documents``, ``insert``,
``delete_ref_doc``, ``as_retriever``, ``as_query_engine``, ``as_chat_engine`` and ``storage_context``,
whose ``persist(persist_dir=...)`` writes the vector index's stores and the memory into one folder that
:meth:`LIFTIndex.load` restores. It is not a ``BaseIndex`` subclass: that class is built around an
``index_struct`` that ``load_index_from_storage`` maps to one of LlamaIndex's own index classes, and
around node-level insertion and deletion, which a memory cannot do (documents are trained into its
weights). So ``load_index_from_storage`` on a persisted LIFT index returns its ``VectorStoreIndex``
(hybrid mode): a working chunk index without the memory; ``LIFTIndex.load`` gives back the whole index.

The memory lives in the index's :class:`LIFTLLM`, so every synthesizer that calls that LLM
(``LIFTSynthesizer`` or LlamaIndex's own) answers with it.

``memory_per="document"`` absorbs each document into its own memory, all in one run, into a memory bank
that the LLM routes every question through: the memory of the document it is about answers, or the base
model when it is about none (in hybrid mode, with the retrieved chunks in context either way). Deleting
a document then removes its memory; with one memory for the whole index (``memory_per="index"``), the
memory cannot forget one document, so ``delete_ref_doc`` asks whether to re-absorb the others into a
fresh memory or keep the memory as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine.types import BaseChatEngine, ChatMode
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document, TransformComponent

from lift_integrations._fs import user_path
from lift_integrations.documents import normalize_documents
from lift_integrations.llama_index._absorb import node_title, to_core_documents
from lift_integrations.llama_index._bank import (
    MemoryPer,
    check_bank_routing,
    check_memory_per,
    new_name,
)
from lift_integrations.llama_index._chat import chat_engine
from lift_integrations.llama_index._index_base import IndexBase, Mode, check_mode
from lift_integrations.llama_index._storage import LIFTStorageContext
from lift_integrations.llama_index.embeddings import LIFTSentenceTransformerEmbedding
from lift_integrations.llama_index.llm import LIFTLLM
from lift_integrations.llama_index.query_engine import LIFTQueryEngine
from lift_integrations.llama_index.retriever import LIFTRetriever
from lift_integrations.prompting import encode_text
from lift_integrations.validation import check_bool, check_int

if TYPE_CHECKING:
    from lift_integrations.bank import MemoryBank
    from lift_integrations.bank_router import BankRouting
    from lift_integrations.config import LIFTConfig
    from lift_integrations.memory import Memory

DEFAULT_CHUNK_SIZE = 256
DEFAULT_CHUNK_OVERLAP = 32
INDEX_FILE = "lift_index.json"
MEMORY_FOLDER = "memory"
BANK_FOLDER = "memory_bank"
VECTOR_FOLDER = "vector_index"  # where indexes persisted before the storage_context layout kept their chunks
KeepOrReabsorb = Literal["reabsorb", "keep"]


def _check_config(config: Any) -> None:
    """A ``LIFTConfig`` or ``None``, its settings valid (one may have changed since construction)."""
    if config is None:
        return
    from lift_integrations.config import LIFTConfig

    if not isinstance(config, LIFTConfig):
        raise TypeError(f"config must be a LIFTConfig or None, got {type(config).__name__}")
    config.validate()


def _sha256(document: Document) -> str:
    """The sha256 a memory records for ``document`` (its title and text, as absorbed)."""
    return normalize_documents(to_core_documents([document]))[0].sha256


def _check_ref_docs(ref_docs: Any) -> dict[str, str]:
    if ref_docs is None:
        return {}
    if not isinstance(ref_docs, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in ref_docs.items()
    ):
        raise TypeError("ref_docs must map each document's ref_doc_id to the sha256 its memory records")
    return dict(ref_docs)


def _check_llm(llm: Any) -> None:
    if not isinstance(llm, LIFTLLM):
        raise TypeError(
            f"llm must be a LIFTLLM (LIFTIndex never reads Settings.llm), got {type(llm).__name__}"
        )


class LIFTIndex(IndexBase):
    """Documents absorbed into ``llm``'s memory (or its memory bank, one memory per document); in hybrid
    mode also chunked into ``vector_index``.

    Build it with :meth:`from_documents`, save it with ``index.storage_context.persist(persist_dir=...)``
    and reload it with :meth:`load`. The constructor wraps parts that already exist (an LLM whose memory
    or memory bank holds the documents and, for hybrid mode, a vector index over the same documents);
    :attr:`memory_per` follows the LLM. ``ref_docs`` maps each document's ``ref_doc_id`` to the sha256
    its memory records (:meth:`from_documents` and :meth:`insert` fill it): without an entry,
    :meth:`delete_ref_doc` cannot tell which memory holds a document.
    """

    def __init__(
        self,
        llm: LIFTLLM,
        *,
        mode: Mode = "hybrid",
        vector_index: VectorStoreIndex | None = None,
        config: LIFTConfig | None = None,
        ref_docs: Mapping[str, str] | None = None,
    ) -> None:
        _check_llm(llm)
        self.mode: Mode = check_mode(mode)
        if vector_index is not None and not isinstance(vector_index, VectorStoreIndex):
            raise TypeError(
                f"vector_index must be a VectorStoreIndex or None, got {type(vector_index).__name__}"
            )
        _check_config(config)
        if self.mode == "hybrid" and vector_index is None:
            raise ValueError("hybrid mode needs a vector_index over the absorbed documents")
        self._llm = llm
        self._vector_index = vector_index
        self._config = config
        self._ref_docs = _check_ref_docs(ref_docs)
        stores = vector_index.storage_context if vector_index is not None else StorageContext.from_defaults()
        # Shares the vector index's stores; its persist also writes this index's memory and record.
        self._storage_context = LIFTStorageContext.sharing(stores, owner=self)

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        llm: LIFTLLM,
        *,
        mode: Mode = "hybrid",
        config: LIFTConfig | None = None,
        show_progress: bool | None = None,
        embed_model: BaseEmbedding | None = None,
        transformations: list[TransformComponent] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        callback_manager: CallbackManager | None = None,
        memory_per: MemoryPer = "index",
        storage_context: StorageContext | None = None,
        bank_routing: BankRouting | Mapping[str, Any] | None = None,
    ) -> LIFTIndex:
        """Absorb ``documents`` into a fresh memory of ``llm`` (replacing the memory or bank it had).

        ``memory_per="index"`` (default): one memory holds every document. ``memory_per="document"``:
        one memory per document, absorbed side by side (``LIFTLLM.absorb_memory_bank``), named after the
        documents' ``title`` (or ``file_name``) metadata; each question goes to the memory of the
        document it is about, or to the base model (``raw["memory_name"]`` says which). The router embeds
        with ``embed_model`` when one is given, else with the LLM's ``router_embed_model`` or
        all-MiniLM-L6-v2, and decides by ``bank_routing`` (:class:`~lift_integrations.BankRouting` or a
        dict of its options, such as ``{"margin": 0.1}``; set as ``llm.bank_routing``; default: the LLM's).

        ``config``: the :class:`LIFTConfig` (default: ``LIFTConfig.fast()`` on CPU). ``show_progress``:
        a tqdm bar for absorption (``None``: drawn unless ``$LIFT_PROGRESS`` is ``0``), ``True`` one for
        chunk embedding too. Hybrid mode also builds a ``VectorStoreIndex`` with
        ``embed_model`` (default: :class:`LIFTSentenceTransformerEmbedding`, never
        ``Settings.embed_model``) over chunks of ``chunk_size`` tokens of the LIFT model's tokenizer, or
        over ``transformations`` when given, in ``storage_context`` when given (another vector store).
        The vector index is built first: it is fast and fails fast. Every argument is checked before
        either is built, and the documents' ids (``ref_doc_id``) must be unique.
        """
        _check_llm(llm)
        if isinstance(documents, (str, bytes, bytearray, Document)) or not isinstance(documents, Iterable):
            raise TypeError(
                f"documents must be a list of LlamaIndex Documents, got {type(documents).__name__}"
            )
        documents = list(documents)
        if not documents:
            raise ValueError("no documents given: pass at least one Document")
        for position, document in enumerate(documents):
            if not isinstance(document, Document):
                raise TypeError(
                    f"documents[{position}] must be a LlamaIndex Document, got {type(document).__name__}"
                )
        ref_docs = {document.doc_id: _sha256(document) for document in documents}
        if len(ref_docs) != len(documents):
            raise ValueError("two documents share a doc_id: each document needs its own (delete_ref_doc)")
        check_mode(mode)
        check_memory_per(memory_per)
        routing = check_bank_routing(memory_per, bank_routing)
        _check_config(config)
        check_bool(show_progress, "show_progress", optional=True)
        check_int(chunk_size, "chunk_size", minimum=1)
        check_int(chunk_overlap, "chunk_overlap", minimum=0)
        if chunk_overlap > chunk_size:  # SentenceSplitter's own rule
            raise ValueError(f"chunk_overlap ({chunk_overlap}) must not exceed chunk_size ({chunk_size})")
        if embed_model is not None and not isinstance(embed_model, BaseEmbedding):
            raise TypeError(
                f"embed_model must be a LlamaIndex BaseEmbedding or None, got {type(embed_model).__name__}"
            )
        if storage_context is not None and not isinstance(storage_context, StorageContext):
            raise TypeError(
                f"storage_context must be a StorageContext or None, got {type(storage_context).__name__}"
            )
        if transformations is not None and not isinstance(transformations, Sequence):
            raise TypeError(
                f"transformations must be a list of TransformComponent or None, "
                f"got {type(transformations).__name__}"
            )
        vector_index = None
        if mode == "hybrid":
            vector_index = VectorStoreIndex.from_documents(
                documents,
                embed_model=embed_model or LIFTSentenceTransformerEmbedding(),
                transformations=transformations or [_splitter(llm, chunk_size, chunk_overlap)],
                callback_manager=callback_manager,
                show_progress=show_progress is True,  # seconds of embedding: a bar when asked for
                storage_context=storage_context,
            )
        if memory_per == "document":
            llm.absorb_memory_bank(
                documents,
                config=config,
                show_progress=show_progress,
                router_embed_model=embed_model,
                bank_routing=routing,
            )
        else:
            llm.absorb(documents, config=config, show_progress=show_progress, append=False)
        return cls(llm, mode=mode, vector_index=vector_index, config=config, ref_docs=ref_docs)

    @property
    def llm(self) -> LIFTLLM:
        return self._llm

    @property
    def memory(self) -> Memory | None:
        """The LLM's memory, which holds every absorbed document (``None`` with a memory bank)."""
        return self._llm.memory

    @property
    def memory_bank(self) -> MemoryBank | None:
        """The LLM's memory bank (``memory_per="document"``): one memory per absorbed document."""
        return self._llm.memory_bank

    @property
    def memory_per(self) -> MemoryPer:
        """``"document"`` when the LLM answers with a memory bank, else ``"index"``."""
        return "document" if self._llm.memory_bank is not None else "index"

    @property
    def vector_index(self) -> VectorStoreIndex | None:
        """The chunk index (hybrid mode), or ``None``."""
        return self._vector_index

    @property
    def storage_context(self) -> LIFTStorageContext:
        """The stores of the vector index (empty ones in parametric mode), as a LlamaIndex
        ``StorageContext`` whose ``persist(persist_dir=...)`` also writes the memory (or memory bank) and
        ``lift_index.json`` into ``persist_dir``; :meth:`load` restores the whole index from it."""
        return self._storage_context

    @property
    def docstore(self) -> Any:
        """The storage context's docstore (the chunks, in hybrid mode)."""
        return self._storage_context.docstore

    @property
    def ref_doc_ids(self) -> list[str]:
        """The ids of the documents this index holds, in the order they were absorbed."""
        return list(self._ref_docs)

    def insert(
        self, document: Document, *, config: LIFTConfig | None = None, show_progress: bool | None = None
    ) -> None:
        """Absorb one more document and add its chunks (hybrid).

        With a memory bank it becomes a new memory of the bank, named after its title; the other
        memories are untouched. With one memory for the index, training continues from the current
        memory, which then holds every document (later training can weaken what was absorbed first;
        ``delete_ref_doc(..., memory="reabsorb")`` and :meth:`from_documents` absorb from scratch).
        ``config`` defaults to the one the index was built with. The arguments are checked before any
        work; a document whose ``doc_id`` the index already holds is refused (delete it first).
        """
        if not isinstance(document, Document):
            raise TypeError(f"document must be a LlamaIndex Document, got {type(document).__name__}")
        _check_config(config)
        check_bool(show_progress, "show_progress", optional=True)
        if document.doc_id in self._ref_docs:
            raise ValueError(
                f"the index already holds a document with doc_id {document.doc_id!r}; "
                "delete_ref_doc it first to replace it"
            )
        sha = _sha256(document)
        config = config or self._config
        bank = self._llm.memory_bank
        if bank is not None:
            memory = self._llm.absorb_memory(document, config=config, show_progress=show_progress)
            bank.add(new_name(bank, node_title(document)), memory)  # the LLM's router sees the new name
        else:
            self._llm.absorb(document, config=config, show_progress=show_progress, append=True)
        if self._vector_index is not None:
            self._vector_index.insert(document)
        self._ref_docs[document.doc_id] = sha

    def delete_ref_doc(
        self,
        ref_doc_id: str,
        delete_from_docstore: bool = True,
        *,
        memory: KeepOrReabsorb | None = None,
        config: LIFTConfig | None = None,
        show_progress: bool | None = None,
    ) -> None:
        """Delete document ``ref_doc_id``: its chunks (hybrid: from the vector store and, with
        ``delete_from_docstore``, the docstore) and what the memory knows of it, as far as it can.

        With a memory bank (``memory_per="document"``) the document's own memory is removed from the
        bank: the index then knows nothing of it and the other memories are untouched. One memory for the
        whole index cannot forget one document (it is trained into the same weights as the others), so
        ``memory`` must say what to do: ``"reabsorb"`` absorbs the remaining documents into a fresh
        memory (as long as absorbing them took; ``config`` defaults to the index's), ``"keep"`` removes
        only the chunks and the index's record, and the memory still answers from the document. Without
        ``memory`` this raises ``ValueError`` and deletes nothing. The last document cannot be deleted
        (an index answers with at least one memory). Every check runs before anything is deleted.
        """
        if not isinstance(ref_doc_id, str):
            raise TypeError(f"ref_doc_id must be a str, got {type(ref_doc_id).__name__}")
        check_bool(delete_from_docstore, "delete_from_docstore")
        if memory not in (None, "reabsorb", "keep"):
            raise ValueError(f"memory must be 'reabsorb', 'keep' or None, got {memory!r}")
        _check_config(config)
        check_bool(show_progress, "show_progress", optional=True)
        if ref_doc_id not in self._ref_docs:
            raise KeyError(f"this index holds no document with ref_doc_id {ref_doc_id!r}")
        if len(self._ref_docs) == 1:
            raise ValueError("cannot delete the index's last document: build a new index instead")
        sha = self._ref_docs[ref_doc_id]
        bank = self._llm.memory_bank
        if bank is not None:
            if memory is not None:
                raise ValueError(
                    "memory= is for an index with one memory; with a memory bank the document's own "
                    "memory is removed"
                )
            names = self._bank_memories_of(bank, sha)
            for name in names:
                bank.remove(name)  # the LLM's router sees the names change
        elif memory is None:
            raise ValueError(
                "this index has one memory for all its documents, and a memory cannot forget one of them: "
                "pass memory='reabsorb' to absorb the other documents into a fresh memory, or "
                "memory='keep' to delete only the chunks (the memory still answers from the document)"
            )
        elif memory == "reabsorb":
            self._reabsorb_without(ref_doc_id, config or self._config, show_progress)
        if self._vector_index is not None:
            self._vector_index.delete_ref_doc(ref_doc_id, delete_from_docstore=delete_from_docstore)
        del self._ref_docs[ref_doc_id]

    def _bank_memories_of(self, bank: MemoryBank, sha: str) -> list[str]:
        """The names of the bank's memories that hold the document ``sha`` (and nothing else)."""
        names = [name for name in bank if any(d.sha256 == sha for d in bank.documents(name))]
        shared = [name for name in names if len(bank.documents(name)) > 1]
        if shared:
            raise ValueError(
                f"memory {shared[0]!r} of the bank holds other documents too and cannot forget one; "
                "remove it from llm.memory_bank yourself"
            )
        return names

    def _reabsorb_without(
        self, ref_doc_id: str, config: LIFTConfig | None, show_progress: bool | None
    ) -> None:
        """Absorb into a fresh memory the current memory's documents that the index still holds."""
        current = self._llm.memory
        if current is None:
            raise ValueError("the index's LLM holds no memory to re-absorb")
        keep = {sha for doc_id, sha in self._ref_docs.items() if doc_id != ref_doc_id}
        documents = [document for document in current.documents if document.sha256 in keep]
        if not documents:
            raise ValueError("the memory holds none of the index's other documents: nothing to re-absorb")
        self._llm.absorb(documents, config=config, show_progress=show_progress, append=False)

    def as_retriever(
        self, *, similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K, mode: Mode | None = None, **kwargs: Any
    ) -> LIFTRetriever:
        """A :class:`LIFTRetriever`; ``mode`` defaults to the index's."""
        return LIFTRetriever(self, similarity_top_k=similarity_top_k, mode=mode, **kwargs)

    def as_query_engine(
        self,
        llm: LIFTLLM | None = None,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        mode: Mode | None = None,
        streaming: bool = False,
        **kwargs: Any,
    ) -> LIFTQueryEngine:
        """A :class:`LIFTQueryEngine` over :meth:`as_retriever`; ``kwargs`` go to
        :meth:`LIFTQueryEngine.from_args` (``response_mode``, ``node_postprocessors``, ...)."""
        retriever = self.as_retriever(similarity_top_k=similarity_top_k, mode=mode)
        return LIFTQueryEngine.from_args(retriever, llm=llm or self._llm, streaming=streaming, **kwargs)

    def as_chat_engine(
        self,
        chat_mode: ChatMode | str = ChatMode.BEST,
        llm: LIFTLLM | None = None,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        mode: Mode | None = None,
        **kwargs: Any,
    ) -> BaseChatEngine:
        """A LlamaIndex chat engine answering with the index's LLM (or ``llm``), so with its memory.

        ``chat_mode``: ``"simple"`` (the memory alone, the conversation in its prompt), ``"context"``,
        ``"condense_question"``, ``"condense_plus_context"``, or ``"best"`` (default):
        condense-plus-context in hybrid mode, simple in parametric mode (which retrieves nothing).
        ``mode`` defaults to the index's; ``kwargs`` go to the engine's ``from_defaults``.
        """
        if llm is not None:
            _check_llm(llm)
        check_int(similarity_top_k, "similarity_top_k", minimum=1)
        return chat_engine(self, chat_mode, llm or self._llm, similarity_top_k, mode, kwargs)

    def persist(self, persist_dir: str | os.PathLike[str]) -> Path:
        """``self.storage_context.persist(persist_dir=persist_dir)``; returns the folder.

        The folder holds LlamaIndex's stores (``docstore.json``, ``index_store.json``, the vector
        stores), the LLM's memory (``memory/``, as ``LIFTLLM.save_memory`` writes it) or memory bank
        (``memory_bank/``, its manifest keeping the routing in effect) and ``lift_index.json`` (the mode
        and the documents' ids); :meth:`load` reads it back."""
        folder = user_path(persist_dir)
        self._storage_context.persist(persist_dir=folder)
        return folder

    def _persist_memory(self, folder: Path) -> None:
        if self._llm.memory_bank is not None:
            self._llm.save_memory_bank(folder / BANK_FOLDER)
        elif self._llm.memory is not None:
            self._llm.save_memory(folder / MEMORY_FOLDER)
        else:
            raise ValueError("the index's LLM holds no memory and no memory bank to persist")

    def _persist_record(self, folder: Path) -> None:
        record: dict[str, Any] = {
            "mode": self.mode,
            "memory_per": self.memory_per,
            "ref_docs": self._ref_docs,
        }
        (folder / INDEX_FILE).write_text(json.dumps(record), encoding="utf-8")

    @classmethod
    def load(
        cls,
        persist_dir: str | os.PathLike[str],
        llm: LIFTLLM,
        *,
        embed_model: BaseEmbedding | None = None,
        config: LIFTConfig | None = None,
        bank_routing: BankRouting | Mapping[str, Any] | None = None,
    ) -> LIFTIndex:
        """The index persisted to ``persist_dir`` (by ``storage_context.persist`` or :meth:`persist`),
        answering with ``llm`` (which takes the saved memory or memory bank). ``embed_model``: the vector
        index's embedding (default: :class:`LIFTSentenceTransformerEmbedding`, as in
        :meth:`from_documents`); with a memory bank it also routes questions when given, as in
        :meth:`from_documents`. ``config``: what later :meth:`insert` and re-absorbing use. With a bank,
        ``llm.bank_routing`` becomes ``bank_routing`` when given, else stays as it is; left ``None``, the
        bank routes as it was persisted (its manifest)."""
        _check_llm(llm)
        _check_config(config)
        folder = user_path(persist_dir)
        if not (folder / INDEX_FILE).is_file():
            raise FileNotFoundError(f"no LIFTIndex at {folder} (no {INDEX_FILE})")
        record = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"{folder / INDEX_FILE} is not a LIFTIndex record")
        mode = check_mode(record.get("mode", ""))
        ref_docs = _check_ref_docs(record.get("ref_docs", {}))
        memory_per = check_memory_per(record.get("memory_per"))
        routing = check_bank_routing(memory_per, bank_routing)
        vector_index = None
        if mode == "hybrid":  # read first: it fails fast, before the LLM's memory is replaced
            stores = folder / VECTOR_FOLDER if (folder / VECTOR_FOLDER).is_dir() else folder
            storage = StorageContext.from_defaults(persist_dir=str(stores))
            loaded = load_index_from_storage(
                storage, embed_model=embed_model or LIFTSentenceTransformerEmbedding()
            )
            if not isinstance(loaded, VectorStoreIndex):
                raise ValueError(f"{stores} holds a {type(loaded).__name__}, not a vector index")
            vector_index = loaded
        if memory_per == "document":
            from lift_integrations.bank import MemoryBank

            bank = MemoryBank.load(folder / BANK_FOLDER)
            llm.load_memory_bank(bank, router_embed_model=embed_model, bank_routing=routing)
        else:
            llm.load_memory(folder / MEMORY_FOLDER)
        return cls(llm, mode=mode, vector_index=vector_index, config=config, ref_docs=ref_docs)

    def __repr__(self) -> str:
        bank = self.memory_bank
        if bank is not None:
            documents = sum(len(bank.documents(name)) for name in bank)
            return f"LIFTIndex(mode={self.mode!r}, documents={documents}, memory_bank={len(bank)} memories)"
        memory = self.memory
        return (
            f"LIFTIndex(mode={self.mode!r}, documents={len(memory.documents) if memory else 0}, "
            f"memory={memory.id if memory else None!r})"
        )


def _splitter(llm: LIFTLLM, chunk_size: int, chunk_overlap: int) -> SentenceSplitter:
    """Chunks measured in the LIFT model's own tokens, since they end up in its context."""
    return SentenceSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        tokenizer=partial(encode_text, llm.lift_model.tokenizer),
    )
