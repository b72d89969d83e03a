"""Token-level segmentation and the head/tail context view of contextualized training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def head_tail(token_ids: Sequence[int], budget: int, separator: Sequence[int]) -> list[int]:
    """The document itself when it fits in ``budget`` tokens, else its head and tail around ``separator``."""
    if len(token_ids) <= budget:
        return list(token_ids)
    if budget <= len(separator):
        return list(token_ids[:budget])
    keep = budget - len(separator)
    head = keep // 2
    tail = keep - head
    return list(token_ids[:head]) + list(separator) + (list(token_ids[-tail:]) if tail else [])


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
