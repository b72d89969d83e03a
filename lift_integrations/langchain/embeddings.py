"""A LangChain ``Embeddings`` over sentence-transformers, defaulting to the embedded all-MiniLM-L6-v2.

Hybrid retrieval needs an embedder that works offline out of the box. ``langchain-huggingface`` would
provide one, but it pins ``huggingface-hub<2``; this wrapper is the few lines we need. Any other LangChain
``Embeddings`` can be passed to :class:`LIFTMemoryRetriever` instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from lift_integrations.loading import default_embedding_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_MODELS: dict[tuple[str, str | None], SentenceTransformer] = {}
_LOCK = threading.Lock()


class SentenceTransformerEmbeddings(Embeddings):
    """Embeddings from a local sentence-transformers model (default: the embedded all-MiniLM-L6-v2).

    The model loads on first use and is shared by every instance with the same path and device, so
    building retrievers stays cheap. Vectors are L2-normalized, which makes the cosine similarity of
    ``InMemoryVectorStore`` a plain dot product.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        batch_size: int = 32,
        normalize: bool = True,
        show_progress: bool = False,
    ) -> None:
        self.model_name_or_path = os.fspath(model_name_or_path) if model_name_or_path is not None else None
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self.show_progress = show_progress

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbeddings(model_name_or_path={self.model_name_or_path!r})"

    @property
    def client(self) -> SentenceTransformer:
        """The loaded model (loads it on first access)."""
        path = self.model_name_or_path or default_embedding_path()
        key = (path, self.device)
        with _LOCK:
            model = _MODELS.get(key)
            if model is None:
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(path, device=self.device or "cpu")
                _MODELS[key] = model
        return model

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self.client
        with _LOCK:  # one forward at a time: torch modules are not re-entrant across threads on CPU anyway
            vectors: Any = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                show_progress_bar=self.show_progress,
                convert_to_numpy=True,
            )
        return [list(map(float, row)) for row in vectors.tolist()]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode(list(texts))

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
