"""LangChain's standard conformance suites (langchain-tests) for the chat model and the retriever.

Expected: unit 8 passed / 2 skipped, integration 32 passed / 11 skipped / 7 xfailed (tool calling and
structured output on; the xfails need meaningful answers, see RANDOM_WEIGHTS), retriever 5 passed. The chat
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
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True


class TestLIFTChatModelUnit(_LIFTChatModelSettings, ChatModelUnitTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return {"temperature": 0, "max_tokens": 12, "stop": []}


RANDOM_WEIGHTS = "the tiny model's weights are random: its constrained answers are valid, not meaningful"


class TestLIFTChatModelIntegration(_LIFTChatModelSettings, ChatModelIntegrationTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return {"max_tokens": 64}  # room for a tool call or a JSON answer

    # Each of these checks what an answer says, which random weights cannot get right; the format is
    # guaranteed (and checked) by tests/langchain/test_langchain_tools.py.
    @pytest.mark.xfail(reason=f"{RANDOM_WEIGHTS} (the call's argument must be the 3 of the question)")
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: Any) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=f"{RANDOM_WEIGHTS} (the call's argument must be the 3 of the question)")
    async def test_tool_calling_async(self, model: Any) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(
        reason=f"{RANDOM_WEIGHTS} (json_mode: the keys must be the joke's setup and punchline)"
    )
    def test_json_mode(self, model: Any) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(
        reason=f"{RANDOM_WEIGHTS} (tool_choice='auto': the model must decide to call the tool)"
    )
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=f"{RANDOM_WEIGHTS} (the argument must hold the Chinese name of the request)")
    def test_unicode_tool_call_integration(self, model: Any, *args: Any, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, *args, **kwargs)


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
        return {"max_tokens": 48}  # room for a tool call or a short JSON answer

    @property
    def supports_model_override(self) -> bool:
        return False

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    # SmolLM2-135M limits, not format problems (its answers there are valid JSON or text, as asked):
    @pytest.mark.xfail(reason="json_mode gives no schema: the 135M model picks its own value types")
    def test_json_mode(self, model: Any) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(reason="tool_choice='auto': the 135M model answers in text rather than call the tool")
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)
