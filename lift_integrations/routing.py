"""Attach a memory only to the questions it was absorbed for.

A memory answers every question in its documents' voice. Trained on dense QA, a Gated Memory makes
SmolLM2-135M answer "Which planet is known as the Red Planet?" with "Vega" and, with an unrelated
paragraph in context, name people from the absorbed article (docs/tuning.md, sweep 10: contains-gold on
unrelated questions falls by about a third). The gate was meant to close on such questions; a short
absorption does not teach it to. A user who keeps one model for many questions needs the memory to stay
out of the unrelated ones.

:class:`MemoryRouter` decides per question, as a retriever decides what to put in context: the question's
highest cosine similarity to any passage of the memory's own documents (sentence windows, embedded once),
against a threshold. By default the threshold calibrates itself, without any evaluation data: it is the
highest similarity that any of the package's replay questions (general-knowledge questions and questions
about short invented passages, ``lift_integrations/data/replay_prompts.json``, none of them about a
user's document) reaches on this memory. On the three SQuAD dev articles this sends 95% of the articles'
questions to their memories and none of 60 unrelated probe questions (docs/tuning.md, sweep 13); on the
three concatenated into one 13,852-token document, 77% of its questions.
A question routed away is answered by the base model exactly as if no memory had been absorbed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from lift_integrations.absorb.extractive import split_sentences
from lift_integrations.absorb.replay import load_replay_prompts

if TYPE_CHECKING:
    from lift_integrations.memory import Memory

__all__ = ["MemoryRouter", "RouterSlot", "default_embedder", "memory_passages"]

Embedder = Callable[[Sequence[str]], Any]
"""Texts to one embedding row each (any array-like); rows are L2-normalised here."""

WINDOW_SENTENCES = 3
"""Sentences per passage: about a retrieval chunk's worth of text, so one fact's words stay together."""


def default_embedder() -> Embedder:
    """all-MiniLM-L6-v2 (the embedded copy, or ``$LIFT_DEFAULT_EMBEDDING``) through sentence-transformers,
    on the CPU: a few milliseconds per question, and the GPU stays free for the model."""
    from sentence_transformers import SentenceTransformer

    from lift_integrations.loading import default_embedding_path

    model = SentenceTransformer(str(default_embedding_path()), device="cpu")

    def embed(texts: Sequence[str]) -> Any:
        return model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)

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


def _normalised(rows: Any, texts: int) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != texts:
        raise ValueError(
            f"an embedder must return one row per text: {texts} texts gave an array of shape {matrix.shape}"
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class MemoryRouter:
    """Chooses, per question, the memory or the base model.

    ``embed`` maps texts to embeddings (default: :func:`default_embedder`). ``threshold`` is the cosine
    similarity a question must exceed; ``None`` calibrates it on the package's replay questions (see the
    module docstring): their ``quantile`` (1.0, the default: the highest of them), plus ``margin``. Use
    :meth:`route` to get the memory to pass to :meth:`LIFTModel.generate
    <lift_integrations.LIFTModel.generate>` (``None``: the base model)::

        router = MemoryRouter(memory)
        answer = lift.generate(question, memory=router.route(question))
    """

    def __init__(
        self,
        memory: Memory,
        *,
        embed: Embedder | None = None,
        threshold: float | None = None,
        margin: float = 0.0,
        quantile: float = 1.0,
    ) -> None:
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
        if not np.isfinite(margin):
            raise ValueError(f"margin must be a finite number, got {margin!r}")
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile!r}")
        self.quantile = float(quantile)
        self.memory = memory
        self._embed = embed
        self._threshold = threshold
        self.margin = float(margin)

    @property
    def embed(self) -> Embedder:
        if self._embed is None:
            self._embed = default_embedder()
        return self._embed

    @cached_property
    def _passages(self) -> np.ndarray:
        passages = memory_passages(self.memory)
        if not passages:
            raise ValueError("the memory holds no document text to route by")
        return _normalised(self.embed(passages), len(passages))

    @property
    def threshold(self) -> float:
        """The similarity above which a question goes to the memory (calibrated on first use)."""
        if self._threshold is None:
            replay = self.relevance([p.question for p in load_replay_prompts()])
            self._threshold = float(np.quantile(replay, self.quantile))
        return self._threshold + self.margin

    def relevance(self, questions: Sequence[str]) -> np.ndarray:
        """Each question's highest cosine similarity to a passage of the memory's documents."""
        if isinstance(questions, str):
            raise TypeError("relevance takes a list of questions; use route() for one")
        if not questions:
            return np.zeros(0, dtype=np.float32)
        return (_normalised(self.embed(list(questions)), len(questions)) @ self._passages.T).max(axis=1)

    def wants(self, questions: Sequence[str]) -> list[bool]:
        """Whether each question goes to the memory."""
        threshold = self.threshold
        return [bool(score > threshold) for score in self.relevance(questions)]

    def route(self, question: str) -> Memory | None:
        """The memory when ``question`` is about its documents, else ``None`` (the base model)."""
        return self.memory if self.wants([question])[0] else None


class RouterSlot:
    """The router of whichever memory a framework adapter holds: built on first use and again whenever
    the memory changes (an absorb or a load gives the adapter a new one)."""

    def __init__(self, embed: Embedder | None = None) -> None:
        self.embed = embed
        self._router: MemoryRouter | None = None
        self._lock = threading.Lock()  # concurrent calls (a batch) build and calibrate one router

    def route_chat(self, memory: Memory | None, messages: Sequence[Mapping[str, str]]) -> Memory | None:
        """:meth:`route` for a chat (``{"role", "content"}`` turns): the last user turn is the question."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return self.route(memory, question)

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
