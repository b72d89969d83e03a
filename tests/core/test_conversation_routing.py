"""Routing a conversation: a follow-up stays with the memory its question leans on, a question that
stands alone is routed by itself (:func:`conversation_query`), in ``RouterSlot`` and both bank slots.

Unit tests use the bag-of-words embedder of ``tiny_models``; one slow test uses the embedded
all-MiniLM-L6-v2 on the bundled Quillon article.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import bag_of_words

from lift_integrations.routing import (
    MAX_FOLLOW_UP_TURNS,
    RouterSlot,
    conversation_query,
    is_follow_up,
    text_memory,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"

ZORBLAT = (
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. Its first "
    "director was Tobias Renwick, who studied glass harps and river tides. The institute moved to a "
    "granite building beside the Oskel river in 1902. Twelve thousand people live in Vellhaven, most "
    "of them fishers."
)


def chat(*user_turns: str, system: str | None = None) -> list[dict[str, str]]:
    """User turns with an assistant reply between them (and a system prompt first, if given)."""
    turns = [{"role": "system", "content": system}] if system else []
    for index, text in enumerate(user_turns):
        if index:
            turns.append({"role": "assistant", "content": "Vellhaven Vellhaven Zorblat."})
        turns.append({"role": "user", "content": text})
    return turns


@pytest.mark.parametrize(
    ("turn", "follow_up"),
    [
        ("What is its population?", True),
        ("Did she marry?", True),
        ("Why?", True),
        ("Tell me more.", True),
        ("What is the capital of France?", False),
        ("Who founded the Zorblat Institute?", False),
        ("What is the capital of France and its population?", False),  # names its own subject
        ("How many planets are there?", False),
    ],
)
def test_a_follow_up_leans_on_an_earlier_turn(turn: str, follow_up: bool) -> None:
    assert is_follow_up(turn) is follow_up


def test_the_query_joins_a_follow_up_to_the_turns_it_leans_on_and_nothing_else() -> None:
    first = "Who founded the Zorblat Institute?"
    assert conversation_query(chat(first, "What is its population?", system="Answer in French.")) == (
        f"{first}\nWhat is its population?"
    )
    # A question that stands alone is routed alone, whatever came before.
    assert (
        conversation_query(chat(first, "What is the capital of France?")) == "What is the capital of France?"
    )
    # A chain of follow-ups goes back to the last turn that stands alone, no further.
    assert (
        conversation_query(chat("Where is Paris?", first, "Who ran it?", "Why?"))
        == f"{first}\nWho ran it?\nWhy?"
    )
    # At most MAX_FOLLOW_UP_TURNS earlier turns.
    many = chat(first, *["And then?"] * (MAX_FOLLOW_UP_TURNS + 3))
    assert conversation_query(many).count("\n") == MAX_FOLLOW_UP_TURNS
    # System and assistant text never reach the router; no user turn is an empty query.
    assert conversation_query([{"role": "system", "content": "Zorblat"}]) == ""


def test_a_router_slot_keeps_follow_ups_with_the_memory_and_sends_unrelated_questions_away() -> None:
    memory = text_memory([("Zorblat Institute", ZORBLAT)])
    slot = RouterSlot(bag_of_words)
    about = "Who founded the Zorblat Institute in Vellhaven?"
    assert slot.route_chat(memory, chat(about)) is memory
    # The follow-up alone shares no content word with the document; with its question it does.
    assert slot.route(memory, "What is its population?") is None
    assert slot.route_chat(memory, chat(about, "What is its population?")) is memory
    # An unrelated question after a relevant one gets the base model: it stands alone.
    assert slot.route_chat(memory, chat(about, "What is the capital of France?")) is None
    # A follow-up of an unrelated question stays unrelated.
    assert slot.route_chat(memory, chat("What is the capital of France?", "What is its population?")) is None
    # A system prompt about the documents does not route a question that is not.
    assert slot.route_chat(memory, chat("What is the capital of France?", system=ZORBLAT)) is None


def test_both_bank_slots_route_the_conversation() -> None:
    from lift_integrations.bank import MemoryBank
    from lift_integrations.langchain._bank import route_in_bank
    from lift_integrations.llama_index._bank import BankSlot
    from lift_integrations.routing import document_embedder

    class Embeddings:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return bag_of_words(texts).tolist()

    bank = MemoryBank()
    bank.add("zorblat", text_memory([("Zorblat Institute", ZORBLAT)]))
    bank.add("harbour", text_memory([("Harbour", "The Quillon harbour freezes every March; dredgers wait.")]))
    about, follow_up = "Who founded the Zorblat Institute in Vellhaven?", "What is its population?"
    slot = BankSlot(document_embedder(Embeddings()))
    assert slot.route_chat(bank, chat(about, follow_up))[0] == "zorblat"
    assert slot.route_chat(bank, chat(about, "What is the capital of France?")) == (None, None)
    routes = route_in_bank(bank, Embeddings(), None)
    assert routes.memory_for(chat(about, follow_up)) is bank.get("zorblat")
    assert routes.memory_for(chat(about, "What is the capital of France?")) is None


@pytest.mark.slow
def test_minilm_keeps_a_follow_up_with_the_quillon_memory() -> None:
    """The default embedder (all-MiniLM-L6-v2) on the bundled Quillon article: the issue's conversation."""
    article = json.loads((EXAMPLES / "quillon.json").read_text(encoding="utf-8"))
    memory = text_memory([(article["title"], article["text"])])
    slot = RouterSlot()
    about = "Who opened the Quillon Observatory?"
    assert slot.route_chat(memory, chat(about)) is memory
    assert slot.route_chat(memory, chat(about, "What is its population?")) is memory
    assert slot.route_chat(memory, chat(about, "What is the capital of France?")) is None
    assert slot.route_chat(memory, chat("What is the capital of France?", system="Answer in French.")) is None
