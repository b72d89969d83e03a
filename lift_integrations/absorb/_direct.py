"""Direct questions for the extractive QA generator: the questions a reader would ask of a sentence.

A fill-in-the-blank question quoting its sentence teaches a memory which entities belong to a document
more than which question each one answers, while users ask direct questions that name the subject
("Who is the current director of the Quillon Observatory?"): docs/tuning.md, sweeps 20 and 22. The
rules below turn a few sentence shapes that a regular expression reads reliably into such questions,
several phrasings per fact, every answer still a verbatim span of the sentence.

A question's subject must name what it is about: "It was opened by ..." asks "Who opened the Quillon
Observatory?" only when "it" can be resolved (:class:`Topic`); a rule whose subject stays a pronoun
gives no direct question, since "Who opened it?" would bind the answer to nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lift_integrations.absorb._english import (
    COMMON_INITIAL,
    FUNCTION_WORDS,
    LOCATIVE_PARTICIPLES,
    TAIL_END_RE,
    clause_tail,
    is_participle,
    is_person,
    lower_first,
    word_count,
    wordset,
)
from lift_integrations.absorb._verbs import (
    IRREGULAR_BASES,
    base_of_participle,
    base_of_past,
    base_of_third_person,
    is_past,
    participle_of_past,
    past_of_participle,
    third_person,
)

__all__ = ["Topic", "direct_questions", "next_referent", "phrase_answers", "sentence_topic", "topic_of"]

_NP = r"[^,;:()\"“”]"  # a character of a noun phrase: no clause punctuation or quotes
_NAME = r"[A-Z][\w'’-]*(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z][\w'’-]*)*"
_ADVERBS = r"(?:first|later|originally|officially|finally|eventually|formally|also|then|subsequently)"
_PRONOUNS = wordset("he she they his her their this these those that them him we our")
_MAX_NP_WORDS = 12

# "<subj> was <participle> in|on <WHEN|PLACE>": the span follows the preposition.
_PASSIVE_RE = re.compile(
    rf"^(?P<subj>{_NP}{{1,100}}?)\s+(?P<aux>was|were|is|are)\s+(?:(?P<adv>{_ADVERBS})\s+)?"
    r"(?P<verb>[a-z]+)\s+(?P<prep>in|on|during|at|near)\s+$"
)
# "<subj> was <participle> in the town of <PLACE>".
_PASSIVE_OF_RE = re.compile(
    rf"^(?P<subj>{_NP}{{1,100}}?)\s+(?P<aux>was|were|is|are)\s+(?:(?P<adv>{_ADVERBS})\s+)?"
    r"(?P<verb>[a-z]+)\s+(?P<prep>in|at|near)\s+the\s+(?:[a-z]+\s+)?(?P<kind>[a-z]+)\s+of\s+$"
)
# "<subj> was <participle> (in 1931) by (the astronomer) <AGENT>".
_PASSIVE_BY_RE = re.compile(
    rf"^(?P<subj>{_NP}{{1,100}}?)\s+(?P<aux>was|were|is|are)\s+(?:(?P<adv>{_ADVERBS})\s+)?"
    rf"(?P<verb>[a-z]+)(?P<mod>\s+(?:in|on|at|during|around)\s+{_NP}{{1,40}}?)?\s+by\s+"
    r"(?:(?:the|a|an)\s+(?:[a-z]+\s+){0,2})?$"
)
# "..., the Iron Heron, built by <AGENT>": a reduced relative clause after a name.
_REDUCED_BY_RE = re.compile(
    rf"(?:^|\s)(?P<det>the\s+)?(?P<obj>{_NAME}),\s+(?:(?P<adv>{_ADVERBS})\s+)?(?P<verb>[a-z]+)\s+by\s+"
    r"(?:(?:the|a|an)\s+(?:[a-z]+\s+){0,2})?$"
)
# "..., the comet Varnholt-3, found in <WHEN>": a reduced relative clause dated.
_REDUCED_WHEN_RE = re.compile(
    rf"(?:^|\s)(?P<obj>(?:the\s+(?:[a-z]+\s+)?)?{_NAME}),\s+(?:(?P<adv>{_ADVERBS})\s+)?(?P<verb>[a-z]+)\s+"
    r"(?:in|on|during)\s+$"
)
# "<NAME> (family) <past verb> <object> (in <WHEN>)": the rest of a sentence after its named subject.
_ACTIVE_REST_RE = re.compile(
    rf"^\s+(?P<verb>[a-z]+)\s+(?P<obj>(?:(?:the|a|an|its|their|his|her)\s|[A-Z]){_NP}*?)"
    rf"(?P<mod>\s+(?:in|on|at|during|for|to)\s+{_NP}+?)?\s*(?:[,;.!?]|$)"
)
_ACTIVE_WHEN_RE = re.compile(
    rf"^\s+(?P<verb>[a-z]+)\s+(?P<obj>(?:(?:the|a|an|its|their|his|her)\s|[A-Z]){_NP}*?)\s+(?:in|on|during)\s+$"
)
_NAME_SUBJECT_RE = re.compile(rf"^(?P<the>The\s+)?(?P<name>{_NAME})(?:\s+(?P<noun>[a-z]+))?")
_IS_THE_RE = re.compile(r"^\s+(?P<aux>is|was|are|were)\s+the\s+(?P<np>[^,;:()\"“”]+?)\s*[.!]?$")
# "The <np> is (named) (the comet) <NAME>", ended or followed by an apposition.
_THE_IS_RE = re.compile(
    rf"^(?P<np>(?:The|the|Its)\s+{_NP}{{2,100}}?)\s+(?P<aux>is|was|are|were)\s+"
    r"(?:(?P<named>named|called|known\s+as)\s+)?(?:(?:the|a|an)\s+(?:(?P<kind>[a-z]+)\s+)?)?$"
)
_LOCATED_RE = re.compile(
    rf"^(?P<subj>{_NP}{{2,100}}?)\s+(?P<verb>is|are|was|were|stands|stand|stood|lies|lie|lay|sits|sit|sat)\s+"
    r"(?P<prep>in|on|at|near)\s+(?:the\s+(?:[a-z]+\s+)*?(?P<kind>[a-z]+)\s+of\s+)?$"
)
_COUNT_RE = re.compile(
    rf"^(?P<subj>{_NP}{{2,100}}?)\s+(?P<verb>has|have|had|holds|hold|held|contains|contain|contained|owns|own|"
    r"owned|employs|employ|employed)\s+(?:(?:about|around|over|nearly|almost|some|more\s+than)\s+)?$"
)
_COUNT_NOUN_RE = re.compile(
    r"^\s+(?P<noun>[a-z]+(?:\s+[a-z]+){0,2}?)\s*(?:[,;.!?]|\s+(?:and|in|at|on|of|from|with)\s|$)"
)
_POPULATION_RE = re.compile(rf"^(?P<subj>{_NP}{{2,100}}?)\s+(?P<verb>has|had)\s+a\s+population\s+of\s+$")
_DOES_WHAT_RE = re.compile(
    r"^(?:(?P<time>(?:Every|Each)\s+[a-z]+)\s+)?(?P<subj>(?:[Tt]he\s+)?[a-z]+)\s+(?P<verb>[a-z]+)\s+(?:the\s+)?$"
)
_APPOSITION_KIND_RE = re.compile(r"^,\s+(?:a|an|the)\s+(?P<kind>[a-z]+)\b")
# A clause "the <np> is (a) <lowercase phrase>", the answer being the phrase.
_PHRASE_RE = re.compile(
    rf"^(?P<np>(?:[Tt]he|[Ii]ts)\s+{_NP}{{2,80}}?)\s+(?P<aux>is|was)\s+(?:(?:a|an)\s+)?"
    r"(?P<ans>[a-z]+(?:[\s-][a-z]+){0,3})\s*[.!]?\s*$"
)
_CLAUSE_BREAK_RE = re.compile(r",\s+(?:and|but|while|whereas)\s+|;\s+")
_NOT_ACTION = wordset("was were had did became")  # copulas and auxiliaries: no "Who <verb> X?"
_LOCATIVE_BASES = {
    "stands": "stand",
    "lies": "lie",
    "sits": "sit",
    "stood": "stand",
    "lay": "lie",
    "sat": "sit",
}


@dataclass(frozen=True)
class Topic:
    """What a sentence's generic mentions and pronouns refer to.

    ``title_np``: the document's title as a noun phrase ("the Quillon Observatory" when the text says
    "The Quillon Observatory"); ``head``: the title's last word ("observatory"), so "the observatory"
    means the title; ``referent``: what a sentence-initial "It"/"Its" refers to (the previous
    sentence's subject, when that was the title or a name); ``subject``: this sentence's own subject
    when it is the title, for a later "its" ("..., and its official colour is copper green").
    """

    title_np: str = ""
    head: str = ""
    referent: str | None = None
    subject: str | None = None


def topic_of(text: str, title: str) -> Topic:
    """The document-wide part of a :class:`Topic`: the title as a noun phrase and its head noun."""
    if not title:
        return Topic()
    with_article = re.search(rf"(?<!\w)the\s+{re.escape(title)}(?!\w)", text, flags=re.IGNORECASE)
    words = title.split()
    head = words[-1].lower() if len(words) > 1 and words[-1].isalpha() else ""
    if head in COMMON_INITIAL:
        head = ""
    return Topic(title_np=f"the {title}" if with_article else title, head=head)


def _about_title(sentence: str, topic: Topic) -> bool:
    """Whether the sentence's subject is the title itself ("The observatory is ..."), not a part of it
    ("The observatory's largest telescope ...")."""
    if not topic.title_np:
        return False
    title = topic.title_np.removeprefix("the ")
    if re.match(rf"^(?:the\s+)?{re.escape(title)}(?!\w|['’]s)", sentence, flags=re.IGNORECASE):
        return True
    return bool(topic.head) and re.match(rf"^The\s+{re.escape(topic.head)}(?!\w|['’]s)", sentence) is not None


def sentence_topic(sentence: str, topic: Topic, referent: str | None) -> Topic:
    """The topic for one sentence, given what a leading "It" refers to (``referent``)."""
    if _about_title(sentence, topic):
        subject: str | None = topic.title_np
    elif re.match(r"^It\s", sentence):
        subject = referent
    else:
        subject = None
    return Topic(topic.title_np, topic.head, referent, subject)


def next_referent(sentence: str, topic: Topic) -> str | None:
    """What "It" at the start of the next sentence refers to: this sentence's subject when it is the
    title, else the name that a copula sentence introduces ("The museum's most famous clock is the
    Iron Heron, ..." -> "the Iron Heron"); ``None`` when unclear."""
    if topic.subject is not None:
        return topic.subject
    match = re.match(
        rf"^{_NP}+?\s+(?:is|was)\s+(?:named\s+|called\s+)?(?P<det>the\s+)?(?:(?:a|an)\s+)?(?:[a-z]+\s+)?"
        rf"(?P<name>{_NAME})\s*(?:[,.!]|$)",
        sentence,
    )
    if match is None:
        return None
    return f"{match['det'] or ''}{match['name']}"


def _resolve(phrase: str, topic: Topic) -> str | None:
    """``phrase`` as a question can use it: pronouns replaced by what they refer to, "the observatory"
    by the title, a leading common word lowercased; ``None`` when a pronoun cannot be resolved."""
    phrase = " ".join(phrase.split()).lstrip("\"'“‘(")
    if not phrase:
        return None
    first, _, rest = phrase.partition(" ")
    if first in ("It", "it"):
        owner = topic.referent if first == "It" else topic.subject
        return owner if owner is not None and not rest else None
    if first in ("Its", "its"):
        owner = topic.referent if first == "Its" else (topic.subject or topic.referent)
        return f"{owner}'s {rest}" if owner is not None and rest else None
    if first.lower() in _PRONOUNS:
        return None
    if topic.head:
        phrase = re.sub(rf"(?<!\w)[Tt]he\s+{re.escape(topic.head)}(?!\w)", topic.title_np, phrase)
    if word_count(phrase) > _MAX_NP_WORDS:
        return None
    return lower_first(phrase)


def _of_variant(phrase: str) -> str | None:
    """ "the Quillon Observatory's largest telescope" -> "the largest telescope of the Quillon
    Observatory": the other way users name a part of something."""
    match = re.fullmatch(r"(?P<owner>[^'’]+?)['’]s\s+(?P<part>[a-z][a-z\s-]*)", phrase)
    if match is None:
        return None
    return f"the {match['part']} of {match['owner']}"


def _with_variants(template: str, phrase: str) -> list[str]:
    """``template`` filled with ``phrase`` and, when it has one, with its "of" variant."""
    variant = _of_variant(phrase)
    return [template.format(phrase)] + ([template.format(variant)] if variant else [])


def _ends_noun_phrase(after: str) -> bool:
    """Whether the text after a span ends the name there: punctuation, the end, or a new phrase."""
    return (
        re.match(r"^(?:\s*(?:[,.;:!?)—–]|$)|\s+(?:and|for|in|on|at|who|which|with|as|to|from)\s)", after)
        is not None
    )


def _passive_questions(before: str, after: str, kind: str, topic: Topic) -> list[str]:
    """ "<subj> was <participle> in <WHEN|PLACE>" -> "When / In what year / Where was <subj> <verb>?"."""
    questions: list[str] = []
    passive = _PASSIVE_RE.match(before)
    if passive is not None and is_participle(passive["verb"]):
        subj, tail = _resolve(passive["subj"], topic), clause_tail(after)
        if subj is not None and tail is not None:
            adverb = f" {passive['adv']}" if passive["adv"] else ""
            short = f"{passive['aux']} {subj}{adverb} {passive['verb']}"
            predicate = f"{short} {tail}" if tail else short
            if kind in ("date", "year", "period"):
                wh = {"year": "In what year", "period": "In what period"}.get(kind, "When")
                questions.append(f"{wh} {predicate}?")
                questions.append(f"When {short}?")
            elif kind == "name" and passive["verb"] in LOCATIVE_PARTICIPLES and passive["prep"] != "on":
                questions.append(f"Where {predicate}?")
    reduced = _REDUCED_WHEN_RE.search(before)
    dated = kind in ("date", "year", "period") and clause_tail(after) == ""
    if reduced is not None and dated and is_participle(reduced["verb"]):
        wh = {"year": "In what year", "period": "In what period"}.get(kind, "When")
        questions += [
            f"{wh} was {reduced['obj']} {reduced['verb']}?",
            f"When was {reduced['obj']} {reduced['verb']}?",
        ]
    placed = _PASSIVE_OF_RE.match(before)
    if placed is not None and kind == "name" and is_participle(placed["verb"]) and _ends_noun_phrase(after):
        subj = _resolve(placed["subj"], topic)
        if subj is not None:
            predicate = f"{placed['aux']} {subj} {placed['verb']}"
            questions += [
                f"{placed['prep'].capitalize()} which {placed['kind']} {predicate}?",
                f"Where {predicate}?",
            ]
    return questions


def _agent_questions(before: str, after: str, topic: Topic) -> list[str]:
    """ "<subj> was <participle> by <AGENT>" (or "<Name>, <participle> by <AGENT>") -> "Who
    <past> <subj>?", "By whom was <subj> <participle>?"."""
    if not _ends_noun_phrase(after):
        return []
    questions: list[str] = []
    passive = _PASSIVE_BY_RE.match(before)
    if passive is not None and is_participle(passive["verb"]):
        obj, verb, aux = _resolve(passive["subj"], topic), passive["verb"], passive["aux"]
        if obj is not None:
            if aux in ("was", "were"):
                active = past_of_participle(verb)
            else:
                base = base_of_participle(verb)
                active = None if base is None else (third_person(base) if aux == "is" else base)
            if active is not None:
                questions += _with_variants(f"Who {active} {{}}?", obj)
                if passive["mod"]:
                    questions.append(f"Who {active} {obj} {' '.join(passive['mod'].split())}?")
            questions += _with_variants(f"By whom {aux} {{}} {verb}?", obj)
    reduced = _REDUCED_BY_RE.search(before)
    if reduced is not None and is_participle(reduced["verb"]):
        obj = f"{reduced['det'] or ''}{reduced['obj']}"
        active = past_of_participle(reduced["verb"])
        if active is not None:
            questions.append(f"Who {active} {obj}?")
        questions.append(f"By whom was {obj} {reduced['verb']}?")
    return questions


def _named_subject(sentence: str) -> tuple[str, str, int] | None:
    """A sentence opening with a name ("Orla Pennick", "The Dunmore family"): the subject as a noun
    phrase, its trailing common noun ("family", or ""), and where the rest of the sentence starts."""
    match = _NAME_SUBJECT_RE.match(sentence)
    if match is None:
        return None
    noun = match["noun"] or ""
    if not match["the"] or not noun or is_past(noun) or noun in FUNCTION_WORDS:
        noun = ""  # a lowercase word after a bare name is its verb ("Rollo agreed")
    end = match.end("noun") if noun else match.end("name")
    subject = f"the {match['name']}{' ' + noun if noun else ''}" if match["the"] else match["name"]
    return subject, noun, end


def _active_questions(sentence: str, start: int, end: int, kind: str, topic: Topic) -> list[str]:
    """Sentences whose subject is a name: "<NAME> donated <obj> (in <WHEN>)" -> "Who donated <obj>?",
    "Which family donated <obj>?", "By whom was <obj> donated?", "When did <NAME> donate <obj>?"."""
    subject = _named_subject(sentence)
    if subject is None:
        return []
    subj, noun, rest_at = subject
    questions: list[str] = []
    if kind == "name" and start == sentence.find(subj.removeprefix("the ").split(" ")[0]) and end <= rest_at:
        active = _ACTIVE_REST_RE.match(sentence[rest_at:])
        if active is not None and is_past(active["verb"]) and active["verb"] not in _NOT_ACTION:
            obj = _resolve(active["obj"], topic)
            if obj is not None and word_count(obj) <= 10:
                verb = active["verb"]
                questions += _with_variants(f"Who {verb} {{}}?", obj)
                if noun:
                    questions += _with_variants(f"Which {noun} {verb} {{}}?", obj)
                participle = participle_of_past(verb)
                if participle is not None:
                    questions += _with_variants(f"By whom was {{}} {participle}?", obj)
    if kind in ("date", "year", "period") and start > rest_at and clause_tail(sentence[end:]) == "":
        when = _ACTIVE_WHEN_RE.match(sentence[rest_at:start])
        if when is not None and is_past(when["verb"]) and when["verb"] not in _NOT_ACTION:
            obj = _resolve(when["obj"], topic)
            if obj is not None and word_count(obj) <= 10:
                base = base_of_past(when["verb"])
                if base is not None:
                    questions += _with_variants(f"When did {subj} {base} {{}}?", obj)
                participle = participle_of_past(when["verb"])
                if participle is not None:
                    wh = {"year": "In what year", "period": "In what period"}.get(kind, "When")
                    questions.append(f"{wh} was {obj} {participle} by {subj}?")
                    questions += _with_variants(f"When was {{}} {participle}?", obj)
    return questions


def _copula_questions(before: str, after: str, answer: str, at_start: bool, topic: Topic) -> list[str]:
    """ "<NAME> is the <np>" and "The <np> is (named) <NAME>" -> "Who/What is the <np>?", "What is
    <np> named?", "What is the name of <np>?"."""
    questions: list[str] = []
    if at_start:
        is_the = _IS_THE_RE.match(after)
        if is_the is not None:
            np = _resolve(f"the {is_the['np']}", topic)
            if np is not None:
                wh = "Who" if is_person(answer, is_the["np"]) else "What"
                questions += _with_variants(f"{wh} {is_the['aux']} {{}}?", np)
    the_is = _THE_IS_RE.match(before)
    if the_is is not None and (TAIL_END_RE.match(after.strip()) or after.startswith(",")):
        np = _resolve(the_is["np"], topic)
        if np is not None:
            aux = the_is["aux"]
            if the_is["named"]:
                named = " ".join(the_is["named"].split())
                questions += _with_variants(f"What {aux} {{}} {named}?", np)
                questions += _with_variants(f"What {aux} the name of {{}}?", np)
            else:
                wh = "Who" if is_person(answer, the_is["np"]) else "What"
                questions += _with_variants(f"{wh} {aux} {{}}?", np)
    return questions


def _place_and_count_questions(before: str, after: str, kind: str, topic: Topic) -> list[str]:
    """ "<X> is in / stands on (the town of) <PLACE>" -> "Where is <X>?", "In which town is <X>?";
    "<X> has <N> <things>" -> "How many <things> does <X> have?"; "<X> has a population of <N>"."""
    questions: list[str] = []
    located = _LOCATED_RE.match(before)
    if located is not None and kind == "name" and _ends_noun_phrase(after):
        subj = _resolve(located["subj"], topic)
        verb = located["verb"]
        if subj is not None:
            if verb in _LOCATIVE_BASES or verb in ("stand", "lie", "sit"):
                base = _LOCATIVE_BASES.get(verb, verb)
                do = "did" if verb in ("stood", "lay", "sat") else ("does" if verb.endswith("s") else "do")
                predicate = f"{do} {subj} {base}"
            else:
                predicate = f"{verb} {subj}"
            questions.append(f"Where {predicate}?")
            if located["kind"]:
                questions.append(f"{located['prep'].capitalize()} which {located['kind']} {predicate}?")
    count = _COUNT_RE.match(before)
    noun = _COUNT_NOUN_RE.match(after)
    if count is not None and noun is not None and kind == "number":
        subj = _resolve(count["subj"], topic)
        verb = count["verb"]
        base = base_of_third_person(verb) or base_of_past(verb) or verb
        do = "does" if verb.endswith("s") else ("did" if is_past(verb) or verb == "had" else "do")
        if subj is not None:
            questions.append(f"How many {noun['noun']} {do} {subj} {base}?")
    population = _POPULATION_RE.match(before)
    if population is not None and kind == "number":
        subj = _resolve(population["subj"], topic)
        if subj is not None:
            aux = "is" if population["verb"] == "has" else "was"
            questions.append(f"What {aux} the population of {subj}?")
    return questions


def _habit_questions(before: str, after: str, kind: str, topic: Topic) -> list[str]:
    """ "Every spring the museum holds <NAME>, a festival ..." -> "What (festival) does the museum hold
    every spring?"."""
    match = _DOES_WHAT_RE.match(before)
    if match is None or kind != "name" or re.match(r"^\s*(?:[,.;:!?)—–]|$)", after) is None:
        return []
    subj = _resolve(match["subj"], topic)
    verb = match["verb"]
    if subj is None or verb in FUNCTION_WORDS or verb in ("is", "are", "was", "were"):
        return []
    base = base_of_third_person(verb)
    if base is not None:
        do = "does"
    elif is_past(verb):
        do, base = "did", base_of_past(verb)
    elif verb in IRREGULAR_BASES:
        do, base = "do", verb
    if base is None:
        return []
    time = f" {match['time'].lower()}" if match["time"] else ""
    questions = [f"What {do} {subj} {base}{time}?"]
    apposition = _APPOSITION_KIND_RE.match(after)
    if apposition is not None:
        questions.append(f"What {apposition['kind']} {do} {subj} {base}{time}?")
    return questions


def direct_questions(sentence: str, start: int, end: int, kind: str, topic: Topic) -> list[str]:
    """Direct wh-questions whose answer is ``sentence[start:end]`` (a span of the given kind), for the
    sentence shapes that the rules above read reliably; several phrasings per fact."""
    before, after, answer = sentence[:start], sentence[end:], sentence[start:end]
    questions = _passive_questions(before, after, kind, topic)
    if kind == "name":
        questions += _agent_questions(before, after, topic)
        questions += _copula_questions(before, after, answer, start == 0, topic)
        questions += _habit_questions(before, after, kind, topic)
    questions += _active_questions(sentence, start, end, kind, topic)
    questions += _place_and_count_questions(before, after, kind, topic)
    return list(dict.fromkeys(questions))


def phrase_answers(sentence: str, topic: Topic) -> list[tuple[str, int, int]]:
    """(question, start, end) for clauses "the <np>'s <attribute> is (a) <lowercase phrase>", whose
    answer is no name or number: "its official colour is copper green" -> "What is the Quillon
    Observatory's official colour?" answered "copper green"."""
    pairs: list[tuple[str, int, int]] = []
    starts = [0] + [m.end() for m in _CLAUSE_BREAK_RE.finditer(sentence)]
    ends = [m.start() for m in _CLAUSE_BREAK_RE.finditer(sentence)] + [len(sentence)]
    for clause_start, clause_end in zip(starts, ends, strict=True):
        clause = sentence[clause_start:clause_end]
        match = _PHRASE_RE.match(clause)
        if match is None:
            continue
        raw_np, words = match["np"], match["ans"].replace("-", " ").split()
        if not ("'s " in raw_np or "’s " in raw_np or raw_np.lower().startswith("its ") or " of " in raw_np):
            continue  # an attribute of something, not a description ("The sky is blue")
        if any(w in FUNCTION_WORDS or is_participle(w) or w.endswith("ing") for w in words):
            continue
        np = _resolve(raw_np, topic)
        if np is None:
            continue
        for question in _with_variants(f"What {match['aux']} {{}}?", np):
            pairs.append((question, clause_start + match.start("ans"), clause_start + match.end("ans")))
    return pairs
