"""Splitting a step's samples between ranks, summing gradients, and the checks that run before training."""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

from lift_integrations import LIFTModel
from lift_integrations import distributed as lift_dist
from lift_integrations.distributed import (
    DistributedMismatchError,
    balanced_partition,
    check_same_absorption,
    deal_by_length,
    shard_samples,
)

# Partition -------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.integers(min_value=1, max_value=8000), max_size=60),
    parts=st.integers(min_value=1, max_value=9),
)
def test_partition_covers_every_index_once_and_is_balanced(costs: list[int], parts: int) -> None:
    groups = balanced_partition(costs, parts)
    assert len(groups) == parts
    assert sorted(i for group in groups for i in group) == list(range(len(costs)))
    assert all(group == sorted(group) for group in groups)
    loads = [sum(costs[i] for i in group) for group in groups]
    if costs:
        assert max(loads) - min(loads) <= max(costs)  # greedy: the fullest gained its last item when emptiest
    assert balanced_partition(list(costs), parts) == groups  # deterministic: every rank computes the same
    shards = [shard_samples(costs, rank, parts) for rank in range(parts)]
    assert shards == groups


def test_equal_lengths_are_dealt_round_robin() -> None:
    assert balanced_partition([100] * 7, 3) == [[0, 3, 6], [1, 4], [2, 5]]


def test_fewer_samples_than_ranks_leaves_some_ranks_without_work() -> None:
    assert [shard_samples([300, 500], rank, 4) for rank in range(4)] == [[1], [0], [], []]
    assert [shard_samples([], rank, 2) for rank in range(2)] == [[], []]


def test_long_samples_are_spread_before_short_ones() -> None:
    # 900 | 880, then 40 joins 880, 30 joins 900, 20 joins 920, 10 joins 930: 940 tokens each.
    assert balanced_partition([10, 900, 20, 880, 30, 40], 2) == [[0, 1, 4], [2, 3, 5]]


def test_partition_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="parts"):
        balanced_partition([1, 2], 0)
    with pytest.raises(ValueError, match="rank 2"):
        shard_samples([1, 2], 2, 2)


def test_documents_are_dealt_by_length_not_round_robin() -> None:
    """One long document first and short ones after: round robin gives rank 0 the long one and half the
    short ones; dealing by length gives the long one a rank of its own."""
    sizes = [9000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]
    dealt = deal_by_length(sizes, 2)
    assert sorted(i for rank in dealt for i in rank) == list(range(len(sizes)))
    assert all(rank == sorted(rank) for rank in dealt)  # each rank keeps the mapping's order
    assert deal_by_length(list(sizes), 2) == dealt  # every rank computes the same deal
    dealt_loads = [sum(sizes[i] for i in rank) for rank in dealt]
    round_robin_loads = [sum(sizes[rank::2]) for rank in range(2)]
    assert round_robin_loads == [13000, 5000]
    assert max(dealt_loads) == 9000 == max(sizes)  # optimal: no deal finishes before the longest document
    assert dealt == [[0], list(range(1, 10))]


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=40),
    world_size=st.integers(min_value=1, max_value=8),
)
def test_deal_by_length_is_within_the_largest_document_of_optimal(sizes: list[int], world_size: int) -> None:
    dealt = deal_by_length(sizes, world_size)
    assert len(dealt) == world_size
    assert sorted(i for rank in dealt for i in rank) == list(range(len(sizes)))
    loads = [sum(sizes[i] for i in rank) for rank in dealt]
    lower_bound = max(max(sizes), sum(sizes) / world_size)  # no deal can finish before this
    assert max(loads) <= lower_bound + max(sizes)


def test_deal_by_length_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="world_size"):
        deal_by_length([1, 2], 0)
    with pytest.raises(ValueError, match="negative"):
        deal_by_length([1, -2], 2)


# Summing gradients (a one-process gloo group: the packing, flags and copy-back) ------------------------


def test_current_takes_the_gpu_from_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun, a process's GPU is cuda:LOCAL_RANK even before torch.cuda.set_device is called
    (which is all torch.cuda.current_device() would know); with one GPU visible per process, that one."""
    for name, value in {
        "is_available": True,
        "is_initialized": True,
        "get_world_size": 4,
        "get_rank": 2,
        "get_backend": "nccl",
    }.items():
        monkeypatch.setattr(lift_dist.dist, name, lambda value=value: value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    context = lift_dist.current()
    assert context is not None and context.device == torch.device("cuda", 2) and context.local_rank == 2
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA_VISIBLE_DEVICES: one GPU each
    assert lift_dist.current().device == torch.device("cuda", 0)
    monkeypatch.setattr(lift_dist.dist, "get_backend", lambda: "gloo")
    assert lift_dist.current().device == torch.device("cpu")


@pytest.fixture
def one_process_group(tmp_path: Path) -> Iterator[None]:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_all_reduce_keeps_gradients_and_missing_ones(one_process_group: None) -> None:
    assert lift_dist.current() is None  # a group of one process is not distributed absorption
    first = torch.nn.Parameter(torch.randn(3, 4))
    second = torch.nn.Parameter(torch.randn(5))
    wide = torch.nn.Parameter(torch.randn(2, dtype=torch.float64))
    first.grad = torch.arange(12.0).reshape(3, 4)
    wide.grad = torch.tensor([1.5, -2.0], dtype=torch.float64)
    stats = lift_dist.all_reduce_gradients([first, second, wide], (2.5, 700, 12_345))
    assert stats == [2.5, 700.0, 12_345.0]
    assert torch.equal(first.grad, torch.arange(12.0).reshape(3, 4))
    assert second.grad is None  # no rank had one: AdamW must skip it, as in a single process
    assert wide.grad.dtype == torch.float64 and torch.equal(wide.grad, torch.tensor([1.5, -2.0]).double())


def test_absorb_in_a_one_process_group_runs_alone(one_process_group: None, tiny_lift: LIFTModel) -> None:
    from lift_integrations import LIFTConfig

    memory = tiny_lift.absorb(
        "Mira Quenton founded the Zorblat Institute.",
        config=LIFTConfig.fast(stage1_epochs=1, stage2_epochs=0, qa_per_document=0),
    )
    assert "processes" not in memory.stats


# Checks before training --------------------------------------------------------------------------------


def test_distributed_true_without_a_group_is_refused(tiny_lift: LIFTModel, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        tiny_lift.absorb("Some text to absorb.", distributed=True)


def test_distributed_must_be_a_bool_or_none(tiny_lift: LIFTModel) -> None:
    with pytest.raises(TypeError, match="distributed"):
        tiny_lift.absorb("Some text to absorb.", distributed="yes")


def test_init_from_env_is_a_no_op_for_one_process(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert lift_dist.init_from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert lift_dist.init_from_env() is None
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    ("gathered", "message"),
    [
        ([("s", "k"), ("other", "k")], r"rank\(s\) \[1\] built different training samples"),
        ([("s", "k"), ("s", "k"), ("s", "other")], r"rank\(s\) \[2\] use different settings"),
    ],
)
def test_ranks_that_disagree_are_named(gathered, message: str, monkeypatch) -> None:
    monkeypatch.setattr(lift_dist, "gather_objects", lambda value: gathered)
    with pytest.raises(DistributedMismatchError, match=message):
        check_same_absorption("s", "k")


def test_ranks_that_agree_pass(monkeypatch) -> None:
    monkeypatch.setattr(lift_dist, "gather_objects", lambda value: [value, value])
    check_same_absorption("s", "k")


def test_ranks_must_resume_from_the_same_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two ranks that found checkpoints of the same step but with different parameters (each its own
    folder, say) are refused before training, not trained from different starting points."""
    from lift_integrations import LIFTConfig
    from lift_integrations.absorb import trainer
    from lift_integrations.absorb.checkpoint import CheckpointStore, ResumeState
    from lift_integrations.absorb.plan import SamplePlan
    from lift_integrations.absorb.samples import TrainingSample

    resumed = ResumeState(
        step=1, tokens=0, tokens_computed=0, sum_sq=0, losses=[0.0], elapsed_s=0.0, rng_state={}
    )
    store = CheckpointStore(tmp_path, "key", every=1)
    monkeypatch.setattr(store, "restore", lambda *args: dataclasses.replace(resumed, params_sha256="mine"))
    monkeypatch.setattr(trainer, "gather_objects", lambda value: [value, (1, "theirs")])
    model = torch.nn.Linear(2, 2)
    model.config = types.SimpleNamespace()  # what train_memory reads of a model's config: nothing here
    target = types.SimpleNamespace(
        model=model,
        parameters=list(model.parameters()),
        pad_id=0,
        step=contextlib.nullcontext,
        recording_gates=contextlib.nullcontext,
        without_memory=contextlib.nullcontext,
    )
    context = lift_dist.DistributedContext(
        rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), backend="gloo"
    )
    sample = TrainingSample([1, 2, 3], [-100, 2, 3], "segment")
    plan = SamplePlan(stages=[[sample]], epochs=[2], num_documents=1)
    with pytest.raises(lift_dist.DistributedMismatchError, match=r"steps by rank: \[1, 1\]"):
        trainer.train_memory(target, plan, LIFTConfig(), checkpoint=store, distributed=context)
