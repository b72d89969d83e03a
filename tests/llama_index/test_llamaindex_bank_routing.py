"""LlamaIndex's ``bank_routing``: the bank routing options reach ``LIFTLLM``'s ``BankRouter``, through
``LIFTIndex.from_documents(memory_per="document")`` too, and persist with the index (issue 17).

Routing embeds with a bag of words, so which memory a question reaches is deterministic; ``margin=2``
lifts every threshold above any relevance (at most ``1 + lexical_weight``), ``margin=-2`` below any.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from test_llamaindex_bank import UNRELATED, VELMORA_Q, ZORBIA_Q, BagOfWords

from lift_integrations import BankRouting, MemoryBank
from lift_integrations.llama_index import LIFTLLM, LIFTIndex


def documents(facts: Any) -> list[Document]:
    return [
        Document(text=facts.zorbia, metadata={"title": "Zorbia"}, doc_id="zorbia"),
        Document(text=facts.velmora, metadata={"title": "Velmora"}, doc_id="velmora"),
    ]


@pytest.fixture(scope="module")
def raised(tiny_smollm: Any, facts: Any, absorb_config: Any) -> LIFTIndex:
    """A parametric index of one memory per document, routed with ``margin=2`` (absorbed once)."""
    return LIFTIndex.from_documents(
        documents(facts),
        llm=LIFTLLM(tiny_smollm, max_new_tokens=4),
        mode="parametric",
        embed_model=BagOfWords(),
        config=absorb_config,
        memory_per="document",
        bank_routing={"margin": 2.0},
    )


def names(llm: LIFTLLM, *questions: str) -> list[str | None]:
    return [llm.complete(question).raw["memory_name"] for question in questions]


def llm_over(tiny_smollm: Any, bank: MemoryBank, **fields: Any) -> LIFTLLM:
    return LIFTLLM(tiny_smollm, max_new_tokens=4, memory_bank=bank, router_embed_model=BagOfWords(), **fields)


def test_from_documents_sets_the_routing_and_the_router_uses_it(
    raised: LIFTIndex, tiny_smollm: Any, events: Any
) -> None:
    bank = raised.memory_bank
    assert bank is not None and raised.llm.bank_routing == BankRouting(margin=2.0)
    assert names(raised.llm, ZORBIA_Q, VELMORA_Q) == [None, None]
    raised.as_query_engine().query(ZORBIA_Q)
    assert events.of("LLMChatEndEvent")[-1].response.raw["memory_name"] is None
    default = llm_over(tiny_smollm, bank)
    assert default.bank_routing is None and bank.routing == BankRouting()  # None: the bank's own
    assert names(default, ZORBIA_Q, VELMORA_Q, UNRELATED) == ["Zorbia", "Velmora", None]
    lowered = llm_over(tiny_smollm, bank, bank_routing=BankRouting(margin=-2.0))
    assert names(lowered, UNRELATED)[0] in bank.names
    # The field can change between calls: the next call routes with the new options.
    default.bank_routing = BankRouting(margin=2.0)
    assert names(default, ZORBIA_Q) == [None]


def test_load_memory_bank_takes_the_routing(raised: LIFTIndex, tiny_smollm: Any, tmp_path: Path) -> None:
    folder = raised.llm.save_memory_bank(tmp_path / "bank")
    llm = LIFTLLM(tiny_smollm, max_new_tokens=4, router_embed_model=BagOfWords())
    llm.load_memory_bank(folder, bank_routing={"calibration": "joint"})
    assert llm.bank_routing == BankRouting(calibration="joint")
    assert names(llm, ZORBIA_Q) == ["Zorbia"]
    assert llm._bank_routes.router(llm.memory_bank, llm.bank_routing).routing.calibration == "joint"


def test_the_routing_persists_with_the_index(raised: LIFTIndex, tiny_smollm: Any, tmp_path: Path) -> None:
    folder = raised.persist(tmp_path / "index")
    record = json.loads((folder / "lift_index.json").read_text())
    manifest = json.loads((folder / "memory_bank" / "bank.json").read_text())
    assert "bank_routing" not in record and BankRouting.of(manifest["routing"]) == BankRouting(margin=2.0)
    fresh = LIFTLLM(tiny_smollm, max_new_tokens=4)
    loaded = LIFTIndex.load(folder, fresh, embed_model=BagOfWords())
    assert fresh.bank_routing is None and fresh.memory_bank is not None  # the bank brings its routing
    assert fresh.memory_bank.routing == BankRouting(margin=2.0) and names(fresh, ZORBIA_Q) == [None]
    # An explicit routing wins over the persisted one.
    LIFTIndex.load(folder, fresh, embed_model=BagOfWords(), bank_routing=BankRouting())
    assert fresh.bank_routing == BankRouting() and names(fresh, ZORBIA_Q) == ["Zorbia"]
    # A bank manifest written before banks kept their routing: the bank's defaults, and an LLM's own
    # routing is kept.
    del manifest["routing"]
    (folder / "memory_bank" / "bank.json").write_text(json.dumps(manifest))
    kept = LIFTLLM(tiny_smollm, max_new_tokens=4, bank_routing={"margin": -2.0})
    LIFTIndex.load(folder, kept, embed_model=BagOfWords())
    assert kept.bank_routing == BankRouting(margin=-2.0) and kept.memory_bank is not None
    assert kept.memory_bank.routing == BankRouting()
    assert loaded.memory_per == "document"


def test_the_routing_survives_the_llms_dict(raised: LIFTIndex) -> None:
    again = LIFTLLM.model_validate_json(raised.llm.model_dump_json())
    assert again.bank_routing == BankRouting(margin=2.0)


def test_bad_routing_is_refused_before_any_work(tiny_smollm: Any, facts: Any) -> None:
    with pytest.raises(ValueError, match="calibration must be one of per_memory, joint, bank"):
        LIFTLLM(tiny_smollm, bank_routing={"calibration": "global"})
    with pytest.raises(ValueError, match="quantile must be"):
        LIFTLLM(tiny_smollm, bank_routing=BankRouting.of({"quantile": 2}))
    llm = LIFTLLM(tiny_smollm)
    with pytest.raises(TypeError, match="margin must be a finite number"):
        llm.bank_routing = {"margin": "wide"}
    assert llm.bank_routing is None  # the refused value was not stored
    llm.bank_routing = {"calibration": "joint"}
    assert llm.bank_routing == BankRouting(calibration="joint")
    llm.bank_routing = None
    with pytest.raises(ValueError, match="memory_per='document'"):
        LIFTIndex.from_documents(documents(facts), llm=llm, mode="parametric", bank_routing={"margin": 0.1})
    with pytest.raises(ValueError, match="margin must be a finite number"):
        LIFTIndex.from_documents(
            documents(facts),
            llm=llm,
            mode="parametric",
            memory_per="document",
            bank_routing={"margin": float("inf")},
        )
    with pytest.raises(ValueError, match="unknown bank routing options"):
        llm.absorb_memory_bank(documents(facts), bank_routing={"quantile_": 0.5})
    assert llm.memory_bank is None and llm.memory is None and llm.bank_routing is None


def test_the_bank_slot_keeps_its_router_while_the_options_in_use_stay_the_same(facts: Any) -> None:
    """Calibrating a router embeds hundreds of questions: the slot builds one per bank and options. The
    defaults and the same options spelt out are one router; other options are another."""
    from tiny_models import bag_of_words

    from lift_integrations.llama_index._bank import BankSlot
    from lift_integrations.routing import text_memory

    bank = MemoryBank(
        {
            "Zorbia": text_memory([("Zorbia", facts.zorbia)]),
            "Velmora": text_memory([("Velmora", facts.velmora)]),
        }
    )
    slot = BankSlot(bag_of_words)
    router = slot.router(bank)
    assert slot.router(bank) is router
    assert slot.router(bank, BankRouting().resolved()) is router
    assert slot.router(bank, {"margin": 0.1}) is not router
