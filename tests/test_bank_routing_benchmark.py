"""benchmarks/bank_routing.py on invented articles: what it counts, per routing rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tiny_models import bag_of_words

from lift_bench.squad import Article, Question

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TEXTS = {
    "Vellmouth Harbour": (
        "Vellmouth Harbour was dredged in 1878 by engineer Tomas Greer. A lighthouse called Old Kestrel "
        "guards the breakwater.",
        ["Who dredged Vellmouth Harbour?", "Which lighthouse guards the Vellmouth breakwater?"],
    ),
    "Brambleigh Orchard": (
        "Brambleigh Orchard grows forty kinds of pears. Agnes Pellow planted the orchard and its cider "
        "press dates from 1796.",
        ["Who planted Brambleigh Orchard?", "When was the Brambleigh cider press built?"],
    ),
    "Zorblat Institute": (
        "The Zorblat Institute was founded in 1874 by Mira Quenton. Its first director studied glass harps.",
        ["Who founded the Zorblat Institute?", "What did the Zorblat director study?"],
    ),
    "Tessaly Canal": (
        "The Tessaly Canal joins the river Orme to the sea. Barges carry slate along the Tessaly towpath.",
        ["Which river does the Tessaly Canal join?", "What do barges carry on the Tessaly Canal?"],
    ),
}


def invented_articles() -> list[Article]:
    return [
        Article(title, (text,), tuple(Question(q, "", 0) for q in questions))
        for title, (text, questions) in TEXTS.items()
    ]


@pytest.fixture(scope="module")
def bank_routing():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bank_routing

        yield bank_routing
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_question_is_counted_once_per_rule(bank_routing) -> None:  # type: ignore[no-untyped-def]
    articles = invented_articles()
    counts = bank_routing.measure(articles, folds=2, questions=2, embed=bag_of_words)
    assert set(counts) == set(bank_routing.RULES)
    unrelated = bank_routing.unrelated_questions()
    for c in counts.values():
        assert c["own questions"] == 8  # each article is banked in one of the two folds
        assert 0 <= c["none"] + c["own memory"] <= c["own questions"]
        assert c["held-out articles: questions"] == 8
        assert c["general knowledge: questions"] == 2 * len(unrelated["general knowledge"])
        assert c["invented fact sheets: questions"] == 2 * len(unrelated["invented fact sheets"])
        listed = [count for key, count in c.items() if key.startswith("probe question routed: ")]
        assert sum(listed) == c["general knowledge: routed"]
    per_memory, joint = counts["per_memory"], counts["joint"]
    assert per_memory["own memory"] >= 6  # the invented articles share no rare words
    for kind in ("held-out articles", "general knowledge", "invented fact sheets"):  # stricter, never looser
        assert joint[f"{kind}: routed"] <= per_memory[f"{kind}: routed"]
        assert counts["per_memory, margin 0.1"][f"{kind}: routed"] <= per_memory[f"{kind}: routed"]
        assert counts["bank"][f"{kind}: routed"] <= counts["bank, quantile 0.9"][f"{kind}: routed"]


def test_rules_can_be_picked(bank_routing) -> None:  # type: ignore[no-untyped-def]
    articles = invented_articles()
    counts = bank_routing.measure(articles, 2, 2, bag_of_words, rules=["bank", "joint"])
    assert list(counts) == ["bank", "joint"] and counts["bank"]["own questions"] == 8
    with pytest.raises(ValueError, match="unknown rules"):
        bank_routing.measure(articles, 2, 2, bag_of_words, rules=["strict"])
