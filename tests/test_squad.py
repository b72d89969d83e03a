"""Tests for the SQuAD loader, the official v1.1 scoring and the bootstrap confidence interval."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lift_bench.squad import (
    Article,
    Question,
    bootstrap_ci,
    exact_match,
    f1_score,
    load_squad_articles,
    normalize_answer,
)

NORMANS = Path(__file__).resolve().parents[1] / "examples" / "data" / "normans.json"


# --- normalisation (official evaluate-v1.1.py behaviour) ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The  Cat!", "cat"),
        ("An apple, a day", "apple day"),
        ("  Denver\tBroncos\n", "denver broncos"),
        ("Theater", "theater"),  # articles only match whole words
        ("a", ""),
        ("the-end", "theend"),  # punctuation is removed before articles, so "the" is glued on
        ("don't", "dont"),
        ("A.B.C.", "abc"),
        ("\u201cquoted\u201d", "\u201cquoted\u201d"),  # only ASCII punctuation is stripped
        ("24\u201310", "24\u201310"),  # en dash is not in string.punctuation
        ("x\u2013the\u2013y", "x\u2013 \u2013y"),  # an article is replaced by a space, not deleted
        ("", ""),
    ],
)
def test_normalize_answer_matches_official_script(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


# --- exact match and F1 -----------------------------------------------------------------------------------


def test_exact_match_ignores_case_punctuation_and_articles() -> None:
    assert exact_match("The Denver Broncos.", "denver broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0


def test_f1_hand_computed() -> None:
    # pred tokens {cat, sat}; gold tokens {cat, sat, on, mat}: 2 shared, P = 2/2, R = 2/4, F1 = 2/3.
    assert f1_score("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)
    # P = 1/3, R = 1/1 -> F1 = 2 * (1/3) / (4/3) = 1/2
    assert f1_score("Santa Clara, California", "California") == pytest.approx(0.5)
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("The Cat", "cat") == 1.0


def test_f1_counts_repeated_tokens_once_per_match() -> None:
    # pred [x, x, y], gold [x, y]: overlap counts min(2, 1) + 1 = 2, P = 2/3, R = 1, F1 = 0.8
    assert f1_score("x x y", "x y") == pytest.approx(0.8)


def test_empty_answers_follow_v11_rules() -> None:
    # v1.1: no token overlap scores 0 for F1 even when both sides normalise to empty; EM compares strings.
    assert f1_score("", "") == 0.0
    assert f1_score("the", "a") == 0.0
    assert exact_match("the", "a") == 1.0


def test_list_of_golds_takes_the_max() -> None:
    golds = ["cat sat on mat", "the cat sat", "dog"]
    assert exact_match("cat sat", golds) == 1.0
    assert f1_score("cat sat", golds) == 1.0
    assert f1_score("cat sat", ["dog", "cat sat on mat"]) == pytest.approx(2 / 3)
    assert exact_match("bird", ("dog", "cat")) == 0.0


def test_empty_gold_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        f1_score("x", [])
    with pytest.raises(ValueError, match="non-empty"):
        exact_match("x", [])


# --- bootstrap --------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_mean_and_is_ordered() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.25, 1.0, 0.0, 1.0]
    mean, low, high = bootstrap_ci(values)
    assert mean == pytest.approx(np.mean(values))
    assert low <= mean <= high
    assert 0.0 <= low < high <= 1.0


def test_bootstrap_ci_narrower_with_more_data() -> None:
    rng = np.random.default_rng(123)
    small = rng.binomial(1, 0.6, size=30).astype(float).tolist()
    large = rng.binomial(1, 0.6, size=3000).astype(float).tolist()
    _, s_low, s_high = bootstrap_ci(small)
    _, l_low, l_high = bootstrap_ci(large)
    assert (l_high - l_low) < (s_high - s_low) / 3  # width shrinks like 1/sqrt(n): ~10x here


def test_bootstrap_ci_matches_normal_theory() -> None:
    # For the mean of n standard-normal draws the 95% interval is about mean +- 1.96 / sqrt(n).
    values = np.random.default_rng(11).standard_normal(400)
    mean, low, high = bootstrap_ci(values.tolist(), n_resamples=4000)
    half_width = 1.96 * values.std() / np.sqrt(values.size)
    assert high - mean == pytest.approx(half_width, rel=0.15)
    assert mean - low == pytest.approx(half_width, rel=0.15)


def test_bootstrap_ci_is_reproducible_and_seeded() -> None:
    values = np.random.default_rng(7).random(50).tolist()
    assert bootstrap_ci(values, seed=1) == bootstrap_ci(values, seed=1)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)


def test_bootstrap_ci_wider_at_higher_confidence() -> None:
    values = np.random.default_rng(3).random(100).tolist()
    _, low90, high90 = bootstrap_ci(values, confidence=0.90)
    _, low99, high99 = bootstrap_ci(values, confidence=0.99)
    assert low99 <= low90 and high90 <= high99


def test_bootstrap_ci_constant_values_is_degenerate() -> None:
    assert bootstrap_ci([0.5] * 7) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        ([], {}, "empty"),
        ([1.0, float("nan")], {}, "finite"),
        ([1.0], {"n_resamples": 0}, "n_resamples"),
        ([1.0], {"confidence": 1.0}, "confidence"),
        ([1.0], {"confidence": 0.0}, "confidence"),
    ],
)
def test_bootstrap_ci_rejects_bad_input(values: list[float], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(values, **kwargs)


# --- loading ----------------------------------------------------------------------------------------------


def test_load_normans_example() -> None:
    articles = load_squad_articles(NORMANS)
    assert len(articles) == 1
    article = articles[0]
    assert isinstance(article, Article)
    assert article.title == "Normans"
    assert len(article.paragraphs) > 0
    assert len(article.questions) > 0
    assert all(isinstance(q, Question) for q in article.questions)
    assert article.text == "\n\n".join(article.paragraphs)
    assert article.text.startswith(article.paragraphs[0])
    indices = [q.paragraph_index for q in article.questions]
    assert indices == sorted(indices)
    assert all(0 <= i < len(article.paragraphs) for i in indices)
    grounded = sum(q.answer in article.paragraphs[q.paragraph_index] for q in article.questions)
    assert grounded / len(article.questions) >= 0.9


def test_load_groups_consecutive_paragraphs(tmp_path: Path) -> None:
    data = [
        {"title": "A", "context": "p0", "questions": [{"question": "q0", "answer": "p0"}]},
        {"title": "A", "context": "p1", "questions": []},
        {"title": "B", "context": "b0", "questions": [{"question": "qb", "answer": "b0", "extra": 1}]},
        {"title": "A2", "context": "x", "questions": [{"question": "q1", "answer": "x"}]},
    ]
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    articles = load_squad_articles(str(path))
    assert [a.title for a in articles] == ["A", "B", "A2"]
    assert articles[0].paragraphs == ("p0", "p1")
    assert articles[0].text == "p0\n\np1"
    assert articles[0].questions == (Question("q0", "p0", 0),)
    assert articles[1].questions[0].paragraph_index == 0
    with pytest.raises(AttributeError):
        articles[0].title = "changed"  # type: ignore[misc]


def test_load_empty_list_gives_no_articles(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("[]", encoding="utf-8")
    assert load_squad_articles(path) == []


_GOOD = {"title": "T", "context": "c", "questions": [{"question": "q", "answer": "a"}]}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"title": "T"}', "top level must be a JSON list"),
        ("[1, 2]", "paragraph 0: must be a JSON object"),
        ('[{"context": "c", "questions": []}]', "paragraph 0: missing key 'title'"),
        ('[{"title": "T", "questions": []}]', "missing key 'context'"),
        ('[{"title": "T", "context": "c"}]', "missing key 'questions'"),
        ('[{"title": 3, "context": "c", "questions": []}]', "'title' must be of type str, got int"),
        ('[{"title": "T", "context": null, "questions": []}]', "'context' must be of type str, got NoneType"),
        ('[{"title": "T", "context": "c", "questions": {}}]', "'questions' must be of type list, got dict"),
        ('[{"title": "T", "context": "c", "questions": ["q"]}]', "question 0: must be a JSON object"),
        ('[{"title": "T", "context": "c", "questions": [{"question": "q"}]}]', "missing key 'answer'"),
        (
            '[{"title": "T", "context": "c", "questions": [{"question": "q", "answer": 1}]}]',
            "'answer' must be of type str",
        ),
        (
            json.dumps(
                [
                    _GOOD,
                    _GOOD,
                    {**_GOOD, "title": "U"},
                    {**_GOOD, "title": "U", "questions": [{"question": "q"}]},
                ]
            ),
            "paragraph 3, question 0: missing key 'answer'",
        ),
        (json.dumps([_GOOD, {**_GOOD, "title": "U"}, _GOOD]), "paragraph 2: title 'T' appears again"),
        ("[{", "not valid JSON"),
    ],
)
def test_malformed_files_raise_value_error(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        load_squad_articles(path)
    assert str(path) in str(info.value)


def test_non_utf8_file_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"title": "caf\xe9"}]')
    with pytest.raises(ValueError, match="UTF-8"):
        load_squad_articles(path)


def test_missing_file_is_not_masked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_squad_articles(tmp_path / "nope.json")


# --- properties -------------------------------------------------------------------------------------------

_content_word = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True).filter(
    lambda w: w.lower() not in {"a", "an", "the"}
)
_any_word = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@st.composite
def _answers_with_content(draw: st.DrawFn) -> str:
    """A string holding at least one non-article alphanumeric token, surrounded by arbitrary other words."""
    words = draw(st.lists(_any_word, max_size=6))
    words.insert(draw(st.integers(0, len(words))), draw(_content_word))
    return " ".join(words)


@given(st.text(), st.text())
def test_scores_are_bounded_and_symmetric(prediction: str, gold: str) -> None:
    f1 = f1_score(prediction, gold)
    assert 0.0 <= f1 <= 1.0
    assert f1 == pytest.approx(f1_score(gold, prediction))
    assert exact_match(prediction, gold) in (0.0, 1.0)
    assert exact_match(prediction, gold) >= (f1 == 1.0)


def _official_normalize(s: str) -> str:
    """Verbatim logic of normalize_answer in the official SQuAD evaluate-v1.1.py, used as an oracle."""

    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_f1(prediction: str, ground_truth: str) -> float:
    """Verbatim logic of f1_score in the official SQuAD evaluate-v1.1.py, used as an oracle."""
    prediction_tokens = _official_normalize(prediction).split()
    ground_truth_tokens = _official_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


_answerish = st.lists(st.one_of(_any_word, st.sampled_from(["a", "An", "THE", "the.", "cat", ",", "x"]))).map(
    " ".join
)


@given(_answerish, _answerish)
def test_matches_official_script(prediction: str, gold: str) -> None:
    assert normalize_answer(prediction) == _official_normalize(prediction)
    assert f1_score(prediction, gold) == _official_f1(prediction, gold)
    assert exact_match(prediction, gold) == float(
        _official_normalize(prediction) == _official_normalize(gold)
    )


@given(_answers_with_content())
def test_answer_scores_perfectly_against_itself(answer: str) -> None:
    assert normalize_answer(answer) != ""
    assert f1_score(answer, answer) == 1.0
    assert exact_match(answer, answer) == 1.0
