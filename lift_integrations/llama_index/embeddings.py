"""``LIFTSentenceTransformerEmbedding``: a small sentence-transformers ``BaseEmbedding`` for hybrid chunks.

``llama-index-embeddings-huggingface`` would do the same, but it is one more distribution to install and
pin; sentence-transformers is already in the ``[embeddings]`` extra. The default model is the embedded
all-MiniLM-L6-v2, so hybrid retrieval works offline and never falls back to ``Settings.embed_model``
(which resolves to OpenAI).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from lift_integrations.loading import default_embedding_path

# Shared like LIFTLLM's weights: one SentenceTransformer per (model, device).
_MODELS: dict[tuple[str, str | None], Any] = {}
_MODELS_LOCK = threading.Lock()


class LIFTSentenceTransformerEmbedding(BaseEmbedding):
    """Embeds text with a sentence-transformers model, loaded on first use and shared between instances.

    ``model_name`` is a local folder or a hub id (default: the embedded all-MiniLM-L6-v2). Vectors are
    L2-normalised by default, so the vector store's dot-product and cosine scores agree.
    """

    device: str | None = Field(
        default=None, description="Torch device; None lets sentence-transformers pick."
    )
    normalize: bool = Field(default=True, description="L2-normalise the vectors.")

    _model: Any = PrivateAttr(default=None)

    def __init__(self, model_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(model_name=model_name or default_embedding_path(), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "LIFTSentenceTransformerEmbedding"

    @property
    def client(self) -> Any:
        """The ``SentenceTransformer``, loaded on first access."""
        if self._model is None:
            key = (self.model_name, self.device)
            with _MODELS_LOCK:
                if key not in _MODELS:
                    try:
                        from sentence_transformers import SentenceTransformer
                    except ImportError as error:
                        raise ImportError(
                            "LIFTSentenceTransformerEmbedding needs sentence-transformers; install it with "
                            "`pip install 'lift-integrations[llamaindex]'`"
                        ) from error
                    _MODELS[key] = SentenceTransformer(self.model_name, device=self.device)
                self._model = _MODELS[key]
        return self._model

    def _embed(self, texts: list[str]) -> list[Embedding]:
        vectors = self.client.encode(
            texts,
            batch_size=self.embed_batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._embed, texts)
