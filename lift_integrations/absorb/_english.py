"""English word lists and small text helpers shared by the extractive QA generator's modules.

Split out of :mod:`lift_integrations.absorb.extractive` so that the sentence splitter, the answer spans
and the direct-question rules (:mod:`lift_integrations.absorb._direct`) read the same lists.
"""

from __future__ import annotations

import re


def wordset(words: str) -> frozenset[str]:
    """A frozenset from a whitespace-separated word list; keeps the long lists below readable."""
    return frozenset(words.split())


# Abbreviations that are (almost) always followed by more of the same sentence, typically a name.
NEVER_END: frozenset[str] = wordset(
    """
    mr mrs ms mx dr prof rev hon messrs mme mlle gen col lt maj capt cmdr sgt cpl adm gov sen
    rep pres supt insp fr msgr e.g i.e cf vs viz approx ca esp incl fig figs eq eqs ch sec vol vols pp
    op cit ibid resp dept univ assn bros mt ft
    """
)

# Abbreviations that can also end a sentence ("... Apple Inc. The company ...", "... and so on, etc.").
# They only end the sentence when the next word looks like a sentence starter.
MAYBE_END: frozenset[str] = wordset(
    """
    etc inc ltd co corp llc plc al jr sr st no nos jan feb mar apr jun jul aug sep sept oct nov dec
    est min max avg approx dist ave rd blvd
    """
)

# Words that commonly begin an English sentence. Used to decide whether an ambiguous abbreviation
# ("Inc.", "U.S.", an initial) ends the sentence: "... in the U.S. The war ..." vs "U.S. Army".
SENTENCE_STARTERS: frozenset[str] = wordset(
    """
    the a an he she it they we i you this that these those there his her its their our my your in on at
    by for from with after before during when while however but and so then thus also as if although
    though since because many most some all both each one two three four five six seven eight nine ten
    today later meanwhile furthermore moreover nevertheless nonetheless yet what who where why how which
    such other another no not only even still here despite following according unlike once instead
    finally first second third next overall indeed therefore hence similarly additionally consequently
    """
)

# Capitalised common words that are not names when they start a sentence (or a quotation).
COMMON_INITIAL: frozenset[str] = SENTENCE_STARTERS | wordset(
    """
    through under over about among amongst between within without toward towards around near upon into
    onto above below behind beyond across along against throughout until till unless whether whereas
    either neither nor due given based using like early late every any several few much more less
    again initially originally eventually generally historically traditionally currently recently
    note see please yes let let's whilst may might can could would should must will shall do does did
    was were is are be been being have has had to of or nor just perhaps maybe although because
    around approximately nearly almost about some its it's earlier previously soon afterwards thereafter
    meanwhile subsequently likewise otherwise
    """
)

# Function words that may follow a year ("in 1066 the ...") without turning it into a count.
FUNCTION_WORDS: frozenset[str] = wordset(
    """
    the a an and or but nor when while after before as to with by in on at of for that which who whom
    whose he she it they we i you his her its their this these those there then until till since so
    than from into onto upon during through under over about against between among is was were are be
    had has have did does do not also
    """
)

# Words before a bare number that mark it as a year ("in 911", "since 1990").
TEMPORAL_PREPS: frozenset[str] = wordset(
    "in since by until till before after from during around circa c. ca. year early late mid"
)

# Tokens that may sit inside a multi-word name between two capitalised tokens.
NAME_CONNECTORS: frozenset[str] = wordset(
    "of de del della der den van von da di du la le al bin ibn y dos das"
)

# Leading tokens that mark a name as a person ("King Charles III", "Dr. Smith").
PERSON_TITLES: frozenset[str] = wordset(
    """
    king queen duke duchess prince princess emperor empress count countess earl baron lord lady sir
    saint st pope bishop archbishop cardinal president chancellor general admiral captain dr mr mrs ms
    prof professor sultan caliph tsar czar khan shah pharaoh
    """
)

# Nouns that make "Who ...?" the right wh-word for a definite description.
PERSON_NOUNS: frozenset[str] = wordset(
    """
    king queen duke duchess prince princess emperor empress ruler leader founder president chancellor
    minister author writer poet painter composer scientist inventor architect director actor actress
    singer player coach captain general admiral commander bishop pope saint son daughter father mother
    wife husband brother sister heir successor predecessor man woman person chief head monarch sultan
    caliph pharaoh governor mayor senator chairman ceo owner creator discoverer winner champion
    philosopher explorer teacher student husband widow count earl baron lord lady knight astronomer
    curator watchmaker engineer historian musician sculptor merchant priest doctor physician lawyer judge
    soldier farmer builder craftsman designer photographer novelist journalist professor
    """
)

# Past participles (beyond the regular "-ed" ones) accepted by the "X was <verb>ed in <when>" pattern.
IRREGULAR_PARTICIPLES: frozenset[str] = wordset(
    """
    built born held made won fought sold bought laid led lost set begun sent spent kept left met paid
    told brought caught taught found heard known shown grown drawn thrown torn worn sworn sung struck
    hung split cast rebuilt written given taken seen chosen driven broken frozen spoken stolen beaten
    forgotten hidden ridden risen shaken undertaken overthrown slain won begun done put shut
    """
)

# Participles after which "in/at <Name>" is a place: "born in Rouen" -> "Where was X born?".
LOCATIVE_PARTICIPLES: frozenset[str] = wordset(
    """
    born located buried built founded situated based held established headquartered raised educated
    crowned killed married imprisoned exiled published printed signed fought
    """
)

OPENERS = "\"'“‘«([{¿¡"
CLOSERS = "\"'”’»)]}"

WORD_RE = re.compile(r"\w+")
TAIL_END_RE = re.compile(r"^[.!…]*$")
MAX_ANSWER_WORDS = 8


def word_count(text: str) -> int:
    """Number of word tokens; used for the sentence and answer length limits."""
    return len(WORD_RE.findall(text))


def lower_first(phrase: str) -> str:
    """Lowercase "The Duchy" -> "the Duchy" when the first word is a common word, so it reads mid-question."""
    first, _, rest = phrase.partition(" ")
    if first.lower() in COMMON_INITIAL and first[:1].isupper() and not first.isupper():
        return f"{first.lower()} {rest}".rstrip()
    return phrase


def is_participle(word: str) -> bool:
    """A past participle, as far as a suffix check and a short irregular list can tell."""
    return word in IRREGULAR_PARTICIPLES or (len(word) > 4 and word.endswith("ed"))


def is_person(name: str, description: str = "") -> bool:
    """Guess whether a name/description refers to a person, to choose "Who" over "What"."""
    first = name.split(" ", 1)[0].rstrip(".").lower()
    words = {w.lower() for w in WORD_RE.findall(description)}
    return first in PERSON_TITLES or bool(words & PERSON_NOUNS)


def clause_tail(rest: str) -> str | None:
    """The text after the answer up to the end of its clause, if short enough to keep in a question.

    Returns "" when the clause ends at the answer, None when the continuation is too long to carry.
    """
    clause = re.split(r"[,;:(—–]", rest, maxsplit=1)[0]
    clause = clause.strip().rstrip(".!?…" + CLOSERS).strip()
    if not clause:
        return ""
    if word_count(clause) > MAX_ANSWER_WORDS or any(ch in clause for ch in OPENERS):
        return None
    return clause
