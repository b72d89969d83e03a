"""Tests for the dependency-free extractive QA generator (lift_integrations.absorb.extractive)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lift_integrations.absorb.extractive import extractive_qa_pairs, find_answer_spans, split_sentences
from lift_integrations.absorb.types import QAPair

# First paragraph of the SQuAD v1.1 dev "Normans" article, embedded so the test has no data dependency.
NORMANS = (
    "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th "
    "and 11th centuries gave their name to Normandy, a region in France. They were descended from Norse "
    '("Norman" comes from "Norseman") raiders and pirates from Denmark, Iceland and Norway who, under '
    "their leader Rollo, agreed to swear fealty to King Charles III of West Francia. Through generations "
    "of assimilation and mixing with the native Frankish and Roman-Gaulish populations, their descendants "
    "would gradually merge with the Carolingian-based cultures of West Francia. The distinct cultural and "
    "ethnic identity of the Normans emerged initially in the first half of the 10th century, and it "
    "continued to evolve over the succeeding centuries."
)

# A longer synthetic document: many fact-bearing sentences, so sampling has real choices to make.
LONG_DOC = " ".join(
    f"The town of Place{chr(65 + i % 26)}{i} was founded in {1000 + 37 * i}. "
    f"Its mayor Anna Berg{i} paid ${i + 2}.5 million for {10 + i}% of the mill in {1200 + 11 * i}. "
    "Nothing else happened that day."
    for i in range(40)
)


def _non_ws(text: str) -> str:
    return "".join(text.split())


# --------------------------------------------------------------------------------------------------
# split_sentences
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Smith went to Washington, D.C. He arrived on Jan. 5. It rained.",
            ["Dr. Smith went to Washington, D.C.", "He arrived on Jan. 5.", "It rained."],
        ),
        (
            "The U.S. Army fought in 1944. The U.S. economy grew by 3.5% in 2011. It was e.g. fine.",
            ["The U.S. Army fought in 1944.", "The U.S. economy grew by 3.5% in 2011.", "It was e.g. fine."],
        ),
        (
            "J. R. R. Tolkien wrote it. The price was $3.5 billion. Done!",
            ["J. R. R. Tolkien wrote it.", "The price was $3.5 billion.", "Done!"],
        ),
        (
            'He said "Stop." Then he left. (See below.) Next one?',
            ['He said "Stop."', "Then he left.", "(See below.)", "Next one?"],
        ),
        ('"Really?" he asked. Yes.', ['"Really?" he asked.', "Yes."]),
        ("Wait... what happened? Nothing.", ["Wait... what happened?", "Nothing."]),
        (
            "Smith et al. found it. Version 2.0 was released.",
            ["Smith et al. found it.", "Version 2.0 was released."],
        ),
        ("He lives in the U.S. The end.", ["He lives in the U.S.", "The end."]),
        (
            "Mr. and Mrs. Jones met Prof. X. Y. Z. Brown at No. 5 Main St. in London.",
            ["Mr. and Mrs. Jones met Prof. X. Y. Z. Brown at No. 5 Main St. in London."],
        ),
        (
            "Heading one\nThis is a line.\n\nNew paragraph here\n\nLast one",
            ["Heading one", "This is a line.", "New paragraph here", "Last one"],
        ),
        (
            "This sentence is hard-wrapped over\ntwo lines, and stays whole. Next.",
            ["This sentence is hard-wrapped over\ntwo lines, and stays whole.", "Next."],
        ),
        ("这是第一句。这是第二句！第三句？", ["这是第一句。", "这是第二句！", "第三句？"]),
        ("Er kam um 3.5 Uhr. Sie ging.", ["Er kam um 3.5 Uhr.", "Sie ging."]),
    ],
)
def test_split_sentences_tricky_cases(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", ". . .", "!!!"])
def test_split_sentences_degenerate_input(text: str) -> None:
    sentences = split_sentences(text)
    assert all(s and s == s.strip() for s in sentences)
    assert _non_ws("".join(sentences)) == _non_ws(text)


def test_split_sentences_normans_paragraph() -> None:
    sentences = split_sentences(NORMANS)
    assert len(sentences) == 4
    assert sentences[1].startswith("They were descended from Norse")
    assert sentences[1].endswith("King Charles III of West Francia.")


_PIECES = st.sampled_from(
    [
        "word",
        "Name",
        "Dr.",
        "e.g.",
        "U.S.",
        "J.",
        "3.5",
        "1066",
        ".",
        "!",
        "?",
        "...",
        '"',
        "”",
        ")",
        "(",
        ",",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "the",
        "Über",
        "é",
        "。",
        "é.",
        "Inc.",
        "\u00a0",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_PIECES, max_size=40).map("".join), st.text(max_size=200)))
def test_split_sentences_is_a_verbatim_partition(text: str) -> None:
    sentences = split_sentences(text)
    position = 0
    for sentence in sentences:
        assert sentence, "empty sentence"
        assert sentence == sentence.strip()
        found = text.find(sentence, position)
        assert found >= 0, f"{sentence!r} is not a substring of the text after position {position}"
        # Only whitespace may be skipped between consecutive sentences.
        assert text[position:found].strip() == ""
        position = found + len(sentence)
    assert text[position:].strip() == ""
    assert _non_ws("".join(sentences)) == _non_ws(text)


# --------------------------------------------------------------------------------------------------
# find_answer_spans
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "must_include", "must_exclude"),
    [
        (
            "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy.",
            ["10th and 11th centuries", "Normans", "Normandy"],
            ["The", "The Normans", "10th", "11th centuries"],
        ),
        (
            "In 1066, Duke William II of Normandy invaded England.",
            ["1066", "Duke William II of Normandy", "England"],
            ["In", "Duke William II", "Normandy"],
        ),
        (
            "On March 5, 2011, the company paid $3.5 billion for 45% of the shares.",
            ["March 5, 2011", "$3.5 billion", "45%"],
            ["On", "March", "2011", "3.5", "45"],
        ),
        (
            "However, Rollo agreed to swear fealty to King Charles III in 911.",
            ["Rollo", "King Charles III", "911"],
            ["However"],
        ),
        ("Super Bowl 50 was played on February 7, 2016.", ["Super Bowl 50", "February 7, 2016"], ["50"]),
        ("Over 1500 soldiers died in the 1990s.", ["1500", "1990s"], ["Over"]),
        ("Through generations of mixing, their descendants merged.", [], ["Through"]),
    ],
)
def test_find_answer_spans_examples(sentence: str, must_include: list[str], must_exclude: list[str]) -> None:
    spans = find_answer_spans(sentence)
    for span in must_include:
        assert span in spans, (span, spans)
    for span in must_exclude:
        assert span not in spans, (span, spans)


def test_find_answer_spans_longest_first_and_disjoint() -> None:
    sentence = "In 1066, Duke William II of Normandy invaded England on October 14, 1066 with 7,000 men."
    spans = find_answer_spans(sentence)
    assert spans == sorted(spans, key=len, reverse=True)
    assert len(spans) == len(set(spans))
    # Spans are located at disjoint positions (greedy left-to-right placement, longest first).
    taken: list[tuple[int, int]] = []
    for span in spans:
        starts = [m.start() for m in re.finditer(re.escape(span), sentence)]
        placed = False
        for start in starts:
            if all(start + len(span) <= a or b <= start for a, b in taken):
                taken.append((start, start + len(span)))
                placed = True
                break
        assert placed, f"{span!r} overlaps another span"


def test_find_answer_spans_without_candidates() -> None:
    assert find_answer_spans("") == []
    assert find_answer_spans("nothing to see here, really.") == []
    assert find_answer_spans("这是一个没有数字的句子。") == []


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_PIECES, max_size=40).map("".join), st.text(max_size=200)))
def test_find_answer_spans_are_substrings(text: str) -> None:
    for sentence in split_sentences(text):
        spans = find_answer_spans(sentence)
        assert len(spans) == len(set(spans))
        for span in spans:
            assert span and span in sentence


# --------------------------------------------------------------------------------------------------
# extractive_qa_pairs
# --------------------------------------------------------------------------------------------------


def _check_pair_invariants(pairs: list[QAPair], text: str) -> None:
    sentences = set(split_sentences(text))
    for pair in pairs:
        assert isinstance(pair, QAPair)
        assert pair.evidence is not None
        assert pair.evidence in sentences and pair.evidence in text
        assert pair.answer and pair.answer in pair.evidence
        assert len(pair.answer.split()) <= 8
        assert pair.question.strip()
        # The answer must not be readable in its own question.
        assert not re.search(rf"(?<!\w){re.escape(pair.answer)}(?!\w)", pair.question, re.IGNORECASE), pair
    assert len({p.question for p in pairs}) == len(pairs)


def test_normans_paragraph_yields_sensible_pairs() -> None:
    pairs = extractive_qa_pairs(NORMANS, title="Normans", max_pairs=10, seed=0)
    _check_pair_invariants(pairs, NORMANS)
    assert len(pairs) >= 5
    answers = {p.answer for p in pairs}
    assert answers & {"10th and 11th centuries", "Normandy", "Rollo", "King Charles III of West Francia"}
    assert all(p.question.startswith("Based on Normans:") for p in pairs)
    # The title itself is never an answer: it is the topic, not a fact about it.
    assert "Normans" not in answers
    # Every sentence of the paragraph contributes: picks are spread, not front-loaded.
    assert {p.evidence for p in pairs} == set(split_sentences(NORMANS))


def test_normans_all_candidates_cover_the_expected_facts() -> None:
    pairs = extractive_qa_pairs(NORMANS, title="Normans", max_pairs=1000)
    answers = {p.answer for p in pairs}
    assert {"10th and 11th centuries", "Normandy", "Rollo", "10th century", "France"} <= answers
    by_answer = {p.answer: p for p in pairs}
    assert by_answer["10th and 11th centuries"].question.endswith("What time period fills in the blank?")
    assert "____" in by_answer["10th and 11th centuries"].question


def test_title_is_optional() -> None:
    pairs = extractive_qa_pairs(NORMANS, max_pairs=50)
    assert pairs
    assert not any(p.question.startswith("Based on") for p in pairs)
    assert "Normans" in {p.answer for p in pairs}


@pytest.mark.parametrize(
    ("sentence", "question", "answer"),
    [
        ("X was founded in 1066.", "In what year was X founded?", "1066"),
        (
            "The Duchy of Normandy was established in 911 by Rollo.",
            "In what year was the Duchy of Normandy established by Rollo?",
            "911",
        ),
        (
            "Super Bowl 50 was played on February 7, 2016.",
            "When was Super Bowl 50 played?",
            "February 7, 2016",
        ),
        ("Rollo was the first ruler of Normandy.", "Who was the first ruler of Normandy?", "Rollo"),
        ("The capital of France is Paris.", "What is the capital of France?", "Paris"),
        ("William was born in Falaise, Normandy.", "Where was William born?", "Falaise"),
        ("The city has a population of 250,000.", "What is the population of the city?", "250,000"),
    ],
)
def test_direct_questions(sentence: str, question: str, answer: str) -> None:
    pairs = extractive_qa_pairs(sentence, max_pairs=100)
    _check_pair_invariants(pairs, sentence)
    assert QAPair(question, answer, sentence) in pairs


def test_echo_and_blank_questions() -> None:
    sentence = "Rollo agreed to swear fealty to King Charles III in 911."
    pairs = extractive_qa_pairs(sentence, title="Normans", max_pairs=100)
    questions = {p.answer: p.question for p in pairs}
    assert (
        questions["911"] == "Based on Normans: Rollo agreed to swear fealty to King Charles III in what year?"
    )
    assert questions["Rollo"] == (
        'Based on Normans: "____ agreed to swear fealty to King Charles III in 911." '
        "Who or what fills in the blank?"
    )


def test_deterministic_for_a_seed_and_seed_matters() -> None:
    first = extractive_qa_pairs(LONG_DOC, title="Towns", max_pairs=12, seed=7)
    again = extractive_qa_pairs(LONG_DOC, title="Towns", max_pairs=12, seed=7)
    assert first == again
    outputs = {tuple(extractive_qa_pairs(LONG_DOC, title="Towns", max_pairs=12, seed=s)) for s in range(5)}
    assert len(outputs) > 1


@pytest.mark.parametrize("max_pairs", [0, 1, 3, 12, 50])
def test_max_pairs_respected(max_pairs: int) -> None:
    pairs = extractive_qa_pairs(LONG_DOC, max_pairs=max_pairs, seed=3)
    assert len(pairs) == max_pairs  # the document has far more candidates than 50
    _check_pair_invariants(pairs, LONG_DOC)


def test_picks_spread_over_the_whole_document() -> None:
    sentences = split_sentences(LONG_DOC)
    for seed in range(5):
        pairs = extractive_qa_pairs(LONG_DOC, max_pairs=8, seed=seed)
        positions = sorted(sentences.index(p.evidence) for p in pairs)
        assert positions[0] < len(sentences) // 4
        assert positions[-1] >= 3 * len(sentences) // 4
        # Pairs come back in document order.
        assert [sentences.index(p.evidence) for p in pairs] == positions


def test_skips_overlong_sentences() -> None:
    long_sentence = "In 1066 " + " ".join(["word"] * 70) + " ended."
    assert extractive_qa_pairs(long_sentence) == []
    assert extractive_qa_pairs(long_sentence + " Rollo was the first ruler of Normandy.")


@pytest.mark.parametrize(
    "text",
    ["", "   \n ", "nothing here at all, just words.", "这是一个没有数字的句子。另一个句子！", "ok."],
)
def test_no_candidates_gives_empty(text: str) -> None:
    assert extractive_qa_pairs(text, title="T") == []


def test_non_english_text() -> None:
    text = (
        "Der Vertrag wurde 1066 in Paris unterzeichnet. 条约于1066年签署。 "
        "Договор подписан в 1066 году в Москве."
    )
    pairs = extractive_qa_pairs(text, max_pairs=20)
    _check_pair_invariants(pairs, text)
    assert "1066" in {p.answer for p in pairs}


@settings(max_examples=200, deadline=None)
@given(
    text=st.one_of(st.lists(_PIECES, max_size=60).map("".join), st.text(max_size=300)),
    max_pairs=st.integers(min_value=0, max_value=6),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_pairs_invariants_on_arbitrary_text(text: str, max_pairs: int, seed: int) -> None:
    pairs = extractive_qa_pairs(text, title="Doc", max_pairs=max_pairs, seed=seed)
    assert len(pairs) <= max_pairs
    _check_pair_invariants(pairs, text)
    assert pairs == extractive_qa_pairs(text, title="Doc", max_pairs=max_pairs, seed=seed)


# --------------------------------------------------------------------------------------------------
# Direct questions that name the subject (docs/tuning.md, sweep 22)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "question", "answer"),
    [
        # "<X> was <participle> by <AGENT>": active and "by whom" phrasings.
        (
            "The library was founded in 1887 by the watchmaker Orla Pennick.",
            "Who founded the library?",
            "Orla Pennick",
        ),
        (
            "The library was founded in 1887 by the watchmaker Orla Pennick.",
            "By whom was the library founded?",
            "Orla Pennick",
        ),
        ("The bridge was built by Tomas Vell.", "Who built the bridge?", "Tomas Vell"),
        ("The novel was written by Anna Berg.", "Who wrote the novel?", "Anna Berg"),
        (
            "The observatory is funded by the Ferrand Sky Trust.",
            "Who funds the observatory?",
            "Ferrand Sky Trust",
        ),
        (
            "The observatory is funded by the Ferrand Sky Trust.",
            "By whom is the observatory funded?",
            "Ferrand Sky Trust",
        ),
        # "<NAME>, <participle> by <AGENT>" (a reduced relative clause).
        (
            "Its best clock is the Iron Heron, built by Tomas Vell for the lighthouse.",
            "Who built the Iron Heron?",
            "Tomas Vell",
        ),
        # "<NAME> <past verb> <object> (in <WHEN>)".
        ("The Dunmore family donated the library in 1902.", "Which family donated the library?", "Dunmore"),
        ("The Dunmore family donated the library in 1902.", "Who donated the library?", "Dunmore"),
        ("The Dunmore family donated the library in 1902.", "By whom was the library donated?", "Dunmore"),
        (
            "The Dunmore family donated the library in 1902.",
            "When did the Dunmore family donate the library?",
            "1902",
        ),
        (
            "The Dunmore family donated the library in 1902.",
            "In what year was the library donated by the Dunmore family?",
            "1902",
        ),
        ("Orla Pennick built the clock tower in 1887.", "Who built the clock tower?", "Orla Pennick"),
        (
            "Orla Pennick built the clock tower in 1887.",
            "When did Orla Pennick build the clock tower?",
            "1887",
        ),
        ("Anna Berg wrote the town charter in 1850.", "By whom was the town charter written?", "Anna Berg"),
        # Copula, with an apposition after the name, "named", and "the <kind> <NAME>".
        (
            "The current director of the observatory is Piet Amsel, a specialist in binary stars.",
            "Who is the current director of the observatory?",
            "Piet Amsel",
        ),
        (
            "The largest telescope is named Old Kestrel.",
            "What is the largest telescope named?",
            "Old Kestrel",
        ),
        (
            "The largest telescope is named Old Kestrel.",
            "What is the name of the largest telescope?",
            "Old Kestrel",
        ),
        ("The first discovery was the comet Varnholt-3.", "What was the first discovery?", "Varnholt-3"),
        ("The town's oldest bridge is the Kell Arch.", "What is the oldest bridge of the town?", "Kell Arch"),
        # Location.
        ("The museum is in the harbour town of Saltreach.", "Where is the museum?", "Saltreach"),
        ("The museum is in the harbour town of Saltreach.", "In which town is the museum?", "Saltreach"),
        ("The observatory stands on Mount Ferrand.", "Where does the observatory stand?", "Mount Ferrand"),
        ("The mirror was cast in the town of Brevik.", "In which town was the mirror cast?", "Brevik"),
        # Counts, habits, dated reduced relatives, attributes that are no name.
        ("The library has 11000 books.", "How many books does the library have?", "11000"),
        (
            "Every spring the museum holds Winding Day, when children wind every clock.",
            "What does the museum hold every spring?",
            "Winding Day",
        ),
        (
            "Its first discovery was the comet Varnholt-3, found in 1934.",
            "In what year was the comet Varnholt-3 found?",
            "1934",
        ),
        ("The museum's emblem is a silver anchor.", "What is the museum's emblem?", "silver anchor"),
        ("The museum's emblem is a silver anchor.", "What is the emblem of the museum?", "silver anchor"),
    ],
)
def test_direct_questions_name_the_subject(sentence: str, question: str, answer: str) -> None:
    pairs = extractive_qa_pairs(sentence, max_pairs=100)
    _check_pair_invariants(pairs, sentence)
    assert QAPair(question, answer, sentence) in pairs


def test_pronouns_and_generic_mentions_resolve_to_the_title() -> None:
    text = (
        "The Quillon Observatory stands on Mount Ferrand. It was opened in 1931 by the astronomer Edda "
        "Varnholt. The observatory is funded by the Ferrand Sky Trust, and its official colour is "
        "copper green."
    )
    pairs = extractive_qa_pairs(text, title="Quillon Observatory", max_pairs=100)
    _check_pair_invariants(pairs, text)
    by_question = {p.question: p.answer for p in pairs}
    assert by_question["Who opened the Quillon Observatory?"] == "Edda Varnholt"
    assert by_question["When was the Quillon Observatory opened?"] == "1931"
    assert by_question["Who funds the Quillon Observatory?"] == "Ferrand Sky Trust"
    assert by_question["What is the Quillon Observatory's official colour?"] == "copper green"
    assert by_question["What is the official colour of the Quillon Observatory?"] == "copper green"
    # Direct questions never keep a pronoun or the generic mention.
    direct = [q for q in by_question if not q.startswith("Based on")]
    assert direct
    assert not any(re.search(r"(?<!\w)(?:it|its|the observatory)(?!\w)", q) for q in direct)


def test_it_refers_to_a_name_introduced_just_before() -> None:
    text = "The museum's most famous clock is the Iron Heron. It was built by Tomas Vell."
    questions = {p.question: p.answer for p in extractive_qa_pairs(text, max_pairs=100)}
    assert questions["Who built the Iron Heron?"] == "Tomas Vell"


def test_an_unresolved_pronoun_gives_no_direct_question() -> None:
    text = "The bell is loud and old. It was cast in 1820 by Tomas Vell."
    questions = [p.question for p in extractive_qa_pairs(text, max_pairs=100)]
    assert questions  # the quoting questions remain
    assert not any(q.startswith(("Who", "By whom", "When", "In what year")) for q in questions), questions


@pytest.mark.parametrize(
    ("past", "base"),
    [
        ("founded", "found"),
        ("donated", "donate"),
        ("named", "name"),
        ("stopped", "stop"),
        ("called", "call"),
        ("carried", "carry"),
        ("acquired", "acquire"),
        ("poured", "pour"),
        ("built", "build"),
        ("wrote", "write"),
        ("found", "find"),
        ("opened", None),  # "open" or "opene": unsure, so no "When did ... open ...?"
        ("changed", None),
    ],
)
def test_base_form_of_past_tenses(past: str, base: str | None) -> None:
    from lift_integrations.absorb._verbs import base_of_past

    assert base_of_past(past) == base


def test_verb_forms_for_passive_and_active() -> None:
    from lift_integrations.absorb._verbs import (
        base_of_third_person,
        participle_of_past,
        past_of_participle,
        third_person,
    )

    assert past_of_participle("written") == "wrote"
    assert past_of_participle("opened") == "opened"
    assert participle_of_past("gave") == "given"
    assert participle_of_past("donated") == "donated"
    assert [third_person(v) for v in ("fund", "finance", "carry", "watch")] == [
        "funds",
        "finances",
        "carries",
        "watches",
    ]
    assert [base_of_third_person(v) for v in ("holds", "carries", "watches", "pass")] == [
        "hold",
        "carry",
        "watch",
        None,
    ]


_SHEETS = Path(__file__).resolve().parents[1] / "examples" / "data"


def _is_quoting(question: str) -> bool:
    """The questions that quote their sentence: fill-in-the-blank and echo questions."""
    return question.startswith("Based on ")


@pytest.mark.parametrize("sheet", ["quillon.json", "brindlecombe.json"])
def test_fact_sheets_get_direct_questions_for_every_fact(sheet: str) -> None:
    data = json.loads((_SHEETS / sheet).read_text(encoding="utf-8"))
    pairs = extractive_qa_pairs(data["text"], title=data["title"], max_pairs=1000)
    _check_pair_invariants(pairs, data["text"])
    direct = [p for p in pairs if not _is_quoting(p.question)]
    quoting = [p for p in pairs if _is_quoting(p.question)]
    # Before sweep 22 each sheet had one direct question (about "it") for 10-11 quoting ones.
    assert len(direct) >= 2 * len(quoting)
    assert not any(re.search(r"(?<!\w)(?:it|its)(?!\w)", p.question) for p in direct)
    # Every fact the sheet asks about that the spans find has a direct question, most two or more.
    answered = {p.answer for p in direct}
    golds = {q["answer"] for q in data["questions"]} & {p.answer for p in pairs}
    assert golds <= answered
    phrasings = [sum(p.answer == gold for p in direct) for gold in golds]
    assert sum(n >= 2 for n in phrasings) >= len(golds) // 2
    # fast() asks for 24 pairs: the sample keeps mostly direct questions.
    for seed in (0, 1):
        sample = extractive_qa_pairs(data["text"], title=data["title"], max_pairs=24, seed=seed)
        assert sum(not _is_quoting(p.question) for p in sample) >= 0.7 * len(sample)


_LEAK_TEXT = st.text(alphabet="aAbB _-.$1\u00e9\u0130\u017f", max_size=12)


@given(answer=_LEAK_TEXT, question=_LEAK_TEXT)
@settings(max_examples=400, deadline=None)
def test_an_answer_leaks_into_a_question_exactly_when_the_whole_word_pattern_finds_it(
    answer: str, question: str
) -> None:
    from lift_integrations.absorb.extractive import _leaks

    pattern = rf"(?<!\w){re.escape(answer)}(?!\w)"
    assert _leaks(answer, question) == (re.search(pattern, question, flags=re.IGNORECASE) is not None)
