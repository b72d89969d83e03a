"""Sentence splitting for the extractive QA generator (and the router's lexical coverage).

Kept apart from :mod:`~lift_integrations.absorb.extractive`, which re-exports :func:`split_sentences`:
abbreviation-aware regex heuristics, standard library only.
"""

from __future__ import annotations

import re

from lift_integrations.absorb._english import CLOSERS, MAYBE_END, NEVER_END, OPENERS, SENTENCE_STARTERS

# Group 1: Western terminators, which only count before whitespace or the end of the text (so "3.5",
# "e.g.,", "U.S.-based" never split). Group 2: CJK full-width terminators, which need no space.
_TERMINATOR_RE = re.compile(r"([.!?…]+[\"'”’»)\]}]*)(?=\s|$)|([。！？]+[」』）”’\"]*)")
_PARA_BREAK_RE = re.compile(r"\n[^\S\n]*\n")
_NEXT_TOKEN_RE = re.compile(r"\s*(\S*)")
_INITIAL_RE = re.compile(r"[^\W\d_]")
_DOTTED_ACRONYM_RE = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")


def _last_token(text: str, end: int) -> str | None:
    """What ``(\\S+)$`` finds in ``text[:end]``: the run of non-whitespace characters ending at ``end``, or
    just before a final newline there; ``None`` when there is none (``end == 0``, or whitespace before).

    Scans backwards from ``end`` so that the cost is the token's length, not the text's: a regular
    expression on ``text[:end]`` would rescan the text from its start at every period.
    """
    if end > 0 and text[end - 1] == "\n":
        end -= 1  # like "(\S+)$" on text[:end], whose "$" also matches before a final newline
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:end] or None


def _next_word(text: str, pos: int) -> str:
    """The whitespace-delimited word starting at or after ``pos``, without surrounding punctuation."""
    match = _NEXT_TOKEN_RE.match(text, pos)
    word = match.group(1) if match else ""
    return word.lstrip(OPENERS).rstrip(CLOSERS + ".,;:!?")


def _period_ends_sentence(text: str, period_start: int, next_word: str) -> bool:
    """Decide whether a single "." before whitespace ends a sentence, looking at the word it ends.

    Abbreviations, titles and initials are the main source of false sentence breaks; splitting
    "Dr. Smith" or "King Charles III of West Francia (U.S. usage)" would cut names, and every later
    step (answer spans, questions) would inherit the damage.
    """
    last = _last_token(text, period_start)
    if last is None:
        return True
    token = last.lstrip(OPENERS).rstrip(CLOSERS)
    lower = token.lower()
    if not token:
        return True
    if lower in NEVER_END:
        return False
    ambiguous = (
        lower in MAYBE_END or _INITIAL_RE.fullmatch(token) is not None or _DOTTED_ACRONYM_RE.fullmatch(token)
    )
    if ambiguous:
        if next_word[:1].isdigit():
            return False  # "No. 5", "Jan. 12"
        return next_word.lower() in SENTENCE_STARTERS
    return True


def _terminator_is_boundary(text: str, match: re.Match[str]) -> bool:
    """Whether a punctuation run found by ``_TERMINATOR_RE`` really ends a sentence."""
    if match.group(2) is not None:
        return True  # CJK terminators are unambiguous
    next_word = _next_word(text, match.end())
    if not next_word:
        return True
    first = next_word[0]
    if first.islower():
        return False  # '"Really?" he asked.', "approx. five", "... and so on. etc."
    punct = match.group(1).rstrip(CLOSERS)
    if punct == ".":
        return _period_ends_sentence(text, match.start(), next_word)
    return True


def _newline_is_boundary(text: str, end: int, next_word: str) -> bool:
    """Whether a single newline separates sentences. ``end``: where the text before it stops once
    trailing whitespace is dropped; ``next_word``: the word after it. The caller tracks both, so runs of
    blank lines cost linear time.

    Newlines end headings, list items and table rows, so they are boundaries by default; but a line
    that obviously continues (the next line starts lowercase, or this one ends with a comma, hyphen, or
    a title such as "Dr.") is hard-wrapped prose and is kept together.
    """
    if next_word[:1].islower():
        return False
    if end == 0:
        return True
    if text[end - 1] in ",;:-–—(&/":
        return False
    token = _last_token(text, end)
    return token is None or token.rstrip(".").lower() not in NEVER_END


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, each a stripped verbatim substring of ``text``.

    The text is cut at positions only (never rewritten), so the sentences appear in order, never
    overlap, never are empty, and together contain every non-whitespace character of ``text``. That
    makes every sentence usable as verbatim evidence for a QA pair.

    Boundaries are: ".", "!", "?", "…" (plus closing quotes/brackets) before whitespace, unless the
    period belongs to an abbreviation, a title or an initial, or the next word starts lowercase;
    full-width "。！？"; paragraph breaks (blank lines); and single newlines unless the line clearly
    continues.
    """
    cuts: set[int] = set()
    for match in _TERMINATOR_RE.finditer(text):
        if _terminator_is_boundary(text, match):
            cuts.add(match.end())
    for match in _PARA_BREAK_RE.finditer(text):
        cuts.add(match.start())
    content_end = 0  # just after the last non-whitespace character seen so far
    next_word: str | None = None  # the word after the current run of whitespace, once looked up
    for pos, char in enumerate(text):
        if not char.isspace():
            content_end, next_word = pos + 1, None
        elif char == "\n":
            if next_word is None:
                next_word = _next_word(text, pos + 1)
            if _newline_is_boundary(text, content_end, next_word):
                cuts.add(pos)
    sentences: list[str] = []
    start = 0
    for cut in [*sorted(cuts), len(text)]:
        piece = text[start:cut].strip()
        if piece:
            sentences.append(piece)
        start = cut
    return sentences
