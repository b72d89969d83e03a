"""Deterministic extractive generator of auxiliary question-answer pairs.

LIFT trains a document into an adapter together with auxiliary QA pairs about that document. Most of
the time those pairs come from an LLM, but an LLM is not always available (offline runs, CI, tests,
cheap baselines), and an LLM can invent facts. This module needs nothing but the standard library and
only ever copies text: every answer is a verbatim span of a verbatim sentence of the document, so the
pairs cannot introduce anything that is not in the document.

The pipeline is deliberately simple and rule based:

1. :func:`split_sentences` cuts the text into sentences with abbreviation-aware regex heuristics.
2. :func:`find_answer_spans` proposes short answers in a sentence: dates, years, centuries, amounts,
   percentages, numbers and capitalised names.
3. :func:`extractive_qa_pairs` turns (sentence, span) into questions: direct questions that name the
   subject where a sentence shape allows (:mod:`lift_integrations.absorb._direct`: "Who founded the
   Brindlecombe Clock Museum?", "When was it founded?" with "it" resolved to the title, several
   phrasings per fact), and a question quoting the sentence: an echo question when the span ends it
   ("... in what year?"), otherwise a fill-in-the-blank question. A seeded ``random.Random`` picks
   which pairs to keep, spread over the whole document and strongly preferring direct questions,
   which are what users ask (docs/tuning.md, sweep 22).

The heuristics are tuned for English but never fail on other languages: text without a recognisable
candidate just yields fewer (or no) pairs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lift_integrations.absorb._direct import (
    Topic,
    direct_questions,
    next_referent,
    phrase_answers,
    sentence_topic,
    topic_of,
)
from lift_integrations.absorb._english import (
    COMMON_INITIAL,
    FUNCTION_WORDS,
    MAX_ANSWER_WORDS,
    NAME_CONNECTORS,
    NEVER_END,
    OPENERS,
    PERSON_TITLES,
    TAIL_END_RE,
    TEMPORAL_PREPS,
    is_person,
    word_count,
    wordset,
)
from lift_integrations.absorb._sentences import split_sentences
from lift_integrations.absorb.types import QAPair
from lift_integrations.sharing import ALONE, WorkShare

__all__ = ["extractive_qa_pairs", "find_answer_spans", "split_sentences"]


# --------------------------------------------------------------------------------------------------
# Answer spans
# --------------------------------------------------------------------------------------------------

_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan\.?|Feb\.?|Mar\.?|Apr\.?|Jun\.?|Jul\.?|Aug\.?|Sept?\.?|Oct\.?|Nov\.?|Dec\.?)"
)
_ORD = r"(?:st|nd|rd|th)"
_ERA = r"(?:BCE|BC|CE|AD|B\.C\.|A\.D\.)"
_YEAR = rf"[0-9]{{3,4}}(?:\s?{_ERA}(?!\w))?"
_NUM = r"[0-9]+(?:[.,][0-9]+)*"
_SCALE = r"(?:million|billion|trillion|thousand|hundred|bn)"
_ORD_WORD = (
    r"(?i:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth"
    r"|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|twenty-first)"
)
_ORDINAL = rf"(?:[0-9]{{1,2}}{_ORD}|{_ORD_WORD})"
_B = r"(?<![\w.,$€£¥₹])"  # start: not inside a word or a number
_E = r"(?![\w])"  # end: not followed by a word character

# (pattern, kind). Kinds: date, year, period (centuries, decades, ranges), money, percent, number.
_NUMERIC_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"(?<!\w){_MONTH}\s+[0-9]{{1,2}}{_ORD}?,?\s+{_YEAR}{_E}"), "date"),
    (re.compile(rf"{_B}[0-9]{{1,2}}{_ORD}?\s+(?:of\s+)?{_MONTH}\s+{_YEAR}{_E}"), "date"),
    (re.compile(rf"(?<!\w){_MONTH}\s+[0-9]{{4}}{_E}"), "date"),
    (re.compile(rf"(?<!\w){_MONTH}\s+[0-9]{{1,2}}{_ORD}?(?![\w])"), "date"),
    (re.compile(rf"{_B}[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}{_E}"), "date"),
    (re.compile(rf"{_B}[0-9]{{1,2}}/[0-9]{{1,2}}/[0-9]{{2,4}}{_E}"), "date"),
    (
        re.compile(
            rf"(?<![\w-]){_ORDINAL}(?:\s*(?:and|or|to|-|–|—)\s*{_ORDINAL})?[\s-]+"
            rf"(?:centur(?:y|ies)|millenni(?:um|a))(?:\s+{_ERA}(?!\w))?"
        ),
        "period",
    ),
    (re.compile(rf"{_B}(?:[0-9]{{3}}0s|'[0-9]0s){_E}"), "period"),
    (re.compile(rf"{_B}[0-9]{{3,4}}\s*(?:-|–|—|to|and)\s*[0-9]{{2,4}}(?:\s?{_ERA})?{_E}"), "period"),
    (re.compile(rf"(?<!\w)(?:{_ERA})\s?[0-9]{{1,4}}{_E}"), "year"),
    (re.compile(rf"{_B}[0-9]{{1,4}}\s?{_ERA}(?!\w)"), "year"),
    (re.compile(rf"(?:US\$|A\$|C\$|[$€£¥₹])\s?{_NUM}(?:\s?{_SCALE})?{_E}"), "money"),
    (
        re.compile(rf"{_B}{_NUM}(?:\s{_SCALE})?\s(?:dollars|euros|pounds|yen|rupees|francs|USD|EUR|GBP){_E}"),
        "money",
    ),
    (re.compile(rf"{_B}{_NUM}\s?(?:%|percent{_E}|per cent{_E})"), "percent"),
    (re.compile(rf"{_B}{_NUM}\s?[–-]\s?{_NUM}{_E}"), "number"),
    (re.compile(rf"{_B}[0-9]+{_ORD}{_E}"), "number"),
    (re.compile(rf"{_B}{_NUM}(?:\s{_SCALE})?{_E}"), "number"),
]

_WORD_TOKEN_RE = re.compile(r"(?:[^\W\d_]\.){2,}|[^\W_](?:\w|[-'’](?=\w))*")
_PREV_WORD_RE = re.compile(r"([\w.]+)\W*$")
_FOLLOW_WORD_RE = re.compile(r"\W*(\w+)")
_MONTH_NAMES: frozenset[str] = wordset(
    "january february march april may june july august september october november december"
)
_MAX_NAME_WORDS = 8


@dataclass(frozen=True)
class _Span:
    """A candidate answer located in a sentence: ``sentence[start:end]`` of a given kind."""

    start: int
    end: int
    kind: str


def _classify_bare_number(sentence: str, start: int, end: int) -> str:
    """Tell a year ("in 1066", "911 when") from a count ("1500 soldiers") by its neighbours."""
    text = sentence[start:end]
    if not re.fullmatch(r"[0-9]{3,4}", text) or int(text) > 2100:
        return "number"
    follow = _FOLLOW_WORD_RE.match(sentence, end)
    if follow is not None and sentence[end : follow.start(1)].strip() == "":
        word = follow.group(1)
        if word.isalpha() and word.islower() and word not in FUNCTION_WORDS:
            return "number"  # "1500 soldiers"
    if len(text) == 4 and int(text) >= 1000:
        return "year"
    prev = _PREV_WORD_RE.search(sentence, 0, start)
    if prev is not None and prev.group(1).lower() in TEMPORAL_PREPS:
        return "year"
    return "number"


def _numeric_spans(sentence: str) -> list[_Span]:
    """All (possibly overlapping) matches of the date/number patterns."""
    spans: list[_Span] = []
    for pattern, kind in _NUMERIC_PATTERNS:
        for match in pattern.finditer(sentence):
            start, end = match.span()
            if kind == "number" and match.group().isdigit():
                kind_here = _classify_bare_number(sentence, start, end)
            else:
                kind_here = kind
            spans.append(_Span(start, end, kind_here))
    return spans


def _is_capitalised(token: str) -> bool:
    """A name-like token: starts uppercase, and no hyphen part starts lowercase ("Roman-Gaulish" yes,
    "Carolingian-based" no)."""
    if not token[:1].isupper():
        return False
    return all(part[:1].isupper() or part[:1].isdigit() for part in re.split(r"-", token) if part)


def _clause_initial(sentence: str, start: int) -> bool:
    """Whether a token at ``start`` begins the sentence or a quotation/parenthesis/colon clause, where
    capitalised common words ("The", "However") are not names."""
    before = sentence[:start].rstrip()
    return not before or before[-1] in OPENERS + ":;—–" or before.lstrip(OPENERS) == ""


def _name_spans(sentence: str) -> list[_Span]:
    """Runs of capitalised tokens: "Duke William II", "Battle of Hastings", "J. R. R. Tolkien"."""
    tokens = [(m.start(), m.end(), m.group()) for m in _WORD_TOKEN_RE.finditer(sentence)]
    spans: list[_Span] = []
    i = 0
    while i < len(tokens):
        word = tokens[i][2]
        if not _is_capitalised(word):
            i += 1
            continue
        run = [i]
        j = i + 1
        while j < len(tokens):
            _, prev_end, prev_word = tokens[run[-1]]
            cur_start, _, cur_word = tokens[j]
            gap = sentence[prev_end:cur_start]
            gap_ok = gap == " " or (
                gap in (". ", ".\u00a0")
                and (len(prev_word) == 1 or prev_word.lower() in NEVER_END | PERSON_TITLES)
            )
            if not gap_ok or prev_word.endswith(("'s", "’s")):
                break
            if _is_capitalised(cur_word):
                run.append(j)
                j += 1
                continue
            if cur_word.isdigit() and len(cur_word) <= 3 and prev_word.lower() not in _MONTH_NAMES:
                run.append(j)  # "Super Bowl 50", "Apollo 11"; ends the run
                j += 1
                break
            if cur_word in NAME_CONNECTORS or (cur_word == "the" and prev_word == "of"):
                # A connector only joins if a capitalised token (or "the" + one) follows directly.
                k = j + 1
                if k < len(tokens) and tokens[k][2] == "the" and cur_word == "of":
                    k += 1
                if k < len(tokens) and _is_capitalised(tokens[k][2]):
                    gaps = [sentence[tokens[m][1] : tokens[m + 1][0]] for m in range(run[-1], k)]
                    if all(g == " " for g in gaps):
                        run.extend(range(j, k + 1))
                        j = k + 1
                        continue
            break
        i = j
        # Drop a clause-initial common word ("The Normans" -> "Normans") and any dangling connector.
        first = tokens[run[0]]
        if _clause_initial(sentence, first[0]):
            lowered = first[2].lower()
            if lowered in COMMON_INITIAL or (lowered.endswith("ly") and len(run) == 1):
                run = run[1:]
        while run and not _is_capitalised(tokens[run[0]][2]):
            run = run[1:]
        if not run:
            continue
        span_start = tokens[run[0]][0]
        last_word = tokens[run[-1]][2]
        span_end = tokens[run[-1]][1]
        if last_word.endswith(("'s", "’s")):
            span_end -= 2
        text = sentence[span_start:span_end]
        if len(text) < 2 or text == "I" or len(text.split()) > _MAX_NAME_WORDS:
            continue
        spans.append(_Span(span_start, span_end, "name"))
    return spans


def _select_spans(sentence: str) -> list[_Span]:
    """Non-overlapping candidate spans, longest (most specific) first, without duplicate texts."""
    candidates = _numeric_spans(sentence) + _name_spans(sentence)
    tier = {"name": 1}
    candidates.sort(key=lambda s: (-(s.end - s.start), tier.get(s.kind, 0), s.start))
    chosen: list[_Span] = []
    seen: set[str] = set()
    for span in candidates:
        text = sentence[span.start : span.end]
        if text in seen or not text.strip():
            continue
        if any(span.start < other.end and other.start < span.end for other in chosen):
            continue
        chosen.append(span)
        seen.add(text)
    return chosen


def find_answer_spans(sentence: str) -> list[str]:
    """Candidate short answers in ``sentence``, as verbatim substrings, longest first.

    Candidates are the kinds of facts a reader is asked about: dates ("March 5, 2011"), years
    ("1066"), periods ("10th and 11th centuries", "1990s"), amounts ("$3.5 billion"), percentages
    ("45%"), other numbers, and capitalised names ("Duke William II", "Battle of Hastings", "Rollo").
    A capitalised common word that merely starts the sentence ("The", "However") is not a name.
    Overlapping candidates are resolved in favour of the longer one, so "10th century" is not also
    offered inside "10th and 11th centuries".
    """
    return [sentence[s.start : s.end] for s in _select_spans(sentence)]


# --------------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------------

_MAX_SENTENCE_WORDS = 60
_MIN_SENTENCE_WORDS = 4
_BLANK = "____"
_DATE_KINDS = frozenset({"date", "year", "period"})

_BLANK_QUESTION = {
    "date": "What date fills in the blank?",
    "year": "What year fills in the blank?",
    "period": "What time period fills in the blank?",
    "money": "How much money fills in the blank?",
    "percent": "What percentage fills in the blank?",
    "number": "What number fills in the blank?",
    "name": "Who or what fills in the blank?",
}
# (wh-phrase used on its own, wh-phrase used after a preposition already in the sentence)
_ECHO_WH = {
    "date": ("on what date", "what date"),
    "year": ("in what year", "what year"),
    "period": ("in what period", "what period"),
    "money": ("how much", "how much"),
    "percent": ("what percentage", "what percentage"),
    "number": ("how many", "how many"),
    "name": ("what", "what"),
}
_ARTICLE_END_RE = re.compile(r"(?<!\w)(?:the|a|an)\s+$", flags=re.IGNORECASE)
_PREP_END_RE = re.compile(
    r"(?<!\w)(?:in|on|at|during|by|since|until|till|from|of|to|before|after|around|between|for|over|under"
    r"|with|than|circa)\s+$",
    flags=re.IGNORECASE,
)


@dataclass(frozen=True)
class _Candidate:
    """A possible pair, with the weight used to prefer it when sampling and its span order."""

    pair: QAPair
    weight: float
    order: int


def _context_question(sentence: str, span: _Span, title: str) -> str:
    """A question that quotes the sentence: an echo question when the answer ends the sentence
    ("... to King Charles III in what year?"), else a fill-in-the-blank question."""
    prefix = f"Based on {title}: " if title else ""
    before = sentence[: span.start]
    after = sentence[span.end :]
    if TAIL_END_RE.match(after) and before.strip():
        # "... in the 1990s." -> "... in what period?", not "... in the in what period?"
        article = _ARTICLE_END_RE.search(before)
        stem = before[: article.start()] if article is not None else before
        alone, after_prep = _ECHO_WH[span.kind]
        wh = after_prep if _PREP_END_RE.search(stem) else alone
        if span.kind == "name" and (
            is_person(sentence[span.start : span.end]) or re.search(r"(?<!\w)by\s+$", stem)
        ):
            wh = "whom"  # "established in 911 by whom?"
        if stem.strip():
            return f"{prefix}{stem}{wh}?"
    return f'{prefix}"{before}{_BLANK}{after}" {_BLANK_QUESTION[span.kind]}'


def _leaks(answer: str, question: str) -> bool:
    """Whether the answer is still readable in the question (as a whole word), making it trivial."""
    if answer.isascii() and question.isascii():  # the common case, without compiling a pattern per answer
        return _leaks_ascii(answer.lower(), question.lower())
    return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", question, flags=re.IGNORECASE) is not None


def _leaks_ascii(answer: str, question: str) -> bool:
    """:func:`_leaks` of lowercase ASCII text: an occurrence with no word character on either side."""
    start = question.find(answer)
    while start >= 0:
        end = start + len(answer)
        before = start > 0 and _is_word(question[start - 1])
        after = end < len(question) and _is_word(question[end])
        if not before and not after:
            return True
        start = question.find(answer, start + 1)
    return False


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _span_weight(kind: str, answer: str) -> float:
    """Sampling preference: dates and amounts make the most checkable questions, multi-word names
    next, lone capitalised words (often adjectives like "French") least."""
    if kind in _DATE_KINDS or kind in ("money", "percent"):
        return 3.0
    if kind == "number" or len(answer.split()) > 1:
        return 2.0
    return 1.0


# Sampling weight added to a direct question, and the factor on a quoting question for a span that
# also has a direct one: direct questions are what users ask (docs/tuning.md, sweep 22).
_DIRECT_BONUS = 6.0
_QUOTING_FACTOR_WITH_DIRECT = 0.5


@dataclass(frozen=True)
class _Proposal:
    """Questions one answer of a sentence may give, before duplicates of earlier questions are dropped:
    its direct questions (weight ``weight + _DIRECT_BONUS``), then a quoting or phrase question."""

    answer: str
    weight: float
    order: int
    direct: tuple[str, ...]
    other: str | None


def _sentence_proposals(sentence: str, title: str, topic: Topic) -> list[_Proposal]:
    """Every question one sentence may give, in the order they are tried, leaking ones already left out.

    What a sentence proposes depends on that sentence alone (and its topic), so ranks can build the
    proposals of different sentences (see :func:`extractive_qa_pairs`); which questions survive depends
    on every earlier sentence and is settled afterwards, in document order, by :func:`_admit`.
    """
    proposals: list[_Proposal] = []
    spans = _select_spans(sentence)
    for order, span in enumerate(spans):
        answer = sentence[span.start : span.end]
        if word_count(answer) > MAX_ANSWER_WORDS or word_count(answer) == 0:
            continue
        if title and answer.casefold() == title.casefold():
            continue  # the document's own topic is not an informative answer
        direct = direct_questions(sentence, span.start, span.end, span.kind, topic)
        quoting = _context_question(sentence, span, title)
        proposals.append(
            _Proposal(
                answer,
                _span_weight(span.kind, answer),
                order,
                tuple(question for question in direct if not _leaks(answer, question)),
                None if _leaks(answer, quoting) else quoting,
            )
        )
    for question, start, end in phrase_answers(sentence, topic):
        answer = sentence[start:end]
        if not _leaks(answer, question):
            proposals.append(_Proposal(answer, 2.0 + _DIRECT_BONUS, len(spans), (), question))
    return proposals


def _admit(sentence: str, proposals: list[_Proposal], seen: set[str]) -> list[_Candidate]:
    """The candidates of one sentence's proposals whose question no earlier one asked (``seen`` grows).

    A span whose direct questions all were asked before keeps its quoting question at full weight."""
    candidates: list[_Candidate] = []

    def add(question: str, answer: str, weight: float, order: int) -> bool:
        if question in seen:
            return False
        seen.add(question)
        candidates.append(_Candidate(QAPair(question, answer, sentence), weight, order))
        return True

    for proposal in proposals:
        direct = [
            add(question, proposal.answer, proposal.weight + _DIRECT_BONUS, proposal.order)
            for question in proposal.direct
        ]
        weight = proposal.weight * _QUOTING_FACTOR_WITH_DIRECT if any(direct) else proposal.weight
        if proposal.other is not None:
            add(proposal.other, proposal.answer, weight, proposal.order)
    return candidates


def _weighted_order(candidates: list[_Candidate], rng: random.Random) -> list[_Candidate]:
    """A random permutation biased towards heavier candidates (Efraimidis-Spirakis keys)."""
    keyed = [(rng.random() ** (1.0 / c.weight), i) for i, c in enumerate(candidates)]
    keyed.sort(key=lambda pair: (-pair[0], pair[1]))
    return [candidates[i] for _, i in keyed]


def _spread_pick(indices: list[int], k: int, rng: random.Random) -> list[int]:
    """Pick ``k`` of ``indices`` (k <= len), one at random from each of k equal consecutive strata, so
    that picks cover the whole document instead of clustering at its start."""
    n = len(indices)
    picks: list[int] = []
    for b in range(k):
        lo = b * n // k
        hi = (b + 1) * n // k
        picks.append(indices[rng.randrange(lo, hi)])
    return picks


def extractive_qa_pairs(
    text: str, *, title: str = "", max_pairs: int = 10, seed: int = 0, share: WorkShare = ALONE
) -> list[QAPair]:
    """Auxiliary QA pairs for ``text`` built only from its own sentences, without any model.

    Each pair's ``answer`` is a verbatim span (at most ~8 words) of its ``evidence``, which is a
    verbatim sentence of ``text`` (sentences over ~60 words are skipped: their questions would be
    unreadable). Questions are direct where a sentence shape allows ("When was the Quillon Observatory
    opened?", naming the subject: a leading "It" or "the observatory" becomes the ``title``), several
    phrasings per fact, plus an echo question ("... in what year?") or a fill-in-the-blank question
    quoting the sentence, prefixed with ``title`` when one is given. Sampling prefers direct questions.

    When there are more than ``max_pairs`` candidates, ``random.Random(seed)`` chooses: sentences are
    taken in rounds (first one pair per sentence, then a second, ...), and within a round the document
    is cut into equal strata with one pick per stratum, so pairs cover the whole document. Pairs are
    returned in document order; the same arguments always give the same result.

    Under a split ``share`` (collective), each rank builds the questions of its share of the sentences
    (most of the work) and the ranks swap them; splitting the text into sentences, following what "It"
    refers to from one sentence to the next, dropping questions an earlier sentence already asked, and
    the seeded picks then run on every rank, in document order, so every rank gets the pairs one process
    gets.
    """
    if max_pairs <= 0:
        return []
    title = " ".join(title.split())
    rng = random.Random(seed)
    document_topic = topic_of(text, title)
    referent: str | None = None  # what a sentence-initial "It" refers to
    kept: list[tuple[str, Topic]] = []  # the sentences short and long enough to ask about, with topics
    for sentence in split_sentences(text):
        topic = sentence_topic(sentence, document_topic, referent)
        referent = next_referent(sentence, topic)
        words = word_count(sentence)
        if _MIN_SENTENCE_WORDS <= words <= _MAX_SENTENCE_WORDS:
            kept.append((sentence, topic))
    proposals = share.build(
        [float(len(sentence)) for sentence, _ in kept],
        lambda part: [_sentence_proposals(kept[i][0], title, kept[i][1]) for i in part],
    )
    seen: set[str] = set()
    per_sentence = [
        candidates
        for (sentence, _), proposed in zip(kept, proposals, strict=True)
        if (candidates := _admit(sentence, proposed, seen))
    ]
    ordered = [_weighted_order(candidates, rng) for candidates in per_sentence]

    chosen: list[tuple[int, int, int]] = []  # (sentence, span order, round)
    remaining = max_pairs
    round_index = 0
    while remaining > 0:
        available = [i for i, cands in enumerate(ordered) if len(cands) > round_index]
        if not available:
            break
        picks = available if len(available) <= remaining else _spread_pick(available, remaining, rng)
        for i in picks:
            chosen.append((i, ordered[i][round_index].order, round_index))
        remaining -= len(picks)
        round_index += 1
    chosen.sort()
    return [ordered[i][r].pair for i, _, r in chosen]
