"""LangChain's standard conformance suites (langchain-tests) for the chat model and the retriever.

Expected: unit 8 passed / 2 skipped, integration 17 passed / 33 skipped, retriever 5 passed. The chat
suites run on the tiny in-process model (registered by name, so every function-scoped ``model`` fixture
is a fresh, cheap instance sharing one set of weights).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from lc_tiny_model import TINY_NAME, tiny_lift

from lift_integrations.langchain import LIFTChatModel, LIFTMemoryRetriever


class _LIFTChatModelSettings:
    @property
    def chat_model_class(self) -> type[LIFTChatModel]:
        return LIFTChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        tiny_lift()  # builds and registers the tiny model once; never max_tokens/stop here
        return {"model": TINY_NAME}

    @property
    def supports_model_override(self) -> bool:
        return False

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False


class TestLIFTChatModelUnit(_LIFTChatModelSettings, ChatModelUnitTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return {"temperature": 0, "max_tokens": 12, "stop": []}


class TestLIFTChatModelIntegration(_LIFTChatModelSettings, ChatModelIntegrationTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return {"max_tokens": 12}


RETRIEVER_DOCS = [
    Document(
        page_content="The Normans were a people from Normandy in northern France.", metadata={"source": "a"}
    ),
    Document(
        page_content="Rollo agreed to swear fealty to King Charles III of West Francia.",
        metadata={"source": "b"},
    ),
    Document(
        page_content="The Norman conquest of England began in 1066 at Hastings.", metadata={"source": "c"}
    ),
    Document(page_content="Norman architecture is known for its rounded arches.", metadata={"source": "d"}),
]


class TestLIFTMemoryRetrieverStandard(RetrieversIntegrationTests):
    """Hybrid mode without an llm: the retriever only indexes (parametric mode is covered elsewhere)."""

    @property
    def retriever_constructor(self) -> type[LIFTMemoryRetriever]:
        return LIFTMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {
            "documents": RETRIEVER_DOCS,
            "embeddings": DeterministicFakeEmbedding(size=32),
            "mode": "hybrid",
        }

    @property
    def retriever_query_example(self) -> str:
        return "Who were the Normans?"


@pytest.mark.slow
class TestLIFTChatModelIntegrationEmbedded(ChatModelIntegrationTests):
    """The integration suite once against the real embedded SmolLM2-135M-Instruct (short generations)."""

    @property
    def chat_model_class(self) -> type[LIFTChatModel]:
        return LIFTChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"device": "cpu"}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return {"max_tokens": 8}

    @property
    def supports_model_override(self) -> bool:
        return False

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False
