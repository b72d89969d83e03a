"""Routing among the memories of a :class:`~lift_integrations.bank.MemoryBank`: per question, the one memory
it is about, or none.

The relevance is :class:`~lift_integrations.routing.MemoryRouter`'s, computed with one embedding search over
the passages of every memory (the bank's documents, read from its manifest, so routing loads no tensors),
against each memory's calibrated threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np

from lift_integrations.gathering import GatheredCalls
from lift_integrations.routing import (
    CALIBRATION_QUANTILE,
    LEXICAL_WEIGHT,
    Embedder,
    EmbeddingRouter,
    LexicalIndex,
    load_calibration_questions,
    memory_passages,
    normalised_rows,
    text_memory,
)
from lift_integrations.validation import check_float


class TitledText(Protocol):
    @property
    def title(self) -> str: ...

    @property
    def text(self) -> str: ...


class RoutableBank(Protocol):
    """What a :class:`BankRouter` reads of a bank (a :class:`~lift_integrations.bank.MemoryBank`, or any
    collection of named documents): the memories' names and each one's documents, never its tensors."""

    @property
    def names(self) -> list[str]: ...

    def documents(self, name: str) -> Sequence[TitledText]: ...

    def __len__(self) -> int: ...


__all__ = [
    "BANK_LEXICAL_WEIGHT",
    "BANK_QUANTILE",
    "CALIBRATIONS",
    "CANDIDATES",
    "BankRouter",
    "BankRouting",
    "Calibration",
    "RoutableBank",
    "bank_routing_for",
]

CANDIDATES = 8
"""Memories whose lexical coverage is computed for a question: the closest by embedding alone."""

Calibration = Literal["per_memory", "joint", "bank"]
CALIBRATIONS: tuple[Calibration, ...] = ("per_memory", "joint", "bank")
"""The ways a :class:`BankRouter` calibrates its thresholds (see its docstring)."""


BANK_QUANTILE = 0.9
"""``calibration="bank"``'s default ``quantile``: the bank may claim a tenth of the calibration questions.
Chosen with :data:`BANK_LEXICAL_WEIGHT` as the rule that keeps at least 90% of the memories' own questions
while claiming the fewest unrelated ones (docs/routing.md, "Routing in a bank")."""
BANK_LEXICAL_WEIGHT = 0.25
"""``calibration="bank"``'s default ``lexical_weight``."""


@dataclass(frozen=True)
class BankRouting:
    """How a :class:`BankRouter` decides: the options that :class:`BankRouter`,
    :meth:`MemoryBank.router <lift_integrations.bank.MemoryBank.router>` and the LangChain and LlamaIndex
    bindings (``bank_routing=``) all take, checked here, once, when it is built.

    ``margin`` (a finite number, default 0) is added to every memory's threshold; ``calibration``:
    ``"bank"`` (default) sets one bank-wide threshold on the replay and calibration questions,
    ``"per_memory"`` keeps each memory's own threshold, ``"joint"`` raises them all by the one shift
    that lets the bank claim no more of the replay questions than one memory does (see
    :class:`BankRouter`); ``quantile`` (in [0, 1]) is the quantile of the calibrating questions'
    relevance a question must beat; ``lexical_weight`` (>= 0) weighs the lexical coverage against the
    similarity. Left ``None``, those two take the calibration's defaults: :data:`BANK_QUANTILE` and
    :data:`BANK_LEXICAL_WEIGHT` for ``"bank"``, ``MemoryRouter``'s
    (:data:`~lift_integrations.routing.CALIBRATION_QUANTILE`,
    :data:`~lift_integrations.routing.LEXICAL_WEIGHT`) for the others. A larger ``margin`` or
    ``quantile`` sends fewer unrelated questions to a memory and more of its own questions to the base
    model (docs/routing.md, "Routing in a bank").
    """

    margin: float = 0.0
    calibration: Calibration = "bank"
    quantile: float | None = None
    lexical_weight: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.calibration, str) or self.calibration not in CALIBRATIONS:
            names = ", ".join(CALIBRATIONS)
            raise ValueError(f"calibration must be one of {names}, got {self.calibration!r}")
        # As floats: equal options compare and print equal.
        object.__setattr__(self, "margin", check_float(self.margin, "margin"))
        if self.quantile is not None:
            object.__setattr__(
                self, "quantile", check_float(self.quantile, "quantile", at_least=0.0, at_most=1.0)
            )
        if self.lexical_weight is not None:
            object.__setattr__(
                self, "lexical_weight", check_float(self.lexical_weight, "lexical_weight", at_least=0.0)
            )

    def resolved(self) -> BankRouting:
        """These options with the calibration's defaults in place of ``quantile`` and
        ``lexical_weight`` left ``None``."""
        bank = self.calibration == "bank"
        return replace(
            self,
            quantile=self.quantile
            if self.quantile is not None
            else (BANK_QUANTILE if bank else CALIBRATION_QUANTILE),
            lexical_weight=self.lexical_weight
            if self.lexical_weight is not None
            else (BANK_LEXICAL_WEIGHT if bank else LEXICAL_WEIGHT),
        )

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values (what the bindings persist; :meth:`of` reads it back)."""
        return asdict(self)

    @classmethod
    def of(cls, value: BankRouting | Mapping[str, Any] | None) -> BankRouting:
        """``value`` as options: ``None`` gives the defaults, a mapping (from JSON, or
        ``{"margin": 0.1}``) sets the options it names and leaves the others at their defaults."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = [field.name for field in fields(cls)]
            unknown = sorted(str(key) for key in value if key not in known)
            if unknown:
                raise ValueError(f"unknown bank routing options {unknown}; the options are {known}")
            return cls(**value)
        raise TypeError(
            f"bank routing options must be a BankRouting, a dict of its options or None, "
            f"got {type(value).__name__}"
        )

    @classmethod
    def optional(cls, value: BankRouting | Mapping[str, Any] | None) -> BankRouting | None:
        """``value`` as options (:meth:`of`), or ``None`` (not set: the bank's own routing) as it is."""
        return None if value is None else cls.of(value)


def bank_routing_for(
    memory_per: object, value: BankRouting | Mapping[str, Any] | None, field_owner: str
) -> BankRouting | None:
    """A ``bank_routing=`` argument, checked, or ``None`` when not given. It routes a bank, so it goes with
    ``memory_per="document"`` only; elsewhere the error points to ``field_owner``'s field instead."""
    if value is None:
        return None
    if memory_per != "document":
        raise ValueError(
            "bank_routing= sets how a memory bank routes: pass it with memory_per='document' (or set the "
            f"{field_owner}'s bank_routing field)"
        )
    return BankRouting.of(value)


class BankRouter(EmbeddingRouter):
    """Per question, the name of the memory of ``bank`` it is about, or ``None`` (the base model).

    Each memory's relevance is :class:`~lift_integrations.routing.MemoryRouter`'s: the highest cosine
    similarity to one of its passages plus ``lexical_weight`` times the lexical coverage, computed for
    the :data:`CANDIDATES` memories closest by similarity. A memory qualifies when its relevance beats
    its threshold (plus ``margin``); of those, the one furthest above it wins.
    The options come as ``routing`` (a :class:`BankRouting`), or one by one as keywords, which override
    ``routing``'s; :attr:`routing` holds the options in use.

    ``calibration`` sets the thresholds. Calibrated alone, as :class:`MemoryRouter` calibrates one memory
    (``"per_memory"``: the ``quantile`` of the package's replay questions' relevance on it), each of many
    memories claims its own share of unrelated questions, and together they claim more (docs/routing.md,
    "Routing in a bank"). ``"joint"`` raises every threshold by the shift that makes the bank as a whole
    claim no more of the replay questions than one memory does. ``"bank"`` (the default) calibrates on
    the replay questions and the package's encyclopedic calibration questions
    (:data:`~lift_integrations.routing.CALIBRATION_QUESTIONS_FILE`): a memory's relevance counts in
    standard deviations above the mean those questions reach on it, and one threshold for the bank lets
    it claim ``1 - quantile`` of them. At the same share of unrelated questions routed it keeps more of
    the memories' own questions than ``margin`` or ``"joint"`` do; no rule keeps both, so ``quantile``
    sets the trade. With ``per_memory`` or ``joint``, a bank of one memory routes exactly as
    ``MemoryRouter(memory)``.
    """

    def __init__(
        self,
        bank: RoutableBank,
        *,
        embed: Embedder | None = None,
        routing: BankRouting | Mapping[str, Any] | None = None,
        quantile: float | None = None,
        lexical_weight: float | None = None,
        margin: float | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        given = dict(quantile=quantile, lexical_weight=lexical_weight, margin=margin, calibration=calibration)
        options: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
        self.routing = replace(BankRouting.of(routing), **options).resolved()
        if not len(bank):
            raise ValueError("the bank holds no memories to route to")
        assert self.routing.quantile is not None and self.routing.lexical_weight is not None
        super().__init__(
            embed=embed,
            margin=self.routing.margin,
            quantile=self.routing.quantile,
            lexical_weight=self.routing.lexical_weight,
        )
        self.calibration: Calibration = self.routing.calibration
        self.names = bank.names
        self._documents = [bank.documents(name) for name in self.names]
        self._routes = GatheredCalls(self.route_many)

    @cached_property
    def _passages(self) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """Each memory's passages, all of them embedded in one matrix, and where each memory's start."""
        passages = [
            memory_passages(text_memory([(d.title, d.text) for d in docs])) for docs in self._documents
        ]
        texts = [p for per_memory in passages for p in per_memory]
        matrix = normalised_rows(self.embed(texts), len(texts))
        starts = np.cumsum([0, *(len(p) for p in passages)])[:-1]
        return passages, matrix, starts

    @cached_property
    def _lexical(self) -> list[LexicalIndex]:
        return [LexicalIndex(p) for p in self._passages[0]]

    def relevance(self, questions: Sequence[str]) -> np.ndarray:
        """``(questions, memories)``: each memory's relevance; ``-inf`` where it was not a candidate."""
        questions = list(questions)
        return self._candidate_relevance(self._similarity(questions), questions)

    def _similarity(self, questions: list[str]) -> np.ndarray:
        """``(questions, memories)``: each question's highest cosine similarity to a memory's passages."""
        _, matrix, starts = self._passages
        similarity = normalised_rows(self.embed(questions), len(questions)) @ matrix.T
        return np.maximum.reduceat(similarity, starts, axis=1) if len(questions) else similarity

    def _candidate_relevance(self, similarity: np.ndarray, questions: list[str]) -> np.ndarray:
        """``similarity`` plus the lexical coverage for each question's :data:`CANDIDATES` closest memories;
        ``-inf`` for the others."""
        if self.lexical_weight == 0.0 or not len(questions):
            return similarity
        result = np.full_like(similarity, -np.inf)
        count = min(CANDIDATES, similarity.shape[1])
        candidates = np.argsort(-similarity, axis=1)[:, :count]
        for memory in np.unique(candidates):
            rows = np.flatnonzero((candidates == memory).any(axis=1))
            coverage = self._lexical[memory].coverage([questions[r] for r in rows])
            result[rows, memory] = similarity[rows, memory] + self.lexical_weight * coverage
        return result

    @property
    def thresholds(self) -> np.ndarray:
        """Each memory's calibrated threshold (plus ``margin``): the ``quantile`` of the replay questions'
        relevance on that memory, and with ``calibration="joint"`` one shift for all of them; with
        ``"bank"``, the mean plus one multiple of the standard deviation of the relevance that the replay
        and calibration questions reach on it."""
        return self._calibrated[0] + self.margin

    @cached_property
    def _calibrated(self) -> tuple[np.ndarray, np.ndarray]:
        """The thresholds (without ``margin``), and the scale a relevance above them is compared in
        (ones, or with ``"bank"`` each memory's standard deviation)."""
        from lift_integrations.absorb.replay import load_replay_prompts

        questions = [p.question for p in load_replay_prompts()]
        if self.calibration == "bank":
            questions += load_calibration_questions()
        similarity = self._similarity(questions)
        alone = similarity.copy()
        if self.lexical_weight:
            for memory, index in enumerate(self._lexical):
                alone[:, memory] += self.lexical_weight * index.coverage(questions)
        if self.calibration == "bank":
            centre = alone.mean(axis=0)
            spread = np.maximum(alone.std(axis=0), 1e-6)
            claimed = ((self._candidate_relevance(similarity, questions) - centre) / spread).max(axis=1)
            return centre + float(np.quantile(claimed, self.quantile)) * spread, spread
        thresholds = np.asarray(np.quantile(alone, self.quantile, axis=0))
        if self.calibration == "joint" and len(self.names) > 1:
            claimed = (self._candidate_relevance(similarity, questions) - thresholds).max(axis=1)
            thresholds = thresholds + max(0.0, float(np.quantile(claimed, self.quantile)))
        return thresholds, np.ones_like(thresholds)

    def route_many(self, questions: Sequence[str]) -> list[str | None]:
        """The memory each question goes to (its name), or ``None``."""
        if isinstance(questions, str):
            raise TypeError("route_many takes a list of questions; use route() for one")
        questions = list(questions)
        if not questions:
            return []
        above = (self.relevance(questions) - self.thresholds) / self._calibrated[1]
        best = above.argmax(axis=1)
        return [
            self.names[m] if above[row, m] > 0 and q.strip() else None
            for row, (m, q) in enumerate(zip(best, questions, strict=True))
        ]

    def route(self, question: str) -> str | None:
        """``route_many([question])[0]``; concurrent calls (request threads) are embedded together."""
        return self._routes(question)
