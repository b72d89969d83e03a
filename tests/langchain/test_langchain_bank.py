"""LangChain with one memory per document: absorbed side by side, routed per question (issue 17, item 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from lc_tiny_model import TINY_NAME, fast_config
from tiny_models import bag_of_words

from lift_integrations.langchain import LIFTChatModel, LIFTMemoryRetriever

DOCUMENTS = [
    Document(
        page_content="Vellmouth Harbour was dredged in 1878 by engineer Tomas Greer. Fishing boats unload "
        "herring at the eastern quay, and a lighthouse called Old Kestrel guards the breakwater.",
        metadata={"title": "Vellmouth Harbour"},
    ),
    Document(
        page_content="Brambleigh Orchard grows forty kinds of pears. The orchard was planted by the widow "
        "Agnes Pellow, and its cider press dates from 1796.",
        metadata={"title": "Brambleigh Orchard"},
    ),
]


class BagOfWords(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return bag_of_words(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@pytest.fixture
def chat(tiny: Any) -> LIFTChatModel:
    model = LIFTChatModel(model=TINY_NAME, max_tokens=6, router_embeddings=BagOfWords())
    model.absorb(DOCUMENTS, memory_per="document", lift_config=fast_config())
    return model


def test_each_document_gets_its_own_memory_and_each_question_its_memory(chat: LIFTChatModel) -> None:
    bank = chat.memory_bank
    assert bank is not None and chat.memory is None
    assert bank.names == ["Vellmouth-Harbour", "Brambleigh-Orchard"]
    harbour = chat.invoke("Who dredged Vellmouth Harbour?")
    assert harbour.response_metadata["lift_memory_id"] == bank["Vellmouth-Harbour"].id
    expected = chat.lift.generate(
        [{"role": "user", "content": "Who dredged Vellmouth Harbour?"}],
        memory=bank["Vellmouth-Harbour"],
        max_new_tokens=6,
    )
    assert harbour.content == expected.text
    orchard = chat.invoke("Who planted Brambleigh Orchard?")
    assert orchard.response_metadata["lift_memory_id"] == bank["Brambleigh-Orchard"].id
    assert chat.invoke("What is the capital of France?").response_metadata["lift_memory_id"] is None
    assert chat.memory_id == f"bank-{bank.id}"


def test_absorbing_more_documents_extends_the_bank(chat: LIFTChatModel) -> None:
    first = chat.memory_bank.id
    info = chat.absorb(
        ("Vellmouth Harbour", "Another harbour text about boats."),
        memory_per="document",
        lift_config=fast_config(),
    )
    assert chat.memory_bank.names == ["Vellmouth-Harbour", "Brambleigh-Orchard", "Vellmouth-Harbour-2"]
    assert info["num_memories"] == 3 and info["memory_bank_id"] != first
    chat.absorb(DOCUMENTS[1], memory_per="document", extend=False, lift_config=fast_config())
    assert chat.memory_bank.names == ["Brambleigh-Orchard"]


def test_a_saved_bank_reloads_and_routes_the_same(chat: LIFTChatModel, tmp_path: Path) -> None:
    folder = chat.save_memory(tmp_path / "bank")
    other = LIFTChatModel(model=TINY_NAME, max_tokens=6, router_embeddings=BagOfWords())
    info = other.load_memory(folder)
    assert info["names"] == chat.memory_bank.names
    question = "Who planted Brambleigh Orchard?"
    assert other.invoke(question).content == chat.invoke(question).content
    assert LIFTChatModel(model=TINY_NAME, memory_bank=folder).memory_bank.names == info["names"]


def test_the_retriever_builds_a_bank_and_keeps_every_document_in_its_index(tiny: Any) -> None:
    llm = LIFTChatModel(model=TINY_NAME, max_tokens=6, router_embeddings=BagOfWords())
    retriever = LIFTMemoryRetriever.from_documents(
        DOCUMENTS,
        llm=llm,
        memory_per="document",
        embeddings=BagOfWords(),
        k=1,
        absorb_kwargs={"lift_config": fast_config()},
    )
    assert llm.memory_bank is not None and len(llm.memory_bank) == 2
    [chunk] = retriever.invoke("Who planted Brambleigh Orchard?")
    assert "Agnes Pellow" in chunk.page_content
    with pytest.raises(ValueError, match="memory_per"):
        LIFTMemoryRetriever.from_documents(DOCUMENTS, llm=llm, memory_per="page")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_per"):
        llm.absorb(DOCUMENTS, memory_per="page")  # type: ignore[arg-type]


def test_a_batch_routes_each_question_and_shares_forward_passes(chat: LIFTChatModel) -> None:
    from lift_integrations.microbatch import shared_batcher

    questions = [
        "Who dredged Vellmouth Harbour?",
        "Who planted Brambleigh Orchard?",
        "What is the capital of France?",
    ]
    alone = [chat.invoke(q) for q in questions]
    before = shared_batcher(chat.lift).batches_run
    together = chat.batch(questions * 2)
    assert [m.content for m in together] == [m.content for m in alone] * 2
    ids = [m.response_metadata["lift_memory_id"] for m in together]
    bank = chat.memory_bank
    assert ids[:3] == [bank["Vellmouth-Harbour"].id, bank["Brambleigh-Orchard"].id, None]
    assert shared_batcher(chat.lift).batches_run - before < len(together)


def test_many_concurrent_ainvoke_wait_in_one_batch_not_in_the_loops_few_threads(
    chat: LIFTChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """48 concurrent calls all reach the batcher together: a default executor of 4 threads (what
    ``asyncio.to_thread`` used, ``min(32, cpus + 4)`` threads) would cut them into a dozen batches."""
    import asyncio
    import math
    from concurrent.futures import ThreadPoolExecutor

    from lift_integrations.microbatch import shared_batcher

    questions = ["Who dredged Vellmouth Harbour?", "Who planted Brambleigh Orchard?", "What is 2 + 2?"] * 16
    alone = {q: chat.invoke(q).content for q in set(questions)}
    batcher = shared_batcher(chat.lift)
    monkeypatch.setattr(batcher, "window_s", 0.5)  # a loaded machine still gathers all 48
    monkeypatch.setattr(batcher, "max_batch", 16)
    before = batcher.batches_run

    async def together() -> tuple[list[Any], list[Any]]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4))
        batched = chat.abatch(questions[24:], config={"max_concurrency": 24})
        *invoked, rest = await asyncio.gather(*(chat.ainvoke(q) for q in questions[:24]), batched)
        return invoked, rest

    invoked, batched = asyncio.run(together())  # 24 ainvoke and an abatch of 24, all at once
    assert [m.content for m in [*invoked, *batched]] == [alone[q] for q in questions]
    assert batcher.batches_run - before <= math.ceil(len(questions) / 16) + 1
