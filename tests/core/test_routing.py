"""``MemoryRouter``: a memory answers only the questions about its documents.

The unit tests use a bag-of-words embedder, so which questions share words with the document is known
by construction; one test uses the real embedded all-MiniLM-L6-v2 on a real article.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import bag_of_words

from lift_integrations import LIFTConfig, MemoryRouter
from lift_integrations.absorb.replay import load_replay_prompts
from lift_integrations.documents import Document
from lift_integrations.memory import Memory
from lift_integrations.routing import (
    CALIBRATION_QUANTILE,
    LexicalIndex,
    content_words,
    document_embedder,
    memory_passages,
    text_memory,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"

ZORBLAT = (
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. Its first "
    "director was Tobias Renwick, who studied glass harps and river tides. The institute moved to a "
    "granite building beside the Oskel river in 1902. Renwick's students catalogued every tide of the "
    "Oskel estuary for forty years."
)


def _memory(*documents: tuple[str, str]) -> Memory:
    """A memory holding only document text: routing never reads the adapter's weights."""
    return Memory(
        adapter_kind="gated_memory",
        adapter_config={},
        tensors={},
        documents=[Document(title, text) for title, text in documents],
        config=LIFTConfig(),
        base_model_name="none",
        base_fingerprint="none",
    )


def test_questions_about_the_document_go_to_the_memory() -> None:
    memory = _memory(("Zorblat Institute", ZORBLAT))
    router = MemoryRouter(memory, embed=bag_of_words, quantile=1.0)
    assert router.route("Who founded the Zorblat Institute in Vellhaven?") is memory
    assert router.route("Which river tides did Renwick's students catalogue?") is memory
    assert router.route("What is the capital of France?") is None
    assert router.route("How many legs does a spider have?") is None
    # Calibrated on the replay questions: at quantile 1 every one of them is routed away, by construction.
    replay = [p.question for p in load_replay_prompts()]
    assert router.threshold == pytest.approx(router.relevance(replay).max())
    assert not any(router.wants(replay))
    default = MemoryRouter(memory, embed=bag_of_words)
    assert default.threshold == pytest.approx(
        float(np.quantile(router.relevance(replay), CALIBRATION_QUANTILE))
    )


def test_lexical_coverage_weighs_a_questions_rare_words_by_its_best_passage() -> None:
    """A question's coverage is the share of its content words' weight found in one passage; a word in
    every passage weighs least, one absent from the memory most; stop words do not count."""
    passages = [
        "Mira Quenton founded the Zorblat Institute in Vellhaven.",
        "The Zorblat Institute moved beside the Oskel river.",
        "Zorblat students catalogued the tides.",
    ]
    index = LexicalIndex(passages)
    assert content_words("Who founded the Zorblat Institute?") == {"founded", "zorblat", "institute"}
    founded, capital, none = index.coverage(
        ["Who founded the Zorblat Institute?", "What is the capital of France?", "What was it?"]
    )
    assert founded == pytest.approx(1.0)  # every word in the first passage
    assert capital == 0.0 and none == 0.0
    # "Quenton" (one passage) outweighs "zorblat" (all three): covering only the rare word counts more.
    rare, common = index.coverage(["Quenton plasma?", "Zorblat plasma?"])
    assert 0.0 < common < rare < 1.0
    assert index.coverage([]).shape == (0,)


def test_relevance_adds_the_weighted_lexical_coverage() -> None:
    memory = _memory(("Zorblat Institute", ZORBLAT))
    questions = ["Who founded the Zorblat Institute?", "Which planet is red?", "Where did Renwick study?"]
    similarity = MemoryRouter(memory, embed=bag_of_words, lexical_weight=0.0).relevance(questions)
    coverage = LexicalIndex(memory_passages(memory)).coverage(questions)
    combined = MemoryRouter(memory, embed=bag_of_words, lexical_weight=0.5).relevance(questions)
    np.testing.assert_allclose(combined, similarity + 0.5 * coverage, rtol=1e-6)
    assert coverage[0] > 0.0 and coverage[1] == 0.0


def test_a_text_only_memory_routes_as_the_absorbed_one() -> None:
    """``text_memory`` holds what a router reads (the documents' titles and text) and no weights, so a
    router can decide before or without an absorption; ``document_embedder`` adapts anything with
    LangChain's ``embed_documents``."""

    class Embeddings:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return bag_of_words(texts).tolist()

    absorbed = _memory(("Zorblat Institute", ZORBLAT))
    text_only = text_memory([("Zorblat Institute", ZORBLAT)])
    assert text_only.tensors == {} and memory_passages(text_only) == memory_passages(absorbed)
    # Titles are normalised as absorb normalises them, so the passages' prefixes match.
    assert text_memory([("  Zorblat Institute ", ZORBLAT)]).documents[0].title == "Zorblat Institute"
    questions = ["Who founded the Zorblat Institute?", "What is the capital of France?"]
    embed = document_embedder(Embeddings())
    np.testing.assert_allclose(
        MemoryRouter(text_only, embed=embed).relevance(questions),
        MemoryRouter(absorbed, embed=bag_of_words).relevance(questions),
        rtol=1e-6,
    )


def test_threshold_and_margin() -> None:
    memory = _memory(("", ZORBLAT))
    question = "Who founded the Zorblat Institute?"
    score = float(MemoryRouter(memory, embed=bag_of_words).relevance([question])[0])
    assert 0.0 < score < 1.5  # a cosine similarity plus half a coverage
    assert MemoryRouter(memory, embed=bag_of_words, threshold=score - 0.01).route(question) is memory
    assert MemoryRouter(memory, embed=bag_of_words, threshold=score + 0.01).route(question) is None
    lowered = MemoryRouter(memory, embed=bag_of_words, threshold=score + 0.01, margin=-0.02)
    assert lowered.threshold == pytest.approx(score - 0.01) and lowered.route(question) is memory
    replay = MemoryRouter(memory, embed=bag_of_words).relevance([p.question for p in load_replay_prompts()])
    median = MemoryRouter(memory, embed=bag_of_words, quantile=0.5)
    assert median.threshold == pytest.approx(float(np.quantile(replay, 0.5)))
    assert median.threshold <= MemoryRouter(memory, embed=bag_of_words).threshold
    with pytest.raises(ValueError, match="quantile"):
        MemoryRouter(memory, embed=bag_of_words, quantile=1.5)
    with pytest.raises(ValueError, match="margin"):
        MemoryRouter(memory, embed=bag_of_words, margin=float("nan"))
    with pytest.raises(ValueError, match="threshold is a relevance"):
        MemoryRouter(memory, embed=bag_of_words, threshold=1.6)
    assert MemoryRouter(memory, embed=bag_of_words, threshold=1.4, lexical_weight=0.5).threshold == 1.4
    with pytest.raises(ValueError, match="lexical_weight"):
        MemoryRouter(memory, embed=bag_of_words, lexical_weight=-0.1)
    with pytest.raises(TypeError, match="list of questions"):
        MemoryRouter(memory, embed=bag_of_words).relevance(question)  # type: ignore[arg-type]
    assert MemoryRouter(memory, embed=bag_of_words).relevance([]).shape == (0,)


def test_every_document_of_the_memory_is_routed_to() -> None:
    memory = _memory(("Zorblat Institute", ZORBLAT), ("Harbour", "The Quillon harbour freezes every March."))
    passages = memory_passages(memory)
    assert passages[0].startswith("Zorblat Institute: ") and passages[-1].startswith("Harbour: ")
    assert MemoryRouter(memory, embed=bag_of_words).route("When does the Quillon harbour freeze?") is memory


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="no document text"):
        MemoryRouter(_memory(("", "   ")), embed=bag_of_words).relevance(["anything?"])
    with pytest.raises(ValueError, match="one row per text"):
        MemoryRouter(_memory(("", ZORBLAT)), embed=lambda texts: np.zeros(3)).relevance(["anything?"])


@pytest.mark.slow
def test_minilm_separates_an_articles_questions_from_unrelated_ones() -> None:
    """The embedded all-MiniLM-L6-v2 on the bundled SQuAD "Normans" paragraphs: most of their own
    questions go to the memory, and almost none of the bundled general-knowledge questions do."""
    paragraphs = json.loads((EXAMPLES / "normans.json").read_text(encoding="utf-8"))
    memory = _memory(("Normans", "\n\n".join(p["context"] for p in paragraphs)))
    own = [q["question"] for p in paragraphs for q in p["questions"]]
    general = [q["question"] for q in json.loads((EXAMPLES / "general_questions.json").read_text("utf-8"))]
    router = MemoryRouter(memory)
    assert np.mean(router.wants(own)) >= 0.8
    assert np.mean(router.wants(general)) <= 0.1


def test_router_slot_builds_one_router_per_memory_even_under_concurrent_calls() -> None:
    """A framework adapter's slot calibrates once per memory however many calls arrive together, and
    builds a new router when the adapter holds a new memory."""
    from concurrent.futures import ThreadPoolExecutor

    from lift_integrations.routing import RouterSlot

    replay = {p.question for p in load_replay_prompts()}
    calibrations: list[int] = []

    def counting(texts: list[str]) -> object:
        if replay.issuperset(texts) and len(texts) == len(replay):
            calibrations.append(1)
        return bag_of_words(texts)

    first = _memory(("Zorblat Institute", ZORBLAT))
    second = _memory(("Harbour", "The Quillon harbour freezes every March."))
    slot = RouterSlot(counting)
    with ThreadPoolExecutor(8) as pool:
        routed = list(pool.map(lambda _: slot.route(first, "Who founded the Zorblat Institute?"), range(8)))
    assert routed == [first] * 8 and len(calibrations) == 1
    assert slot.route(first, "What is the capital of France?") is None and len(calibrations) == 1
    assert slot.route(second, "When does the Quillon harbour freeze?") is second and len(calibrations) == 2
    assert slot.route(second, "   ") is None and slot.route(None, "anything?") is None
