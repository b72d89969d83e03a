"""LangChain integration: :class:`LIFTChatModel` (alias :class:`ChatLIFT`) and :class:`LIFTMemoryRetriever`.

Importing this package loads ``langchain_core`` only; torch and transformers load when a model is first
used, sentence-transformers when hybrid retrieval first embeds text with the default embedder.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lift_integrations.langchain needs langchain-core: pip install 'lift-integrations[langchain]'"
    ) from error

from lift_integrations.langchain._absorb import EVENT_END, EVENT_PROGRESS, EVENT_START
from lift_integrations.langchain._documents import split_text
from lift_integrations.langchain.chat_models import ChatLIFT, LIFTChatModel, memory_info
from lift_integrations.langchain.embeddings import SentenceTransformerEmbeddings
from lift_integrations.langchain.retrievers import LIFTMemoryRetriever
from lift_integrations.registry import clear_model_cache, register_model, unregister_model

__all__ = [
    "EVENT_END",
    "EVENT_PROGRESS",
    "EVENT_START",
    "ChatLIFT",
    "LIFTChatModel",
    "LIFTMemoryRetriever",
    "SentenceTransformerEmbeddings",
    "clear_model_cache",
    "memory_info",
    "register_model",
    "split_text",
    "unregister_model",
]
