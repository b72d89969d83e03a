"""Parity suite for ``LIFTIndex``, ``LIFTRetriever`` and ``LIFTQueryEngine``, plus ``LIFTLLM`` as
``Settings.llm`` under a stock ``VectorStoreIndex``, mirroring langchain-tests' retriever checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex, settings
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.llms import LLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore

from lift_integrations.llama_index import LIFTLLM, LIFTIndex, LIFTQueryEngine, LIFTRetriever

QUESTION = "What is the capital of Zorbia?"
QUERY_EVENTS = ("QueryStartEvent", "QueryEndEvent", "RetrievalStartEvent", "RetrievalEndEvent")


@pytest.fixture(scope="module", autouse=True)
def settings_must_not_resolve() -> Iterator[None]:
    """Reading an unset ``Settings.llm``/``embed_model`` resolves OpenAI; make any such read fail loudly,
    in the tests and in the module-scoped index fixture alike."""

    def refuse(value: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, (LLM, BaseEmbedding)):  # assigning a real object is fine
            return value
        raise AssertionError("an unset Settings.llm or Settings.embed_model was read")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "resolve_llm", refuse)
        patch.setattr(settings, "resolve_embed_model", refuse)
        yield


@pytest.fixture(autouse=True)
def unset_settings() -> Iterator[None]:
    """Each test starts with Settings.llm and Settings.embed_model unset and leaves them as it found them."""
    saved = (Settings._llm, Settings._embed_model)
    Settings._llm = Settings._embed_model = None
    yield
    Settings._llm, Settings._embed_model = saved


@pytest.fixture(scope="module")
def hybrid(tiny_smollm: Any, embed_model: Any, facts: Any, absorb_config: Any) -> LIFTIndex:
    """One hybrid index shared by the read-only tests (absorbing takes the time)."""
    docs = [Document(text=facts.zorbia, metadata={"title": "Zorbia"}), Document(text=facts.velmora)]
    llm = LIFTLLM(tiny_smollm, max_new_tokens=8)
    return LIFTIndex.from_documents(
        docs, llm=llm, embed_model=embed_model, config=absorb_config, chunk_size=32
    )


def test_from_documents_absorbs_and_chunks(hybrid: LIFTIndex) -> None:
    assert hybrid.mode == "hybrid"
    assert hybrid.memory is hybrid.llm.memory
    assert hybrid.memory.titles == ["Zorbia", ""]
    nodes = hybrid.vector_index.docstore.docs
    assert len(nodes) >= 3  # 32-token chunks of two short documents
    assert "documents=2" in repr(hybrid)


def test_retrieve_hybrid(hybrid: LIFTIndex, events: Any) -> None:
    retriever = hybrid.as_retriever(similarity_top_k=2)
    assert isinstance(retriever, LIFTRetriever) and retriever.llm is hybrid.llm
    nodes = retriever.retrieve(QUESTION)
    assert len(nodes) == 2 and all(isinstance(n, NodeWithScore) for n in nodes)
    assert "Quillport" in nodes[0].node.get_content()  # the embedding finds the chunk with the answer
    assert nodes[0].score >= nodes[1].score
    assert {"RetrievalStartEvent", "RetrievalEndEvent"} <= set(events.names())
    assert len(hybrid.as_retriever(similarity_top_k=1).retrieve(QUESTION)) == 1


async def test_aretrieve_hybrid(hybrid: LIFTIndex) -> None:
    retriever = hybrid.as_retriever(similarity_top_k=2)
    nodes = await retriever.aretrieve(QUESTION)
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in retriever.retrieve(QUESTION)]


async def test_retrieve_parametric_returns_nothing(hybrid: LIFTIndex) -> None:
    retriever = hybrid.as_retriever(mode="parametric")
    assert retriever.retrieve(QUESTION) == []
    assert await retriever.aretrieve(QUESTION) == []


def test_hybrid_query_puts_chunks_in_context(hybrid: LIFTIndex, events: Any) -> None:
    engine = hybrid.as_query_engine(similarity_top_k=2)
    assert isinstance(engine, LIFTQueryEngine) and isinstance(engine, RetrieverQueryEngine)
    response = engine.query(QUESTION)
    assert isinstance(response, Response) and response.response
    assert len(response.source_nodes) == 2
    names = set(events.names())
    assert {*QUERY_EVENTS, "SynthesizeStartEvent", "LLMChatStartEvent", "LLMChatEndEvent"} <= names
    (start,) = events.of("LLMChatStartEvent")
    assert start.additional_kwargs["context"] == [
        n.node.get_content(metadata_mode=MetadataMode.LLM) for n in response.source_nodes
    ]
    # The chunks reached the prompt: it is longer than the bare question's.
    (end,) = events.of("LLMChatEndEvent")
    bare = hybrid.llm.chat(start.messages).raw["usage"]["prompt_tokens"]
    assert end.response.raw["usage"]["prompt_tokens"] > bare + 20
    assert end.response.raw["memory_id"] == hybrid.memory.id


def test_parametric_query_answers_from_memory_alone(hybrid: LIFTIndex, events: Any) -> None:
    response = hybrid.as_query_engine(mode="parametric").query(QUESTION)
    assert response.response and response.response != "Empty Response"
    assert response.source_nodes == []
    assert {*QUERY_EVENTS, "LLMChatStartEvent", "LLMChatEndEvent"} <= set(events.names())
    (end,) = events.of("LLMChatEndEvent")
    assert end.response.raw["memory_id"] == hybrid.memory.id
    assert response.response == hybrid.llm.chat([end.messages[-1]]).message.content


async def test_aquery_both_modes(hybrid: LIFTIndex, events: Any) -> None:
    for mode in ("hybrid", "parametric"):
        engine = hybrid.as_query_engine(mode=mode)
        response = await engine.aquery(QUESTION)
        assert response.response and response.response != "Empty Response"
        assert response.response == engine.query(QUESTION).response
    assert len(events.of("QueryEndEvent")) == 4


def test_streaming_query(hybrid: LIFTIndex, events: Any) -> None:
    for mode in ("hybrid", "parametric"):
        expected = hybrid.as_query_engine(mode=mode).query(QUESTION).response
        response = hybrid.as_query_engine(mode=mode, streaming=True).query(QUESTION)
        assert isinstance(response, StreamingResponse)
        pieces = list(response.response_gen)
        assert pieces and all(pieces)
        assert "".join(pieces) == expected
    assert events.of("LLMChatInProgressEvent")


async def test_async_streaming_query(hybrid: LIFTIndex) -> None:
    expected = hybrid.as_query_engine(mode="parametric").query(QUESTION).response
    response = await hybrid.as_query_engine(mode="parametric", streaming=True).aquery(QUESTION)
    assert isinstance(response, AsyncStreamingResponse)
    pieces = [piece async for piece in response.async_response_gen()]
    assert pieces and all(pieces) and "".join(pieces) == expected


def test_llamaindex_response_modes(hybrid: LIFTIndex) -> None:
    compact = hybrid.as_query_engine(response_mode="compact").query(QUESTION)
    assert compact.response and len(compact.source_nodes) == 2
    generation = hybrid.as_query_engine(mode="parametric", response_mode="generation").query(QUESTION)
    assert generation.response and generation.response != "Empty Response"
    with pytest.raises(ValueError, match="Empty Response"):
        hybrid.as_query_engine(mode="parametric", response_mode="compact")


def test_parametric_index_has_no_vector_store(
    tiny_smollm: Any, documents: list[Document], absorb_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    index = LIFTIndex.from_documents(
        documents,
        llm=LIFTLLM(tiny_smollm, max_new_tokens=4),
        mode="parametric",
        config=absorb_config,
        show_progress=True,
    )
    assert "absorbing" in capsys.readouterr().err  # tqdm bar from show_progress
    assert index.vector_index is None and index.memory.titles == ["Zorbia", "Velmora"]
    assert index.as_query_engine().query(QUESTION).response
    with pytest.raises(ValueError, match="parametric"):
        index.as_retriever(mode="hybrid")


def test_insert_continues_the_memory_and_adds_chunks(
    tiny_smollm: Any, embed_model: Any, facts: Any, absorb_config: Any, events: Any
) -> None:
    llm = LIFTLLM(tiny_smollm, max_new_tokens=4)
    index = LIFTIndex.from_documents(
        [Document(text=facts.velmora)], llm=llm, embed_model=embed_model, config=absorb_config, chunk_size=32
    )
    first = index.memory
    chunks = len(index.vector_index.docstore.docs)
    index.insert(Document(text=facts.zorbia, metadata={"title": "Zorbia"}))
    assert index.memory is llm.memory and index.memory.id != first.id
    assert index.memory.titles == ["", "Zorbia"]
    assert events.of("LIFTAbsorbStartEvent")[-1].base_memory_id == first.id
    assert len(index.vector_index.docstore.docs) > chunks
    assert "Quillport" in index.as_retriever(similarity_top_k=1).retrieve(QUESTION)[0].node.get_content()


def test_bad_arguments(tiny_smollm: Any, documents: list[Document]) -> None:
    with pytest.raises(TypeError, match="LIFTLLM"):
        LIFTIndex.from_documents(documents, llm=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        LIFTIndex.from_documents(documents, llm=LIFTLLM(tiny_smollm), mode="rag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no documents"):
        LIFTIndex.from_documents([], llm=LIFTLLM(tiny_smollm))


def test_settings_llm_with_a_stock_vector_index(
    tiny_smollm: Any, embed_model: Any, documents: list[Document]
) -> None:
    llm = LIFTLLM(tiny_smollm, max_new_tokens=8)
    Settings.llm = llm  # restored by the autouse fixture
    Settings.embed_model = embed_model
    index = VectorStoreIndex.from_documents(documents)
    response = index.as_query_engine(similarity_top_k=2).query(QUESTION)
    assert response.response and response.response != "Empty Response"
    assert len(response.source_nodes) == 2
    streamed = index.as_query_engine(similarity_top_k=2, streaming=True).query(QUESTION)
    assert "".join(streamed.response_gen) == response.response
