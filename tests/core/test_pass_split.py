"""On a CPU a step's samples are split into the forward passes of least work (padding, attention, the
cost of a pass), and training computes what it computes with every sample padded into one pass."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import lift_integrations.absorb.batching as batching
import lift_integrations.absorb.trainer as trainer
from lift_integrations import LIFTConfig, LIFTModel
from lift_integrations.absorb.batching import BatchLayout, micro_batches, pass_cost
from lift_integrations.absorb.samples import TrainingSample

FACTS = (
    "The Zorblat Institute was founded in 1874 by Mira Quenton in the city of Vellhaven. "
    "Its first director was Tobias Renwick, who studied glass harps and river tides. "
)


def _samples(widths: list[int]) -> list[TrainingSample]:
    return [TrainingSample([5] * n, [5] * n, "qa") for n in widths]


def _widths(samples: list[TrainingSample], groups: list[list[int]]) -> list[list[int]]:
    return [[len(samples[i].input_ids) for i in group] for group in groups]


def test_short_questions_and_a_long_segment_run_in_separate_passes() -> None:
    samples = _samples([367, 72, 70, 75])
    groups = micro_batches(samples, max_samples=4, max_tokens=8192, pass_overhead=48)
    assert _widths(samples, groups) == [[70, 72, 75], [367]]
    # Without an overhead (a GPU) all four share one padded pass, as before.
    assert micro_batches(samples, max_samples=4, max_tokens=8192) == [[2, 1, 3, 0]]


def test_samples_of_similar_length_stay_in_one_pass() -> None:
    samples = _samples([100, 96, 98, 101])
    assert len(micro_batches(samples, max_samples=4, max_tokens=8192, pass_overhead=48)) == 1


def test_the_split_is_the_cheapest_within_the_limits() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        widths = rng.integers(1, 400, size=int(rng.integers(1, 7))).tolist()
        max_samples, max_tokens = int(rng.integers(1, 5)), int(rng.integers(200, 1200))
        samples = _samples(widths)
        groups = micro_batches(samples, max_samples, max_tokens, pass_overhead=48)
        assert sorted(i for g in groups for i in g) == list(range(len(widths)))
        for group in _widths(samples, groups):
            assert len(group) <= max_samples
            assert len(group) == 1 or max(group) * len(group) <= max_tokens
        cost = sum(pass_cost(len(g), max(g), 48) for g in _widths(samples, groups))
        assert cost == pytest.approx(_cheapest_by_brute_force(sorted(widths), max_samples, max_tokens))


def _cheapest_by_brute_force(widths: list[int], max_samples: int, max_tokens: int) -> float:
    """Least cost over every split of the sorted ``widths`` into runs."""
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=len(widths) - 1):
        bounds = [0, *(i + 1 for i, cut in enumerate(cuts) if cut), len(widths)]
        runs = [widths[a:b] for a, b in itertools.pairwise(bounds)]
        if all(len(r) == 1 or (len(r) <= max_samples and r[-1] * len(r) <= max_tokens) for r in runs):
            best = min(best, sum(pass_cost(len(r), r[-1], 48) for r in runs))
    return best


def test_only_a_cpu_layout_splits_by_cost(tiny_lift: LIFTModel) -> None:
    config = LIFTConfig()
    cpu = BatchLayout.for_model(tiny_lift.model, config, torch.device("cpu"), 0)
    cuda = BatchLayout.for_model(tiny_lift.model, config, torch.device("cuda"), 0)
    assert cpu.pass_overhead == batching.CPU_PASS_OVERHEAD_TOKENS and cuda.pass_overhead is None


def _absorb(lift: LIFTModel, monkeypatch: pytest.MonkeyPatch, overhead: int | None) -> tuple[dict, int]:
    monkeypatch.setattr(batching, "CPU_PASS_OVERHEAD_TOKENS", overhead)
    passes = []
    plain = trainer.per_sample_loss

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        passes.append(1)
        return plain(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer, "per_sample_loss", counted)
    config = LIFTConfig(
        segment_length=96,
        segment_stride=64,
        context_view_length=16,
        qa_context_length=0,
        qa_per_document=6,
        stage1_epochs=1,
        stage2_epochs=2,
        batch_size=4,
        precision="fp32",
    )
    memory = lift.absorb(FACTS * 6, config=config)
    tensors = {name: t.clone() for name, t in memory.tensors.items()}
    lift.release(memory)
    return tensors, len(passes)


def test_split_passes_train_the_memory_of_one_padded_pass(
    tiny_lift: LIFTModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    split, split_passes = _absorb(tiny_lift, monkeypatch, 48)
    padded, padded_passes = _absorb(tiny_lift, monkeypatch, None)
    assert split_passes > padded_passes  # the layouts differ, so the comparison means something
    for name, tensor in padded.items():
        torch.testing.assert_close(split[name], tensor, rtol=1e-4, atol=1e-5)
