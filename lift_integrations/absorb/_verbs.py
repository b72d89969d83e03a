"""Verb forms for the direct-question rules: past tense, participle, base form and third person.

A question turned from a sentence needs another form of its verb: "It was opened by X" asks "Who
opened it?", "X donated the library in 1902" asks "When did X donate the library?". Irregular verbs
come from a short table; regular ones follow the spelling rules, and a form that the rules cannot
tell for sure ("opened": "open" or "opene"?) is ``None``, so the caller asks another phrasing instead.
"""

from __future__ import annotations

# base past participle: the irregular verbs a fact sheet or an encyclopaedia article uses.
_IRREGULAR = """
be was been; begin began begun; bear bore borne; beat beat beaten; become became become;
bring brought brought; build built built; buy bought bought; cast cast cast; catch caught caught;
choose chose chosen; come came come; cut cut cut; do did done; draw drew drawn; drive drove driven;
eat ate eaten; fall fell fallen; feel felt felt; fight fought fought; find found found; fly flew flown;
forget forgot forgotten; freeze froze frozen; get got got; give gave given; go went gone; grow grew grown;
hang hung hung; have had had; hear heard heard; hide hid hidden; hold held held; keep kept kept;
know knew known; lay laid laid; lead led led; leave left left; lend lent lent; lose lost lost;
make made made; mean meant meant; meet met met; pay paid paid; put put put; read read read;
rebuild rebuilt rebuilt; ride rode ridden; rise rose risen; run ran run; say said said; see saw seen;
sell sold sold; send sent sent; set set set; shake shook shaken; shoot shot shot; show showed shown;
shut shut shut; sing sang sung; sink sank sunk; sit sat sat; slay slew slain; speak spoke spoken;
spend spent spent; split split split; stand stood stood; steal stole stolen; strike struck struck;
swear swore sworn; take took taken; teach taught taught; tear tore torn; tell told told;
think thought thought; throw threw thrown; undertake undertook undertaken; wear wore worn;
overthrow overthrew overthrown; win won won; write wrote written; lie lay lain; break broke broken;
wind wound wound; light lit lit;
"""
_FORMS: list[tuple[str, str, str]] = [
    (parts[0], parts[1], parts[2])
    for parts in (entry.split() for entry in _IRREGULAR.replace("\n", " ").split(";"))
    if len(parts) == 3
]
_BASE_OF_PAST = {past: base for base, past, _ in reversed(_FORMS)}
_BASE_OF_PARTICIPLE = {participle: base for base, _, participle in reversed(_FORMS)}
_PAST_OF_BASE = {base: past for base, past, _ in _FORMS}
_PARTICIPLE_OF_BASE = {base: participle for base, _, participle in _FORMS}
IRREGULAR_BASES = frozenset(_PAST_OF_BASE)
_VOWELS = "aeiou"
# Final consonant pairs after which a stem may still need an "e" ("changed", "pulsed", "served").
_UNSURE_PAIRS = frozenset(
    ["ng", "rg", "lg", "dg", "rc", "nc", "rs", "ns", "ps", "ls", "rv", "lv", "rz", "nz", "th"]
)


def _syllables(word: str) -> int:
    """Groups of vowels in ``word``: a rough syllable count."""
    groups, previous = 0, False
    for char in word:
        vowel = char in _VOWELS
        groups += vowel and not previous
        previous = vowel
    return groups


def _regular_base(stem: str) -> str | None:
    """The base form of a regular verb from its "-ed" form minus "ed", or ``None`` when unsure."""
    if len(stem) < 2 or not stem.isalpha():
        return None
    last, before = stem[-1], stem[-2]
    third = stem[-3] if len(stem) > 2 else ""
    third_vowel = third in _VOWELS and stem[-4:-2] != "qu"  # the "u" of "acquired" is no vowel
    if last == before:
        return stem if last in "lsfz" else stem[:-1]  # "called", "passed"; "stopped" -> "stop"
    if last in "cvz" or (last == "s" and before in _VOWELS):
        return stem + "e"  # "produced", "carved", "used", "raised"
    if stem.endswith("at") and third and third not in _VOWELS:
        return stem + "e"  # "donated", "created" (but "treated")
    if last in _VOWELS:
        return None  # "agreed": "agree"
    if last in "wxy":
        return stem  # "showed", "fixed", "played"
    if before not in _VOWELS:
        return None if stem[-2:] in _UNSURE_PAIRS else stem  # "founded", "formed"; "changed" unsure
    if last == "r":
        if before == "e" or third_vowel:
            return stem  # "offered", "appeared", "paired", "floored"
        return stem + "e" if before in "iua" else None  # "acquired", "measured", "declared"; "restored"?
    if third_vowel:
        return stem  # "rained", "treated", "looked"
    return stem + "e" if _syllables(stem) == 1 else None  # "named", "liked"; "opened" is unsure


def base_of_past(past: str) -> str | None:
    """ "donated" -> "donate", "built" -> "build", "opened" -> ``None`` (unsure)."""
    if past in _BASE_OF_PAST:
        return _BASE_OF_PAST[past]
    if past.endswith("ied") and len(past) > 4:
        return past[:-3] + "y"
    if past.endswith("ed") and len(past) > 4:
        return _regular_base(past[:-2])
    return None


def base_of_participle(participle: str) -> str | None:
    """ "written" -> "write", "founded" -> "found"."""
    if participle in _BASE_OF_PARTICIPLE:
        return _BASE_OF_PARTICIPLE[participle]
    return base_of_past(participle) if participle.endswith("ed") else None


def past_of_participle(participle: str) -> str | None:
    """The simple past that turns a passive into an active sentence: "written" -> "wrote"."""
    if participle.endswith("ed") and len(participle) > 4:
        return participle
    base = _BASE_OF_PARTICIPLE.get(participle)
    return _PAST_OF_BASE[base] if base is not None else None


def participle_of_past(past: str) -> str | None:
    """The participle that turns an active sentence into a passive: "wrote" -> "written"."""
    if past.endswith("ed") and len(past) > 4:
        return past
    base = _BASE_OF_PAST.get(past)
    return _PARTICIPLE_OF_BASE[base] if base is not None else None


def is_past(word: str) -> bool:
    """A simple past tense, as far as a suffix check and the irregular table can tell."""
    return (len(word) > 4 and word.endswith("ed")) or word in _BASE_OF_PAST


def third_person(base: str) -> str:
    """ "fund" -> "funds", "finance" -> "finances", "carry" -> "carries", "watch" -> "watches"."""
    if base == "be":
        return "is"
    if base == "have":
        return "has"
    if base.endswith("y") and len(base) > 1 and base[-2] not in _VOWELS:
        return base[:-1] + "ies"
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        return base + "es"
    return base + "s"


def base_of_third_person(verb: str) -> str | None:
    """ "holds" -> "hold", "carries" -> "carry", "watches" -> "watch"; ``None`` if not that form."""
    if verb in ("is", "has", "does", "was"):
        return {"is": "be", "has": "have", "does": "do"}.get(verb)
    if len(verb) < 3 or not verb.endswith("s") or verb.endswith("ss"):
        return None
    if verb.endswith("ies") and len(verb) > 4:
        return verb[:-3] + "y"
    if verb.endswith(("shes", "ches", "xes", "zes", "sses", "oes")):
        return verb[:-2]
    return verb[:-1]
