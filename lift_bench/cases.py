"""What the harness reads and asks: documents, their questions and cases, built from SQuAD articles.

A *case* is one document to read (one article, or several concatenated for the long setting), the
questions asked about it, and a *control* document: unrelated text of about the same length, absorbed with
the same recipe. Two settings exist:

* ``single``: one SQuAD article (optionally its first paragraphs only), its own questions.
* ``long``: several articles concatenated into one document, far beyond the model's window, with
  questions drawn evenly from all of them; in-context reading then only sees the head and tail.

The arms (:mod:`lift_bench.arms`) and the runner (:mod:`lift_bench.compare`) both use these types, so
they live here, below both: the harness's modules import one way, ``squad`` -> ``cases`` -> ``arms`` ->
``compare`` -> ``report``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lift_bench.squad import Article

__all__ = [
    "SETTINGS",
    "BenchDocument",
    "BenchQuestion",
    "Case",
    "article_document",
    "build_cases",
    "concatenate",
    "control_document",
    "sample_questions",
]

SETTINGS = ("single", "long")
"""The two settings a case can be built in (see the module docstring)."""


@dataclass(frozen=True)
class BenchQuestion:
    """A question, its gold answer and the title of the article it was asked about.

    ``paragraph`` is the paragraph the question was written against, when known (SQuAD answers are spans
    of it): the general-ability probe asks questions of unrelated articles with just that paragraph in
    context. It travels with the question, so it stays right when articles are concatenated.
    """

    question: str
    answer: str
    source: str
    paragraph: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BenchDocument:
    """A document as the arms read it, with the questions asked about it.

    ``full_text`` is what absorption trains on and ``icl`` reads (the title line, then the text: the
    core's ``document_text``), so every arm sees the same words.
    """

    title: str
    text: str
    questions: tuple[BenchQuestion, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def full_text(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text

    @property
    def label(self) -> str:
        """A short name for reports: the title, or the titles of the concatenated articles."""
        return self.title or " + ".join(self.sources) or "untitled"

    @property
    def paragraphs(self) -> list[str]:
        return [p for p in self.text.split("\n\n") if p.strip()]


@dataclass(frozen=True)
class Case:
    """One document to read, in one setting, with its unrelated control document.

    ``unrelated`` holds the pool's documents that share no article with any document of the run: where the
    general-ability probe draws its reading questions. :func:`build_cases` gives every case the same ones,
    so the probe asks every case the same questions and cases differ only by the memory.
    """

    setting: str
    document: BenchDocument
    control: BenchDocument
    unrelated: tuple[BenchDocument, ...] = field(default=(), repr=False)


def article_document(article: Article, paragraphs: int | None = None) -> BenchDocument:
    """An article (or its first ``paragraphs`` paragraphs) with the questions about what is kept."""
    keep = len(article.paragraphs) if paragraphs is None else max(1, paragraphs)
    questions = tuple(
        BenchQuestion(q.question, q.answer, article.title, article.paragraphs[q.paragraph_index])
        for q in article.questions
        if q.paragraph_index < keep
    )
    return BenchDocument(
        title=article.title,
        text="\n\n".join(article.paragraphs[:keep]),
        questions=questions,
        sources=(article.title,),
    )


def concatenate(documents: Sequence[BenchDocument]) -> BenchDocument:
    """Several documents as one: each keeps its title as a heading line, the whole has no title."""
    if not documents:
        raise ValueError("nothing to concatenate")
    return BenchDocument(
        title="",
        text="\n\n".join(d.full_text for d in documents),
        questions=tuple(q for d in documents for q in d.questions),
        sources=tuple(s for d in documents for s in (d.sources or (d.title,))),
    )


def sample_questions(document: BenchDocument, n: int | None, seed: int) -> BenchDocument:
    """At most ``n`` questions, spread evenly over the document's sources, kept in document order.

    Drawn with a seeded generator so that every arm, and every rerun with the same seed, gets the same
    questions; spreading them keeps the long setting from asking only about its first article.
    """
    if n is None or n >= len(document.questions):
        return document
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[int]] = {}
    for index, question in enumerate(document.questions):
        by_source.setdefault(question.source, []).append(index)
    groups = [list(rng.permutation(indices)) for indices in by_source.values()]
    chosen: list[int] = []
    while len(chosen) < n and any(groups):
        for group in groups:  # round robin over sources
            if group and len(chosen) < n:
                chosen.append(int(group.pop(0)))
    questions = tuple(document.questions[i] for i in sorted(chosen))
    return BenchDocument(document.title, document.text, questions, document.sources)


def control_document(
    pool: Sequence[BenchDocument],
    target_tokens: int,
    count_tokens: Callable[[str], int],
    exclude: Sequence[str] = (),
) -> BenchDocument:
    """Unrelated text of about ``target_tokens`` tokens: whole paragraphs of the pool's documents, in order,
    ending at the paragraph boundary nearest the target.

    The control must be absorbed with the same number of segments and optimizer steps as the document it
    controls for, or it would change the model more or less for reasons other than knowledge; matching
    the length does that. Documents whose title or sources appear in ``exclude`` are skipped.
    """
    candidates = _unrelated(pool, exclude)
    if not candidates:
        raise ValueError("no unrelated document left for the control; add articles or a control pool")
    parts: list[tuple[str, list[str]]] = []
    total, done = 0, False
    for doc in candidates:
        kept: list[str] = []
        for paragraph in doc.paragraphs:
            tokens = count_tokens(paragraph)
            if total and total + tokens - target_tokens > target_tokens - total:
                done = True  # stopping before this paragraph is nearer the target
                break
            kept.append(paragraph)
            total += tokens
            if total >= target_tokens:
                done = True
                break
        if kept:
            parts.append((doc.title, kept))
        if done:
            break
    if len(parts) == 1:
        return BenchDocument(title=parts[0][0], text="\n\n".join(parts[0][1]), sources=(parts[0][0],))
    return BenchDocument(
        title="",
        text="\n\n".join(f"{t}\n" + "\n\n".join(ps) for t, ps in parts),
        sources=tuple(t for t, _ in parts),
    )


def _unrelated(pool: Sequence[BenchDocument], exclude: Sequence[str]) -> list[BenchDocument]:
    """The pool's documents whose title and sources are all outside ``exclude``, in pool order."""
    excluded = set(exclude)
    return [d for d in pool if d.title not in excluded and not excluded.intersection(d.sources)]


def build_cases(
    documents: Sequence[BenchDocument],
    *,
    control_pool: Sequence[BenchDocument],
    count_tokens: Callable[[str], int],
    settings: Sequence[str] = ("single",),
    questions: int | None = 50,
    seed: int = 0,
) -> list[Case]:
    """Cases for each setting: every document on its own (``single``) and all of them concatenated
    (``long``), each with ``questions`` questions and a length-matched control from ``control_pool``; the
    pool's documents unrelated to all of them are the cases' ``unrelated`` (general-ability probe)."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected {SETTINGS}")
    exclude = [s for d in documents for s in (d.sources or (d.title,))]
    unrelated = tuple(_unrelated(control_pool, exclude))
    cases: list[Case] = []
    if "single" in settings:
        for index, doc in enumerate(documents):
            doc = sample_questions(doc, questions, seed + index)
            control = control_document(control_pool, count_tokens(doc.full_text), count_tokens, exclude)
            cases.append(Case("single", doc, control, unrelated))
    if "long" in settings:
        if len(documents) < 2:
            raise ValueError("the long setting concatenates several articles; select at least two")
        doc = sample_questions(concatenate(documents), questions, seed + 1000)
        control = control_document(control_pool, count_tokens(doc.full_text), count_tokens, exclude)
        cases.append(Case("long", doc, control, unrelated))
    for case in cases:
        if not case.document.questions:
            raise ValueError(f"{case.document.label!r} has no questions to ask")
    return cases
