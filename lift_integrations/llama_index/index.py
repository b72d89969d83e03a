"""``LIFTIndex``: documents absorbed into a memory, plus (in hybrid mode) a vector index of their chunks.

A full ``BaseIndex`` subclass would have to implement node-level insertion and deletion, which a memory
cannot do (documents are trained into weights and cannot be taken out again). ``LIFTIndex`` offers the
surface users reach for instead: ``from_documents``, ``insert``, ``as_retriever``,
``as_query_engine``, ``persist`` and ``load``. The memory lives in the index's :class:`LIFTLLM`, so every
synthesizer that calls that LLM (``LIFTSynthesizer`` or LlamaIndex's own) answers with it.

``memory_per="document"`` absorbs each document into its own memory, all in one run, into a memory bank
that the LLM routes every question through: the memory of the document it is about answers, or the base
model when it is about none (in hybrid mode, with the retrieved chunks in context either way).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document, TransformComponent

from lift_integrations.llama_index._absorb import node_title
from lift_integrations.llama_index._bank import MemoryPer, check_memory_per, new_name
from lift_integrations.llama_index._index_base import IndexBase, Mode, check_mode
from lift_integrations.llama_index.embeddings import LIFTSentenceTransformerEmbedding
from lift_integrations.llama_index.llm import LIFTLLM
from lift_integrations.llama_index.query_engine import LIFTQueryEngine
from lift_integrations.llama_index.retriever import LIFTRetriever
from lift_integrations.prompting import encode_text
from lift_integrations.validation import check_bool, check_int

if TYPE_CHECKING:
    from lift_integrations.bank import MemoryBank
    from lift_integrations.config import LIFTConfig
    from lift_integrations.memory import Memory

DEFAULT_CHUNK_SIZE = 256
DEFAULT_CHUNK_OVERLAP = 32
INDEX_FILE = "lift_index.json"
MEMORY_FOLDER = "memory"
BANK_FOLDER = "memory_bank"
VECTOR_FOLDER = "vector_index"


def _check_config(config: Any) -> None:
    """A ``LIFTConfig`` or ``None``, its settings valid (one may have changed since construction)."""
    if config is None:
        return
    from lift_integrations.config import LIFTConfig

    if not isinstance(config, LIFTConfig):
        raise TypeError(f"config must be a LIFTConfig or None, got {type(config).__name__}")
    config.validate()


def _check_llm(llm: Any) -> None:
    if not isinstance(llm, LIFTLLM):
        raise TypeError(
            f"llm must be a LIFTLLM (LIFTIndex never reads Settings.llm), got {type(llm).__name__}"
        )


class LIFTIndex(IndexBase):
    """Documents absorbed into ``llm``'s memory (or its memory bank, one memory per document); in hybrid
    mode also chunked into ``vector_index``.

    Build it with :meth:`from_documents`, or reload one with :meth:`load`. The constructor wraps parts
    that already exist (an LLM whose memory or memory bank holds the documents and, for hybrid mode, a
    vector index over the same documents); :attr:`memory_per` follows the LLM.
    """

    def __init__(
        self,
        llm: LIFTLLM,
        *,
        mode: Mode = "hybrid",
        vector_index: VectorStoreIndex | None = None,
        config: LIFTConfig | None = None,
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
    ) -> LIFTIndex:
        """Absorb ``documents`` into a fresh memory of ``llm`` (replacing the memory or bank it had).

        ``memory_per="index"`` (default): one memory holds every document. ``memory_per="document"``:
        one memory per document, absorbed side by side (``LIFTLLM.absorb_memory_bank``), named after the
        documents' ``title`` (or ``file_name``) metadata; each question goes to the memory of the
        document it is about, or to the base model (``raw["memory_name"]`` says which). The router embeds
        with ``embed_model`` when one is given, else with the LLM's ``router_embed_model`` or
        all-MiniLM-L6-v2.

        ``config``: the :class:`LIFTConfig` (default: ``LIFTConfig.fast()`` on CPU). ``show_progress``:
        a tqdm bar for absorption (``None``: drawn unless ``$LIFT_PROGRESS`` is ``0``), ``True`` one for
        chunk embedding too. Hybrid mode also builds a ``VectorStoreIndex`` with
        ``embed_model`` (default: :class:`LIFTSentenceTransformerEmbedding`, never
        ``Settings.embed_model``) over chunks of ``chunk_size`` tokens of the LIFT model's tokenizer, or
        over ``transformations`` when given. The vector index is built first: it is fast and fails fast.
        Every argument is checked before either is built.
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
        check_mode(mode)
        check_memory_per(memory_per)
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
            )
        if memory_per == "document":
            llm.absorb_memory_bank(
                documents, config=config, show_progress=show_progress, router_embed_model=embed_model
            )
        else:
            llm.absorb(documents, config=config, show_progress=show_progress, append=False)
        return cls(llm, mode=mode, vector_index=vector_index, config=config)

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

    def insert(
        self, document: Document, *, config: LIFTConfig | None = None, show_progress: bool | None = None
    ) -> None:
        """Absorb one more document, continuing from the current memory (with a memory bank: into a new
        memory of the bank, named after its title), and add its chunks (hybrid).

        ``config`` defaults to the one the index was built with. The arguments are checked before any work.
        """
        if not isinstance(document, Document):
            raise TypeError(f"document must be a LlamaIndex Document, got {type(document).__name__}")
        _check_config(config)
        check_bool(show_progress, "show_progress", optional=True)
        config = config or self._config
        bank = self._llm.memory_bank
        if bank is not None:
            memory = self._llm.absorb_memory(document, config=config, show_progress=show_progress)
            bank.add(new_name(bank, node_title(document)), memory)  # the LLM's router sees the new name
        else:
            self._llm.absorb(document, config=config, show_progress=show_progress, append=True)
        if self._vector_index is not None:
            self._vector_index.insert(document)

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

    def persist(self, persist_dir: str | os.PathLike[str]) -> Path:
        """Save the index to the folder ``persist_dir``: the LLM's memory (``memory/``, as
        ``LIFTLLM.save_memory`` writes it) or memory bank (``memory_bank/``, ``LIFTLLM.save_memory_bank``),
        the vector index in hybrid mode (``vector_index/``, LlamaIndex's ``StorageContext.persist``) and
        ``lift_index.json`` (the mode). :meth:`load` reads it back. Returns the folder."""
        folder = Path(os.fsdecode(persist_dir)).expanduser()
        if self._llm.memory_bank is not None:
            self._llm.save_memory_bank(folder / BANK_FOLDER)
        elif self._llm.memory is not None:
            self._llm.save_memory(folder / MEMORY_FOLDER)
        else:
            raise ValueError("the index's LLM holds no memory and no memory bank to persist")
        if self._vector_index is not None:
            self._vector_index.storage_context.persist(persist_dir=str(folder / VECTOR_FOLDER))
        record = {"mode": self.mode, "memory_per": self.memory_per}
        (folder / INDEX_FILE).write_text(json.dumps(record), encoding="utf-8")
        return folder

    @classmethod
    def load(
        cls,
        persist_dir: str | os.PathLike[str],
        llm: LIFTLLM,
        *,
        embed_model: BaseEmbedding | None = None,
        config: LIFTConfig | None = None,
    ) -> LIFTIndex:
        """The index :meth:`persist` saved to ``persist_dir``, answering with ``llm`` (which takes the saved
        memory or memory bank). ``embed_model``: the vector index's embedding (default:
        :class:`LIFTSentenceTransformerEmbedding`, as in :meth:`from_documents`); with a memory bank it
        also routes questions when given, as in :meth:`from_documents`."""
        _check_llm(llm)
        _check_config(config)
        folder = Path(os.fsdecode(persist_dir)).expanduser()
        if not (folder / INDEX_FILE).is_file():
            raise FileNotFoundError(f"no LIFTIndex at {folder} (no {INDEX_FILE})")
        record = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        mode = check_mode(record.get("mode"))
        if check_memory_per(record.get("memory_per")) == "document":
            llm.load_memory_bank(folder / BANK_FOLDER, router_embed_model=embed_model)
        else:
            llm.load_memory(folder / MEMORY_FOLDER)
        vector_index = None
        if mode == "hybrid":
            storage = StorageContext.from_defaults(persist_dir=str(folder / VECTOR_FOLDER))
            loaded = load_index_from_storage(
                storage, embed_model=embed_model or LIFTSentenceTransformerEmbedding()
            )
            if not isinstance(loaded, VectorStoreIndex):
                raise ValueError(
                    f"{folder / VECTOR_FOLDER} holds a {type(loaded).__name__}, not a vector index"
                )
            vector_index = loaded
        return cls(llm, mode=mode, vector_index=vector_index, config=config)

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
