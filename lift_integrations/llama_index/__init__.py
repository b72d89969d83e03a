"""LlamaIndex bindings: ``LIFTLLM``, ``LIFTIndex`` (and its ``LIFTStorageContext``), ``LIFTRetriever`` and
``LIFTQueryEngine``.

Importing this package imports ``llama_index.core`` but neither torch nor LangChain: the model loads on
first use, so building pipelines and reading ``metadata`` of objects that are never called stays cheap.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as error:
    raise ImportError(
        "lift_integrations.llama_index needs llama-index-core; install it with "
        "`pip install 'lift-integrations[llamaindex]'`"
    ) from error

from lift_integrations.llama_index._storage import LIFTStorageContext
from lift_integrations.llama_index._tools import react_grammar
from lift_integrations.llama_index.embeddings import LIFTSentenceTransformerEmbedding
from lift_integrations.llama_index.events import (
    LIFTAbsorbEndEvent,
    LIFTAbsorbProgressEvent,
    LIFTAbsorbStartEvent,
)
from lift_integrations.llama_index.index import LIFTIndex
from lift_integrations.llama_index.llm import LIFTLLM
from lift_integrations.llama_index.query_engine import LIFTQueryEngine, LIFTSynthesizer
from lift_integrations.llama_index.retriever import LIFTRetriever
from lift_integrations.registry import clear_model_cache, register_model, unregister_model

__all__ = [
    "LIFTLLM",
    "LIFTAbsorbEndEvent",
    "LIFTAbsorbProgressEvent",
    "LIFTAbsorbStartEvent",
    "LIFTIndex",
    "LIFTQueryEngine",
    "LIFTRetriever",
    "LIFTSentenceTransformerEmbedding",
    "LIFTStorageContext",
    "LIFTSynthesizer",
    "clear_model_cache",
    "react_grammar",
    "register_model",
    "unregister_model",
]
