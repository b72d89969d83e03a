"""benchmarks/route_reports.py: routing measured on a finished report, with a bag-of-words embedder.

The report is built by hand: a question about the article, one unrelated question, and for each memory
arm an answer that differs from the memory-free arm's, so the routed score shows which branch each
question took.
"""

from __future__ import annotations

from typing import Any

import pytest
from route_reports import route_report
from tiny_models import bag_of_words

from lift_bench.squad import Article, Question

ARTICLE = Article(
    title="Zorblat Institute",
    paragraphs=(
        "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven.",
        "Its first director was Tobias Renwick, who studied glass harps and river tides.",
    ),
    questions=(Question("Who founded the Zorblat Institute in Vellhaven?", "Mira Quenton", 0),),
)
ABOUT = "Who founded the Zorblat Institute in Vellhaven?"
UNRELATED = "How many legs does a spider have?"


def _rows(scores: list[float], key: str = "f1") -> list[dict[str, Any]]:
    return [{"question": q, key: score} for q, score in zip((ABOUT, UNRELATED), scores, strict=True)]


def test_routed_scores_take_the_memory_only_for_questions_about_the_document() -> None:
    report = {
        "cases": [
            {
                "setting": "single",
                "sources": [ARTICLE.title],
                "document": ARTICLE.title,
                "questions": {
                    "rag_langchain": _rows([0.2, 0.4]),
                    "hybrid": _rows([0.9, 0.0]),
                    "control_hybrid": _rows([0.1, 0.0]),
                },
                "general": {
                    "questions": {
                        "base": _rows([1.0, 1.0], "contains"),
                        "memory": _rows([0.0, 0.0], "contains"),
                    }
                },
            }
        ]
    }
    routed = route_report(report, {ARTICLE.title: ARTICLE}, bag_of_words)["single"]
    hybrid = routed["hybrid"]
    assert hybrid["routed_to_memory"] == 0.5
    assert hybrid["routed"] == pytest.approx((0.9 + 0.4) / 2)  # the memory for ABOUT, RAG for UNRELATED
    assert hybrid["memory"] == pytest.approx(0.45) and hybrid["without_memory"] == pytest.approx(0.3)
    assert routed["control_hybrid"]["routed"] == pytest.approx((0.1 + 0.4) / 2)  # the same decisions
    assert hybrid["routed_gain_over_routed_control"].startswith("+40.0")
    assert routed["probe"]["routed"] == pytest.approx(0.5)
    report["cases"][0]["questions"]["hybrid"].reverse()
    with pytest.raises(ValueError, match="different questions"):
        route_report(report, {ARTICLE.title: ARTICLE}, bag_of_words)
    with pytest.raises(ValueError, match="not in the data file"):
        route_report(report, {}, bag_of_words)
