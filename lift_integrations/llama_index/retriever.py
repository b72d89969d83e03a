"""``LIFTRetriever``: the retrieval half of a :class:`~lift_integrations.llama_index.LIFTIndex`.

In hybrid mode it returns the top chunks of the index's vector store, which the synthesizer puts in
context next to the memory. In parametric mode it returns nothing on purpose: the documents are in the
memory's weights, and the synthesizer answers from the memory alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.schema import NodeWithScore, QueryBundle

from lift_integrations.llama_index._index_base import IndexBase, Mode, check_mode
from lift_integrations.validation import check_int

if TYPE_CHECKING:
    from lift_integrations.llama_index.llm import LIFTLLM


class LIFTRetriever(BaseRetriever):
    """Chunks for a LIFT index: ``similarity_top_k`` of them in hybrid mode, none in parametric mode.

    ``mode`` defaults to the index's; a hybrid index can also serve parametric retrieval (to compare the
    two on one absorption), but a parametric index has no chunks to retrieve. Extra keyword arguments
    go to the vector store's retriever (``filters``, ``vector_store_query_mode``, ...).
    """

    def __init__(
        self,
        index: IndexBase,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        mode: Mode | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **vector_kwargs: Any,
    ) -> None:
        if not isinstance(index, IndexBase):
            raise TypeError(f"index must be a LIFTIndex, got {type(index).__name__}")
        self._index = index
        self.mode: Mode = check_mode(mode or index.mode)
        self.similarity_top_k = check_int(similarity_top_k, "similarity_top_k", minimum=1)
        self._vector_retriever: BaseRetriever | None = None
        if self.mode == "hybrid":
            if index.vector_index is None:
                raise ValueError(
                    "this LIFTIndex was built in parametric mode and has no chunks to retrieve; "
                    "build it with mode='hybrid'"
                )
            self._vector_retriever = index.vector_index.as_retriever(
                similarity_top_k=similarity_top_k, **vector_kwargs
            )
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def index(self) -> IndexBase:
        """The :class:`~lift_integrations.llama_index.LIFTIndex` this retriever reads."""
        return self._index

    @property
    def llm(self) -> LIFTLLM:
        """The index's LLM (it holds the memory); query engines default to it."""
        return self._index.llm

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self._vector_retriever is None:
            return []
        return self._vector_retriever.retrieve(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self._vector_retriever is None:
            return []
        return await self._vector_retriever.aretrieve(query_bundle)
