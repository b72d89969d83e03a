"""Training samples: contextualized segments (loss on the segment) and QA pairs (loss on the answer)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from lift_integrations.absorb.segmentation import context_view, segment_spans
from lift_integrations.absorb.types import QAPair
from lift_integrations.config import LIFTConfig
from lift_integrations.prompting import (
    SEPARATOR,
    decode_text,
    encode_chat_with_answer,
    encode_text,
    encode_texts,
    head_tail,
    qa_user_message,
)
from lift_integrations.sharing import ALONE, WorkShare

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainingSample:
    """One sequence to train on; ``labels`` is ``IGNORE_INDEX`` wherever no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    kind: Literal["segment", "qa", "replay"]

    @property
    def supervised_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


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
        samples.append(
            TrainingSample(input_ids[: config.max_seq_length], labels[: config.max_seq_length], "segment")
        )
    return samples


def split_passages(text: str, max_chars: int = 1000) -> list[str]:
    """The document's paragraphs, long ones cut at sentence ends near ``max_chars``: stand-ins for the
    chunks a retriever returns in hybrid mode."""
    passages = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        while len(paragraph) > max_chars:
            cut = paragraph.rfind(". ", 0, max_chars)
            cut = cut + 1 if cut > max_chars // 3 else max_chars
            passages.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if paragraph:
            passages.append(paragraph)
    return passages


def passage_context(passages: Sequence[str], pair: QAPair, count: int, rng: np.random.Generator) -> list[str]:
    """The passage that holds the pair's evidence (or answer) among ``count - 1`` other passages, shuffled,
    as a retriever would hand them over."""
    needle = pair.evidence or pair.answer
    holding = [i for i, p in enumerate(passages) if needle in p] or [
        i for i, p in enumerate(passages) if pair.answer in p
    ]
    chosen = [holding[0]] if holding else []
    others = [i for i in range(len(passages)) if i not in chosen]
    take = min(len(others), max(0, count - len(chosen)))
    chosen += [int(i) for i in rng.choice(others, size=take, replace=False)] if take else []
    rng.shuffle(chosen)
    return [passages[i] for i in chosen]


def qa_samples(
    tokenizer: PreTrainedTokenizerBase,
    document_ids: Sequence[int],
    pairs: Sequence[QAPair],
    config: LIFTConfig,
    *,
    text: str = "",
    rng: np.random.Generator | None = None,
    share: WorkShare = ALONE,
) -> list[TrainingSample]:
    """Chat-formatted samples for QA pairs, loss on the answer (and the end-of-turn token).

    Every pair is trained as asked from memory (with the head/tail view of the document above it when
    ``qa_context_length`` > 0, shortened so that view, question and answer fit in ``max_seq_length``).
    With ``qa_passage_fraction`` > 0, that share of the pairs is also trained with retrieved-like
    passages in context, in the format hybrid mode uses, so the memory learns to work with retrieved
    chunks rather than against them.

    Under a split ``share`` (collective), each rank tokenizes only its share of the prompts: the ranks
    swap how long a view each of theirs fits (the shared view is the shortest of them), then the
    finished samples. Every rank gets the samples, in the order, that one process makes; the passages
    drawn from ``rng`` are drawn on every rank.
    """
    separator = encode_text(tokenizer, SEPARATOR)
    views: dict[int, str] = {}

    def document_view(budget: int) -> str:
        if budget not in views:
            views[budget] = decode_text(tokenizer, head_tail(document_ids, budget, separator))
        return views[budget]

    passages = split_passages(text) if text and config.qa_passage_fraction > 0 else []
    rng = rng or np.random.default_rng(config.seed)
    prompts: list[tuple[QAPair, str | None]] = []  # (pair, passages in context; None: the document view)
    for pair in pairs:
        prompts.append((pair, None))
        if passages and rng.random() < config.qa_passage_fraction:
            chunks = passage_context(passages, pair, config.qa_passages, rng)
            prompts.append((pair, "\n\n".join(chunks)))

    content_ids: dict[str, list[int]] = {}

    def context_of(budget: int) -> str | None:
        return document_view(budget) if budget > 0 else None

    def encode_all(pending: list[tuple[QAPair, str | None]]) -> list[tuple[list[int], int]]:
        """Chat ids of ``(pair, context)`` prompts and where each answer starts; the user messages and
        answers are tokenized together in one call first (one call per text costs more than its text)."""
        users = [qa_user_message(pair.question, context) for pair, context in pending]
        texts = dict.fromkeys([*users, *(pair.answer for pair, _ in pending)])
        new = [text for text in texts if text and text not in content_ids]
        content_ids.update(zip(new, encode_texts(tokenizer, new), strict=True))
        return [
            encode_chat_with_answer(
                tokenizer, [{"role": "user", "content": user}], pair.answer, content_ids=content_ids
            )
            for user, (pair, _) in zip(users, pending, strict=True)
        ]

    # One document view for every pair, as long as the pair with the longest question and answer allows
    # (a pair that needs less than half of it gets its own), so the samples share their start and
    # training computes it once (see LIFTConfig.share_prefixes). The view goes through decode and encode,
    # so its length is checked on the final ids, and a pair that still does not fit is shortened again.
    # A pair's fitting depends on that pair alone but for the shared view: ranks split the pairs.
    def excess(ids: list[int]) -> int:
        return len(ids) - config.max_seq_length

    def shortened(budget: int, ids: list[int]) -> int:
        """The view length that leaves the question, answer and markup room (they need it too)."""
        return max(0, budget - excess(ids) - 8)

    full = min(config.qa_context_length, len(document_ids))
    costs = [_prompt_cost(pair, chunks, full) for pair, chunks in prompts]

    def wanted_views(part: list[int]) -> list[int | None]:
        """The view each prompt of ``part`` fits (``None``: it has passages instead)."""
        viewed = [i for i in part if prompts[i][1] is None]
        at_full = encode_all([(prompts[i][0], context_of(full)) for i in viewed])
        fits = {
            i: full if excess(ids) <= 0 else shortened(full, ids)
            for i, (ids, _) in zip(viewed, at_full, strict=True)
        }
        return [fits.get(i) for i in part]

    wanted = {i: b for i, b in enumerate(share.build(costs, wanted_views)) if b is not None}
    shared = min((b for b in wanted.values() if b >= full // 2), default=full)
    trying_all = {i: shared if b >= full // 2 else b for i, b in wanted.items()}

    def finished(part: list[int]) -> list[TrainingSample | None]:
        """The sample of each prompt of ``part`` (``None``: it does not fit)."""
        trying = {i: trying_all[i] for i in part if i in trying_all}
        fitting: dict[int, int] = {}
        while trying:
            encoded = encode_all([(prompts[i][0], context_of(b)) for i, b in trying.items()])
            shorter = {}
            for (i, budget), (ids, _) in zip(trying.items(), encoded, strict=True):
                if excess(ids) <= 0:
                    fitting[i] = budget
                elif budget > 0:
                    shorter[i] = shortened(budget, ids)
            trying = shorter
        final = [i for i in part if prompts[i][1] is not None or i in fitting]
        # a prompt's passages, or the view it fits
        contexts = [prompts[i][1] if i not in fitting else context_of(fitting[i]) for i in final]
        encoded = encode_all([(prompts[i][0], context) for i, context in zip(final, contexts, strict=True)])
        samples: dict[int, TrainingSample] = {}
        for i, (ids, answer_start) in zip(final, encoded, strict=True):
            if len(ids) <= config.max_seq_length:
                samples[i] = TrainingSample(ids, [IGNORE_INDEX] * answer_start + ids[answer_start:], "qa")
        return [samples.get(i) for i in part]

    return [sample for sample in share.build(costs, finished) if sample is not None]


def _prompt_cost(pair: QAPair, chunks: str | None, view_tokens: int) -> float:
    """Roughly how much tokenizing one QA prompt costs: its characters (a view of about 4 per token)."""
    return float(
        len(pair.question) + len(pair.answer) + (len(chunks) if chunks is not None else 4 * view_tokens)
    )
