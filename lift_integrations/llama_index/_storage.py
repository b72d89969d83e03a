"""``LIFTStorageContext``: a LlamaIndex ``StorageContext`` whose ``persist`` also writes the memory.

LlamaIndex users save an index with ``index.storage_context.persist(persist_dir=...)``. A LIFT index's
knowledge is mostly in its memory (or memory bank), which no LlamaIndex store holds, so a plain
``StorageContext`` would save the chunks and silently drop the memory. This subclass shares the stores of
the index's vector index (same objects, so nothing is copied) and, when an index owns it, writes the
memory and the index's record into the same folder: one ``persist_dir`` holds everything, laid out as
LlamaIndex lays it out (``docstore.json``, ``index_store.json``, ``default__vector_store.json``, ...),
plus ``memory/`` or ``memory_bank/`` and ``lift_index.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llama_index.core.storage.storage_context import (
    DEFAULT_PERSIST_DIR,
    DOCSTORE_FNAME,
    GRAPH_STORE_FNAME,
    IMAGE_STORE_FNAME,
    INDEX_STORE_FNAME,
    PG_FNAME,
    VECTOR_STORE_FNAME,
    StorageContext,
)

from lift_integrations._fs import user_path


class MemoryOwner(Protocol):
    """What a :class:`LIFTStorageContext` needs from its index (``LIFTIndex`` implements it)."""

    def _persist_memory(self, folder: Path) -> None:
        """Write the memory or memory bank into ``folder`` (before the stores: it is the likelier to fail)."""

    def _persist_record(self, folder: Path) -> None:
        """Write ``lift_index.json`` (last: its presence marks a complete index)."""


@dataclass
class LIFTStorageContext(StorageContext):
    """A ``StorageContext`` whose :meth:`persist` also writes its index's memory (``owner``).

    Without an owner it behaves exactly like LlamaIndex's. ``LIFTIndex.storage_context`` is one, owned
    by the index; reload what it wrote with ``LIFTIndex.load(persist_dir, llm)``.
    """

    owner: MemoryOwner | None = field(default=None, repr=False, compare=False)

    @classmethod
    def sharing(cls, storage: StorageContext, owner: MemoryOwner | None = None) -> LIFTStorageContext:
        """A context over the same store objects as ``storage`` (writes through either reach both)."""
        return cls(
            docstore=storage.docstore,
            index_store=storage.index_store,
            vector_stores=storage.vector_stores,
            graph_store=storage.graph_store,
            property_graph_store=storage.property_graph_store,
            owner=owner,
        )

    def persist(
        self,
        persist_dir: str | os.PathLike[str] = DEFAULT_PERSIST_DIR,
        docstore_fname: str = DOCSTORE_FNAME,
        index_store_fname: str = INDEX_STORE_FNAME,
        vector_store_fname: str = VECTOR_STORE_FNAME,
        image_store_fname: str = IMAGE_STORE_FNAME,
        graph_store_fname: str = GRAPH_STORE_FNAME,
        pg_graph_store_fname: str = PG_FNAME,
        fs: Any = None,
    ) -> None:
        """LlamaIndex's ``persist`` (same arguments), plus the owner's memory and ``lift_index.json``.

        A memory is written to a local folder (atomically, as ``Memory.save`` does), so with an owner
        ``fs`` must be ``None`` or a local fsspec filesystem.
        """
        owner = self.owner
        if owner is not None and fs is not None and not _is_local(fs):
            raise ValueError(
                f"a LIFT index persists its memory to a local folder; fs={type(fs).__name__} is not local "
                "(persist to a local persist_dir, then copy the folder)"
            )
        folder = user_path(persist_dir)
        if owner is not None:
            owner._persist_memory(folder)
        super().persist(
            persist_dir=folder if fs is None else str(folder),
            docstore_fname=docstore_fname,
            index_store_fname=index_store_fname,
            vector_store_fname=vector_store_fname,
            image_store_fname=image_store_fname,
            graph_store_fname=graph_store_fname,
            pg_graph_store_fname=pg_graph_store_fname,
            fs=fs,
        )
        if owner is not None:
            owner._persist_record(folder)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)
