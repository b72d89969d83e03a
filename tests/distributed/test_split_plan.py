"""Building one absorption's samples split between ranks gives, on every rank, the plan one process builds.

The ranks here are threads (``run_ranks``: they swap their parts as ``all_gather_object`` would), so
the split building code runs without starting processes; ``test_torchrun.py`` runs it across real gloo
processes. Each rank gets its own copy of the tokenizer, as each process loads its own.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from distributed_helpers import LONG_DOCUMENT, NORMANS, SHORT_DOCUMENTS, plan_digest, run_ranks
from tiny_models import tiny_tokenizer

from lift_integrations import LIFTConfig, QAPair
from lift_integrations.absorb import extractive, samples, segmentation
from lift_integrations.absorb.extractive import extractive_qa_pairs
from lift_integrations.absorb.plan import plan_samples
from lift_integrations.absorb.qa import CallableQAGenerator, ExtractiveQAGenerator
from lift_integrations.absorb.samples import qa_samples
from lift_integrations.absorb.segmentation import tokenize_document
from lift_integrations.distributed import DistributedMismatchError
from lift_integrations.documents import normalize_documents
from lift_integrations.sharing import ALONE, SharedWorkError, WorkShare

# "It" follows the museum from sentence to sentence, and the repeats ask questions already asked: both
# depend on the sentences before, which another rank builds.
CHAINED = (
    "The Brindlecombe Clock Museum opened in 1921 in Harlow Street. It was founded by Edith Marlowe. "
    "It holds 340 clocks from the 17th and 18th centuries. It closed for repairs in 1987 and reopened "
    "in March 1990. "
) * 3 + "The Quillon Observatory was built in 1874 by Mira Quenton. It cost $3.5 million."
TEXTS = {
    "normans": NORMANS,
    "zorblat": LONG_DOCUMENT,
    "chained": CHAINED,
    "short": " ".join(SHORT_DOCUMENTS.values()),
}


def no_answers(prompts: Any) -> list[str | None]:
    return [None] * len(prompts)


@pytest.fixture
def calls_by_rank(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], Counter[str]]:
    """Counts the calls of a module's function per thread (rank), with ``MainThread`` for one process."""

    def count(module: Any, name: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        original = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[threading.current_thread().name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
        return counts

    return count


def assert_split(counts: Counter[str], world_size: int) -> None:
    """One process's calls (``MainThread``) were shared out: every rank made some, fewer than all, and
    together exactly as many."""
    alone = counts.pop("MainThread")
    assert sorted(counts) == [f"rank-{rank}" for rank in range(world_size)]
    assert sum(counts.values()) == alone
    assert all(0 < made < alone for made in counts.values()), counts


# The share itself --------------------------------------------------------------------------------------


def test_each_item_is_built_by_one_rank_and_every_rank_gets_all_in_order() -> None:
    costs = [5.0, 1.0, 9.0, 2.0, 2.0, 7.0, 3.0]
    built: list[tuple[int, int]] = []

    def work(share: WorkShare) -> list[int]:
        def build(part: list[int]) -> list[int]:
            built.extend((share.rank, index) for index in part)
            return [index * index for index in part]

        return share.build(costs, build)

    results = run_ranks(3, work)
    assert results == [[i * i for i in range(len(costs))]] * 3
    assert sorted(index for _, index in built) == list(range(len(costs)))  # each once
    loads = Counter[int]()
    for rank, index in built:
        loads[rank] += int(costs[index])
    assert sorted(loads) == [0, 1, 2] and max(loads.values()) - min(loads.values()) <= max(costs)


def test_alone_builds_everything_in_one_call() -> None:
    parts: list[list[int]] = []
    assert ALONE.build([1.0, 1.0, 1.0], lambda part: parts.append(part) or [str(i) for i in part]) == list(
        "012"
    )
    assert parts == [[0, 1, 2]] and not ALONE.is_split


def test_a_failure_on_one_rank_raises_on_every_rank() -> None:
    """No rank waits for a part that never comes: the failing rank raises its error, the others name it."""

    def work(share: WorkShare) -> BaseException | None:
        def build(part: list[int]) -> list[int]:
            if share.rank == 1:
                raise ValueError("bad sentence")
            return part

        try:
            share.build([1.0] * 4, build)
        except Exception as error:
            return error
        return None

    mine, theirs = run_ranks(2, work)
    assert isinstance(theirs, ValueError) and str(theirs) == "bad sentence"
    assert isinstance(mine, SharedWorkError)
    assert str(mine) == "rank 1 failed while building its share of the work: ValueError: bad sentence"


def test_a_builder_must_return_one_value_per_item() -> None:
    with pytest.raises(ValueError, match="returned 1 values for 2 items"):
        ALONE.build([1.0, 1.0], lambda part: [0])
    with pytest.raises(ValueError, match="rank 2 is out of range"):
        WorkShare(rank=2, world_size=2, gather=lambda value: [value])


# Each split piece against the unsplit one ---------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_extractive_pairs_split_by_sentences_are_the_unsplit_pairs(
    name: str, world_size: int, calls_by_rank: Callable[[Any, str], Counter[str]]
) -> None:
    counts = calls_by_rank(extractive, "_sentence_proposals")
    for max_pairs, seed in [(4, 0), (25, 3), (10_000, 7)]:  # few picks, many, every candidate
        counts.clear()
        alone = extractive_qa_pairs(TEXTS[name], title=name, max_pairs=max_pairs, seed=seed)
        assert alone
        split = run_ranks(
            world_size,
            lambda share, m=max_pairs, s=seed: extractive_qa_pairs(
                TEXTS[name], title=name, max_pairs=m, seed=s, share=share
            ),
        )
        assert split == [alone] * world_size
        assert_split(counts, world_size)


def test_questions_asked_by_an_earlier_sentence_on_another_rank_are_dropped() -> None:
    """The repeats of CHAINED propose the questions of its first sentences again; whichever rank built
    them, only the first asking survives, as in one process."""
    pairs = run_ranks(2, lambda share: extractive_qa_pairs(CHAINED, max_pairs=10_000, share=share))[0]
    questions = [pair.question for pair in pairs]
    assert len(questions) == len(set(questions)) > 5


@pytest.mark.parametrize("world_size", [2, 3])
def test_tokenizing_split_by_pieces_gives_the_unsplit_ids(
    world_size: int, calls_by_rank: Callable[[Any, str], Counter[str]]
) -> None:
    counts = calls_by_rank(segmentation, "encode_text")
    tokenizer = tiny_tokenizer()
    text = NORMANS[:3000]
    alone = tokenize_document(tokenizer, text, chunk_chars=97)  # about 40 pieces
    split = run_ranks(
        world_size,
        lambda share: tokenize_document(copy.deepcopy(tokenizer), text, chunk_chars=97, share=share),
    )
    assert all(ids == alone for ids in split) and len(alone) > 500
    assert_split(counts, world_size)
    counts.clear()  # a document of one piece: every rank tokenizes it (nothing to split)
    run_ranks(
        2, lambda share: tokenize_document(copy.deepcopy(tokenizer), text[:90], chunk_chars=97, share=share)
    )
    assert counts == {"rank-0": 1, "rank-1": 1}


@pytest.mark.parametrize("world_size", [2, 3])
def test_qa_samples_split_by_prompts_are_the_unsplit_samples(
    world_size: int, calls_by_rank: Callable[[Any, str], Counter[str]]
) -> None:
    """With a document view: most pairs share one view, those with long questions get a shorter view of
    their own, and a few fit none; half the pairs also come with passages drawn from the rng."""
    tokenizer = tiny_tokenizer()
    ids = tokenize_document(tokenizer, NORMANS)
    pairs = extractive_qa_pairs(NORMANS, title="Normans", max_pairs=40, seed=1)
    pairs.append(QAPair("Who? " * 200, "Nobody"))  # too long for any view: no sample
    config = LIFTConfig.fast(
        qa_context_length=300, max_seq_length=420, qa_passage_fraction=0.5, qa_passages=2
    )
    counts = calls_by_rank(samples, "encode_chat_with_answer")
    alone = qa_samples(tokenizer, ids, pairs, config, text=NORMANS, rng=np.random.default_rng(5))
    views = Counter(len(sample.input_ids) - sample.labels.count(-100) for sample in alone)
    assert 30 < len(alone) < 2 * len(pairs) and len(views) > 5  # answers of many lengths, some dropped
    split = run_ranks(
        world_size,
        lambda share: qa_samples(
            copy.deepcopy(tokenizer),
            ids,
            pairs,
            config,
            text=NORMANS,
            rng=np.random.default_rng(5),
            share=share,
        ),
    )
    assert split == [alone] * world_size
    assert_split(counts, world_size)


# The whole plan -------------------------------------------------------------------------------------------

CONFIGS = {
    "fast": LIFTConfig.fast(qa_per_document=12),
    "dense": LIFTConfig.dense_qa(),
    "views": LIFTConfig.fast(
        qa_per_document=30, qa_context_length=300, max_seq_length=600, qa_passage_fraction=0.4, qa_passages=2
    ),
}


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_the_split_plan_is_the_unsplit_plan(config_name: str) -> None:
    """Several documents in one plan, on 1, 2 and 3 ranks: the same samples in the same order (the rng
    each document leaves to the next is the same too, or the later context views would differ)."""
    tokenizer = tiny_tokenizer()
    documents = normalize_documents([("zorblat", LONG_DOCUMENT), ("chained", CHAINED), ("normans", NORMANS)])
    config = CONFIGS[config_name]

    def plan(share: WorkShare) -> Any:
        return plan_samples(
            copy.deepcopy(tokenizer) if share.is_split else tokenizer,
            documents,
            config,
            qa_generator=ExtractiveQAGenerator(),
            base_answers=no_answers,
            share=share,
        )

    alone = plan(ALONE)
    assert alone.sample_counts()["qa_samples"] > 20
    for world_size in (2, 3):
        split = run_ranks(world_size, plan)
        assert [plan_digest(p) for p in split] == [plan_digest(alone)] * world_size
        assert all(p.stages == alone.stages and p.epochs == alone.epochs for p in split)


def test_a_generator_that_cannot_split_runs_whole_on_every_rank() -> None:
    """A user function (or an LLM) sees the whole document on every rank; the QA prompts are still
    tokenized by shares, and the plan is the unsplit one."""
    generated_by_rank: Counter[str] = Counter()

    def pairs_of(document: Any) -> list[QAPair]:
        generated_by_rank[threading.current_thread().name] += 1
        return extractive_qa_pairs(document.text, title=document.title, max_pairs=15, seed=2)

    tokenizer = tiny_tokenizer()
    documents = normalize_documents([("normans", NORMANS)])
    config = CONFIGS["views"]

    def plan(share: WorkShare) -> Any:
        return plan_samples(
            copy.deepcopy(tokenizer) if share.is_split else tokenizer,
            documents,
            config,
            qa_generator=CallableQAGenerator(pairs_of),
            base_answers=no_answers,
            share=share,
        )

    alone = plan(ALONE)
    split = run_ranks(2, plan)
    assert [plan_digest(p) for p in split] == [plan_digest(alone)] * 2
    assert generated_by_rank == {"MainThread": 1, "rank-0": 1, "rank-1": 1}


def test_a_subclass_that_overrides_generate_alone_keeps_its_override_on_every_rank() -> None:
    """A subclass of the extractive generator that changes ``generate`` but not ``generate_shared`` runs
    its own ``generate`` whole on every rank, rather than the parent's shared version."""

    class FirstPairOnly(ExtractiveQAGenerator):
        def generate(self, document: Any, n: int, rng: np.random.Generator) -> list[QAPair]:
            return super().generate(document, n, rng)[:1]

    tokenizer = tiny_tokenizer()
    documents = normalize_documents([("normans", NORMANS)])

    def plan(share: WorkShare) -> Any:
        return plan_samples(
            copy.deepcopy(tokenizer) if share.is_split else tokenizer,
            documents,
            CONFIGS["views"],
            qa_generator=FirstPairOnly(),
            base_answers=no_answers,
            share=share,
        )

    alone = plan(ALONE)
    split = run_ranks(2, plan)
    assert [plan_digest(p) for p in split] == [plan_digest(alone)] * 2
    assert alone.sample_counts()["qa_samples"] == 1


@pytest.mark.parametrize("differs", ["documents", "settings"])
def test_ranks_planning_different_absorptions_all_raise_before_building(differs: str) -> None:
    """Parts of different plans would not fit together (nor would the ranks make the same exchanges):
    every rank refuses before building anything, naming the ranks that differ from rank 0."""
    tokenizer = tiny_tokenizer()

    def plan(share: WorkShare) -> str:
        other = share.rank == 2
        text = CHAINED if other and differs == "documents" else LONG_DOCUMENT
        config = LIFTConfig.fast(qa_per_document=5 if other and differs == "settings" else 4)
        with pytest.raises(DistributedMismatchError) as raised:
            plan_samples(
                copy.deepcopy(tokenizer),
                normalize_documents(text),
                config,
                qa_generator=ExtractiveQAGenerator(),
                base_answers=no_answers,
                share=share,
            )
        return str(raised.value)

    messages = run_ranks(3, plan)
    assert len(set(messages)) == 1
    assert messages[0].startswith("rank(s) [2] absorb different documents, settings or QA generator")
