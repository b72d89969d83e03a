"""LIFTMemoryRetriever, the text splitter, the canonical LCEL chain in both modes, and the check that
absorbing a document makes the model better at a question only that document answers."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from lc_tiny_model import ANSWER, FACTS, QUESTION, TINY_NAME, fast_config, learning_config

from lift_integrations.langchain import LIFTChatModel, LIFTMemoryRetriever, split_text

LONG_DOC = "\n\n".join(
    " ".join(f"Paragraph {p} sentence {s} talks about topic {p * 10 + s} in some detail." for s in range(6))
    for p in range(5)
)

DOCS = [
    Document(page_content=FACTS, metadata={"title": "Quendria", "source": "atlas.txt"}),
    Document(
        page_content="Mount Velpar is 4,210 metres high and always covered in snow.", metadata={"source": "v"}
    ),
    Document(
        page_content="Queen Osmara ruled Quendria for forty years and built the great library.",
        metadata={"source": "o"},
    ),
]


def fake_embeddings() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=32)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(d.page_content for d in docs)


PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer using the context if any.\n\nContext:\n{context}"), ("human", "{question}")]
)


class PromptRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.prompts: list[str] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], **kwargs: Any) -> None:
        self.prompts.append("\n".join(str(m.content) for m in messages[0]))


# Splitter -----------------------------------------------------------------------------------------


def test_split_text_respects_size_and_boundaries() -> None:
    chunks = split_text(LONG_DOC, chunk_size=300, chunk_overlap=80)
    assert len(chunks) > 3 and all(len(c) <= 300 for c in chunks)
    sentences = [s for p in LONG_DOC.split("\n\n") for s in p.split(". ")]
    for sentence in sentences:
        assert any(sentence.rstrip(".") in c for c in chunks), sentence
    assert all(c.endswith(".") for c in chunks), "chunks end on sentence boundaries"
    overlapping = sum(1 for a, b in itertools.pairwise(chunks) if b.split(". ")[0] in a)
    assert overlapping >= len(chunks) // 2, "consecutive chunks share sentences"


def test_split_text_paragraphs_and_edge_cases() -> None:
    assert split_text("Short.\n\nAlso short.", 800, 100) == ["Short.\n\nAlso short."]
    assert split_text("   \n\n  ", 800, 100) == []
    long_word = "x" * 2500
    assert [len(c) for c in split_text(long_word, 1000, 0)] == [1000, 1000, 500]
    with pytest.raises(ValueError):
        split_text("a", 100, 100)
    with pytest.raises(ValueError):
        split_text("a", 0, 0)


# Retriever without a model (index only) ------------------------------------------------------------


def test_hybrid_without_llm_indexes_and_honours_k() -> None:
    retriever = LIFTMemoryRetriever(documents=DOCS, embeddings=fake_embeddings(), k=2)
    assert len(retriever.invoke("Quendria")) == 2
    assert len(retriever.invoke("Quendria", k=3)) == 3
    found = retriever.invoke(DOCS[0].page_content, k=1)
    assert found[0].page_content == FACTS
    assert found[0].metadata["title"] == "Quendria" and found[0].metadata["source"] == "atlas.txt"
    ids = retriever.add_documents([Document(page_content="A new fact about Trimbleton's bridges.")])
    assert len(ids) == 1 and len(retriever.invoke("bridges", k=10)) == 4
    assert retriever.batch(["a", "b"]) and retriever.with_config(tags=["x"]).invoke("a")


def test_parametric_needs_llm() -> None:
    with pytest.raises(ValueError, match="llm"):
        LIFTMemoryRetriever(mode="parametric")


def test_long_documents_are_chunked() -> None:
    retriever = LIFTMemoryRetriever(
        documents=[LONG_DOC], embeddings=fake_embeddings(), chunk_size=300, chunk_overlap=50, k=100
    )
    chunks = retriever.invoke("topic 23")
    assert len(chunks) == len(split_text(LONG_DOC, 300, 50)) and all(
        len(c.page_content) <= 300 for c in chunks
    )
    assert sorted(c.metadata["chunk"] for c in chunks) == list(range(len(chunks)))


async def test_async_retrieval_and_add() -> None:
    retriever = LIFTMemoryRetriever(embeddings=fake_embeddings(), k=5)
    assert await retriever.ainvoke("anything") == []
    await retriever.aadd_documents(DOCS)
    assert len(await retriever.ainvoke("Quendria")) == 3


def test_base_retriever_supplies_the_context() -> None:
    store = InMemoryVectorStore(fake_embeddings())
    store.add_texts(["own chunk one", "own chunk two", "own chunk three"])
    retriever = LIFTMemoryRetriever(base_retriever=store.as_retriever(search_kwargs={"k": 3}), k=2)
    found = retriever.invoke("own")
    assert len(found) == 2 and all(d.page_content.startswith("own chunk") for d in found)


def test_default_embeddings_rank_by_meaning() -> None:
    retriever = LIFTMemoryRetriever(documents=DOCS, k=1)  # the embedded all-MiniLM-L6-v2
    assert retriever.invoke("How high is the mountain?")[0].page_content.startswith("Mount Velpar")
    assert retriever.invoke("Who built the library?")[0].page_content.startswith("Queen Osmara")


# Retriever with a model -------------------------------------------------------------------------


def test_from_documents_absorbs_into_llm(chat: LIFTChatModel) -> None:
    retriever = LIFTMemoryRetriever.from_documents(
        DOCS,
        llm=chat,
        mode="hybrid",
        embeddings=fake_embeddings(),
        k=2,
        absorb_kwargs={"lift_config": fast_config()},
    )
    assert chat.memory is not None and chat.memory.titles == ["Quendria", "v", "o"]
    assert chat.mode == "hybrid" and chat.invoke("hi").response_metadata["lift_mode"] == "hybrid"
    assert len(retriever.invoke("Quendria")) == 2
    first_id = chat.memory_id
    ids = retriever.add_documents("Trimbleton has seven bridges.", lift_config=fast_config())
    assert ids and chat.memory_id != first_id and len(chat.memory.documents) == 4
    assert any("seven bridges" in d.page_content for d in retriever.invoke("bridges", k=4))


def test_parametric_returns_nothing_but_absorbs(chat: LIFTChatModel) -> None:
    retriever = LIFTMemoryRetriever.from_documents(
        DOCS, llm=chat, mode="parametric", absorb_kwargs={"lift_config": fast_config()}
    )
    assert retriever.invoke(QUESTION) == [] and retriever.invoke(QUESTION, k=3) == []
    assert chat.memory is not None and len(chat.memory.documents) == 3
    ids = retriever.add_documents(["More about Quendria."], lift_config=fast_config())
    assert len(ids) == 1 and len(chat.memory.documents) == 4


def test_index_follows_the_memory(chat: LIFTChatModel, tmp_path: Path) -> None:
    chat.absorb(DOCS, lift_config=fast_config())
    folder = chat.save_memory(tmp_path / "mem")
    fresh = LIFTChatModel(model=TINY_NAME, max_tokens=8)
    retriever = LIFTMemoryRetriever(llm=fresh, embeddings=fake_embeddings(), k=5)
    assert retriever.invoke("Quendria") == []
    fresh.load_memory(folder)
    found = retriever.invoke("Quendria")
    assert sorted(d.page_content for d in found) == sorted(d.page_content for d in DOCS)
    assert {d.metadata.get("title") for d in found} == {"Quendria", "v", "o"}
    fresh.clear_memory()
    assert retriever.invoke("Quendria") == []


def test_add_documents_forwards_absorb_events(chat: LIFTChatModel) -> None:
    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.names: list[str] = []

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            self.names.append(name)

    recorder = Recorder()
    retriever = LIFTMemoryRetriever(llm=chat, embeddings=fake_embeddings())
    retriever.add_documents(DOCS, callbacks=[recorder], lift_config=fast_config())
    assert recorder.names[0] == "lift_absorb_start" and recorder.names[-1] == "lift_absorb_end"


# The canonical chain --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["parametric", "hybrid"])
def test_canonical_lcel_chain_runs_unchanged(mode: str, chat: LIFTChatModel) -> None:
    retriever = LIFTMemoryRetriever.from_documents(
        DOCS,
        llm=chat,
        mode=mode,
        embeddings=fake_embeddings(),
        k=1,
        absorb_kwargs={"lift_config": fast_config()},
    )
    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | chat
        | StrOutputParser()
    )
    recorder = PromptRecorder()
    answer = chain.invoke(QUESTION, config={"callbacks": [recorder]})
    assert isinstance(answer, str) and answer
    retrieved = [d.page_content for d in DOCS if d.page_content in recorder.prompts[0]]
    assert len(retrieved) == (1 if mode == "hybrid" else 0)
    pieces = list(chain.stream(QUESTION))
    # Text pieces are never empty; the final chunk carries only usage and metadata.
    assert len(pieces) > 1 and all(pieces[:-1]) and pieces[-1] == "" and "".join(pieces) == answer


async def test_canonical_chain_async(chat: LIFTChatModel) -> None:
    retriever = LIFTMemoryRetriever(llm=chat, embeddings=fake_embeddings(), k=1)
    await retriever.aadd_documents(DOCS, lift_config=fast_config())
    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | chat
        | StrOutputParser()
    )
    answer = await chain.ainvoke(QUESTION)
    assert answer == chain.invoke(QUESTION)
    assert "".join([p async for p in chain.astream(QUESTION)]) == answer


# Absorption helps -----------------------------------------------------------------------------------


def test_absorbed_document_answers_its_question_better(chat: LIFTChatModel) -> None:
    """Fast stand-in for the quality check: the gold answer to a question only the absorbed (made-up)
    document answers becomes clearly more likely once the document is absorbed."""
    before = chat.lift.answer_logprob(QUESTION, ANSWER, memory=None)
    LIFTMemoryRetriever.from_documents(
        FACTS, llm=chat, mode="parametric", absorb_kwargs={"lift_config": learning_config()}
    )
    after = chat.lift.answer_logprob(QUESTION, ANSWER, memory=chat.memory)
    assert after > before + 5.0, (before, after)
