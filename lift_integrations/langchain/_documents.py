"""LangChain documents to LIFT documents and back, and a small text splitter for hybrid retrieval.

``langchain-text-splitters`` is deliberately not a dependency: hybrid mode only needs passages of a few
hundred characters cut at natural boundaries, which takes a few lines here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.documents import Document

from lift_integrations.documents import document_sha256

_TITLE_KEYS = ("title", "source")
_SENTENCE_END = re.compile(r"(?<=[.!?…。])[\"')\]]*\s+")


def title_of(document: Document) -> str:
    """A LangChain document's title: its ``title`` metadata, else its ``source``, else empty."""
    for key in _TITLE_KEYS:
        value = document.metadata.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return ""


def to_langchain_documents(documents: Any) -> list[Document]:
    """Accept what users naturally pass (a str, LangChain ``Document``s, strs, ``(title, text)`` pairs)."""
    if isinstance(documents, (str, Document, tuple)):
        documents = [documents]
    if not isinstance(documents, Iterable) or isinstance(documents, (bytes, bytearray, dict)):
        raise TypeError(f"documents must be a str or a list of documents, got {type(documents).__name__}")
    result: list[Document] = []
    for index, item in enumerate(documents):
        if isinstance(item, Document):
            result.append(item)
        elif isinstance(item, str):
            result.append(Document(page_content=item))
        elif isinstance(item, tuple) and len(item) == 2 and all(isinstance(part, str) for part in item):
            title, text = item
            result.append(Document(page_content=text, metadata={"title": title} if title.strip() else {}))
        elif hasattr(item, "title") and hasattr(item, "text"):  # a core Document (what a memory holds)
            title = str(item.title)
            result.append(
                Document(page_content=item.text, metadata={"title": title} if title.strip() else {})
            )
        else:
            raise TypeError(
                f"document {index} must be a str, a LangChain Document or a (title, text) pair, "
                f"got {type(item).__name__}"
            )
    if not result:
        raise ValueError("no documents given: pass at least one non-empty text")
    return result


def to_core_documents(documents: Sequence[Document]) -> list[tuple[str, str]]:
    """``(title, text)`` pairs as the core's ``absorb`` takes them (core validates emptiness and types)."""
    return [(title_of(doc), doc.page_content) for doc in documents]


def _split_long(unit: str, size: int) -> list[str]:
    """A unit longer than ``size``: cut at the last space before the limit, or hard when there is none."""
    pieces = []
    while len(unit) > size:
        cut = unit.rfind(" ", size // 2, size + 1)
        cut = cut if cut > 0 else size
        pieces.append(unit[:cut])
        unit = unit[cut:].lstrip()
    if unit:
        pieces.append(unit)
    return pieces


def _units(text: str, size: int) -> list[tuple[str, str]]:
    """Paragraphs, or sentences of paragraphs that do not fit, with the separator that joins each to the
    previous unit (a blank line between paragraphs, a space inside one)."""
    units: list[tuple[str, str]] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        separator = "\n\n"
        parts = [paragraph] if len(paragraph) <= size else _SENTENCE_END.split(paragraph)
        for part in parts:
            for piece in _split_long(part.strip(), size):
                if piece:
                    units.append((separator, piece))
                    separator = " "
    return units


def split_text(text: str, chunk_size: int = 800, chunk_overlap: int = 100) -> list[str]:
    """Cut ``text`` into chunks of at most ``chunk_size`` characters on paragraph, then sentence
    boundaries; consecutive chunks share up to ``chunk_overlap`` characters of whole sentences so that a
    fact spanning a boundary is still found in one chunk."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be in [0, chunk_size), got {chunk_overlap}")
    chunks: list[str] = []
    current: list[tuple[str, str]] = []

    def length(units: list[tuple[str, str]]) -> int:
        return sum(len(piece) for _, piece in units) + sum(len(sep) for sep, _ in units[1:])

    def render(units: list[tuple[str, str]]) -> str:
        return units[0][1] + "".join(sep + piece for sep, piece in units[1:])

    for unit in _units(text, chunk_size):
        if current and length([*current, unit]) > chunk_size:
            chunks.append(render(current))
            carried: list[tuple[str, str]] = []
            for previous in reversed(current):
                if (
                    length([previous, *carried, unit]) > chunk_size
                    or length([previous, *carried]) > chunk_overlap
                ):
                    break
                carried.insert(0, previous)
            current = carried
        current.append(unit)
    if current:
        chunks.append(render(current))
    return chunks


def chunk_documents(documents: Sequence[Document], chunk_size: int, chunk_overlap: int) -> list[Document]:
    """Chunks of each document, keeping its metadata and adding ``title``, ``chunk`` and ``lift_document``."""
    chunks: list[Document] = []
    for doc in documents:
        title = title_of(doc)
        key = document_sha256(title, doc.page_content)[:16]
        for index, text in enumerate(split_text(doc.page_content, chunk_size, chunk_overlap)):
            metadata = {**doc.metadata, "chunk": index, "lift_document": key}
            if title:
                metadata.setdefault("title", title)
            chunks.append(Document(page_content=text, metadata=metadata, id=f"{key}-{index}"))
    return chunks
