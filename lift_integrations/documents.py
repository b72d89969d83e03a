"""The core's document type, and checking what users pass as documents before any work starts.

One :class:`Document` serves both ends: what :meth:`LIFTModel.absorb` takes and what a :class:`Memory`
holds (``memory.AbsorbedDocument`` is the same class). It lives here, below both ``absorb/`` and
``memory.py``, so a memory never imports the training code to describe its documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lift_integrations.validation import check_text


def document_sha256(title: str, text: str) -> str:
    """The hash a memory's manifest records for a document, and part of the memory's id."""
    return hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class Document:
    """A document: a title (may be empty) and its text."""

    title: str
    text: str

    @property
    def sha256(self) -> str:
        return document_sha256(self.title, self.text)


def normalize_documents(documents: Any) -> list[Document]:
    """``documents`` as a list of :class:`Document`.

    Accepted: a string, one ``(title, text)`` tuple, or a non-empty list of strings, ``(title, text)``
    pairs and :class:`Document`. Empty or whitespace-only texts and invalid Unicode raise ``ValueError``,
    anything else (bytes, numbers, dicts, iterators, other objects) ``TypeError``, each naming the
    offending document, before any work starts: bytes are refused rather than guessed at, since no
    encoding can be assumed for them.
    """
    if isinstance(documents, (str, bytes, bytearray, Document)):
        documents = [documents]
    elif isinstance(documents, tuple) and len(documents) == 2 and all(isinstance(x, str) for x in documents):
        documents = [documents]  # one (title, text) pair; a list of two strings is two documents
    if not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a str or a list of documents, got {type(documents).__name__}")
    if len(documents) == 0:
        raise ValueError("no documents given: pass at least one non-empty text")
    result = []
    for index, item in enumerate(documents):
        where = f"document {index}"
        if isinstance(item, Document):
            title, text = item.title, item.text
        elif isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError(f"{where} is a tuple of {len(item)} items; expected (title, text)")
            title, text = item
        else:
            title, text = "", item
        title = check_text(title, f"{where}'s title")
        text = check_text(text, where)
        if not text.strip():
            raise ValueError(f"{where} is empty or only whitespace")
        result.append(Document(title=title.strip(), text=text))
    return result
