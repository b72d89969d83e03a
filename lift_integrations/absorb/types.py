"""Small value types shared by the absorption pipeline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """A document to absorb: a title (may be empty) and its text."""

    title: str
    text: str


@dataclass(frozen=True)
class QAPair:
    """An auxiliary question-answer pair about a document.

    ``evidence`` is the verbatim passage the pair was drawn from, when known; it is kept for
    inspection and filtering, never trained on.
    """

    question: str
    answer: str
    evidence: str | None = None
