"""Small value types shared by the absorption pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from lift_integrations.documents import Document

__all__ = ["Document", "QAPair"]


@dataclass(frozen=True)
class QAPair:
    """An auxiliary question-answer pair about a document.

    ``evidence`` is the verbatim passage the pair was drawn from, when known; it is kept for
    inspection and filtering, never trained on.
    """

    question: str
    answer: str
    evidence: str | None = None
