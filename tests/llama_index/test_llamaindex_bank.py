"""``LIFTIndex.from_documents(memory_per="document")`` and ``LIFTLLM(memory_bank=...)`` (issue 17, item 4):
one memory per document, each question answered with the memory of the document it is about, or with the
base model. Routing embeds with a bag of words, so which memory a question reaches is deterministic."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import MetadataMode
from tiny_models import bag_of_words

from lift_integrations import MemoryBank
from lift_integrations.llama_index import LIFTLLM, LIFTIndex

ZORBIA_Q = "What is the capital of Zorbia?"
VELMORA_Q = "Who is the mayor of Velmora?"
UNRELATED = "How many legs does a spider have?"


class BagOfWords(BaseEmbedding):
    """A deterministic LlamaIndex embedding (``tiny_models.bag_of_words``)."""

    def _get_text_embedding(self, text: str) -> list[float]:
        return bag_of_words([text])[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


@pytest.fixture(scope="module")
def bank_index(tiny_smollm: Any, facts: Any, absorb_config: Any) -> LIFTIndex:
    """A hybrid index of two documents, one memory each (absorbing takes the time: built once)."""
    documents = [
        Document(text=facts.zorbia, metadata={"title": "Zorbia"}),
        Document(text=facts.velmora, metadata={"title": "Velmora"}),
    ]
    return LIFTIndex.from_documents(
        documents,
        llm=LIFTLLM(tiny_smollm, max_new_tokens=8),
        embed_model=BagOfWords(),
        config=absorb_config,
        chunk_size=32,
        memory_per="document",
    )


def expected(lift: Any, question: str, memory: Any, context: list[str] | None = None) -> str:
    return str(lift.generate(question, memory=memory, context=context, max_new_tokens=8).text)


def test_one_memory_per_document(bank_index: LIFTIndex, facts: Any) -> None:
    bank = bank_index.memory_bank
    assert isinstance(bank, MemoryBank) and bank_index.memory_per == "document"
    assert bank.names == ["Zorbia", "Velmora"] and bank_index.memory is None
    assert [d.text for d in bank.documents("Zorbia")] == [facts.zorbia]
    assert [d.text for d in bank.documents("Velmora")] == [facts.velmora]
    assert bank.get("Zorbia").id != bank.get("Velmora").id
    assert "memory_bank=2 memories" in repr(bank_index) and "documents=2" in repr(bank_index)


def test_parametric_questions_reach_the_memory_they_are_about(bank_index: LIFTIndex, events: Any) -> None:
    bank, lift = bank_index.memory_bank, bank_index.llm.lift_model
    assert bank is not None
    engine = bank_index.as_query_engine(mode="parametric")
    for question, name in ((ZORBIA_Q, "Zorbia"), (VELMORA_Q, "Velmora"), (UNRELATED, None)):
        response = engine.query(question)
        raw = events.of("LLMChatEndEvent")[-1].response.raw
        memory = bank.get(name) if name is not None else None
        assert raw["memory_name"] == name
        assert raw["memory_id"] == (memory.id if memory is not None else None)
        assert response.response == expected(lift, question, memory)


def test_hybrid_puts_the_chunks_next_to_the_routed_memory(bank_index: LIFTIndex, events: Any) -> None:
    bank, lift = bank_index.memory_bank, bank_index.llm.lift_model
    assert bank is not None
    response = bank_index.as_query_engine(similarity_top_k=2).query(ZORBIA_Q)
    assert len(response.source_nodes) == 2
    chunks = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in response.source_nodes]
    (start,) = events.of("LLMChatStartEvent")
    assert start.additional_kwargs["context"] == chunks
    assert any("Quillport" in chunk for chunk in chunks)
    (end,) = events.of("LLMChatEndEvent")
    assert end.response.raw["memory_name"] == "Zorbia"
    assert end.response.raw["memory_id"] == bank.get("Zorbia").id
    assert (
        end.response.raw["usage"]["prompt_tokens"]
        > bank_index.llm.chat(user(ZORBIA_Q)).raw["usage"]["prompt_tokens"]
    )
    assert response.response == expected(lift, ZORBIA_Q, bank.get("Zorbia"), chunks)


def test_llm_with_a_bank_routes_every_endpoint(tiny_smollm: Any, bank_index: LIFTIndex) -> None:
    bank = bank_index.memory_bank
    assert bank is not None
    llm = LIFTLLM(tiny_smollm, max_new_tokens=8, memory_bank=bank, router_embed_model=BagOfWords())
    assert llm.memory_bank is bank and llm.memory is None
    about = llm.complete(VELMORA_Q)
    assert about.raw["memory_name"] == "Velmora" and about.raw["memory_id"] == bank.get("Velmora").id
    assert about.text == expected(llm.lift_model, VELMORA_Q, bank.get("Velmora"))
    away = llm.chat(user(UNRELATED))
    assert away.raw["memory_name"] is None and away.raw["memory_id"] is None
    assert (
        away.message.content == LIFTLLM(tiny_smollm, max_new_tokens=8).chat(user(UNRELATED)).message.content
    )
    # The last user turn is the question; earlier turns do not pull it to their memory.
    history = [
        *user(ZORBIA_Q),
        ChatMessage(role=MessageRole.ASSISTANT, content="Quillport."),
        *user(VELMORA_Q),
    ]
    assert llm.chat(history).raw["memory_name"] == "Velmora"
    streamed = list(llm.stream_complete(VELMORA_Q))
    assert streamed[-1].raw["memory_name"] == "Velmora" and streamed[-1].text == about.text
    achat = asyncio.run(llm.achat(user(ZORBIA_Q)))
    assert achat.raw["memory_name"] == "Zorbia"
    # Concurrent calls share one router (built once, under a lock) and each gets its own memory.
    questions = [ZORBIA_Q, VELMORA_Q, UNRELATED] * 2
    with ThreadPoolExecutor(4) as pool:
        names = list(pool.map(lambda q: llm.complete(q).raw["memory_name"], questions))
    assert names == ["Zorbia", "Velmora", None] * 2


def test_persist_and_load_give_the_same_bank_and_routes(
    tiny_smollm: Any, bank_index: LIFTIndex, tmp_path: Path
) -> None:
    bank = bank_index.memory_bank
    assert bank is not None
    folder = bank_index.persist(tmp_path / "index")
    assert (folder / "memory_bank" / "bank.json").is_file() and (folder / "docstore.json").is_file()
    llm = LIFTLLM(tiny_smollm, max_new_tokens=8)
    loaded = LIFTIndex.load(folder, llm, embed_model=BagOfWords())
    reloaded = loaded.memory_bank
    assert reloaded is not None and reloaded is not bank and loaded.memory_per == "document"
    assert loaded.mode == "hybrid" and reloaded.names == bank.names
    assert [reloaded.get(n).id for n in reloaded] == [bank.get(n).id for n in bank]
    for mode in ("parametric", "hybrid"):
        for question in (ZORBIA_Q, VELMORA_Q, UNRELATED):
            before = bank_index.as_query_engine(mode=mode).query(question).response
            assert loaded.as_query_engine(mode=mode).query(question).response == before
    assert [llm.complete(q).raw["memory_name"] for q in (ZORBIA_Q, VELMORA_Q, UNRELATED)] == [
        "Zorbia",
        "Velmora",
        None,
    ]
    # The LLM alone: save_memory_bank, then a new LLM built on the folder.
    saved = bank_index.llm.save_memory_bank(tmp_path / "bank")
    again = LIFTLLM(tiny_smollm, max_new_tokens=8, memory_bank=saved, router_embed_model=BagOfWords())
    assert again.memory_bank is not None and again.memory_bank.names == bank.names
    assert again.complete(ZORBIA_Q).raw["memory_id"] == bank.get("Zorbia").id


def test_insert_adds_a_memory_to_the_bank(
    tiny_smollm: Any, facts: Any, absorb_config: Any, events: Any
) -> None:
    llm = LIFTLLM(tiny_smollm, max_new_tokens=4)
    index = LIFTIndex.from_documents(
        [Document(text=facts.velmora, metadata={"title": "Velmora"})],
        llm=llm,
        mode="parametric",
        embed_model=BagOfWords(),
        config=absorb_config,
        memory_per="document",
    )
    (end,) = events.of("LIFTAbsorbEndEvent")
    assert end.memory_name == "Velmora" and end.memory_id == llm.memory_bank.get("Velmora").id
    assert llm.complete(ZORBIA_Q).raw["memory_name"] is None  # no memory knows Zorbia yet
    index.insert(Document(text=facts.zorbia, metadata={"title": "velmora"}))  # a title already taken
    bank = index.memory_bank
    assert bank is llm.memory_bank and bank.names == ["Velmora", "velmora-2"]
    assert llm.complete(ZORBIA_Q).raw["memory_name"] == "velmora-2"  # the router saw the new memory
    assert llm.complete(VELMORA_Q).raw["memory_name"] == "Velmora"


def test_bad_arguments(
    tiny_smollm: Any, documents: list[Document], bank_index: LIFTIndex, tmp_path: Path
) -> None:
    llm = LIFTLLM(tiny_smollm)
    for bad in ("page", "Document", None, 1):
        with pytest.raises(ValueError, match=r"memory_per must be 'index'.*or 'document'"):
            LIFTIndex.from_documents(documents, llm=llm, memory_per=bad)  # type: ignore[arg-type]
    bank = bank_index.memory_bank
    assert bank is not None
    with pytest.raises(ValueError, match="not both"):
        LIFTLLM(tiny_smollm, memory=bank.get("Zorbia"), memory_bank=bank)
    with pytest.raises(TypeError, match="memory_bank must be"):
        LIFTLLM(tiny_smollm, memory_bank=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="router_embed_model"):
        llm.load_memory_bank(bank, router_embed_model="MiniLM")
    with pytest.raises(ValueError, match="no memory bank to save"):
        llm.save_memory_bank(tmp_path / "nothing")
    with pytest.raises(ValueError, match="names must be a list"):
        llm.absorb_memory_bank(documents, names=["only-one"])
    with pytest.raises(ValueError, match="unique"):
        llm.absorb_memory_bank(documents, names=["a", "A"])
    banked = LIFTLLM(tiny_smollm, memory_bank=bank)
    with pytest.raises(ValueError, match="answers with a memory bank"):
        banked.absorb("more text")
    banked.load_memory(bank.get("Zorbia"))  # a memory replaces the bank, and the other way round
    assert banked.memory_bank is None and banked.memory is bank.get("Zorbia")
    banked.load_memory_bank(bank)
    assert banked.memory is None and banked.memory_bank is bank
    banked.clear_memory()
    assert banked.memory is None and banked.memory_bank is None
    with pytest.raises(FileNotFoundError, match="no LIFTIndex"):
        LIFTIndex.load(tmp_path, llm)


def test_persist_and_load_one_memory(
    tiny_smollm: Any, facts: Any, absorb_config: Any, tmp_path: Path
) -> None:
    """``memory_per="index"`` (the default) persists its one memory the same way."""
    llm = LIFTLLM(tiny_smollm, max_new_tokens=4)
    index = LIFTIndex.from_documents(
        [Document(text=facts.zorbia)], llm=llm, mode="parametric", config=absorb_config
    )
    assert index.memory_per == "index" and index.memory_bank is None and index.memory is llm.memory
    folder = index.persist(tmp_path / "index")
    loaded = LIFTIndex.load(folder, LIFTLLM(tiny_smollm, max_new_tokens=4))
    assert loaded.mode == "parametric" and loaded.memory_per == "index" and loaded.vector_index is None
    assert loaded.memory is not None and loaded.memory.id == index.memory.id
    answer = loaded.as_query_engine().query(ZORBIA_Q)
    assert answer.response == index.as_query_engine().query(ZORBIA_Q).response


def test_concurrent_achat_with_different_memories_shares_batches(
    tiny_smollm: Any, bank_index: LIFTIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lift_integrations.microbatch import shared_batcher

    bank = bank_index.memory_bank
    assert bank is not None
    llms = [LIFTLLM(tiny_smollm, max_new_tokens=8, memory=bank.get(name)) for name in ("Zorbia", "Velmora")]
    questions = [ZORBIA_Q, VELMORA_Q]
    alone = [llm.chat(user(q)).message.content for llm, q in zip(llms, questions, strict=True)]
    batcher = shared_batcher(tiny_smollm)
    monkeypatch.setattr(batcher, "window_s", 0.3)  # a loaded machine still merges
    before = batcher.batches_run

    async def both() -> list[Any]:
        calls = [llm.achat(user(q)) for llm, q in zip(llms, questions, strict=True)] * 2
        return await asyncio.gather(*calls)

    answers = asyncio.run(both())
    assert [a.message.content for a in answers] == alone * 2
    assert batcher.batches_run - before < len(answers)


def test_many_concurrent_acomplete_and_achat_wait_in_one_batch(
    tiny_smollm: Any, bank_index: LIFTIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """48 concurrent calls all reach the batcher together, routed each to its memory: a default executor of
    4 threads (what ``asyncio.to_thread`` used, ``min(32, cpus + 4)`` threads) would cut them into a dozen
    batches."""
    import math

    from lift_integrations.microbatch import shared_batcher

    bank = bank_index.memory_bank
    assert bank is not None
    llm = LIFTLLM(tiny_smollm, max_new_tokens=8, memory_bank=bank, router_embed_model=BagOfWords())
    questions = [ZORBIA_Q, VELMORA_Q, UNRELATED] * 16
    alone = {q: llm.complete(q).text for q in set(questions)}
    batcher = shared_batcher(tiny_smollm)
    monkeypatch.setattr(batcher, "window_s", 0.5)  # a loaded machine still gathers all 48
    monkeypatch.setattr(batcher, "max_batch", 16)
    before = batcher.batches_run

    async def together() -> list[str]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4))
        completions = [llm.acomplete(q) for q in questions[:24]]
        chats = [llm.achat(user(q)) for q in questions[24:]]
        answers = await asyncio.gather(*completions, *chats)
        return [a.text for a in answers[:24]] + [a.message.content for a in answers[24:]]

    assert asyncio.run(together()) == [alone[q] for q in questions]
    assert batcher.batches_run - before <= math.ceil(len(questions) / 16) + 1
