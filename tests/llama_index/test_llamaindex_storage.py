"""``LIFTIndex`` as a LlamaIndex index (issue 18, item 2): ``storage_context.persist`` writes the stores
and the memory into one folder that ``LIFTIndex.load`` restores, ``load_index_from_storage`` reads its
vector index, ``delete_ref_doc`` deletes what a memory can delete, and ``as_chat_engine`` chats with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.chat_engine import (
    CondensePlusContextChatEngine,
    CondenseQuestionChatEngine,
    ContextChatEngine,
    SimpleChatEngine,
)
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.llms import ChatMessage, MessageRole
from tiny_models import bag_of_words

from lift_integrations.llama_index import LIFTLLM, LIFTIndex, LIFTStorageContext

ZORBIA_Q = "What is the capital of Zorbia?"
VELMORA_Q = "Who is the mayor of Velmora?"
UNRELATED = "How many legs does a spider have?"
LLAMA_INDEX_FILES = ("docstore.json", "index_store.json", "default__vector_store.json")


class BagOfWords(BaseEmbedding):
    """A deterministic LlamaIndex embedding (``tiny_models.bag_of_words``): retrieval needs no model."""

    def _get_text_embedding(self, text: str) -> list[float]:
        return bag_of_words([text])[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


def two_documents(facts: Any) -> list[Document]:
    return [
        Document(text=facts.zorbia, metadata={"title": "Zorbia"}, doc_id="zorbia"),
        Document(text=facts.velmora, metadata={"title": "Velmora"}, doc_id="velmora"),
    ]


def build(tiny_smollm: Any, facts: Any, config: Any, **kwargs: Any) -> LIFTIndex:
    llm = LIFTLLM(tiny_smollm, max_new_tokens=6)
    return LIFTIndex.from_documents(
        two_documents(facts), llm=llm, embed_model=BagOfWords(), config=config, chunk_size=32, **kwargs
    )


def chunk_ids(index: LIFTIndex, ref_doc_id: str) -> set[str]:
    info = index.vector_index.ref_doc_info.get(ref_doc_id) if index.vector_index is not None else None
    return set(info.node_ids) if info is not None else set()


@pytest.fixture(scope="module")
def hybrid(tiny_smollm: Any, facts: Any, absorb_config: Any) -> LIFTIndex:
    """One memory for both documents, plus their chunks (read-only tests share it)."""
    return build(tiny_smollm, facts, absorb_config)


def test_storage_context_persist_writes_stores_and_memory(
    hybrid: LIFTIndex, tiny_smollm: Any, tmp_path: Path
) -> None:
    storage = hybrid.storage_context
    assert isinstance(storage, LIFTStorageContext) and isinstance(storage, StorageContext)
    assert storage.docstore is hybrid.vector_index.storage_context.docstore  # shared, not copied
    assert storage.vector_store is hybrid.vector_index.vector_store
    storage.persist(persist_dir=str(tmp_path))  # exactly what LlamaIndex users call
    for name in (*LLAMA_INDEX_FILES, "lift_index.json", "memory"):
        assert (tmp_path / name).exists(), name
    record = json.loads((tmp_path / "lift_index.json").read_text())
    assert record["ref_docs"].keys() == {"zorbia", "velmora"}

    loaded = LIFTIndex.load(tmp_path, LIFTLLM(tiny_smollm, max_new_tokens=6), embed_model=BagOfWords())
    assert loaded.mode == "hybrid" and loaded.memory is not None and loaded.memory.id == hybrid.memory.id
    assert loaded.ref_doc_ids == hybrid.ref_doc_ids
    assert loaded.docstore.docs.keys() == hybrid.docstore.docs.keys()
    for mode in ("hybrid", "parametric"):
        for question in (ZORBIA_Q, VELMORA_Q):
            before = hybrid.as_query_engine(mode=mode, similarity_top_k=2).query(question)
            after = loaded.as_query_engine(mode=mode, similarity_top_k=2).query(question)
            assert after.response == before.response
            assert [n.node.node_id for n in after.source_nodes] == [
                n.node.node_id for n in before.source_nodes
            ]

    # LlamaIndex's own loader reads the same folder: the chunk index, without the memory.
    vector = load_index_from_storage(
        StorageContext.from_defaults(persist_dir=str(tmp_path)), embed_model=BagOfWords()
    )
    assert isinstance(vector, VectorStoreIndex)
    top = vector.as_retriever(similarity_top_k=1).retrieve(ZORBIA_Q)[0]
    assert top.node.node_id == hybrid.as_retriever(similarity_top_k=1).retrieve(ZORBIA_Q)[0].node.node_id


def test_plain_storage_context_and_remote_fs(hybrid: LIFTIndex, tmp_path: Path) -> None:
    """The vector index's own context stays LlamaIndex's (stores only); a non-local fs is refused."""
    hybrid.vector_index.storage_context.persist(persist_dir=str(tmp_path / "plain"))
    assert (tmp_path / "plain" / "docstore.json").is_file() and not (tmp_path / "plain" / "memory").exists()
    from fsspec.implementations.memory import MemoryFileSystem

    remote = MemoryFileSystem()
    with pytest.raises(ValueError, match="local folder"):
        hybrid.storage_context.persist(persist_dir="/bucket/index", fs=remote)
    assert not remote.exists("/bucket/index/docstore.json")


def test_load_reads_the_earlier_layout(hybrid: LIFTIndex, tiny_smollm: Any, tmp_path: Path) -> None:
    """Indexes persisted before ``storage_context`` kept their stores in ``vector_index/``."""
    hybrid.vector_index.storage_context.persist(persist_dir=str(tmp_path / "vector_index"))
    hybrid.llm.save_memory(tmp_path / "memory")
    (tmp_path / "lift_index.json").write_text(json.dumps({"mode": "hybrid", "memory_per": "index"}))
    loaded = LIFTIndex.load(tmp_path, LIFTLLM(tiny_smollm, max_new_tokens=6), embed_model=BagOfWords())
    assert loaded.memory.id == hybrid.memory.id and loaded.ref_doc_ids == []
    assert loaded.docstore.docs.keys() == hybrid.docstore.docs.keys()
    with pytest.raises(KeyError, match="no document"):  # no record of which memory holds what
        loaded.delete_ref_doc("zorbia", memory="keep")


def test_parametric_persist_round_trip(
    tiny_smollm: Any, facts: Any, absorb_config: Any, tmp_path: Path
) -> None:
    index = build(tiny_smollm, facts, absorb_config, mode="parametric")
    index.storage_context.persist(persist_dir=tmp_path)
    assert (tmp_path / "memory").is_dir() and (tmp_path / "docstore.json").is_file()
    loaded = LIFTIndex.load(tmp_path, LIFTLLM(tiny_smollm, max_new_tokens=6))
    assert loaded.vector_index is None and loaded.ref_doc_ids == ["zorbia", "velmora"]
    for question in (ZORBIA_Q, UNRELATED):
        assert (
            loaded.as_query_engine().query(question).response
            == index.as_query_engine().query(question).response
        )
    with pytest.raises(ValueError, match="No index"):  # no vector index was persisted: nothing to load
        load_index_from_storage(StorageContext.from_defaults(persist_dir=str(tmp_path)))


def test_delete_with_one_memory_needs_a_choice(
    tiny_smollm: Any, facts: Any, absorb_config: Any, events: Any, tmp_path: Path
) -> None:
    index = build(tiny_smollm, facts, absorb_config)
    memory, chunks = index.memory, chunk_ids(index, "velmora")
    assert chunks and chunks <= index.docstore.docs.keys()
    with pytest.raises(ValueError, match="cannot forget"):
        index.delete_ref_doc("velmora")
    with pytest.raises(KeyError, match="no document"):
        index.delete_ref_doc("nope", memory="keep")
    with pytest.raises(ValueError, match="memory must be"):
        index.delete_ref_doc("velmora", memory="forget")  # type: ignore[arg-type]
    assert index.memory is memory and chunk_ids(index, "velmora") == chunks  # nothing was deleted

    started = len(events.of("LIFTAbsorbStartEvent"))
    index.delete_ref_doc("velmora", memory="reabsorb")
    assert len(events.of("LIFTAbsorbStartEvent")) == started + 1
    (start,) = events.of("LIFTAbsorbStartEvent")[started:]
    assert start.titles == ["Zorbia"] and start.base_memory_id is None  # a fresh memory, without Velmora
    assert index.memory is index.llm.memory and index.memory.titles == ["Zorbia"]
    assert index.memory.id != memory.id
    assert chunk_ids(index, "velmora") == set() and not chunks & index.docstore.docs.keys()
    retrieved = index.as_retriever(similarity_top_k=10).retrieve(VELMORA_Q)
    assert retrieved and all(n.node.ref_doc_id == "zorbia" for n in retrieved)
    assert index.ref_doc_ids == ["zorbia"]
    with pytest.raises(ValueError, match="last document"):
        index.delete_ref_doc("zorbia", memory="keep")

    # Persisted after the deletion, it reloads without the document.
    index.storage_context.persist(persist_dir=tmp_path)
    loaded = LIFTIndex.load(tmp_path, LIFTLLM(tiny_smollm), embed_model=BagOfWords())
    assert loaded.memory.id == index.memory.id and loaded.ref_doc_ids == ["zorbia"]
    assert chunk_ids(loaded, "velmora") == set()


def test_delete_keep_leaves_the_memory(tiny_smollm: Any, facts: Any, absorb_config: Any) -> None:
    index = build(tiny_smollm, facts, absorb_config)
    memory = index.memory
    index.delete_ref_doc("zorbia", memory="keep")
    assert index.memory is memory and memory.titles == ["Zorbia", "Velmora"]  # still knows it
    assert chunk_ids(index, "zorbia") == set() and index.ref_doc_ids == ["velmora"]
    index.insert(Document(text="Brindle is a quiet harbour town.", doc_id="brindle"))
    assert index.ref_doc_ids == ["velmora", "brindle"] and index.memory.titles == ["Zorbia", "Velmora", ""]
    with pytest.raises(ValueError, match="already holds"):
        index.insert(Document(text="Another text.", doc_id="brindle"))
    # Re-absorbing keeps only the documents the index still holds: Zorbia was deleted before.
    index.delete_ref_doc("brindle", memory="reabsorb")
    assert index.memory.titles == ["Velmora"]


def test_delete_with_a_memory_bank_removes_the_documents_memory(
    tiny_smollm: Any, facts: Any, absorb_config: Any, tmp_path: Path
) -> None:
    index = build(tiny_smollm, facts, absorb_config, memory_per="document")
    bank = index.memory_bank
    assert bank is not None and bank.names == ["Zorbia", "Velmora"]
    assert index.llm.complete(VELMORA_Q).raw["memory_name"] == "Velmora"
    with pytest.raises(ValueError, match="memory bank"):
        index.delete_ref_doc("velmora", memory="reabsorb")
    index.delete_ref_doc("velmora")
    assert bank.names == ["Zorbia"] and chunk_ids(index, "velmora") == set()
    assert index.llm.complete(VELMORA_Q).raw["memory_name"] is None  # no memory knows Velmora now
    assert index.llm.complete(ZORBIA_Q).raw["memory_name"] == "Zorbia"
    index.storage_context.persist(persist_dir=tmp_path)
    loaded = LIFTIndex.load(tmp_path, LIFTLLM(tiny_smollm), embed_model=BagOfWords())
    assert loaded.memory_bank is not None and loaded.memory_bank.names == ["Zorbia"]
    assert not (tmp_path / "memory_bank" / "Velmora").exists()


def user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


def test_as_chat_engine(hybrid: LIFTIndex, events: Any) -> None:
    engine = hybrid.as_chat_engine()
    assert isinstance(engine, CondensePlusContextChatEngine)
    first = engine.chat(ZORBIA_Q)
    assert first.response and first.source_nodes
    assert all(e.response.raw["memory_id"] == hybrid.memory.id for e in events.of("LLMChatEndEvent"))
    engine.chat("And its currency?")
    assert [m.role for m in engine.chat_history] == [MessageRole.USER, MessageRole.ASSISTANT] * 2
    streamed = hybrid.as_chat_engine().stream_chat(ZORBIA_Q)
    assert "".join(streamed.response_gen) == first.response

    assert isinstance(hybrid.as_chat_engine("context"), ContextChatEngine)
    assert isinstance(hybrid.as_chat_engine("condense_question"), CondenseQuestionChatEngine)
    context = hybrid.as_chat_engine("context", similarity_top_k=1).chat(ZORBIA_Q)
    assert len(context.source_nodes) == 1 and "Quillport" in context.source_nodes[0].node.get_content()
    with pytest.raises(ValueError, match="FunctionAgent"):
        hybrid.as_chat_engine("react")
    with pytest.raises(ValueError, match="chat_mode must be"):
        hybrid.as_chat_engine("agent")


def test_parametric_chat_engine_is_the_memory_with_the_conversation(hybrid: LIFTIndex) -> None:
    engine = hybrid.as_chat_engine(mode="parametric")
    assert isinstance(engine, SimpleChatEngine)
    first = engine.chat(ZORBIA_Q)
    assert first.response == hybrid.llm.chat([user(ZORBIA_Q)]).message.content
    second = engine.chat(VELMORA_Q)
    history = [
        user(ZORBIA_Q),
        ChatMessage(role=MessageRole.ASSISTANT, content=first.response),
        user(VELMORA_Q),
    ]
    assert second.response == hybrid.llm.chat(history).message.content
