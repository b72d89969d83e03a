"""Token-level segmentation and the head/tail context view of contextualized training."""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lift_integrations.prompting import encode_text
from lift_integrations.sharing import ALONE, WorkShare

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

STREAM_CHUNK_CHARS = 1 << 16
"""Characters tokenized at a time: a longer document is tokenized piece by piece (see
:func:`tokenize_document`), so the tokenizer's per-token bookkeeping (offsets, token strings, the Python
list it returns) only ever exists for one piece."""


def segment_spans(num_tokens: int, length: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` spans of overlapping segments that together cover ``range(num_tokens)``.

    Segments start every ``stride`` tokens and hold ``length`` tokens. Unlike the paper's code, which
    keeps every start in ``range(0, n, stride)``, segmentation stops at the first segment that reaches
    the end: later starts would only repeat tokens that segment already holds.
    """
    if length <= 0 or stride <= 0:
        raise ValueError(f"segment length and stride must be positive, got {length} and {stride}")
    if stride > length:
        raise ValueError(f"stride ({stride}) must not exceed segment length ({length})")
    spans: list[tuple[int, int]] = []
    start = 0
    while start < num_tokens:
        end = min(start + length, num_tokens)
        spans.append((start, end))
        if end == num_tokens:
            break
        start += stride
    return spans


def segment_document(token_ids: Sequence[int], length: int, stride: int) -> list[list[int]]:
    """The document's tokens cut into overlapping segments (see :func:`segment_spans`)."""
    return [list(token_ids[s:e]) for s, e in segment_spans(len(token_ids), length, stride)]


def context_view(
    token_ids: Sequence[int], length: int, separator: Sequence[int], rng: np.random.Generator
) -> list[int]:
    """A random head/tail view of the document, as contextualized training puts before each segment.

    ``a`` tokens from a random offset inside the first ``length`` tokens, the separator, then
    ``length - a`` tokens from a random offset inside the last ``length`` tokens; ``a`` is uniform on
    ``0..length`` (both ends included, and either piece may be empty: the paper's code crashes there).
    A document no longer than ``length`` is its own view.
    """
    n = len(token_ids)
    if length <= 0:
        return []
    if n <= length:
        return list(token_ids)
    front_len = int(rng.integers(0, length + 1))
    back_len = length - front_len
    front_start = int(rng.integers(0, length - front_len + 1))
    back_region = n - length
    back_start = back_region + int(rng.integers(0, length - back_len + 1))
    front = list(token_ids[front_start : front_start + front_len])
    back = list(token_ids[back_start : back_start + back_len])
    return front + list(separator) + back


def piece_bounds(text: str, chunk_chars: int = STREAM_CHUNK_CHARS) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of the consecutive pieces :func:`split_text` cuts ``text`` into."""
    if chunk_chars <= 1:
        raise ValueError(f"chunk_chars must be at least 2, got {chunk_chars}")
    start, n = 0, len(text)
    while n - start > chunk_chars:
        limit = start + chunk_chars
        low = start + chunk_chars // 2
        cut = text.rfind(" ", low, limit + 1)
        while cut > low and text[cut - 1].isspace():
            cut = text.rfind(" ", low, cut)
        if cut <= low:
            cut = limit
        yield start, cut
        start = cut
    if start < n:
        yield start, n


def split_text(text: str, chunk_chars: int = STREAM_CHUNK_CHARS) -> Iterator[str]:
    """Consecutive pieces of ``text`` that concatenate back to it, each at most ``chunk_chars`` long.

    A piece ends just before a space that follows a non-space character. Word-level pre-tokenizers
    (byte-level BPE, tiktoken-style and SentencePiece ones) always start a new word there, so the pieces
    tokenize to the same ids as the whole text. Only text without such a space in the second half of a
    piece's window (no spaces at all, or one enormous run of spaces) is cut mid-word, which may change
    the tokens at that one boundary.
    """
    for start, end in piece_bounds(text, chunk_chars):
        yield text[start:end]


def tokenize_document(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    chunk_chars: int = STREAM_CHUNK_CHARS,
    share: WorkShare = ALONE,
) -> array[int]:
    """The token ids of an untrusted document, built as a stream, in 4 bytes per token.

    Tokenizing a multi-million-token string at once costs hundreds of bytes per token inside the
    tokenizer and a Python list of int objects besides. Here the text goes through the tokenizer in
    pieces of ``chunk_chars`` characters (:func:`split_text`), and the ids go into a compact ``array``,
    so memory use is four bytes per token plus one piece's worth. Control-token strings stay plain text
    (:func:`~lift_integrations.prompting.encode_text`). Documents up to ``chunk_chars`` characters are
    tokenized in one call, exactly as before.

    Under a split ``share`` (collective), each rank tokenizes only its share of the pieces and the ranks
    swap their ids: the same ids, the same pieces, with every piece's ids held at once (twice four bytes
    per token for a moment). A document of one piece is tokenized by every rank, as swapping it would
    only add the exchange to one rank's tokenizing.
    """
    bounds = list(piece_bounds(text, chunk_chars))
    if not share.is_split or len(bounds) < 2:
        ids: array[int] = array("i")
        for start, end in bounds:
            ids.extend(encode_text(tokenizer, text[start:end]))
        return ids

    def tokenize(part: list[int]) -> list[array[int]]:
        return [array("i", encode_text(tokenizer, text[bounds[i][0] : bounds[i][1]])) for i in part]

    pieces = share.build([float(end - start) for start, end in bounds], tokenize)
    ids = array("i")
    for piece in pieces:
        ids.extend(piece)
    return ids
