"""Attach a memory only to the questions it was absorbed for.

A memory answers every question in its documents' voice. Trained on dense QA, a Gated Memory makes
SmolLM2-135M answer "Which planet is known as the Red Planet?" with "Vega" and, with an unrelated
paragraph in context, name people from the absorbed article (docs/tuning.md, sweep 10: contains-gold on
unrelated questions falls by about a third). The gate was meant to close on such questions; a short
absorption does not teach it to. A user who keeps one model for many questions needs the memory to stay
out of the unrelated ones.

:class:`MemoryRouter` decides per question, as a retriever decides what to put in context: the question's
relevance to the memory's own documents (sentence windows, embedded once) against a threshold. The
relevance is the highest cosine similarity to a passage plus :data:`LEXICAL_WEIGHT` times the lexical
coverage (:class:`LexicalIndex`): the share of the question's content words, weighted by their rarity in
the memory, that its best passage contains. A question about a document shares its rare words (names,
places, terms) with one passage and a general one does not, while the similarity alone misses questions
that name a passage's subjects in other words than the passage's. By default the threshold calibrates
itself, without any evaluation data: a high quantile (:data:`CALIBRATION_QUANTILE`) of the relevance that
the package's replay questions (general-knowledge questions and questions about short invented passages,
``lift_integrations/data/replay_prompts.json``, none of them about a user's document) reach on this
memory. On the three SQuAD dev articles this sends 98% of the articles' questions to their memories and 1
of 60 unrelated probe questions; on the three concatenated into one 13,852-token document, 90% of its
questions (docs/tuning.md, sweep 17). A question routed away is answered by the base model exactly as if
no memory had been absorbed.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lift_integrations.absorb.extractive import split_sentences
from lift_integrations.absorb.replay import load_replay_prompts
from lift_integrations.gathering import GatheredCalls
from lift_integrations.validation import check_float

if TYPE_CHECKING:
    from lift_integrations.memory import Memory

__all__ = [
    "LexicalIndex",
    "MemoryRouter",
    "RouterSlot",
    "content_words",
    "conversation_query",
    "default_embedder",
    "document_embedder",
    "is_follow_up",
    "load_calibration_questions",
    "memory_passages",
    "text_memory",
]

Embedder = Callable[[Sequence[str]], Any]
"""Texts to one embedding row each (any array-like); rows are L2-normalised here."""

WINDOW_SENTENCES = 3
"""Sentences per passage: about a retrieval chunk's worth of text, so one fact's words stay together."""

LEXICAL_WEIGHT = 0.5
"""How much the lexical coverage (0 to 1) adds to the cosine similarity in a question's relevance."""

CALIBRATION_QUANTILE = 0.99
"""The quantile of the replay questions' relevance that a question must exceed.

This and :data:`LEXICAL_WEIGHT` were chosen together on 21 SQuAD articles the comparison does not use
(docs/tuning.md, sweep 17; ``benchmarks/routing_accuracy.py``), by a rule fixed beforehand: the highest
recall of a memory's own questions with under 2% of other articles' questions routed to it, for
one-article and three-article memories alike. Weights 0 to 0.5 and quantiles 0.9 to 1 were tried."""

CALIBRATION_QUESTIONS_FILE = Path(__file__).resolve().parent / "data" / "calibration_questions.json"
"""216 encyclopedic general-knowledge questions (geography, science, history, the arts, sport, technology,
everyday life), written for this project and released under its license, for ``BankRouter``'s
``calibration="bank"``. Few replay questions are encyclopedic, and an encyclopedic question about a
bank's subjects reaches a far higher relevance on its memories than they do. None of them is
one of the general-ability probe's questions (``examples/data/general_questions.json``): each one whose
all-MiniLM-L6-v2 cosine similarity to a probe question reached 0.7 was left out (the highest kept: 0.69)."""


@cache
def load_calibration_questions() -> tuple[str, ...]:
    """The questions of :data:`CALIBRATION_QUESTIONS_FILE`."""
    entries = json.loads(CALIBRATION_QUESTIONS_FILE.read_text(encoding="utf-8"))
    return tuple(entry["question"] for entry in entries)


STOP_WORDS = frozenset(
    (  # noqa: SIM905 (one string reads better than ninety quoted words)
        "a an the of in on at to for from by with and or is are was were be been being what which who whom "
        "whose when where why how did do does that this these those it its as into than then there their "
        "they he she his her him not no can could would should may might will shall has have had about "
        "after before during over under between most many much more other some any such one two three "
        "first also only year years called name named"
    ).split()
)
"""Words that say what kind of question it is, not what it is about: left out of the lexical coverage."""

_WORD = re.compile(r"\w+")


def content_words(text: str) -> set[str]:
    """The lower-cased words of ``text`` longer than two characters, less :data:`STOP_WORDS`."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOP_WORDS}


class LexicalIndex:
    """How much of a question's vocabulary one passage of the memory covers.

    A content word's weight is its inverse passage frequency, ``log((N + 1) / (df + 0.5))``, so a word
    absent from the memory weighs most and one in every passage least; a question's coverage is the
    weight of its words that its best passage contains over the weight of all its words.
    """

    def __init__(self, passages: Sequence[str]) -> None:
        self._postings: dict[str, list[int]] = {}
        for index, passage in enumerate(passages):
            for word in content_words(passage):
                self._postings.setdefault(word, []).append(index)
        self._passages = len(passages)

    def _weight(self, word: str) -> float:
        return math.log((self._passages + 1) / (len(self._postings.get(word, ())) + 0.5))

    def coverage(self, questions: Sequence[str]) -> np.ndarray:
        """Each question's best passage's share of its content words' weight (0 for no content words)."""
        scores = np.zeros(len(questions), dtype=np.float32)
        for row, question in enumerate(questions):
            weights = {word: self._weight(word) for word in content_words(question)}
            total = sum(weights.values())
            if total <= 0.0:
                continue
            covered = np.zeros(self._passages, dtype=np.float64)
            for word, weight in weights.items():
                if word in self._postings:
                    covered[self._postings[word]] += weight
            scores[row] = covered.max(initial=0.0) / total
        return scores


REFERRING_WORDS = frozenset(
    (  # noqa: SIM905 (one string reads better than many quoted words)
        "it its itself they them their theirs themselves he him his himself she her hers herself "
        "this these those"
    ).split()
)
"""Words by which a chat turn names a subject of an earlier turn ("What is its population?")."""

CHAT_WORDS = frozenset(
    (  # noqa: SIM905 (one string reads better than many quoted words)
        "tell explain elaborate continue expand say give show detail details example examples please okay "
        "thanks thank yes sure again else"
    ).split()
)
"""Words that ask for more without naming a subject ("Tell me more.", "Explain again, please.")."""

MAX_FOLLOW_UP_TURNS = 4
"""The most earlier user turns a follow-up is routed with."""

_SENTENCE_WORDS = re.compile(r"[^.!?]+")


def is_follow_up(turn: str) -> bool:
    """Whether a user turn leans on an earlier one for its subject: it has no content word ("Why?") or a
    referring word (:data:`REFERRING_WORDS`) and names nothing itself (no capitalised word inside a
    sentence, as "France" in "What is the capital of France and its population?"). Words of
    :data:`CHAT_WORDS` ("Tell me more.") do not count as content."""
    text = turn.strip()
    if not content_words(text) - CHAT_WORDS:
        return True
    if not set(_WORD.findall(text.lower())) & REFERRING_WORDS:
        return False
    return not any(_names_something(sentence) for sentence in _SENTENCE_WORDS.findall(text))


def _names_something(sentence: str) -> bool:
    """Whether a capitalised word other than "I" appears after a sentence's first word."""
    return any(word[0].isupper() and word != "I" for word in _WORD.findall(sentence)[1:])


def conversation_query(messages: Sequence[Mapping[str, str]]) -> str:
    """The text a chat is routed on: its last user turn, and, when that turn is a follow-up
    (:func:`is_follow_up`), the user turns before it back to the last one that stands alone (at most
    :data:`MAX_FOLLOW_UP_TURNS`). A follow-up about the memory's documents ("What is its population?"
    after a question about them) then stays with the memory, while a question that stands alone is
    routed by itself, so an unrelated one gets the base model whatever the conversation began with.
    System and assistant turns are left out: a system prompt says how to answer, not what about."""
    turns = [m["content"] for m in messages if m["role"] == "user"]
    if not turns:
        return ""
    picked = [turns[-1]]
    for turn in reversed(turns[:-1]):
        if not is_follow_up(picked[0]) or len(picked) > MAX_FOLLOW_UP_TURNS:
            break
        picked.insert(0, turn)
    return "\n".join(picked)


_DEFAULT_EMBEDDERS: dict[str, Embedder] = {}
_DEFAULT_EMBEDDER_LOCK = threading.Lock()


def default_embedder() -> Embedder:
    """all-MiniLM-L6-v2 (the embedded copy, or ``$LIFT_DEFAULT_EMBEDDING``) through sentence-transformers,
    on the CPU: a few milliseconds per question, and the GPU stays free for the model. Loaded once per
    process: every router (routing is on by default in both frameworks) shares it."""
    from lift_integrations.loading import default_embedding_path

    path = str(default_embedding_path())
    with _DEFAULT_EMBEDDER_LOCK:
        if path not in _DEFAULT_EMBEDDERS:
            _DEFAULT_EMBEDDERS[path] = _load_embedder(path)
        return _DEFAULT_EMBEDDERS[path]


def _load_embedder(path: str) -> Embedder:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")

    def embed(texts: Sequence[str]) -> Any:
        return model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)

    return embed


def document_embedder(embeddings: Any) -> Embedder:
    """An :data:`Embedder` from any object with LangChain's ``embed_documents(list[str])`` (a LangChain
    ``Embeddings``, for one): routers then share the embeddings a RAG chain already uses."""

    def embed(texts: Sequence[str]) -> Any:
        return embeddings.embed_documents(list(texts))

    return embed


def memory_passages(memory: Memory) -> list[str]:
    """The memory's documents as overlapping windows of :data:`WINDOW_SENTENCES` sentences (a window
    starts every two sentences), each prefixed with its document's title when it has one."""
    passages: list[str] = []
    for document in memory.documents:
        sentences = split_sentences(document.text) or [document.text]
        prefix = f"{document.title}: " if document.title else ""
        step = max(1, WINDOW_SENTENCES - 1)
        for start in range(0, max(1, len(sentences) - 1), step):
            window = " ".join(sentences[start : start + WINDOW_SENTENCES]).strip()
            if window:
                passages.append(prefix + window)
    return passages


def text_memory(documents: Sequence[tuple[str, str]]) -> Memory:
    """A memory of ``(title, text)`` documents that holds no weights: all a router reads. It lets a
    router decide before (or without) an absorption, e.g. for a memory still being absorbed elsewhere;
    it cannot be attached to a model."""
    from lift_integrations.config import LIFTConfig
    from lift_integrations.documents import normalize_documents
    from lift_integrations.memory import Memory

    return Memory(
        adapter_kind="none",
        adapter_config={},
        tensors={},
        # Normalised as absorb normalises them (titles stripped), so the passages are the same.
        documents=normalize_documents(list(documents)),
        config=LIFTConfig(),
        base_model_name="none",
        base_fingerprint="none",
    )


def normalised_rows(rows: Any, texts: int) -> np.ndarray:
    """``rows`` as a float32 matrix of unit rows, one per text (an embedder's output checked)."""
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != texts:
        raise ValueError(
            f"an embedder must return one row per text: {texts} texts gave an array of shape {matrix.shape}"
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def check_router_options(margin: Any, quantile: Any, lexical_weight: Any) -> tuple[float, float, float]:
    """``margin`` (a finite number), ``quantile`` (in [0, 1]) and ``lexical_weight`` (>= 0) as floats,
    each refused by name when it is not a number (``TypeError``) or out of range (``ValueError``)."""
    return (
        check_float(margin, "margin"),
        check_float(quantile, "quantile", at_least=0.0, at_most=1.0),
        check_float(lexical_weight, "lexical_weight", at_least=0.0),
    )


class EmbeddingRouter:
    """What every router shares: its embedder, loaded on first use (default: :func:`default_embedder`),
    and its checked options (see :class:`MemoryRouter`)."""

    def __init__(
        self,
        *,
        embed: Embedder | None = None,
        margin: float = 0.0,
        quantile: float = CALIBRATION_QUANTILE,
        lexical_weight: float = LEXICAL_WEIGHT,
    ) -> None:
        checked = check_router_options(margin, quantile, lexical_weight)
        self.margin, self.quantile, self.lexical_weight = checked
        self._embed = embed

    @property
    def embed(self) -> Embedder:
        if self._embed is None:
            self._embed = default_embedder()
        return self._embed


class MemoryRouter(EmbeddingRouter):
    """Chooses, per question, the memory or the base model.

    A question's relevance is its highest cosine similarity to a passage of the memory's documents plus
    ``lexical_weight`` (default :data:`LEXICAL_WEIGHT`; 0 for the similarity alone) times its lexical
    coverage (:class:`LexicalIndex`). ``embed`` maps texts to embeddings (default:
    :func:`default_embedder`). ``threshold`` is the relevance a question must exceed; ``None`` calibrates
    it on the package's replay questions (see the module docstring): their ``quantile`` (default
    :data:`CALIBRATION_QUANTILE`; 1.0 is the highest of them), plus ``margin``. Use
    :meth:`route` to get the memory to pass to :meth:`LIFTModel.generate
    <lift_integrations.LIFTModel.generate>` (``None``: the base model)::

        router = MemoryRouter(memory)
        answer = lift.generate(question, memory=router.route(question))
    """

    def __init__(
        self,
        memory: Memory | str | os.PathLike[str],
        *,
        embed: Embedder | None = None,
        threshold: float | None = None,
        margin: float = 0.0,
        quantile: float = CALIBRATION_QUANTILE,
        lexical_weight: float = LEXICAL_WEIGHT,
    ) -> None:
        super().__init__(embed=embed, margin=margin, quantile=quantile, lexical_weight=lexical_weight)
        if threshold is not None and not -1.0 <= threshold <= 1.0 + lexical_weight:
            raise ValueError(
                "threshold is a relevance (cosine similarity plus lexical_weight times a coverage in "
                f"[0, 1]) in [-1, {1.0 + lexical_weight:g}], got {threshold!r}"
            )
        from lift_integrations.memory import memory_from

        resolved = memory_from(memory)
        if resolved is None:
            raise TypeError("MemoryRouter needs a memory (a Memory, a folder or a hub id), got None")
        self.memory = resolved
        self._threshold = threshold
        self._wanted = GatheredCalls(self.wants)

    @cached_property
    def _passage_texts(self) -> list[str]:
        passages = memory_passages(self.memory)
        if not passages:
            raise ValueError("the memory holds no document text to route by")
        return passages

    @cached_property
    def _passages(self) -> np.ndarray:
        return normalised_rows(self.embed(self._passage_texts), len(self._passage_texts))

    @cached_property
    def _lexical(self) -> LexicalIndex:
        return LexicalIndex(self._passage_texts)

    @property
    def threshold(self) -> float:
        """The relevance above which a question goes to the memory (calibrated on first use)."""
        if self._threshold is None:
            replay = self.relevance([p.question for p in load_replay_prompts()])
            self._threshold = float(np.quantile(replay, self.quantile))
        return self._threshold + self.margin

    def relevance(self, questions: Sequence[str]) -> np.ndarray:
        """Each question's highest cosine similarity to a passage of the memory's documents, plus
        ``lexical_weight`` times its lexical coverage."""
        if isinstance(questions, str):
            raise TypeError("relevance takes a list of questions; use route() for one")
        if not questions:
            return np.zeros(0, dtype=np.float32)
        questions = list(questions)
        similarity = (normalised_rows(self.embed(questions), len(questions)) @ self._passages.T).max(axis=1)
        if self.lexical_weight == 0.0:
            return similarity
        return similarity + self.lexical_weight * self._lexical.coverage(questions)

    def wants(self, questions: Sequence[str]) -> list[bool]:
        """Whether each question goes to the memory."""
        threshold = self.threshold
        return [bool(score > threshold) for score in self.relevance(questions)]

    def route(self, question: str) -> Memory | None:
        """The memory when ``question`` is about its documents, else ``None`` (the base model); concurrent
        calls (request threads) are embedded together."""
        return self.memory if self._wanted(question) else None


class RouterSlot:
    """The router of whichever memory a framework adapter holds: built on first use and again whenever
    the memory changes (an absorb or a load gives the adapter a new one)."""

    def __init__(self, embed: Embedder | None = None) -> None:
        self.embed = embed
        self._router: MemoryRouter | None = None
        self._lock = threading.Lock()  # concurrent calls (a batch) build and calibrate one router

    def route_chat(self, memory: Memory | None, messages: Sequence[Mapping[str, str]]) -> Memory | None:
        """:meth:`route` for a chat (``{"role", "content"}`` turns) on its :func:`conversation_query`."""
        return self.route(memory, conversation_query(messages))

    def route(self, memory: Memory | None, question: str) -> Memory | None:
        """``memory`` when ``question`` is about its documents, else ``None`` (also for an empty question)."""
        if memory is None or not question.strip():
            return None
        with self._lock:
            router = self._router
            if router is None or router.memory is not memory:
                router = self._router = MemoryRouter(memory, embed=self.embed)
                _ = router.threshold
                self.embed = router.embed  # the default embedder loads once, not once per memory
        return router.route(question)
