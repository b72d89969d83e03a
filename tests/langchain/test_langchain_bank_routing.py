"""LangChain's ``bank_routing``: the bank routing options reach the chat model's ``BankRouter`` (issue 17).

Routing embeds with a bag of words, so which memory a question reaches is deterministic; ``margin=2``
lifts every threshold above any relevance (at most ``1 + lexical_weight``), ``margin=-2`` below any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lc_tiny_model import TINY_NAME, fast_config
from test_langchain_bank import DOCUMENTS, BagOfWords

from lift_integrations import BankRouting, MemoryBank
from lift_integrations.langchain import LIFTChatModel, LIFTMemoryRetriever

ABOUT = "Who dredged Vellmouth Harbour?"
UNRELATED = "What is the capital of France?"


def chat_over(bank: MemoryBank, **fields: Any) -> LIFTChatModel:
    return LIFTChatModel(
        model=TINY_NAME, max_tokens=4, router_embeddings=BagOfWords(), memory_bank=bank, **fields
    )


def answered_by(chat: LIFTChatModel, question: str) -> str | None:
    return chat.invoke(question).response_metadata["lift_memory_id"]


@pytest.fixture(scope="module")
def raised(tiny: Any) -> LIFTChatModel:
    """A bank absorbed with ``margin=2`` (absorbing takes the time: built once, shared read-only)."""
    chat = LIFTChatModel(model=TINY_NAME, max_tokens=4, router_embeddings=BagOfWords())
    chat.absorb(DOCUMENTS, memory_per="document", bank_routing={"margin": 2.0}, lift_config=fast_config())
    return chat


def test_absorb_sets_the_routing_and_the_router_uses_it(raised: LIFTChatModel) -> None:
    bank = raised.memory_bank
    assert bank is not None and raised.bank_routing == BankRouting(margin=2.0)
    assert answered_by(raised, ABOUT) is None  # the base model: no memory beats its raised threshold
    default = chat_over(bank)
    assert default.bank_routing is None and bank.routing == BankRouting()  # None: the bank's own
    assert answered_by(default, ABOUT) == bank["Vellmouth-Harbour"].id
    assert answered_by(default, UNRELATED) is None
    lowered = chat_over(bank, bank_routing=BankRouting(margin=-2.0))
    assert answered_by(lowered, UNRELATED) in {bank[name].id for name in bank.names}


def test_changing_the_field_rebuilds_the_router(raised: LIFTChatModel) -> None:
    bank = raised.memory_bank
    assert bank is not None
    chat = chat_over(bank)
    assert answered_by(chat, ABOUT) == bank["Vellmouth-Harbour"].id
    chat.bank_routing = {"margin": 2.0}  # a dict of options, checked and converted on assignment
    assert chat.bank_routing == BankRouting(margin=2.0)
    assert answered_by(chat, ABOUT) is None
    # The routing is part of the cache key: a cached answer of one routing is not served under another.
    assert chat._identifying_params["bank_routing"] != chat_over(bank)._identifying_params["bank_routing"]


def test_the_retriever_passes_the_routing_to_its_llm(raised: LIFTChatModel) -> None:
    llm = LIFTChatModel(model=TINY_NAME, max_tokens=4, router_embeddings=BagOfWords())
    LIFTMemoryRetriever.from_documents(
        DOCUMENTS[:1],
        llm=llm,
        mode="parametric",
        memory_per="document",
        bank_routing={"calibration": "joint", "margin": 2.0},
        absorb_kwargs={"lift_config": fast_config()},
    )
    assert llm.bank_routing == BankRouting(calibration="joint", margin=2.0)
    assert answered_by(llm, ABOUT) is None
    assert llm._bank_routes.router.routing == llm.bank_routing.resolved()  # the router that decided
    with pytest.raises(ValueError, match="memory_per='document'"):
        LIFTMemoryRetriever.from_documents(DOCUMENTS, llm=llm, bank_routing={"margin": 0.1})


def test_the_routing_survives_a_dump_and_reload(raised: LIFTChatModel) -> None:
    dumped = raised.model_dump_json()
    again = LIFTChatModel.model_validate_json(dumped)
    assert again.bank_routing == BankRouting(margin=2.0)
    assert LIFTChatModel(**raised.model_dump()).bank_routing == raised.bank_routing


def test_bad_routing_is_refused_before_any_work(tiny: Any) -> None:
    with pytest.raises(ValueError, match="calibration must be one of per_memory, joint, bank"):
        LIFTChatModel(model=TINY_NAME, bank_routing={"calibration": "global"})
    with pytest.raises(ValueError, match="unknown bank routing options"):
        LIFTChatModel(model=TINY_NAME, bank_routing={"threshold": 0.5})
    chat = LIFTChatModel(model=TINY_NAME, router_embeddings=BagOfWords())
    with pytest.raises(ValueError, match="margin must be a finite number"):
        chat.absorb(DOCUMENTS, memory_per="document", bank_routing={"margin": float("nan")})
    with pytest.raises(ValueError, match="memory_per='document'"):
        chat.absorb(DOCUMENTS, bank_routing={"margin": 0.1})
    assert chat.memory_bank is None and chat.memory is None  # nothing was absorbed
    assert chat.bank_routing is None
    with pytest.raises(TypeError, match="margin must be a finite number"):
        chat.bank_routing = {"margin": "wide"}
    assert chat.bank_routing is None  # the refused value was not stored


def test_a_saved_bank_brings_its_routing_back(raised: LIFTChatModel, tiny: Any, tmp_path: Path) -> None:
    """``save_memory`` writes the routing in effect (the field's ``margin=2``) into the bank's manifest: a
    chat model that loads the bank, with no routing of its own, routes as the saving one did."""
    bank = raised.memory_bank
    assert bank is not None and answered_by(chat_over(bank), ABOUT) == bank["Vellmouth-Harbour"].id
    folder = raised.save_memory(tmp_path / "bank")
    assert bank.routing == BankRouting()  # the bank object is left as it was, shared or not
    reloaded = LIFTChatModel(model=TINY_NAME, max_tokens=4, router_embeddings=BagOfWords())
    reloaded.load_memory(folder)
    assert reloaded.bank_routing is None and reloaded.memory_bank is not None
    assert reloaded.memory_bank.routing == BankRouting(margin=2.0)
    assert answered_by(reloaded, ABOUT) is None  # the base model, as before the save
    assert reloaded._identifying_params["bank_routing"] == BankRouting(margin=2.0).resolved().to_dict()
    explicit = LIFTChatModel(model=TINY_NAME, max_tokens=4, router_embeddings=BagOfWords())
    explicit.load_memory(folder, bank_routing={"margin": 0.0})  # the routing given to load wins
    assert explicit.bank_routing == BankRouting() and answered_by(explicit, ABOUT) is not None
    by_field = LIFTChatModel(
        model=TINY_NAME, max_tokens=4, router_embeddings=BagOfWords(), memory_bank=str(folder)
    )
    assert answered_by(by_field, ABOUT) is None
    # A routing the user sets wins for that model, and is what its save_memory writes.
    reloaded.bank_routing = BankRouting()
    harbour = reloaded.memory_bank["Vellmouth-Harbour"].id
    assert answered_by(reloaded, ABOUT) == harbour
    again = LIFTChatModel(model=TINY_NAME, max_tokens=4, router_embeddings=BagOfWords())
    again.load_memory(reloaded.save_memory(tmp_path / "default"))
    assert again.memory_bank is not None and again.memory_bank.routing == BankRouting()
    assert answered_by(again, ABOUT) == harbour
