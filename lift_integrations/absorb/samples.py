"""Training samples: contextualized segments (loss on the segment) and QA pairs (loss on the answer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from lift_integrations.absorb.segmentation import context_view, head_tail, segment_spans
from lift_integrations.absorb.types import Document, QAPair
from lift_integrations.config import LIFTConfig
from lift_integrations.prompting import encode_chat_with_answer, encode_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
SEPARATOR = "..."


@dataclass(frozen=True)
class TrainingSample:
    """One sequence to train on; ``labels`` is ``IGNORE_INDEX`` wherever no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    kind: Literal["segment", "qa"]

    @property
    def supervised_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def document_text(document: Document) -> str:
    """What is segmented: the title, a newline, then the text (the paper's ``title_option=1``)."""
    return f"{document.title}\n{document.text}" if document.title else document.text


def segment_samples(
    tokenizer: PreTrainedTokenizerBase,
    document_ids: Sequence[int],
    config: LIFTConfig,
    rng: np.random.Generator,
) -> list[TrainingSample]:
    """One sample per segment: ``[context view] ... [recite prompt] [segment]``, loss on the segment.

    The view is drawn once per segment when the dataset is built, and stays fixed across epochs.
    """
    separator = encode_text(tokenizer, SEPARATOR)
    prompt = encode_text(tokenizer, config.recite_prompt) if config.contextualized else []
    samples = []
    for start, end in segment_spans(len(document_ids), config.segment_length, config.segment_stride):
        segment = list(document_ids[start:end])
        prefix: list[int] = []
        if config.contextualized and config.context_view_length > 0:
            prefix = context_view(document_ids, config.context_view_length, separator, rng) + prompt
        input_ids = prefix + segment
        labels = [IGNORE_INDEX] * len(prefix) + segment
        samples.append(TrainingSample(input_ids[: config.max_seq_length], labels[: config.max_seq_length],
                                      "segment"))
    return samples


def qa_user_message(question: str, context: str | None) -> str:
    """The user turn for a question, with the document (or a view of it) above it when given.

    Generation builds its prompts with this same function, so memories are trained on exactly the
    format they are asked in.
    """
    if not context:
        return question
    return f"Context:\n{context}\n\nAnswer the question based on the context above.\nQuestion: {question}"


def qa_samples(
    tokenizer: PreTrainedTokenizerBase,
    document_ids: Sequence[int],
    pairs: Sequence[QAPair],
    config: LIFTConfig,
) -> list[TrainingSample]:
    """One chat-formatted sample per QA pair, loss on the answer (and the end-of-turn token)."""
    context = None
    if config.qa_context_length > 0:
        view = head_tail(document_ids, config.qa_context_length, encode_text(tokenizer, SEPARATOR))
        context = tokenizer.decode(view)
    samples = []
    for pair in pairs:
        messages = [{"role": "user", "content": qa_user_message(pair.question, context)}]
        ids, answer_start = encode_chat_with_answer(tokenizer, messages, pair.answer)
        if len(ids) > config.max_seq_length:
            continue
        labels = [IGNORE_INDEX] * answer_start + ids[answer_start:]
        samples.append(TrainingSample(ids, labels, "qa"))
    return samples
