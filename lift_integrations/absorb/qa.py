"""Auxiliary QA generators: where the question-answer pairs trained alongside the segments come from.

A generator is anything with ``generate(document, n, rng) -> list[QAPair]``. Three are built in:

* :class:`ExtractiveQAGenerator`: deterministic questions from the document's own sentences; needs no
  LLM, so it works even with a 135M model.
* :class:`PromptedQAGenerator`: the paper's prompt sent to an LLM (the model itself, any callable
  ``prompt -> reply`` or a LangChain chat model), keeping only replies whose evidence is verbatim.
* a user callable that returns pairs directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lift_integrations.absorb.extractive import extractive_qa_pairs, split_sentences
from lift_integrations.absorb.types import Document, QAPair
from lift_integrations.sharing import ALONE, WorkShare

QA_PROMPT = (
    "You are given a piece of text as the context. You should generate ONLY one question and the "
    "corresponding answer according to the context. You should also select one or more sentences directly "
    "from the original context as the evidence. The evidences must be verbatim sentences from the context. "
    "Please answer in the following format: \nQuestion: [question] \nAnswer: [answer] "
    "\nEvidence: [evidence]\n"
    "Please DON'T output quotes when outputting evidences. The following is the piece of text: {context}"
)
WINDOW_SENTENCES = 16
MAX_ATTEMPTS = 5

_MARKERS = re.compile(r"(Question|Answer|Evidence)\s*:", re.IGNORECASE)


@runtime_checkable
class QAGenerator(Protocol):
    def generate(self, document: Document, n: int, rng: np.random.Generator) -> list[QAPair]: ...


@runtime_checkable
class SharedQAGenerator(Protocol):
    """A generator whose work can be split between the ranks of a distributed absorption.

    ``generate_shared(document, n, rng, share)`` is collective (every rank calls it with the same
    arguments but its own ``share``) and must return, on every rank, exactly what ``generate(document,
    n, rng)`` returns, leaving ``rng`` in the same state.
    """

    def generate_shared(
        self, document: Document, n: int, rng: np.random.Generator, share: WorkShare
    ) -> list[QAPair]: ...


class ExtractiveQAGenerator:
    """Questions built from the document's sentences, answers copied verbatim from them.

    Under a distributed absorption each rank builds the questions of its share of the sentences
    (:meth:`generate_shared`); a subclass that overrides :meth:`generate` alone runs it whole on every rank.
    """

    def generate(self, document: Document, n: int, rng: np.random.Generator) -> list[QAPair]:
        return self.generate_shared(document, n, rng, ALONE)

    def generate_shared(
        self, document: Document, n: int, rng: np.random.Generator, share: WorkShare
    ) -> list[QAPair]:
        """:meth:`generate`, with the sentences' questions built by the ranks of ``share`` (collective)."""
        if n <= 0:
            return []
        seed = int(rng.integers(0, 2**31 - 1))
        return extractive_qa_pairs(document.text, title=document.title, max_pairs=n, seed=seed, share=share)


def parse_qa_reply(reply: str) -> QAPair | None:
    """Read ``Question: … Answer: … Evidence: …`` from an LLM reply; ``None`` if a part is missing."""
    if not isinstance(reply, str):
        return None
    parts: dict[str, str] = {}
    matches = list(_MARKERS.finditer(reply))
    for index, match in enumerate(matches):
        key = match.group(1).lower()
        end = matches[index + 1].start() if index + 1 < len(matches) else len(reply)
        if key not in parts:
            parts[key] = reply[match.end() : end].strip().strip('"').strip()
    question, answer, evidence = parts.get("question"), parts.get("answer"), parts.get("evidence")
    if not question or not answer or not evidence:
        return None
    return QAPair(question=question, answer=answer, evidence=evidence)


def _normalize_space(text: str) -> str:
    return " ".join(text.split())


class PromptedQAGenerator:
    """The paper's generator: an LLM writes one QA pair per 16-sentence window, with verbatim evidence.

    ``complete(prompt, attempt)`` returns the LLM's reply; the attempt number lets it sample on retries
    (greedy retries would only repeat the same rejected reply, a pitfall of the paper's code). A reply is
    kept only when its evidence is a verbatim part of the window, and up to ``MAX_ATTEMPTS`` tries are
    made per pair.
    """

    def __init__(self, complete: Callable[[str, int], str]) -> None:
        self.complete = complete

    def generate(self, document: Document, n: int, rng: np.random.Generator) -> list[QAPair]:
        sentences = split_sentences(document.text)
        if n <= 0 or not sentences:
            return []
        size = min(WINDOW_SENTENCES, len(sentences))
        pairs: list[QAPair] = []
        for _ in range(n):
            start = int(rng.integers(0, len(sentences) - size + 1))
            window = " ".join(sentences[start : start + size])
            for attempt in range(MAX_ATTEMPTS):
                pair = parse_qa_reply(self.complete(QA_PROMPT.format(context=window), attempt))
                if pair is not None and _normalize_space(pair.evidence or "") in _normalize_space(window):
                    pairs.append(pair)
                    break
        return pairs


class CallableQAGenerator:
    """Wraps a user function ``fn(document) -> list of (question, answer) or QAPair``."""

    def __init__(self, fn: Callable[[Document], Sequence[Any]]) -> None:
        self.fn = fn

    def generate(self, document: Document, n: int, rng: np.random.Generator) -> list[QAPair]:
        pairs: list[QAPair] = []
        for item in self.fn(document):
            if isinstance(item, QAPair):
                pairs.append(item)
            elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
                pairs.append(QAPair(question=item[0], answer=item[1]))
            else:
                raise TypeError(
                    f"a QA generator function must return QAPair or (question, answer) pairs, got {item!r}"
                )
        return pairs[:n] if n >= 0 else pairs


def chat_model_completer(chat_model: Any) -> Callable[[str, int], str]:
    """Adapt a LangChain chat model (anything with ``invoke(prompt) -> message``) to ``complete``."""

    def complete(prompt: str, attempt: int) -> str:
        reply = chat_model.invoke(prompt)
        content = getattr(reply, "content", reply)
        return content if isinstance(content, str) else str(content)

    return complete


def resolve_qa_generator(
    generator: Any, default: str, self_completer: Callable[[str, int], str]
) -> QAGenerator | None:
    """Turn the ``generator`` argument of ``absorb`` into a :class:`QAGenerator` (``None``: no QA).

    Accepted: ``None`` (the config's ``qa_generator``), ``"extractive"``, ``"model"`` (the base model
    itself), ``"none"``, a :class:`QAGenerator`, a LangChain-style chat model (has ``invoke``), a
    function ``prompt -> reply`` (paper prompt + evidence filter). To supply pairs directly, wrap a
    function in :class:`CallableQAGenerator`.
    """
    choice = default if generator is None else generator
    if isinstance(choice, str):
        if choice == "extractive":
            return ExtractiveQAGenerator()
        if choice == "model":
            return PromptedQAGenerator(self_completer)
        if choice == "none":
            return None
        raise ValueError(f"unknown QA generator {choice!r}; expected 'extractive', 'model' or 'none'")
    if isinstance(choice, QAGenerator):
        return choice
    if hasattr(choice, "invoke"):
        return PromptedQAGenerator(chat_model_completer(choice))
    if callable(choice):
        return PromptedQAGenerator(lambda prompt, attempt: choice(prompt))
    raise TypeError(
        f"generator must be a name, a QAGenerator, a chat model or a callable; got {type(choice).__name__}"
    )
