"""benchmarks/route_corpus_report.py: a corpus report re-routed by a rule's decisions, with no model.

Three articles of two questions each, and a probe of three questions. Every arm answers every question with
one fixed score, so the score a re-routed question gets shows which arm's answer it reused; the decisions
are given by hand, one question for each branch: the run's memory again, none, another memory, a memory
where the run used none.
"""

from __future__ import annotations

from typing import Any

import pytest
from route_corpus_report import LEGACY_RULE, Decisions, markdown, rerouted_rows, rule_figures, rule_name

from lift_bench.cases import BenchDocument, BenchQuestion
from lift_bench.corpus import Corpus
from lift_integrations.bank_router import BankRouting

ARTICLES = ("A", "B", "C")
QUESTIONS = [(title, f"question {i} about {title}?") for title in ARTICLES for i in (1, 2)]
SCORES = {
    "closed_book": 0.1,
    "rag_langchain": 0.3,
    "lift_only": 0.9,
    "lift_oracle": 0.7,
    "hybrid": 0.8,
    "control": 0.5,
    "control_hybrid": 0.6,
}
RUN = ["A", "A", "B", None, "A", "C"]  # the run: the fifth question to another memory, the fourth to none
NEXT = {"A": "B", "B": "C", "C": "A"}  # the controls' derangement: the next article's memory
PROBE = ["capital of Italy?", "largest ocean?", "who wrote Hamlet?"]


def _corpus() -> Corpus:
    articles = tuple(
        BenchDocument(t, f"text of {t}", tuple(BenchQuestion(q, "gold", t) for s, q in QUESTIONS if s == t))
        for t in ARTICLES
    )
    return Corpus(articles, ARTICLES)


def _row(question: str, source: str, score: float, memory: str | None) -> dict[str, Any]:
    return {"question": question, "source": source, "f1": score, "contains": score, "memory": memory}


def _labels(arm: str) -> list[str | None]:
    if arm in ("control", "control_hybrid"):
        return [None if r is None else NEXT[s] for r, (s, _) in zip(RUN, QUESTIONS, strict=True)]
    if arm == "lift_oracle":
        return [s for s, _ in QUESTIONS]
    return list(RUN) if arm in ("lift_only", "hybrid") else [None] * len(QUESTIONS)


def _report_case() -> dict[str, Any]:
    probe_memory = ["A", None, "B"]
    return {
        "questions": {
            arm: [_row(q, s, score, label) for (s, q), label in zip(QUESTIONS, _labels(arm), strict=True)]
            for arm, score in SCORES.items()
        },
        "general": {
            "questions": {
                "base": [_row(q, "probe", 1.0, None) for q in PROBE],
                # As the harness writes them: a question routed to none keeps the base answer.
                "memory": [
                    _row(q, "probe", 1.0 if m is None else 0.0, m)
                    for q, m in zip(PROBE, probe_memory, strict=True)
                ],
            }
        },
    }


# Same memory, none, another memory, none, none (the run's wrong route), same memory; on the probe: the
# run's memory, none, another memory.
DECISIONS = Decisions(["A", None, "C", "B", None, "C"], ["A", None, "C"])


def test_each_answer_is_reused_from_the_arm_that_gave_it_or_marked_unknown() -> None:
    case = _report_case()
    rows, probe = rerouted_rows(case, _corpus(), DECISIONS)
    scores = {arm: [None if r is None else r["f1"] for r in arm_rows] for arm, arm_rows in rows.items()}
    assert scores["lift_only"] == [0.9, 0.1, None, None, 0.1, 0.9]
    assert scores["hybrid"] == [0.8, 0.3, None, None, 0.3, 0.8]
    # A control needs only "some memory or none": the third question keeps its control answer (the next
    # article's memory either way); the fourth, routed where the run routed none, was never answered.
    assert scores["control"] == [0.5, 0.1, 0.5, None, 0.1, 0.5]
    assert scores["control_hybrid"] == [0.6, 0.3, 0.6, None, 0.3, 0.6]
    for arm in ("closed_book", "rag_langchain", "lift_oracle"):
        assert scores[arm] == [SCORES[arm]] * len(QUESTIONS)
    assert [None if r is None else r["f1"] for r in probe] == [0.0, 1.0, None]


def test_figures_count_the_unknown_answers_and_give_them_both_ways() -> None:
    result = rule_figures(_report_case(), _corpus(), DECISIONS, resamples=50)
    assert result["unknown"] == 2 and result["probe_unknown"] == 1 and result["probe_routed"] == 2
    assert result["routing"]["correct"] == pytest.approx(3 / 6)  # the first, the fourth and the last
    assert result["routing"]["none"] == pytest.approx(2 / 6)
    filled, excluded = result["as_without_memory"], result["excluded"]
    assert filled["n"] == 6 and excluded["n"] == 4
    assert filled["f1"]["lift_only"][0] == pytest.approx((0.9 * 2 + 0.1 * 4) / 6)  # unknown -> closed_book
    assert excluded["f1"]["lift_only"][0] == pytest.approx((0.9 * 2 + 0.1 * 2) / 4)
    assert excluded["f1"]["control"][0] == pytest.approx((0.5 * 2 + 0.1 * 2) / 4)  # the same 4 questions
    assert excluded["ratio_to_rag_langchain"]["hybrid"] == pytest.approx(((0.8 + 0.3) / 2) / 0.3)
    assert excluded["gain_over_control"]["lift_only"][0] == pytest.approx((0.4 * 2 + 0.0 * 2) / 4)
    assert filled["probe"]["contains"] == {"base": 1.0, "routed": pytest.approx(2 / 3)}
    assert excluded["probe"]["n"] == 2 and excluded["probe"]["contains"]["routed"] == 0.5
    table = markdown({"candidate": result})
    assert "candidate: unknown left out (4 questions)" in table and "| 2, 1 |" in table


def test_the_run_s_own_decisions_give_the_report_back() -> None:
    case = _report_case()
    run = Decisions(list(RUN), ["A", None, "B"])
    result = rule_figures(case, _corpus(), run, resamples=50)
    assert result["unknown"] == 0 and result["probe_unknown"] == 0 and "excluded" not in result
    for arm, score in SCORES.items():
        assert result["as_without_memory"]["f1"][arm][0] == pytest.approx(score)
    assert rule_name(LEGACY_RULE).startswith("run's rule (calibration=per_memory")
    assert (
        rule_name(BankRouting(calibration="bank", quantile=0.9))
        == "calibration=bank, quantile=0.9, lexical_weight=0.25"  # the bank calibration's default weight
    )
