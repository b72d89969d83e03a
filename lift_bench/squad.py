"""SQuAD v1.1 articles and the official scoring, for "absorb a document, then answer questions about it".

The data file (see ``/work/shared/data/README.md``) is a JSON list of paragraphs
``{"title": str, "context": str, "questions": [{"question": str, "answer": str}]}``; consecutive paragraphs
with the same title form one Wikipedia article. We regroup them into :class:`Article` objects because the
benchmark absorbs whole articles, not isolated paragraphs, while each question still remembers which
paragraph it was written against (useful for checking that the answer is actually in the text).

Scoring reproduces the official SQuAD v1.1 evaluation script (``evaluate-v1.1.py``) exactly, so numbers are
comparable with published results: answers are normalised (lower-case, ASCII punctuation removed, the
articles a/an/the removed, whitespace collapsed) before exact match and bag-of-tokens F1.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Article",
    "Question",
    "bootstrap_ci",
    "exact_match",
    "f1_score",
    "load_squad_articles",
    "normalize_answer",
]


@dataclass(frozen=True)
class Question:
    """One question about an article with its gold answer.

    ``paragraph_index`` is the index, within :attr:`Article.paragraphs`, of the paragraph the question was
    written against; SQuAD answers are spans of that paragraph, which lets callers check grounding or build
    paragraph-level baselines without re-reading the raw file.
    """

    question: str
    answer: str
    paragraph_index: int


@dataclass(frozen=True)
class Article:
    """A whole Wikipedia article: its title, its paragraphs in order and every question asked about it.

    Paragraphs and questions are stored as tuples so that an article is genuinely immutable (and hashable):
    benchmark inputs must not be altered by the code under test.
    """

    title: str
    paragraphs: tuple[str, ...]
    questions: tuple[Question, ...]

    @property
    def text(self) -> str:
        """The full article, paragraphs separated by a blank line (the form a model is asked to absorb)."""
        return "\n\n".join(self.paragraphs)


def _require(entry: dict[str, Any], key: str, expected: type, where: str) -> Any:
    """Return ``entry[key]`` after checking presence and type, so a bad file fails with a precise message."""
    if key not in entry:
        raise ValueError(f"{where}: missing key {key!r}")
    value = entry[key]
    if not isinstance(value, expected):
        raise ValueError(
            f"{where}: key {key!r} must be of type {expected.__name__}, got {type(value).__name__}"
        )
    return value


def load_squad_articles(path: str | Path) -> list[Article]:
    """Read a paragraph-list SQuAD file and regroup its paragraphs into articles, in file order.

    The file is parsed with :mod:`json` only (never pickle), so an untrusted data file cannot execute code.
    Every entry is validated and a :class:`ValueError` naming the file, the paragraph index and the problem
    is raised for a malformed file: silently skipping bad entries would change benchmark scores without
    anyone noticing. A title that reappears after a different article is rejected too, because paragraphs
    of one article must be contiguous and merging or splitting them would corrupt the article text.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 ({exc})") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path}: top level must be a JSON list of paragraphs, got {type(data).__name__}")

    articles: list[Article] = []
    seen_titles: set[str] = set()
    title: str | None = None
    paragraphs: list[str] = []
    questions: list[Question] = []

    def flush() -> None:
        if title is not None:
            articles.append(Article(title=title, paragraphs=tuple(paragraphs), questions=tuple(questions)))

    for i, entry in enumerate(data):
        where = f"{path}: paragraph {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a JSON object, got {type(entry).__name__}")
        entry_title = _require(entry, "title", str, where)
        context = _require(entry, "context", str, where)
        raw_questions = _require(entry, "questions", list, where)

        if entry_title != title:
            if entry_title in seen_titles:
                raise ValueError(
                    f"{where}: title {entry_title!r} appears again after another article; "
                    "paragraphs of one article must be contiguous"
                )
            flush()
            seen_titles.add(entry_title)
            title, paragraphs, questions = entry_title, [], []

        paragraph_index = len(paragraphs)
        paragraphs.append(context)
        for j, q in enumerate(raw_questions):
            q_where = f"{where}, question {j}"
            if not isinstance(q, dict):
                raise ValueError(f"{q_where}: must be a JSON object, got {type(q).__name__}")
            questions.append(
                Question(
                    question=_require(q, "question", str, q_where),
                    answer=_require(q, "answer", str, q_where),
                    paragraph_index=paragraph_index,
                )
            )
    flush()
    return articles


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Normalise an answer exactly as the official SQuAD v1.1 script does.

    Steps, in the official order: lower-case, drop ASCII punctuation, replace the articles a/an/the by a
    space, collapse whitespace. Deviating (e.g. stripping Unicode punctuation too) would make our scores
    incomparable with published SQuAD numbers, so this intentionally keeps the script's quirks.
    """
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def _as_golds(gold: str | Sequence[str]) -> list[str]:
    """Accept one gold answer or several; an empty list is an error since max() over nothing is undefined."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("gold must be a string or a non-empty list of strings")
    for g in golds:
        if not isinstance(g, str):
            raise TypeError(f"gold answers must be strings, got {type(g).__name__}")
    return golds


def _exact_match_one(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1_one(prediction: str, gold: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        # Official v1.1 behaviour: no overlap (including both sides empty after normalisation) scores 0.
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer, else 0.0.

    With several gold answers the best one counts, as in the official script
    (``metric_max_over_ground_truths``).
    """
    return max(_exact_match_one(prediction, g) for g in _as_golds(gold))


def f1_score(prediction: str, gold: str | Sequence[str]) -> float:
    """Token-level F1 in [0, 1] between normalised prediction and gold, maximised over gold answers.

    F1 gives partial credit for answers that overlap the gold span, which exact match alone would hide.
    """
    return max(_f1_one(prediction, g) for g in _as_golds(gold))


def bootstrap_ci(
    values: Sequence[float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Return ``(mean, low, high)``: the mean and a percentile-bootstrap confidence interval for it.

    Benchmark sets are small (a few hundred questions per article), so a point estimate alone overstates how
    much two runs differ. The resampling uses a seeded :class:`numpy.random.Generator` so that the same
    scores always give the same interval, which keeps reports reproducible.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"values must be a flat sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("values must not be empty: the mean of no scores is undefined")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values must be finite numbers (found NaN or infinity)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")

    rng = np.random.default_rng(seed)
    n = arr.size
    # Resample in blocks so memory stays bounded (about 8 MB of indices) even for large score lists.
    block = max(1, min(n_resamples, 1_000_000 // n))
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = arr[idx].mean(axis=1)

    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(arr.mean()), float(low), float(high)
