"""What an absorption trains on: every document's samples, in the paper's two stages.

Stage 1 trains the contextualized segments alone; stage 2 trains them again with the auxiliary QA pairs
and the replay prompts. Kept apart from :mod:`~lift_integrations.absorb.samples`, which the QA and
replay modules build on: planning uses all three.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from lift_integrations.absorb.qa import QAGenerator, SharedQAGenerator
from lift_integrations.absorb.replay import ReplayPrompt, pick_replay_prompts, replay_samples
from lift_integrations.absorb.samples import TrainingSample, qa_samples, segment_samples
from lift_integrations.absorb.segmentation import tokenize_document
from lift_integrations.absorb.types import Document, QAPair
from lift_integrations.config import LIFTConfig
from lift_integrations.distributed import (
    DistributedContext,
    DistributedMismatchError,
    gather_objects,
    work_share,
)
from lift_integrations.prompting import document_text
from lift_integrations.sharing import ALONE, WorkShare

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")


@dataclass(frozen=True)
class SamplePlan:
    """The samples of each stage, and how many epochs each stage runs."""

    stages: list[list[TrainingSample]]
    epochs: list[int]
    num_documents: int

    def sample_counts(self) -> dict[str, int]:
        """Samples of each kind (the last stage holds every QA and replay sample)."""
        kinds = Counter(sample.kind for sample in self.stages[-1])
        return {
            "segment_samples": len(self.stages[0]),
            "qa_samples": kinds["qa"],
            "replay_samples": kinds["replay"],
        }


def plan_samples(
    tokenizer: PreTrainedTokenizerBase,
    documents: Sequence[Document],
    config: LIFTConfig,
    *,
    qa_generator: QAGenerator | None,
    base_answers: Callable[[Sequence[ReplayPrompt]], Sequence[str | None]],
    distributed: DistributedContext | None = None,
    share: WorkShare | None = None,
) -> SamplePlan:
    """Tokenize ``documents`` and build every training sample of their absorption.

    Every random draw comes from ``config.seed``; torch's global generator is seeded too, as a QA
    generator that samples from the model draws from it. ``base_answers`` gives the base model's answers
    to the replay prompts. Under ``distributed``, rank 0's QA pairs and base answers are used on every
    rank: an LLM generating them may answer differently on each, and the ranks must train the same
    samples.

    ``share``: how the building is split between ranks (default: over ``distributed``'s ranks, exchanged
    with ``all_gather_object``; alone without it). Each rank tokenizes its share of a long document's
    pieces, builds the extractive questions of its share of the sentences
    (:class:`~lift_integrations.absorb.qa.SharedQAGenerator`) and tokenizes its share of the QA
    prompts; the ranks swap the parts, so every rank ends with the plan one process builds, sample for
    sample. The rest runs on every rank: the segment samples (slices of the token ids, which would cost
    as much to send as to cut), the sentence splitting, deduplication and seeded picks of the extractive
    generator (they follow the document in order), and a generator that cannot split its work (an LLM:
    each pair's sampling draws from the generator state the pairs before it left) or the replay
    answers (generated in batches: which prompts share one changes the numbers).
    """
    if share is None:
        share = ALONE if distributed is None else work_share(distributed)
    if share.is_split:
        _check_same_input(documents, config, qa_generator, share)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    segments: list[TrainingSample] = []
    questions: list[TrainingSample] = []
    replays: list[TrainingSample] = []
    for document in documents:
        # streamed: 4 bytes per token
        ids = tokenize_document(tokenizer, document_text(document), share=share)
        segments += segment_samples(tokenizer, ids, config, rng)
        wanted = config.qa_pairs_for(len(ids))
        if qa_generator is not None and config.stage2_epochs > 0 and wanted > 0:
            pairs = _from_main(_generate(qa_generator, document, wanted, rng, share), distributed)
            questions += qa_samples(tokenizer, ids, pairs, config, text=document.text, rng=rng, share=share)
    if config.general_replay > 0 and config.stage2_epochs > 0:
        prompts = pick_replay_prompts(config.general_replay, rng)
        answers = _from_main(base_answers(prompts), distributed)
        replays = replay_samples(tokenizer, prompts, answers, config.max_seq_length)
    return SamplePlan(
        stages=[segments, segments + questions + replays],
        epochs=[config.stage1_epochs, config.stage2_epochs],
        num_documents=len(documents),
    )


def _check_same_input(
    documents: Sequence[Document], config: LIFTConfig, qa_generator: QAGenerator | None, share: WorkShare
) -> None:
    """Raise :class:`DistributedMismatchError` on every rank unless all plan the same documents with the
    same settings and kind of QA generator: the ranks build the plan together, and parts of different
    plans would not fit (the check after planning, on the samples, would come too late)."""
    settings = config.to_dict()
    for name in ("checkpoint_dir", "checkpoint_every"):  # where checkpoints go does not change the plan
        settings.pop(name, None)
    description = [[d.sha256 for d in documents], settings, type(qa_generator).__qualname__]
    key = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()
    keys = share.gather(key)
    differing = [rank for rank, theirs in enumerate(keys) if theirs != keys[0]]
    if differing:
        raise DistributedMismatchError(
            f"rank(s) {differing} absorb different documents, settings or QA generator from rank 0; every "
            "process must absorb the same documents with the same config and QA generator; to absorb "
            "different documents on each process pass distributed=False (or use "
            "lift_integrations.cli.absorb_each)"
        )


def _generate(
    generator: QAGenerator, document: Document, n: int, rng: np.random.Generator, share: WorkShare
) -> list[QAPair]:
    """``generator``'s pairs, built by the ranks of ``share`` together where the generator can split its
    work."""
    if share.is_split and isinstance(generator, SharedQAGenerator) and _shares_its_generate(generator):
        return generator.generate_shared(document, n, rng, share)
    return generator.generate(document, n, rng)


def _shares_its_generate(generator: object) -> bool:
    """Whether ``generator``'s ``generate_shared`` is as recent as its ``generate``: a subclass that
    overrides ``generate`` alone would otherwise see its override skipped under a distributed absorption."""
    mro = type(generator).__mro__
    generate = next(cls for cls in mro if "generate" in vars(cls))
    shared = next(cls for cls in mro if "generate_shared" in vars(cls))
    return issubclass(shared, generate)


def _from_main(value: T, distributed: DistributedContext | None) -> T:
    """Rank 0's ``value`` on every rank."""
    if distributed is None:
        return value
    return gather_objects(value)[0]
